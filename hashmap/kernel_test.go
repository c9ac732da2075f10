package hashmap_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"github.com/bpfsim/bpfsim/hashmap"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// fakeKernel is the part of the simulated kernel a map type sees. Its RCU
// is real enough for concurrent tests: code that plays a program or a
// syscall runs inside read (an RCU read-side section), and GracePeriod
// waits for every section that was open when it started before it runs
// the queued callbacks. Tests that want to see memory before the grace
// period simply do not call GracePeriod.
type fakeKernel struct {
	space *mem.Space
	pcpu  *mem.Percpu
	cpus  int
	rnd   uint32
	// immediate runs callbacks inside CallRCU, for benchmarks, where no
	// reader ever outlives its operation.
	immediate bool

	readers sync.RWMutex // read sections hold it for reading
	mu      sync.Mutex
	pending []func()
}

func newKernel(cpus int) *fakeKernel {
	s := mem.New()
	return &fakeKernel{space: s, pcpu: mem.NewPercpu(s, cpus), cpus: cpus, rnd: 0x12345678}
}

func (k *fakeKernel) Memory() *mem.Space    { return k.space }
func (k *fakeKernel) NumCPUs() int          { return k.cpus }
func (k *fakeKernel) Percpu() *mem.Percpu   { return k.pcpu }
func (k *fakeKernel) CallRCU(fn func())     { k.queue(fn) }
func (k *fakeKernel) read(fn func())        { k.readers.RLock(); defer k.readers.RUnlock(); fn() }
func (k *fakeKernel) setRandom(r uint32)    { k.mu.Lock(); k.rnd = r; k.mu.Unlock() }
func (k *fakeKernel) pendingCallbacks() int { k.mu.Lock(); defer k.mu.Unlock(); return len(k.pending) }

func (k *fakeKernel) queue(fn func()) {
	if k.immediate {
		fn()
		return
	}
	k.mu.Lock()
	k.pending = append(k.pending, fn)
	k.mu.Unlock()
}

// Random is a xorshift32 stream: seeded, so runs repeat themselves. A
// seed set with setRandom is returned once as is.
func (k *fakeKernel) Random() uint32 {
	k.mu.Lock()
	defer k.mu.Unlock()
	r := k.rnd
	x := r
	x ^= x << 13
	x ^= x >> 17
	x ^= x << 5
	k.rnd = x
	return r
}

// GracePeriod waits for the read sections open now, then runs the
// callbacks queued before it started. It returns how many ran.
func (k *fakeKernel) GracePeriod() int {
	k.mu.Lock()
	fns := k.pending
	k.pending = nil
	k.mu.Unlock()
	k.readers.Lock()
	k.readers.Unlock() //nolint:staticcheck // an empty critical section: waiting is the point
	for _, fn := range fns {
		fn()
	}
	return len(fns)
}

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
	if err := k.space.Read(addr, b); err != nil {
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
		return pv.UpdatePercpu(key, bytes.Repeat(padded(value), k.cpus), flags)
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
