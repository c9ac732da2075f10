package sim_test

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
)

// anchorsLoop is the 7-instruction loop of ANCHORS.md (add, xor, stack
// store, stack load, add, sub, jne; 7n+4 instructions).
func anchorsLoop(n int32) []insn.Insn {
	return []insn.Insn{
		{Code: insn.ALU64 | insn.MOV | insn.K, Dst: 0, Imm: 0},
		{Code: insn.ALU64 | insn.MOV | insn.K, Dst: 1, Imm: n},
		{Code: insn.ALU64 | insn.MOV | insn.K, Dst: 2, Imm: 0x5a5a},
		{Code: insn.ALU64 | insn.ADD | insn.X, Dst: 0, Src: 1},
		{Code: insn.ALU64 | insn.XOR | insn.X, Dst: 0, Src: 2},
		{Code: insn.STX | insn.MEM | insn.DW, Dst: 10, Src: 0, Off: -8},
		{Code: insn.LDX | insn.MEM | insn.DW, Dst: 3, Src: 10, Off: -8},
		{Code: insn.ALU64 | insn.ADD | insn.X, Dst: 0, Src: 3},
		{Code: insn.ALU64 | insn.SUB | insn.K, Dst: 1, Imm: 1},
		{Code: insn.JMP | insn.JNE | insn.K, Dst: 1, Imm: 0, Off: -7},
		{Code: insn.JMP | insn.EXIT},
	}
}

// BenchmarkRuntimes runs the ANCHORS loop (10,000 iterations, verified,
// as a syscall program) interpreted and JITed on the A64 emulator, and
// reports ns per BPF instruction, and for the JIT also ns per A64
// instruction retired and the A64 instructions per second; the ratio of
// the two ns/insn figures is how much slower emulated JIT code runs than
// the interpreter.
func BenchmarkRuntimes(b *testing.B) {
	const iters = 10000
	bpfInsns := float64(7*iters + 4)
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		b.Run(fmt.Sprintf("loop/%v", rt), func(b *testing.B) {
			k, err := sim.NewKernel(&sim.Options{Runtime: rt})
			if err != nil {
				b.Fatal(err)
			}
			p, err := k.LoadInsnsWithOptions(ebpf.Syscall, "loop", anchorsLoop(iters), sim.ProgramOptions{Flags: 1 << 4 /* BPF_F_SLEEPABLE */})
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
