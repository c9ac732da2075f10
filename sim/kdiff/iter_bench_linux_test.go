package kdiff

import (
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
)

// BenchmarkIterNum runs testdata/iter.bpf.o's range program over a
// bpf_iter_num of 1,024 values (each counted and summed into the packet)
// and reports what one value costs, in bpfsim, interpreted and JITed, and
// in this machine's kernel in the same run.
func BenchmarkIterNum(b *testing.B) {
	const obj, prog, values = "../testdata/iter.bpf.o", "range", 1024
	pkt := make([]byte, 64)
	binary.LittleEndian.PutUint32(pkt[4:], values) // struct cmd's end
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
			reportSimRepeat(b, c.Programs[prog], pkt, values, "ns/value")
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
		reportKernelRepeat(b, c.Programs[prog], pkt, values, "ns/value")
	})
}
