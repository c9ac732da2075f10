package cpumap_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/cpumap"
	"github.com/bpfsim/bpfsim/maps/mapstest"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func val(qsize uint32, fd int32) []byte { return append(u32(qsize), u32(uint32(fd))...) }

func registry(t testing.TB) *maps.Registry {
	t.Helper()
	r := &maps.Registry{}
	if err := r.Register(cpumap.CPUMap); err != nil {
		t.Fatal(err)
	}
	return r
}

func newMap(t testing.TB, cpus int, valueSize, n uint32) *maps.Map {
	t.Helper()
	m, err := registry(t).Create(mapstest.NewKernel(cpus), maps.Attr{Type: uapi.MapTypeCPUMap, KeySize: 4, ValueSize: valueSize, MaxEntries: n}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Ops.Free)
	return m
}

func TestCreationTakesUpToNRCPUsEntriesAndOnlyTheNUMAFlag(t *testing.T) {
	for _, c := range []struct {
		attr maps.Attr
		want error
	}{
		{maps.Attr{KeySize: 4, ValueSize: 4, MaxEntries: 1}, nil},
		{maps.Attr{KeySize: 4, ValueSize: 8, MaxEntries: cpumap.NRCPUs}, nil},
		{maps.Attr{KeySize: 4, ValueSize: 8, MaxEntries: cpumap.NRCPUs + 1}, uapi.E2BIG},
		{maps.Attr{KeySize: 4, ValueSize: 12, MaxEntries: 1}, uapi.EINVAL},
		{maps.Attr{KeySize: 8, ValueSize: 4, MaxEntries: 1}, uapi.EINVAL},
		{maps.Attr{KeySize: 4, ValueSize: 4}, uapi.EINVAL},
		{maps.Attr{KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_NUMA_NODE}, nil},
		{maps.Attr{KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_RDONLY}, uapi.EINVAL},
		{maps.Attr{KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_RDONLY_PROG}, uapi.EINVAL},
	} {
		c.attr.Type = uapi.MapTypeCPUMap
		m, err := registry(t).Create(mapstest.NewKernel(2), c.attr, 1, nil)
		if !errors.Is(err, c.want) || (err == nil) != (c.want == nil) {
			t.Errorf("%+v: %v, want %v", c.attr, err, c.want)
		}
		if err == nil {
			if m.Flags != c.attr.Flags {
				t.Errorf("%+v: flags became %#x", c.attr, m.Flags)
			}
			m.Ops.Free()
		}
	}
}

// Slot checks in the kernel's order: flags, the key against max_entries,
// BPF_NOEXIST, the queue size, the key against the possible CPUs; a
// program is refused with the kernel's ENOMEM; qsize 0 empties a slot.
func TestUpdatesCheckKeyQueueSizeAndCPU(t *testing.T) {
	m := newMap(t, 2, 8, 4) // CPUs 2 and 3 are not possible
	for _, c := range []struct {
		key   uint32
		value []byte
		flags uint64
		want  error
	}{
		{0, val(1, 0), 0, nil},
		{1, val(cpumap.MaxQueueSize, 0), uapi.BPF_EXIST, nil},
		{1, val(cpumap.MaxQueueSize+1, 0), 0, uapi.EOVERFLOW},
		{2, val(cpumap.MaxQueueSize+1, 0), 0, uapi.EOVERFLOW},
		{2, val(8, 0), 0, uapi.ENODEV},
		{3, val(0, 0), 0, uapi.ENODEV},
		{4, val(8, 0), 0, uapi.E2BIG},
		{4, val(8, 0), 4, uapi.EINVAL},
		{0, val(8, 0), uapi.BPF_NOEXIST, uapi.EEXIST},
		{0, val(8, 5), 0, uapi.ENOMEM},
		{0, val(0, 5), 0, nil}, // emptied: the fd is not looked at
		{1, val(8, -1), 0, nil},
	} {
		if err := m.Ops.UpdateElem(0, u32(c.key), c.value, c.flags); !errors.Is(err, c.want) || (err == nil) != (c.want == nil) {
			t.Errorf("update %d % x flags %d: %v, want %v", c.key, c.value, c.flags, err, c.want)
		}
	}
	for key, want := range map[uint32][]byte{0: nil, 1: val(8, 0), 2: nil, 9: nil} {
		addr, err := m.Ops.LookupElem(0, u32(key))
		if err != nil || (addr != 0) != (want != nil) {
			t.Errorf("lookup %d: %#x, %v", key, addr, err)
			continue
		}
		if addr != 0 {
			got := make([]byte, 8)
			if err := m.Kernel.Memory().Read(addr, got); err != nil || string(got) != string(want) {
				t.Errorf("lookup %d: % x, %v", key, got, err)
			}
		}
	}
	for key, want := range map[uint32]error{1: nil, 3: nil, 4: uapi.EINVAL} {
		if err := m.Ops.DeleteElem(0, u32(key)); !errors.Is(err, want) || (err == nil) != (want == nil) {
			t.Errorf("delete %d: %v", key, err)
		}
	}
}

// bpf_redirect_map: a set slot redirects, an empty one gives the flags'
// low bits; a cpumap takes no other flag, BPF_F_BROADCAST included.
func TestRedirectVerdicts(t *testing.T) {
	m := newMap(t, 2, 4, 2)
	if err := m.Ops.UpdateElem(0, u32(1), u32(64), 0); err != nil {
		t.Fatal(err)
	}
	r := m.Ops.(maps.Redirector)
	for _, c := range []struct {
		index, flags, want uint64
	}{
		{1, 0, 4}, {1, 3, 4}, {0, 0, 0}, {0, 2, 2}, {0, 8, 0}, {1, 8, 0}, {1, 16, 0}, {5, 3, 3},
		{1 + 1<<32, 0, 4}, {1, 4, 0},
	} {
		if got := r.Redirect(c.index, c.flags); got != c.want {
			t.Errorf("redirect %#x flags %#x: %d, want %d", c.index, c.flags, got, c.want)
		}
	}
}

// BenchmarkRedirect is bpf_redirect_map's lookup in a cpumap, for a set
// slot.
func BenchmarkRedirect(b *testing.B) {
	m := newMap(b, 4, 4, 4)
	for i := range uint32(4) {
		if err := m.Ops.UpdateElem(0, u32(i), u32(64), 0); err != nil {
			b.Fatal(err)
		}
	}
	r := m.Ops.(maps.Redirector)
	for i := 0; b.Loop(); i++ {
		if r.Redirect(uint64(i&3), 0) != 4 {
			b.Fatal("no redirect")
		}
	}
}
