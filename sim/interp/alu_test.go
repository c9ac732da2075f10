package interp_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/bpfsim/bpfsim/sim/insn"
)

const (
	minInt64 = uint64(1) << 63
	minInt32 = uint64(1) << 31
	allOnes  = ^uint64(0)
	// hiGarbage is OR-ed into 32-bit operands to prove the upper half is
	// ignored on input and cleared on output.
	hiGarbage = uint64(0xdeadbeef) << 32
)

// s64 and u32 spell negative operands as the bit patterns registers hold.
func s64(v int64) uint64 { return uint64(v) }
func u32(v int32) uint64 { return uint64(uint32(v)) }

// binopCase runs "r0 = a; r1 = b; r0 op= r1 (or imm b); exit".
type binopCase struct {
	name   string
	class  uint8 // insn.ALU or insn.ALU64
	op     uint8
	off    int16 // 1 selects sdiv/smod; 8/16/32 movsx
	imm    bool  // use b as the immediate
	a, b   uint64
	expect uint64
}

func (c binopCase) program() []insn.Insn {
	p := prog(ldImm64(0, c.a), ldImm64(1, c.b))
	if c.imm {
		p = append(p, insn.Insn{Code: c.class | c.op | insn.K, Dst: 0, Off: c.off, Imm: int32(c.b)})
	} else {
		p = append(p, insn.Insn{Code: c.class | c.op | insn.X, Dst: 0, Src: 1, Off: c.off})
	}
	return append(p, exit())
}

func runBinops(t *testing.T, cases []binopCase) {
	t.Helper()
	for _, c := range cases {
		for _, imm := range []bool{false, true} {
			if imm && int64(int32(c.b)) != int64(c.b) && uint64(uint32(c.b)) != c.b {
				continue // b does not fit an immediate
			}
			if imm && c.class == insn.ALU64 && uint64(int64(int32(c.b))) != c.b {
				continue // a 64-bit immediate is sign-extended: not the same operand
			}
			if imm && c.op == insn.MOV && c.off != 0 {
				continue // movsx has no immediate form
			}
			c := c
			c.imm = imm
			src := "reg"
			if imm {
				src = "imm"
			}
			t.Run(fmt.Sprintf("%s/%s", c.name, src), func(t *testing.T) {
				if got := mustRun(t, c.program()); got != c.expect {
					t.Errorf("%#x op %#x = %#x, want %#x", c.a, c.b, got, c.expect)
				}
			})
		}
	}
}

