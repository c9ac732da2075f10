package interp

import (
	"math/rand/v2"
	"testing"

	"github.com/bpfsim/bpfsim/sim/insn"
)

// idiomKinds are the ops of idioms.go, counted to prove the test below
// exercises each.
var idiomKinds = []opKind{opRotR32, opRotL32, opRotR64, opRotL64, opXorSub32, opSubXor32,
	opArrayLookup, opPercpuArrayLookup, opIncMem64, opCallElem}

// idiomGen writes random programs made of the idioms' sequences, some
// of them spoiled (a register shared that must differ, another width, a
// changed offset) so that they must not be recognised, among jumps that
// land inside them.
type idiomGen struct {
	rng *rand.Rand
	p   []insn.Insn
}

// jump may write a jump over up to skip instructions, onto the second to
// last of a sequence written next; the generators call it once their
// set-up is done, and bound skip so that every landing stays in memory.
func (g *idiomGen) jump(skip int) {
	if g.rng.IntN(3) == 0 {
		g.emit(insn.Insn{Code: insn.JMP | insn.JGT | insn.K, Dst: g.reg(), Off: int16(1 + g.rng.IntN(skip)), Imm: g.rng.Int32()})
	}
}

func (g *idiomGen) reg() uint8 { return uint8(g.rng.IntN(6)) }

// spoil is true now and then: the sequence being written should not match.
func (g *idiomGen) spoil() bool { return g.rng.IntN(6) == 0 }

func (g *idiomGen) emit(in ...insn.Insn) { g.p = append(g.p, in...) }

func alu(class, op uint8, dst, src uint8) insn.Insn {
	return insn.Insn{Code: class | op | insn.X, Dst: dst, Src: src}
}

func aluK(class, op uint8, dst uint8, imm int32) insn.Insn {
	return insn.Insn{Code: class | op | insn.K, Dst: dst, Imm: imm}
}

func (g *idiomGen) rotate() {
	class, width := uint8(insn.ALU), int32(32)
	if g.rng.IntN(2) == 0 {
		class, width = insn.ALU64, 64
	}
	a, b, x := g.reg(), g.reg(), g.reg()
	sh1, sh2 := uint8(insn.RSH), uint8(insn.LSH)
	if g.rng.IntN(2) == 0 {
		sh1, sh2 = sh2, sh1
	}
	k := 1 + g.rng.Int32N(width-1)
	orClass := class
	if g.spoil() {
		orClass ^= insn.ALU ^ insn.ALU64
	}
	k1 := width - k
	if g.rng.IntN(4) == 0 {
		k1 = g.rng.Int32N(width) // not a rotation, still the idiom
	}
	g.jump(4)
	g.emit(alu(class, insn.MOV, a, x), aluK(class, sh1, a, k1),
		alu(class, insn.MOV, b, x), aluK(class, sh2, b, k), alu(orClass, insn.OR, b, a))
}

func (g *idiomGen) twoOps() {
	d := g.reg()
	first, second := uint8(insn.XOR), uint8(insn.SUB)
	if g.rng.IntN(2) == 0 {
		first, second = second, first
	}
	g.jump(2)
	if g.rng.IntN(2) == 0 {
		g.emit(alu(insn.ALU, insn.MOV, d, g.reg()))
	}
	s1, s2 := g.reg(), g.reg()
	if s2 == d && !g.spoil() {
		s2 = (d + 1) % 6
	}
	g.emit(alu(insn.ALU, first, d, s1), alu(insn.ALU, second, d, s2))
}

// tableOff is where the array lookups' array starts below r10: in
// another page than the index, so that either may miss in the TLB.
const tableOff = -4096 - 128

