package arraymap_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/bpfsim/bpfsim/arraymap"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/mapstest"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

var registry = func() *maps.Registry {
	r := &maps.Registry{}
	for _, t := range []*maps.Type{arraymap.Array, arraymap.PercpuArray} {
		if err := r.Register(t); err != nil {
			panic(err)
		}
	}
	return r
}()

func newArray(t *testing.T, k *mapstest.Kernel, attr maps.Attr) *maps.Map {
	t.Helper()
	m, err := registry.Create(k, attr, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Ops.Free)
	return m
}

func key(i uint32) []byte { return binary.LittleEndian.AppendUint32(nil, i) }

func TestAllocCheckReturnsTheKernelsErrnos(t *testing.T) {
	const (
		array  = uapi.MapTypeArray
		percpu = uapi.MapTypePercpuArray
	)
	for _, c := range []struct {
		name string
		attr maps.Attr
		want error
	}{
		{"plain", maps.Attr{Type: array, KeySize: 4, ValueSize: 4, MaxEntries: 1}, nil},
		{"inner map", maps.Attr{Type: array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_INNER_MAP}, nil},
		{"access flags", maps.Attr{Type: array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_RDONLY_PROG}, nil},
		{"max_entries 0", maps.Attr{Type: array, KeySize: 4, ValueSize: 4}, uapi.EINVAL},
		{"key of 8 bytes", maps.Attr{Type: array, KeySize: 8, ValueSize: 4, MaxEntries: 1}, uapi.EINVAL},
		{"value of 0 bytes", maps.Attr{Type: array, KeySize: 4, MaxEntries: 1}, uapi.EINVAL},
		{"no prealloc", maps.Attr{Type: array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_NO_PREALLOC}, uapi.EINVAL},
		{"preserve elems", maps.Attr{Type: array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_PRESERVE_ELEMS}, uapi.EINVAL},
		{"mmapable", maps.Attr{Type: array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_MMAPABLE}, nil},
		{"per-CPU mmapable", maps.Attr{Type: percpu, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_MMAPABLE}, uapi.EINVAL},
		{"per-CPU on a NUMA node", maps.Attr{Type: percpu, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_NUMA_NODE}, uapi.EINVAL},
		{"per-CPU inner map", maps.Attr{Type: percpu, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_INNER_MAP}, uapi.EINVAL},
		{"per-CPU value past PCPU_MIN_UNIT_SIZE", maps.Attr{Type: percpu, KeySize: 4, ValueSize: mem.PercpuMaxAlloc + 1, MaxEntries: 1}, uapi.E2BIG},
		{"value past INT_MAX", maps.Attr{Type: array, KeySize: 4, ValueSize: 1 << 31, MaxEntries: 1}, uapi.E2BIG},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := arraymap.Array.AllocCheck(&c.attr)
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("got %v, want %v", err, c.want)
			}
		})
	}
}

// A lookup returns map + ValueOffset + index*round_up(value_size, 8): the
// address an inlined lookup computes.
func TestValuesLiveAtTheInlinedLookupsAddress(t *testing.T) {
	k := mapstest.NewKernel(2)
	m := newArray(t, k, maps.Attr{Type: uapi.MapTypeArray, KeySize: 4, ValueSize: 12, MaxEntries: 3})
	for i := uint32(0); i < 3; i++ {
		addr, err := m.Ops.LookupElem(0, key(i))
		if want := m.Addr + arraymap.ValueOffset + uint64(i)*16; err != nil || addr != want {
			t.Errorf("index %d at %#x, %v; want %#x", i, addr, err, want)
		}
	}
	if addr, err := m.Ops.LookupElem(0, key(3)); err != nil || addr != 0 {
		t.Errorf("index past the end: %#x, %v", addr, err)
	}
	if err := m.Ops.UpdateElem(0, key(1), []byte("hello world!"), uapi.BPF_EXIST); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 12)
	if err := k.Memory().Read(m.Addr+arraymap.ValueOffset+16, got); err != nil || string(got) != "hello world!" {
		t.Errorf("memory holds %q, %v", got, err)
	}
}

func TestUpdateDeleteAndNextKeyRules(t *testing.T) {
	k := mapstest.NewKernel(1)
	m := newArray(t, k, maps.Attr{Type: uapi.MapTypeArray, KeySize: 4, ValueSize: 4, MaxEntries: 2})
	v := []byte{1, 2, 3, 4}
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"BPF_ANY", m.Ops.UpdateElem(0, key(0), v, uapi.BPF_ANY), nil},
		{"BPF_EXIST", m.Ops.UpdateElem(0, key(0), v, uapi.BPF_EXIST), nil},
		{"BPF_NOEXIST", m.Ops.UpdateElem(0, key(0), v, uapi.BPF_NOEXIST), uapi.EEXIST},
		{"index past the end", m.Ops.UpdateElem(0, key(2), v, uapi.BPF_ANY), uapi.E2BIG},
		{"unknown flags", m.Ops.UpdateElem(0, key(0), v, 3), uapi.EINVAL},
		{"BPF_F_LOCK without a lock", m.Ops.UpdateElem(0, key(0), v, uapi.BPF_F_LOCK), uapi.EINVAL},
		{"delete", m.Ops.DeleteElem(0, key(0)), uapi.EINVAL},
	} {
		if c.want == nil && c.err != nil || c.want != nil && !errors.Is(c.err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.err, c.want)
		}
	}
	next := make([]byte, 4)
	for _, c := range []struct {
		from []byte
		want uint32
		err  error
	}{
		{nil, 0, nil},
		{key(0), 1, nil},
		{key(1), 0, uapi.ENOENT},
		{key(7), 0, nil}, // an unknown key restarts at the first
	} {
		err := m.Ops.GetNextKey(c.from, next)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("next of %v: %v, want %v", c.from, err, c.err)
			}
			continue
		}
		if err != nil || binary.LittleEndian.Uint32(next) != c.want {
			t.Errorf("next of %v: %d, %v; want %d", c.from, binary.LittleEndian.Uint32(next), err, c.want)
		}
	}
}

