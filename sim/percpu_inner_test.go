package sim_test

import (
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
)

// The kernel's lookup into a per-CPU inner array is inlined with the
// template's max_entries (percpu_array_map_gen_lookup), although inner
// per-CPU arrays may have another size (bpf_map_meta_equal): in a larger
// inner array, keys past the template's max_entries find nothing. bpfsim
// bounds the key by the template first, then calls the real array's
// lookup, which also bounds it by the real size (where the kernel would
// read past a smaller array). The map-in-map corpus found bpfsim finding
// keys past the template's bound.
func TestPercpuInnerArrayLookupsAreBoundedByTheTemplate(t *testing.T) {
	k := newKernel(t, &sim.Options{CPUs: 2})
	pcpu := func(n uint32) *ebpf.MapSpec {
		return &ebpf.MapSpec{Name: "pcpu", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: n}
	}
	outer := newMapT(t, k, outerSpec("outer", ebpf.ArrayOfMaps, 2, pcpu(2)))
	large, small := newMapT(t, k, pcpu(4)), newMapT(t, k, pcpu(1))
	for i := uint32(0); i < 4; i++ {
		if err := large.Put(i, []uint64{uint64(10 * (i + 1)), uint64(10*(i+1) + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := small.Put(uint32(0), []uint64{5, 6}); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "a larger per-CPU inner array", outer.Put(uint32(0), large), 0)
	wantErrno(t, "a smaller per-CPU inner array", outer.Put(uint32(1), small), 0)
	p := loadSyscall(t, k, innerLookupProgram(t, outer, asm.DWord))
	if x := p.Xlated(); !strings.Contains(x, "if r0 >= 0x2 goto pc+2") || !strings.Contains(x, "call percpu_array_map_lookup_elem#") {
		t.Errorf("the per-CPU inner lookup is not the template's bound and a call:\n%s", x)
	}
	for _, c := range []struct {
		cpu          int
		outer, inner uint32
		want         int64
	}{
		{0, 0, 0, 10}, {1, 0, 1, 21},
		{0, 0, 2, -1}, {1, 0, 3, -1}, // in the larger array, past the template's bound
		{0, 1, 0, 5}, {1, 1, 0, 6},
		{0, 1, 1, -1}, // within the template's bound, past the smaller array
	} {
		if got := runKeys(t, p, c.cpu, c.outer, c.inner); got != c.want {
			t.Errorf("CPU %d, outer[%d][%d] = %d, want %d", c.cpu, c.outer, c.inner, got, c.want)
		}
	}
}