// arrayLookup writes an inlined array lookup of an array laid out on the
// stack: r1 its base, r2 the address of an index that may be out of
// bounds.
func (g *idiomGen) arrayLookup() {
	bound := 1 + g.rng.Int32N(8)
	off := 8 * g.rng.Int32N(8)
	g.emit(
		insn.Insn{Code: insn.ST | insn.MEM | insn.W, Dst: insn.R10, Off: -8, Imm: g.rng.Int32N(bound + 2)},
		alu(insn.ALU64, insn.MOV, 1, insn.R10), aluK(insn.ALU64, insn.ADD, 1, tableOff),
		alu(insn.ALU64, insn.MOV, 2, insn.R10), aluK(insn.ALU64, insn.ADD, 2, -8),
	)
	// Past the bounds check, r0 must be an index in bounds.
	g.jump(2)
	g.emit(
		aluK(insn.ALU64, insn.ADD, 1, off),
		insn.Insn{Code: insn.LDX | insn.MEM | insn.W, Dst: 0, Src: 2},
	)
	jge := len(g.p)
	g.emit(insn.Insn{Code: insn.JMP | insn.JGE | insn.K, Dst: 0, Imm: bound})
	if g.rng.IntN(2) == 0 {
		g.emit(aluK(insn.ALU64, insn.LSH, 0, 3), alu(insn.ALU64, insn.ADD, 0, 1),
			insn.Insn{Code: insn.LDX | insn.MEM | insn.DW, Dst: 0, Src: 0},
			insn.Insn{Code: insn.ALU64 | insn.MOV | insn.X, Dst: 0, Src: 0, Off: -1})
	} else {
		scale := aluK(insn.ALU64, insn.LSH, 0, g.rng.Int32N(4))
		if g.rng.IntN(2) == 0 {
			scale = aluK(insn.ALU64, insn.MUL, 0, 1+g.rng.Int32N(24))
		}
		g.emit(scale, alu(insn.ALU64, insn.ADD, 0, 1))
	}
	g.emit(insn.Insn{Code: insn.JMP | insn.JA, Off: 1}, aluK(insn.ALU64, insn.MOV, 0, 0))
	g.p[jge].Off = int16(len(g.p) - 1 - (jge + 1))
	if g.spoil() {
		g.p[jge].Off-- // lands on the goto: not the sequence
	}
}

func (g *idiomGen) incMem() {
	d := g.reg()
	stored := d
	if g.spoil() {
		stored = g.reg() // another register stored: not the idiom
	}
	off := -8 * (1 + int16(g.rng.IntN(40)))
	stOff := off
	if g.spoil() {
		stOff -= 8
	}
	g.jump(2)
	g.emit(insn.Insn{Code: insn.LDX | insn.MEM | insn.DW, Dst: d, Src: insn.R10, Off: off},
		aluK(insn.ALU64, insn.ADD, d, g.rng.Int32()),
		insn.Insn{Code: insn.STX | insn.MEM | insn.DW, Dst: insn.R10, Src: stored, Off: stOff})
}

// callElem calls helper 1, which returns 0 when r1 is even.
func (g *idiomGen) callElem() {
	g.jump(2)
	g.emit(insn.Insn{Code: insn.JMP | insn.CALL, Imm: 1},
		insn.Insn{Code: insn.JMP | insn.JEQ | insn.K, Dst: 0, Off: 1},
		aluK(insn.ALU64, insn.ADD, 0, g.rng.Int32N(100)))
}

