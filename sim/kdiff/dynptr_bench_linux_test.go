package kdiff

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
)

// BenchmarkDynptrSlice runs slice_bench of testdata/dynptr_kfunc.bpf.o
// (bpf_dynptr_from_xdp, then 16 bpf_dynptr_slice calls of 2 bytes each)
// and reports what a run costs per slice, in bpfsim and in this machine's
// kernel in the same run. Seed 003 measured 76.2 M calls/s (13.1 ns a
// call) for this kfunc on its machine.
func BenchmarkDynptrSlice(b *testing.B) {
	const obj, prog, calls = "../testdata/dynptr_kfunc.bpf.o", "slice_bench", 16
	pkt := make([]byte, 64)
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		b.Run("bpfsim-"+rt.String(), func(b *testing.B) {
			k, err := sim.NewKernel(&sim.Options{Runtime: rt})
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
			reportSimRepeat(b, c.Programs[prog], pkt, calls, "ns/slice")
		})
	}
	b.Run("kernel", func(b *testing.B) {
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
		reportKernelRepeat(b, c.Programs[prog], pkt, calls, "ns/slice")
	})
}
