package interp_test

import (
	"testing"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
)

// aluLoop is the loop of ../shared/ANCHORS.md: per iteration add, xor,
// stack store, stack load, add, sub, jne; 7N+4 instructions in all.
func aluLoop(n int32) []insn.Insn {
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

// BenchmarkALULoop reports ns per executed BPF instruction on the anchor
// loop (compare: uBPF's C interpreter, 5.3 ns/insn on this machine kind).
func BenchmarkALULoop(b *testing.B) {
	const n = 1_000_000
	p, err := interp.Compile(aluLoop(n), noHelpers)
	if err != nil {
		b.Fatal(err)
	}
	m := newBenchMachine(b)
	b.ResetTimer()
	var insns uint64
	for i := 0; i < b.N; i++ {
		if _, err := m.Run(p, 0, 0); err != nil {
			b.Fatal(err)
		}
		insns += m.Executed
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(insns), "ns/insn")
	b.ReportMetric(float64(insns)/b.Elapsed().Seconds()/1e6, "Minsn/s")
}
