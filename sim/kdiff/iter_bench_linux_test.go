package kdiff

import (
	"encoding/binary"
	"testing"

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
			benchSimProgram(b, &sim.Options{Runtime: rt}, obj, prog, pkt, values, "ns/value")
		})
	}
	b.Run("kernel", func(b *testing.B) { benchKernelProgram(b, obj, prog, pkt, values, "ns/value") })
}
