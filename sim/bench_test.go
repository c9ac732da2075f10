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

// BenchmarkLoad loads small programs: structural checks and compilation
// (ANCHORS: the kernel loads ~36,700 2-instruction and ~11,800
// 75-instruction programs per second here, verifier and JIT included).
func BenchmarkLoad(b *testing.B) {
	k := newKernel(b, nil)
	small := &ebpf.ProgramSpec{Type: ebpf.XDP, Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}}
	b.Run("2 insns", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := k.NewProgram(small); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "progs/s")
	})
	var body asm.Instructions
	for i := 0; i < 74; i++ {
		body = append(body, asm.Add.Imm(asm.R0, int32(i)))
	}
	big := &ebpf.ProgramSpec{Type: ebpf.XDP, Instructions: append(asm.Instructions{asm.Mov.Imm(asm.R0, 0)}, append(body, asm.Return())...)}
	b.Run("76 insns", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := k.NewProgram(big); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "progs/s")
	})
}
