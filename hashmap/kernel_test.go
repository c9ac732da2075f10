package hashmap_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/bpfsim/bpfsim/hashmap"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/mapstest"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// fakeKernel is the maps.Kernel stand-in of package mapstest.
type fakeKernel = mapstest.Kernel

func newKernel(cpus int) *fakeKernel { return mapstest.NewKernel(cpus) }

var registry = func() *maps.Registry {
	r := &maps.Registry{}
	for _, t := range []*maps.Type{hashmap.Hash, hashmap.PercpuHash} {
		if err := r.Register(t); err != nil {
			panic(err)
		}
	}
	return r
}()

// mapConfig is one of the four ways to build a hash map the tests cover.
type mapConfig struct {
	name   string
	typ    uapi.MapType
	flags  uint32
	percpu bool
}

var configs = []mapConfig{
	{"hash", uapi.MapTypeHash, 0, false},
	{"hash/no_prealloc", uapi.MapTypeHash, uapi.BPF_F_NO_PREALLOC, false},
	{"percpu_hash", uapi.MapTypePercpuHash, 0, true},
	{"percpu_hash/no_prealloc", uapi.MapTypePercpuHash, uapi.BPF_F_NO_PREALLOC, true},
}

func newMap(tb testing.TB, k *fakeKernel, attr maps.Attr) *maps.Map {
	tb.Helper()
	m, err := registry.Create(k, attr, 1, nil)
	if err != nil {
		tb.Fatalf("creating %s map: %v", attr.Type, err)
	}
	tb.Cleanup(m.Ops.Free)
	return m
}

func newConfigMap(tb testing.TB, k *fakeKernel, c mapConfig, keySize, valueSize, maxEntries, flags uint32) *maps.Map {
	tb.Helper()
	return newMap(tb, k, maps.Attr{Type: c.typ, KeySize: keySize, ValueSize: valueSize,
		MaxEntries: maxEntries, Flags: c.flags | flags})
}

func key32(i uint32) []byte { return binary.LittleEndian.AppendUint32(nil, i) }

// val returns a value of n bytes that starts with v.
func val(n int, v uint64) []byte {
	b := make([]byte, max(n, 8))
	binary.LittleEndian.PutUint64(b, v)
	return b[:n]
}

func read(tb testing.TB, k *fakeKernel, addr uint64, n int) []byte {
	tb.Helper()
	b := make([]byte, n)
	if err := k.Memory().Read(addr, b); err != nil {
		tb.Fatalf("reading %d bytes at %#x: %v", n, addr, err)
	}
	return b
}

func wantErrno(tb testing.TB, err error, want uapi.Errno, what string) {
	tb.Helper()
	switch {
	case want == 0 && err != nil:
		tb.Errorf("%s: %v, want success", what, err)
	case want != 0 && !errors.Is(err, want):
		tb.Errorf("%s: %v, want %v", what, err, want)
	}
}

// update is a program's update on CPU 0 for a plain hash, and a
// user-space update of every CPU's copy for a per-CPU hash.
func update(tb testing.TB, k *fakeKernel, m *maps.Map, key, value []byte, flags uint64) error {
	tb.Helper()
	if pv, ok := m.Ops.(maps.PercpuValues); ok {
		return pv.UpdatePercpu(key, bytes.Repeat(padded(value), k.NumCPUs()), flags)
	}
	return m.Ops.UpdateElem(0, key, value, flags)
}

// lookupValue returns the value of key as user space sees it (CPU 0's copy
// for a per-CPU hash), or nil.
func lookupValue(tb testing.TB, k *fakeKernel, m *maps.Map, key []byte) []byte {
	tb.Helper()
	addr, err := m.Ops.LookupElem(0, key)
	if err != nil {
		tb.Fatal(err)
	}
	if addr == 0 {
		return nil
	}
	return read(tb, k, addr, int(m.ValueSize))
}

func padded(v []byte) []byte {
	return append(append([]byte(nil), v...), make([]byte, (8-len(v)%8)%8)...)
}

// walk returns every key GetNextKey yields from a nil key, failing on a
// cycle.
func walk(tb testing.TB, m *maps.Map) [][]byte {
	tb.Helper()
	var keys [][]byte
	var cur []byte
	for {
		next := make([]byte, m.KeySize)
		err := m.Ops.GetNextKey(cur, next)
		if errors.Is(err, uapi.ENOENT) {
			return keys
		}
		if err != nil {
			tb.Fatal(err)
		}
		keys = append(keys, next)
		if len(keys) > int(m.MaxEntries)+1 {
			tb.Fatalf("GetNextKey yielded more than max_entries (%d) keys", m.MaxEntries)
		}
		cur = next
	}
}