func TestALU64(t *testing.T) {
	cases := []binopCase{
		{name: "add wraps", op: insn.ADD, a: allOnes, b: 2, expect: 1},
		{name: "sub wraps", op: insn.SUB, a: 0, b: 1, expect: allOnes},
		{name: "mul wraps", op: insn.MUL, a: minInt64, b: 2, expect: 0},
		{name: "mul negative", op: insn.MUL, a: 7, b: allOnes, expect: s64(-7)},
		{name: "div unsigned", op: insn.DIV, a: allOnes, b: 2, expect: math.MaxInt64},
		{name: "div by zero is zero", op: insn.DIV, a: 42, b: 0, expect: 0},
		{name: "mod unsigned", op: insn.MOD, a: 17, b: 5, expect: 2},
		{name: "mod by zero keeps dst", op: insn.MOD, a: 42, b: 0, expect: 42},
		{name: "sdiv rounds toward zero", op: insn.DIV, off: 1, a: s64(-7), b: 2, expect: s64(-3)},
		{name: "sdiv INT64_MIN by -1", op: insn.DIV, off: 1, a: minInt64, b: allOnes, expect: minInt64},
		{name: "sdiv by zero is zero", op: insn.DIV, off: 1, a: minInt64, b: 0, expect: 0},
		{name: "smod sign follows dividend", op: insn.MOD, off: 1, a: s64(-7), b: 2, expect: allOnes},
		{name: "smod positive by negative", op: insn.MOD, off: 1, a: 7, b: s64(-2), expect: 1},
		{name: "smod INT64_MIN by -1", op: insn.MOD, off: 1, a: minInt64, b: allOnes, expect: 0},
		{name: "smod by zero keeps dst", op: insn.MOD, off: 1, a: minInt64 + 5, b: 0, expect: minInt64 + 5},
		{name: "or", op: insn.OR, a: 0xf0, b: 0x0f, expect: 0xff},
		{name: "and", op: insn.AND, a: 0xff00ff, b: 0x0ff0, expect: 0xf0},
		{name: "xor", op: insn.XOR, a: allOnes, b: 1, expect: allOnes - 1},
		{name: "lsh by 63", op: insn.LSH, a: 1, b: 63, expect: minInt64},
		{name: "lsh by 64 is masked to 0", op: insn.LSH, a: 3, b: 64, expect: 3},
		{name: "lsh by 65 is masked to 1", op: insn.LSH, a: 3, b: 65, expect: 6},
		{name: "rsh by 63", op: insn.RSH, a: minInt64, b: 63, expect: 1},
		{name: "rsh by 64 is masked to 0", op: insn.RSH, a: minInt64, b: 64, expect: minInt64},
		{name: "arsh keeps sign", op: insn.ARSH, a: minInt64, b: 63, expect: allOnes},
		{name: "arsh by 64 is masked to 0", op: insn.ARSH, a: minInt64, b: 64, expect: minInt64},
		{name: "mov", op: insn.MOV, a: 1, b: 0x1234, expect: 0x1234},
		{name: "mov sign-extends the immediate", op: insn.MOV, a: 0, b: allOnes, expect: allOnes},
		{name: "movsx s8", op: insn.MOV, off: 8, a: 0, b: 0x1ff80, expect: s64(-128)},
		{name: "movsx s16", op: insn.MOV, off: 16, a: 0, b: 0x18000, expect: s64(-32768)},
		{name: "movsx s32", op: insn.MOV, off: 32, a: 0, b: 0x180000000, expect: s64(-1 << 31)},
		{name: "movsx s32 positive", op: insn.MOV, off: 32, a: 0, b: 0xffffffff7fffffff, expect: 0x7fffffff},
	}
	for i := range cases {
		cases[i].class = insn.ALU64
	}
	runBinops(t, cases)
}

// Every 32-bit operation reads the low halves and zero-extends its result;
// the operands carry garbage in their upper halves to prove both.
func TestALU32ZeroExtends(t *testing.T) {
	cases := []binopCase{
		{name: "add", op: insn.ADD, a: hiGarbage | 0xffffffff, b: 2, expect: 1},
		{name: "sub", op: insn.SUB, a: hiGarbage, b: 1, expect: 0xffffffff},
		{name: "mul", op: insn.MUL, a: hiGarbage | minInt32, b: 2, expect: 0},
		{name: "div", op: insn.DIV, a: hiGarbage | 0xffffffff, b: 2, expect: 0x7fffffff},
		{name: "div by zero", op: insn.DIV, a: hiGarbage | 9, b: 0, expect: 0},
		{name: "div ignores divisor's upper half", op: insn.DIV, a: 10, b: hiGarbage | 5, expect: 2},
		{name: "mod", op: insn.MOD, a: hiGarbage | 17, b: 5, expect: 2},
		{name: "mod by zero zero-extends dst", op: insn.MOD, a: hiGarbage | 42, b: 0, expect: 42},
		{name: "sdiv", op: insn.DIV, off: 1, a: hiGarbage | u32(-7), b: 2, expect: u32(-3)},
		{name: "sdiv INT32_MIN by -1", op: insn.DIV, off: 1, a: hiGarbage | minInt32, b: 0xffffffff, expect: minInt32},
		{name: "sdiv by zero", op: insn.DIV, off: 1, a: hiGarbage | 5, b: 0, expect: 0},
		{name: "smod", op: insn.MOD, off: 1, a: hiGarbage | u32(-7), b: 2, expect: 0xffffffff},
		{name: "smod INT32_MIN by -1", op: insn.MOD, off: 1, a: hiGarbage | minInt32, b: 0xffffffff, expect: 0},
		{name: "smod by zero zero-extends dst", op: insn.MOD, off: 1, a: hiGarbage | 0x80000005, b: 0, expect: 0x80000005},
		{name: "or", op: insn.OR, a: hiGarbage | 0xf0, b: 0x0f, expect: 0xff},
		{name: "and", op: insn.AND, a: hiGarbage | 0xff, b: 0x0f, expect: 0x0f},
		{name: "xor", op: insn.XOR, a: hiGarbage, b: 1, expect: 1},
		{name: "lsh by 31", op: insn.LSH, a: hiGarbage | 1, b: 31, expect: minInt32},
		{name: "lsh by 32 is masked to 0", op: insn.LSH, a: hiGarbage | 3, b: 32, expect: 3},
		{name: "lsh by 33 is masked to 1", op: insn.LSH, a: hiGarbage | 3, b: 33, expect: 6},
		{name: "rsh", op: insn.RSH, a: hiGarbage | minInt32, b: 31, expect: 1},
		{name: "rsh by 32 is masked to 0", op: insn.RSH, a: hiGarbage | 8, b: 32, expect: 8},
		{name: "arsh", op: insn.ARSH, a: hiGarbage | minInt32, b: 31, expect: 0xffffffff},
		{name: "mov", op: insn.MOV, a: allOnes, b: hiGarbage | 7, expect: 7},
		{name: "mov does not sign-extend", op: insn.MOV, a: 0, b: 0xffffffff, expect: 0xffffffff},
		{name: "movsx s8", op: insn.MOV, off: 8, a: allOnes, b: hiGarbage | 0x80, expect: 0xffffff80},
		{name: "movsx s16", op: insn.MOV, off: 16, a: allOnes, b: hiGarbage | 0x8000, expect: 0xffff8000},
	}
	for i := range cases {
		cases[i].class = insn.ALU
	}
	runBinops(t, cases)
}