func TestPercpuArrayKeepsOneCopyPerCPU(t *testing.T) {
	k := mapstest.NewKernel(3)
	m := newArray(t, k, maps.Attr{Type: uapi.MapTypePercpuArray, KeySize: 4, ValueSize: 4, MaxEntries: 2})
	for cpu := 0; cpu < 3; cpu++ {
		if err := m.Ops.UpdateElem(cpu, key(1), []byte{byte(cpu + 1), 0, 0, 0}, uapi.BPF_ANY); err != nil {
			t.Fatal(err)
		}
	}
	p := m.Ops.(maps.PercpuValues)
	all := make([]byte, 24)
	if err := p.LookupPercpu(key(1), all); err != nil {
		t.Fatal(err)
	}
	for cpu := 0; cpu < 3; cpu++ {
		if all[cpu*8] != byte(cpu+1) {
			t.Errorf("CPU %d's copy: % x", cpu, all[cpu*8:cpu*8+8])
		}
	}
	// Each CPU's copy is one per-CPU offset apart.
	a0, _ := m.Ops.LookupElem(0, key(1))
	a2, _ := p.LookupPercpuElem(key(1), 2)
	if a2-a0 != k.Percpu().Offset(2) {
		t.Errorf("CPU 2's copy is %#x after CPU 0's, want the per-CPU offset %#x", a2-a0, k.Percpu().Offset(2))
	}
	if a, _ := p.LookupPercpuElem(key(1), 3); a != 0 {
		t.Error("a CPU that does not exist has a copy")
	}
	if err := p.UpdatePercpu(key(1), make([]byte, 24), uapi.BPF_NOEXIST); !errors.Is(err, uapi.EEXIST) {
		t.Errorf("NOEXIST: %v", err)
	}
	if dv, ok := m.Ops.(maps.DirectValuer); ok {
		if _, err := dv.DirectValueAddr(0); !errors.Is(err, maps.ErrNoDirectValue) {
			t.Errorf("direct value access to a per-CPU array: %v", err)
		}
	}
}

func TestDirectValueAccessNeedsOneElement(t *testing.T) {
	k := mapstest.NewKernel(1)
	one := newArray(t, k, maps.Attr{Type: uapi.MapTypeArray, KeySize: 4, ValueSize: 16, MaxEntries: 1})
	dv := one.Ops.(maps.DirectValuer)
	if addr, err := dv.DirectValueAddr(8); err != nil || addr != one.Addr+arraymap.ValueOffset+8 {
		t.Errorf("got %#x, %v", addr, err)
	}
	if _, err := dv.DirectValueAddr(16); !errors.Is(err, uapi.EINVAL) {
		t.Errorf("offset past the value: %v", err)
	}
	two := newArray(t, k, maps.Attr{Type: uapi.MapTypeArray, KeySize: 4, ValueSize: 16, MaxEntries: 2})
	if _, err := two.Ops.(maps.DirectValuer).DirectValueAddr(0); !errors.Is(err, uapi.ENOTSUPP) {
		t.Errorf("two elements: %v", err)
	}
}

func TestProgramAccessFlagsAreEnforcedByPagePermissions(t *testing.T) {
	k := mapstest.NewKernel(1)
	ro := newArray(t, k, maps.Attr{Type: uapi.MapTypeArray, KeySize: 4, ValueSize: 8, MaxEntries: 1, Flags: uapi.BPF_F_RDONLY_PROG})
	wo := newArray(t, k, maps.Attr{Type: uapi.MapTypeArray, KeySize: 4, ValueSize: 8, MaxEntries: 1, Flags: uapi.BPF_F_WRONLY_PROG})
	tlb := k.Memory().NewTLB()
	roAddr, _ := ro.Ops.LookupElem(0, key(0))
	woAddr, _ := wo.Ops.LookupElem(0, key(0))
	if err := ro.Ops.UpdateElem(0, key(0), []byte{9, 0, 0, 0, 0, 0, 0, 0}, 0); err != nil {
		t.Fatalf("the kernel's own update of a read-only-for-programs array: %v", err)
	}
	if v, f := tlb.Load64(roAddr); f != nil || v != 9 {
		t.Errorf("program load from RDONLY_PROG: %d, %v", v, f)
	}
	if f := tlb.Store64(roAddr, 1); f == nil {
		t.Error("program store into RDONLY_PROG succeeded")
	}
	if f := tlb.Store64(woAddr, 1); f != nil {
		t.Errorf("program store into WRONLY_PROG: %v", f)
	}
	if _, f := tlb.Load64(woAddr); f == nil {
		t.Error("program load from WRONLY_PROG succeeded")
	}
}

func TestFreeReleasesTheMemory(t *testing.T) {
	k := mapstest.NewKernel(2)
	for _, typ := range []uapi.MapType{uapi.MapTypeArray, uapi.MapTypePercpuArray} {
		m, err := registry.Create(k, maps.Attr{Type: typ, KeySize: 4, ValueSize: 8, MaxEntries: 100}, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		m.Ops.Free()
	}
	for _, a := range k.Memory().Areas() {
		if a.Name == "bpf_array" {
			t.Errorf("left behind: %+v", a)
		}
	}
}