// TestIdiomsComputeWhatTheirInstructionsDo runs random programs made of
// the idioms' sequences with the idioms on and off, the idioms' memory
// first out of the TLB and then in it: r0 (every register and some
// stack folded into it) and the count of executed instructions must be
// the same.
func TestIdiomsComputeWhatTheirInstructionsDo(t *testing.T) {
	m := newFuseMachine(t)
	m.PercpuOffset = 0x1234_0000
	helpers := func(int32) (*Helper, error) {
		return &Helper{Fn: func(_ *Machine, r1, r2, _, _, _ uint64) (uint64, error) {
			if r1&1 == 0 {
				return 0, nil
			}
			return r1 ^ r2<<1, nil
		}}, nil
	}
	run := func(p []insn.Insn, fuse, cold bool) (r0, executed uint64, prog *Program) {
		t.Helper()
		useFusion = fuse
		defer func() { useFusion = true }()
		prog, err := Compile(p, helpers)
		if err != nil {
			t.Fatal(err)
		}
		if cold {
			m.TLB.Flush()
		}
		r0, err = m.Run(prog, 0, 0)
		if err != nil {
			for i, in := range p {
				t.Logf("%3d: %v", i, in)
			}
			t.Fatal(err)
		}
		return r0, m.Executed, prog
	}
	rng := rand.New(rand.NewPCG(3, 4))
	seen := map[opKind]int{}
	for n := 0; n < 3000; n++ {
		g := &idiomGen{rng: rng}
		for r := uint8(0); r < 10; r++ {
			v := rng.Uint64()
			g.emit(insn.Insn{Code: insn.LD | insn.IMM | insn.DW, Dst: r, Imm: int32(v)}, insn.Insn{Imm: int32(v >> 32)})
		}
		// Stack words the increments and the array lookups read.
		for off := int16(-8); off >= -320; off -= 8 {
			g.emit(insn.Insn{Code: insn.STX | insn.MEM | insn.DW, Dst: insn.R10, Src: uint8(-off/8) % 10, Off: off})
		}
		for off := int16(tableOff); off < tableOff+128; off += 8 {
			g.emit(insn.Insn{Code: insn.STX | insn.MEM | insn.DW, Dst: insn.R10, Src: uint8(-off/8) % 10, Off: off})
		}
		for range 2 + rng.IntN(8) {
			switch rng.IntN(5) {
			case 0:
				g.rotate()
			case 1:
				g.twoOps()
			case 2:
				g.arrayLookup()
			case 3:
				g.incMem()
			case 4:
				g.callElem()
			}
		}
		// Enough room for the last jump; then fold r0-r9 and some of
		// the stack into r0.
		g.emit(alu(insn.ALU64, insn.MOV, 0, 0), alu(insn.ALU64, insn.MOV, 0, 0),
			alu(insn.ALU64, insn.MOV, 0, 0), alu(insn.ALU64, insn.MOV, 0, 0))
		// Multiplying by an odd number loses nothing of what came before.
		for r := uint8(1); r < 10; r++ {
			g.emit(aluK(insn.ALU64, insn.MUL, 0, 0x3b9aca07), alu(insn.ALU64, insn.XOR, 0, r))
		}
		for off := int16(-8); off >= -320; off -= 8 {
			g.emit(insn.Insn{Code: insn.LDX | insn.MEM | insn.DW, Dst: 1, Src: insn.R10, Off: off},
				aluK(insn.ALU64, insn.MUL, 0, 0x3b9aca07), alu(insn.ALU64, insn.ADD, 0, 1))
		}
		g.emit(insn.Insn{Code: insn.JMP | insn.EXIT})

		want, wantN, _ := run(g.p, false, false)
		for _, cold := range []bool{true, false} {
			got, gotN, prog := run(g.p, true, cold)
			if got != want || gotN != wantN {
				for i, in := range g.p {
					t.Logf("%3d: %v", i, in)
				}
				t.Fatalf("program %d (TLB cold: %v): with idioms r0=%#x after %d instructions, without r0=%#x after %d",
					n, cold, got, gotN, want, wantN)
			}
			if !cold {
				for _, o := range prog.ops {
					seen[o.kind]++
				}
			}
		}
	}
	counts := make([]int, len(idiomKinds))
	for i, k := range idiomKinds {
		counts[i] = seen[k]
		if seen[k] < 100 {
			t.Errorf("op kind %d was compiled only %d times: the test does not exercise it", k, seen[k])
		}
	}
	t.Logf("idioms compiled (in idiomKinds order): %v", counts)
}
