package sim_test

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
)

// BenchmarkXDPTestRun is the overhead of one test run of an empty XDP
// program (../shared/ANCHORS.md: 22 ns per run in the kernel's
// BPF_PROG_TEST_RUN with repeat).
func BenchmarkXDPTestRun(b *testing.B) {
	k := newKernel(b, nil)
	p := load(b, k, ebpf.XDP, asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()})
	pkt := make([]byte, 64)
	b.Run("one run per call", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := p.Run(&sim.RunOptions{Data: pkt}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("repeat", func(b *testing.B) {
		if _, err := p.Run(&sim.RunOptions{Data: pkt, Repeat: uint32(b.N)}); err != nil {
			b.Fatal(err)
		}
	})
}
