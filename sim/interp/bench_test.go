package interp_test

import (
	"testing"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/internal/anchors"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
)

// prime is the `prime` test of the bpf_conformance suite: trial division of
// n by every i below it. For n = 10000019 it runs 100,000,175 instructions,
// a third of them divisions.
func prime(n int32) []insn.Insn {
	return []insn.Insn{
		movImm(1, n),
		movImm(0, 1),
		movImm(2, 2),
		jmpImm(insn.JGT, 1, 2, 4),
		ja(10),
		alu64Imm(insn.ADD, 2, 1),
		movImm(0, 1),
		jmpReg(insn.JGE, 2, 1, 7),
		alu64Reg(insn.MOV, 3, 1),
		alu64Reg(insn.DIV, 3, 2),
		alu64Reg(insn.MUL, 3, 2),
		alu64Reg(insn.MOV, 4, 1),
		alu64Reg(insn.SUB, 4, 3),
		movImm(0, 0),
		jmpImm(insn.JNE, 4, 0, -10),
		exit(),
	}
}

func newBenchMachine(tb testing.TB) *interp.Machine {
	tb.Helper()
	space := mem.New()
	base, err := space.Vmalloc(interp.StackSize, mem.PermRW, "bpf_stack")
	if err != nil {
		tb.Fatal(err)
	}
	stack, err := space.Bytes(base, interp.StackSize)
	if err != nil {
		tb.Fatal(err)
	}
	m, err := interp.NewMachine(0, space.NewTLB(), base, stack)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func noHelpers(id int32) (*interp.Helper, error) { return nil, nil }

func benchProgram(b *testing.B, insns []insn.Insn, want uint64) {
	p, err := interp.Compile(insns, noHelpers)
	if err != nil {
		b.Fatal(err)
	}
	m := newBenchMachine(b)
	m.MaxInsns = 1 << 40
	b.ResetTimer()
	var executed uint64
	for i := 0; i < b.N; i++ {
		r0, err := m.Run(p, 0, 0)
		if err != nil || r0 != want {
			b.Fatalf("r0 = %#x, %v; want %#x", r0, err, want)
		}
		executed += m.Executed
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(executed), "ns/insn")
	b.ReportMetric(float64(executed)/b.Elapsed().Seconds()/1e6, "Minsn/s")
}

// BenchmarkALULoop reports ns per executed BPF instruction on the anchor
// loop (../shared/ANCHORS.md: uBPF's C interpreter, 5.3 ns/insn on this
// machine kind; the target is half that).
func BenchmarkALULoop(b *testing.B) {
	benchProgram(b, anchors.ALULoop(1_000_000), anchors.ALULoopResult)
}

// BenchmarkPrime is the division-heavy anchor: `prime` on 10000019
// (uBPF's interpreter: 228 M insn/s; the target is 1.5x that).
func BenchmarkPrime(b *testing.B) {
	benchProgram(b, prime(10000019), 1)
}
