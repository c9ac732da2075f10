package kdiff

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
)

// BenchmarkDynptrSlice runs slice_bench of testdata/dynptr_kfunc.bpf.o
// (bpf_dynptr_from_xdp, then 16 bpf_dynptr_slice calls of 2 bytes each)
// and reports what a run costs per slice, in bpfsim (the slices inlined
// as seed 003 proposes, and called as the kernel calls them) and in this
// machine's kernel in the same run. Seed 003 measured 76.2 M calls/s
// (13.1 ns a call) for this kfunc on its machine, 101.2 M/s inlined and
// 116.9 M/s inlined with its branches pruned (1.54x).
func BenchmarkDynptrSlice(b *testing.B) {
	const obj, prog, calls = "../testdata/dynptr_kfunc.bpf.o", "slice_bench", 16
	pkt := make([]byte, 64)
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		for _, inline := range []bool{false, true} {
			name := "bpfsim-" + rt.String() + "-called"
			if inline {
				name = "bpfsim-" + rt.String() + "-inlined"
			}
			b.Run(name, func(b *testing.B) { benchSimSlice(b, rt, inline, obj, prog, pkt, calls) })
		}
	}
	b.Run("kernel", func(b *testing.B) { benchKernelProgram(b, obj, prog, pkt, calls, "ns/slice") })
}

// benchKernelProgram runs program prog of the object at obj in this
// machine's kernel, repeated, and reports the time of a run divided by
// calls in unit.
func benchKernelProgram(b *testing.B, obj, prog string, pkt []byte, calls float64, unit string) {
	if _, err := OpenKernel(); err != nil {
		b.Skipf("skipped: this machine cannot load BPF programs: %v", err)
	}
	spec, err := ebpf.LoadCollectionSpec(obj)
	if err != nil {
		b.Fatal(err)
	}
	for n := range spec.Programs {
		if n != prog {
			delete(spec.Programs, n)
		}
	}
	c, err := ebpf.NewCollection(spec)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	reportKernelRepeat(b, c.Programs[prog], pkt, calls, unit)
}

// benchSimSlice is BenchmarkDynptrSlice in bpfsim: with the slices inlined
// (seed 003) or called as the kernel calls them.
func benchSimSlice(b *testing.B, rt sim.Runtime, inline bool, obj, prog string, pkt []byte, calls float64) {
	benchSimProgram(b, &sim.Options{Runtime: rt, InlineKfuncs: inline}, obj, prog, pkt, calls, "ns/slice")
}

// benchSimProgram is benchKernelProgram in a bpfsim kernel of opts.
func benchSimProgram(b *testing.B, opts *sim.Options, obj, prog string, pkt []byte, calls float64, unit string) {
	k, err := sim.NewKernel(opts)
	if err != nil {
		b.Fatal(err)
	}
	spec, err := ebpf.LoadCollectionSpec(obj)
	if err != nil {
		b.Fatal(err)
	}
	c, err := k.NewCollectionWithOptions(spec, sim.CollectionOptions{Programs: []string{prog}})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	reportSimRepeat(b, c.Programs[prog], pkt, calls, unit)
}
