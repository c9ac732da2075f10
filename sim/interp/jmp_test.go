package interp_test

import (
	"fmt"
	"testing"

	"github.com/bpfsim/bpfsim/sim/insn"
)

// jumpCase runs "r1 = a; r2 = b; if r1 op r2 (or imm b) goto +1; r0 = 0;
// exit; r0 = 1; exit" and expects r0 == taken.
type jumpCase struct {
	op    uint8
	is32  bool
	a, b  uint64
	taken bool
}

func (c jumpCase) run(t *testing.T, imm bool) {
	t.Helper()
	var j insn.Insn
	switch {
	case c.is32 && imm:
		j = jmp32Imm(c.op, 1, int32(c.b), 2)
	case c.is32:
		j = jmp32Reg(c.op, 1, 2, 2)
	case imm:
		j = jmpImm(c.op, 1, int32(c.b), 2)
	default:
		j = jmpReg(c.op, 1, 2, 2)
	}
	p := prog(ldImm64(1, c.a), ldImm64(2, c.b), j, movImm(0, 0), exit(), movImm(0, 1), exit())
	want := uint64(0)
	if c.taken {
		want = 1
	}
	if got := mustRun(t, p); got != want {
		t.Errorf("a=%#x b=%#x: taken=%v, want %v", c.a, c.b, got == 1, c.taken)
	}
}

func TestConditionalJumps(t *testing.T) {
	neg1 := allOnes
	cases := map[string][]jumpCase{
		"jeq":  {{op: insn.JEQ, a: 5, b: 5, taken: true}, {op: insn.JEQ, a: 5, b: 6}},
		"jne":  {{op: insn.JNE, a: 5, b: 6, taken: true}, {op: insn.JNE, a: 5, b: 5}},
		"jgt":  {{op: insn.JGT, a: neg1, b: 1, taken: true}, {op: insn.JGT, a: 1, b: 1}},
		"jge":  {{op: insn.JGE, a: 1, b: 1, taken: true}, {op: insn.JGE, a: 0, b: 1}},
		"jlt":  {{op: insn.JLT, a: 1, b: neg1, taken: true}, {op: insn.JLT, a: 1, b: 1}},
		"jle":  {{op: insn.JLE, a: 1, b: 1, taken: true}, {op: insn.JLE, a: 2, b: 1}},
		"jset": {{op: insn.JSET, a: 6, b: 2, taken: true}, {op: insn.JSET, a: 6, b: 1}},
		"jsgt": {{op: insn.JSGT, a: 1, b: neg1, taken: true}, {op: insn.JSGT, a: neg1, b: 1}},
		"jsge": {{op: insn.JSGE, a: neg1, b: neg1, taken: true}, {op: insn.JSGE, a: minInt64, b: neg1}},
		"jslt": {{op: insn.JSLT, a: minInt64, b: 0, taken: true}, {op: insn.JSLT, a: 0, b: minInt64}},
		"jsle": {{op: insn.JSLE, a: neg1, b: neg1, taken: true}, {op: insn.JSLE, a: 1, b: neg1}},
		// JMP32 compares only the low halves.
		"jeq32":  {{op: insn.JEQ, is32: true, a: hiGarbage | 5, b: 5, taken: true}, {op: insn.JEQ, is32: true, a: 5, b: 6}},
		"jne32":  {{op: insn.JNE, is32: true, a: hiGarbage | 5, b: 5}, {op: insn.JNE, is32: true, a: 5, b: 6, taken: true}},
		"jgt32":  {{op: insn.JGT, is32: true, a: 0xffffffff, b: 1, taken: true}, {op: insn.JGT, is32: true, a: hiGarbage, b: 1}},
		"jge32":  {{op: insn.JGE, is32: true, a: hiGarbage | 1, b: 1, taken: true}, {op: insn.JGE, is32: true, a: hiGarbage, b: 1}},
		"jlt32":  {{op: insn.JLT, is32: true, a: hiGarbage, b: 1, taken: true}, {op: insn.JLT, is32: true, a: 2, b: 1}},
		"jle32":  {{op: insn.JLE, is32: true, a: hiGarbage | 1, b: 1, taken: true}, {op: insn.JLE, is32: true, a: 2, b: 1}},
		"jset32": {{op: insn.JSET, is32: true, a: hiGarbage | 2, b: 2, taken: true}, {op: insn.JSET, is32: true, a: hiGarbage, b: hiGarbage}},
		"jsgt32": {{op: insn.JSGT, is32: true, a: 1, b: 0xffffffff, taken: true}, {op: insn.JSGT, is32: true, a: 0xffffffff, b: 1}},
		"jsge32": {{op: insn.JSGE, is32: true, a: 0xffffffff, b: 0xffffffff, taken: true}, {op: insn.JSGE, is32: true, a: minInt32, b: 0xffffffff}},
		"jslt32": {{op: insn.JSLT, is32: true, a: minInt32, b: 0, taken: true}, {op: insn.JSLT, is32: true, a: minInt64, b: 0}},
		"jsle32": {{op: insn.JSLE, is32: true, a: hiGarbage | 0xffffffff, b: 0xffffffff, taken: true}, {op: insn.JSLE, is32: true, a: 1, b: 0xffffffff}},
	}
	for name, cs := range cases {
		for i, c := range cs {
			for _, imm := range []bool{false, true} {
				if imm && !c.is32 && uint64(int64(int32(c.b))) != c.b {
					continue // a 64-bit comparison sign-extends its immediate
				}
				if imm && c.is32 && uint64(uint32(c.b)) != c.b {
					continue
				}
				t.Run(fmt.Sprintf("%s/%d/imm=%v", name, i, imm), func(t *testing.T) { c.run(t, imm) })
			}
		}
	}
}

// A 64-bit comparison with an immediate sign-extends it: "jgt r1, -1" is
// an unsigned comparison with 0xffffffffffffffff.
func TestJumpImmediateIsSignExtended(t *testing.T) {
	jumpCase{op: insn.JEQ, a: allOnes, b: allOnes, taken: true}.run(t, true)
	jumpCase{op: insn.JGE, a: 0xffffffff, b: allOnes}.run(t, true)
}

func TestUnconditionalJumps(t *testing.T) {
	t.Run("ja", func(t *testing.T) {
		if got := mustRun(t, prog(movImm(0, 1), ja(1), movImm(0, 2), exit())); got != 1 {
			t.Errorf("got %d", got)
		}
	})
	t.Run("gotol uses the 32-bit immediate", func(t *testing.T) {
		gotol := insn.Insn{Code: insn.JMP32 | insn.JA, Imm: 1, Off: 99}
		if got := mustRun(t, prog(movImm(0, 1), gotol, movImm(0, 2), exit())); got != 1 {
			t.Errorf("got %d", got)
		}
	})
	t.Run("backward loop", func(t *testing.T) {
		// r0 = 0; r1 = 10; loop: r0 += 3; r1 -= 1; if r1 != 0 goto loop
		p := prog(movImm(0, 0), movImm(1, 10), alu64Imm(insn.ADD, 0, 3), alu64Imm(insn.SUB, 1, 1), jmpImm(insn.JNE, 1, 0, -3), exit())
		if got := mustRun(t, p); got != 30 {
			t.Errorf("got %d", got)
		}
	})
}

func TestPrimeFromTheConformanceSuite(t *testing.T) {
	for n, want := range map[int32]uint64{67: 1, 68: 0, 1009: 1, 1011: 0} {
		if got := mustRun(t, prime(n)); got != want {
			t.Errorf("prime(%d) = %d, want %d", n, got, want)
		}
	}
}