func TestNegation(t *testing.T) {
	for _, c := range []struct {
		name   string
		code   uint8
		a      uint64
		expect uint64
	}{
		{"neg64", insn.ALU64 | insn.NEG, 5, s64(-5)},
		{"neg64 INT64_MIN", insn.ALU64 | insn.NEG, minInt64, minInt64},
		{"neg32 zero-extends", insn.ALU | insn.NEG, hiGarbage | 5, u32(-5)},
		{"neg32 INT32_MIN", insn.ALU | insn.NEG, minInt32, minInt32},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := mustRun(t, prog(ldImm64(0, c.a), insn.Insn{Code: c.code}, exit()))
			if got != c.expect {
				t.Errorf("got %#x, want %#x", got, c.expect)
			}
		})
	}
}

func TestByteOrder(t *testing.T) {
	const v = 0x0102030405060708
	for _, c := range []struct {
		name   string
		code   uint8
		width  int32
		expect uint64
	}{
		{"le16 truncates", insn.ALU | insn.END | insn.ToLE, 16, 0x0708},
		{"le32 truncates", insn.ALU | insn.END | insn.ToLE, 32, 0x05060708},
		{"le64 keeps", insn.ALU | insn.END | insn.ToLE, 64, v},
		{"be16 swaps", insn.ALU | insn.END | insn.ToBE, 16, 0x0807},
		{"be32 swaps", insn.ALU | insn.END | insn.ToBE, 32, 0x08070605},
		{"be64 swaps", insn.ALU | insn.END | insn.ToBE, 64, 0x0807060504030201},
		{"bswap16", insn.ALU64 | insn.END, 16, 0x0807},
		{"bswap32", insn.ALU64 | insn.END, 32, 0x08070605},
		{"bswap64", insn.ALU64 | insn.END, 64, 0x0807060504030201},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := mustRun(t, prog(ldImm64(0, v), insn.Insn{Code: c.code, Imm: c.width}, exit()))
			if got != c.expect {
				t.Errorf("got %#x, want %#x", got, c.expect)
			}
		})
	}
}

func TestLdImm64(t *testing.T) {
	if got := mustRun(t, prog(ldImm64(0, 0x8000000000000001), exit())); got != 0x8000000000000001 {
		t.Errorf("got %#x", got)
	}
}
