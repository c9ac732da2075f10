package sim_test

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/internal/anchors"
)

// BenchmarkRuntimes runs the ANCHORS loop (10,000 iterations, verified,
// as a syscall program) interpreted and JITed on the A64 emulator, and
// reports ns per BPF instruction, and for the JIT also ns per A64
// instruction retired and the A64 instructions per second; the ratio of
// the two ns/insn figures is how much slower emulated JIT code runs than
// the interpreter.
func BenchmarkRuntimes(b *testing.B) {
	const iters = 10000
	bpfInsns := float64(anchors.ALULoopInsns(iters))
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		b.Run(fmt.Sprintf("loop/%v", rt), func(b *testing.B) {
			k, err := sim.NewKernel(&sim.Options{Runtime: rt})
			if err != nil {
				b.Fatal(err)
			}
			p, err := k.LoadInsnsWithOptions(ebpf.Syscall, "loop", anchors.ALULoop(iters), sim.ProgramOptions{Flags: 1 << 4 /* BPF_F_SLEEPABLE */})
			if err != nil {
				b.Fatal(err)
			}
			if p.Runtime() != rt && rt != sim.RuntimeDefault {
				b.Fatalf("runtime %v, want %v (%v)", p.Runtime(), rt, p.JITError())
			}
			var retired uint64
			for b.Loop() {
				res, err := p.Test(&sim.RunOptions{Context: make([]byte, 8)})
				if err != nil {
					b.Fatal(err)
				}
				retired += res.Insns
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/(bpfInsns*float64(b.N)), "ns/bpf-insn")
			if rt == sim.RuntimeJIT {
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(retired), "ns/a64-insn")
				b.ReportMetric(float64(retired)/b.Elapsed().Seconds()/1e6, "M-a64-insn/s")
			}
		})
	}
}
