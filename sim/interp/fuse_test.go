package interp

import (
	"math/rand/v2"
	"testing"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/mem"
)

func newFuseMachine(t *testing.T) *Machine {
	t.Helper()
	space := mem.New()
	base, err := space.Vmalloc(StackSize, mem.PermRW, "bpf_stack")
	if err != nil {
		t.Fatal(err)
	}
	stack, err := space.Bytes(base, StackSize)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMachine(0, space.NewTLB(), base, stack)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// runFused compiles p with fusion on or off and runs it.
func runFused(t *testing.T, m *Machine, p []insn.Insn, fuse bool) (r0, executed uint64, fused int) {
	t.Helper()
	useFusion = fuse
	defer func() { useFusion = true }()
	prog, err := Compile(p, func(int32) (*Helper, error) { return &Helper{}, nil })
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range prog.ops {
		if threeOperandBase[o.kind] != opInvalid {
			fused++
		}
	}
	r0, err = m.Run(prog, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return r0, m.Executed, fused
}

// threeOperandBase is the inverse of the fusion tables: non-zero for a
// fused kind.
var threeOperandBase = func() (t [numOps]opKind) {
	for k := range numOps {
		if f := threeOperand64[k]; f != opInvalid {
			t[f] = k
		}
		if f := threeOperand32[k]; f != opInvalid {
			t[f] = k
		}
	}
	return
}()

// TestFusedMovesComputeWhatThePairsDo runs random programs made of
// register moves and ALU operations (with jumps that land on the second
// op of a pair) with fusion on and off: every register, folded into r0,
// and the count of executed instructions must be the same.
func TestFusedMovesComputeWhatThePairsDo(t *testing.T) {
	m := newFuseMachine(t)
	rng := rand.New(rand.NewPCG(1, 2))
	ops := []uint8{insn.ADD, insn.SUB, insn.MUL, insn.OR, insn.AND, insn.LSH, insn.RSH, insn.ARSH, insn.XOR, insn.DIV, insn.NEG}
	reg := func() uint8 { return uint8(rng.IntN(5)) }
	totalFused := 0
	for n := 0; n < 3000; n++ {
		var p []insn.Insn
		for r := uint8(0); r < 5; r++ {
			v := rng.Uint64()
			p = append(p, insn.Insn{Code: insn.LD | insn.IMM | insn.DW, Dst: r, Imm: int32(v)}, insn.Insn{Imm: int32(v >> 32)})
		}
		body := 4 + rng.IntN(24)
		for i := 0; i < body; i++ {
			class := uint8(insn.ALU64)
			if rng.IntN(2) == 0 {
				class = insn.ALU
			}
			switch rng.IntN(4) {
			case 0: // a move, usually followed by an operation on its register
				mv := insn.Insn{Code: class | insn.MOV | insn.X, Dst: reg(), Src: reg()}
				p = append(p, mv)
				if rng.IntN(4) == 0 {
					continue
				}
				opClass := class
				if rng.IntN(6) == 0 {
					opClass ^= insn.ALU ^ insn.ALU64 // the other width: no fusion
				}
				next := insn.Insn{Code: opClass | ops[rng.IntN(len(ops))], Dst: mv.Dst, Imm: int32(rng.Uint32())}
				if next.Op() == insn.NEG {
					next.Imm = 0
				}
				if rng.IntN(2) == 0 && next.Op() != insn.NEG {
					next.Code |= insn.X
					next.Src = reg()
					if rng.IntN(3) == 0 {
						next.Src = mv.Dst // reads what the move wrote
					}
					next.Imm = 0
				}
				if rng.IntN(8) == 0 {
					next.Dst = reg() // maybe another register: no fusion
				}
				p = append(p, next)
			case 1: // a jump over the next instruction: onto a pair's second op
				p = append(p, insn.Insn{Code: insn.JMP | insn.JGT | insn.K, Dst: reg(), Off: 1, Imm: int32(rng.Uint32())})
			default:
				p = append(p, insn.Insn{Code: class | ops[rng.IntN(len(ops)-2)] | insn.K, Dst: reg(), Imm: int32(rng.Uint32())})
			}
		}
		// The jump's target must exist: pad, then fold r1-r4 into r0.
		p = append(p, insn.Insn{Code: insn.ALU64 | insn.MOV | insn.X, Dst: 5, Src: 0})
		for r := uint8(1); r < 5; r++ {
			p = append(p,
				insn.Insn{Code: insn.ALU64 | insn.LSH | insn.K, Dst: 5, Imm: 7},
				insn.Insn{Code: insn.ALU64 | insn.XOR | insn.X, Dst: 5, Src: r})
		}
		p = append(p, insn.Insn{Code: insn.ALU64 | insn.MOV | insn.X, Dst: 0, Src: 5}, insn.Insn{Code: insn.JMP | insn.EXIT})

		want, wantN, _ := runFused(t, m, p, false)
		got, gotN, fused := runFused(t, m, p, true)
		totalFused += fused
		if got != want || gotN != wantN {
			for i, in := range p {
				t.Logf("%3d: %v", i, in)
			}
			t.Fatalf("program %d: fused r0=%#x after %d instructions, unfused r0=%#x after %d", n, got, gotN, want, wantN)
		}
	}
	if totalFused < 3000 {
		t.Fatalf("only %d pairs were fused: the test does not exercise fusion", totalFused)
	}
	t.Logf("%d fused pairs", totalFused)
}
