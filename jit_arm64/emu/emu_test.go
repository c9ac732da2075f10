package emu_test

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/bpfsim/bpfsim/jit_arm64/a64"
	"github.com/bpfsim/bpfsim/jit_arm64/emu"
	"github.com/bpfsim/bpfsim/sim/mem"
)

// env is a fresh address space with a data area, a stack and a CPU.
type env struct {
	space *mem.Space
	cpu   *emu.CPU
	data  uint64 // two RW pages
	stack uint64 // top of a one-page stack
}

func newEnv(t testing.TB) *env {
	t.Helper()
	s := mem.New()
	data, err := s.Vmalloc(2*mem.PageSize, mem.PermRW, "test_data")
	if err != nil {
		t.Fatal(err)
	}
	stack, err := s.Vmalloc(mem.PageSize, mem.PermRW, "test_stack")
	if err != nil {
		t.Fatal(err)
	}
	c := emu.New(s.NewTLB())
	c.SetSP(stack + mem.PageSize)
	c.Limit = 1 << 20
	return &env{space: s, cpu: c, data: data, stack: stack + mem.PageSize}
}

func wordsBytes(code []uint32) []byte {
	b := make([]byte, 4*len(code))
	for i, w := range code {
		binary.LittleEndian.PutUint32(b[4*i:], w)
	}
	return b
}

// text maps code read-write, writes it, and makes it read-execute, as
// bpf_jit_binary_pack_finalize does; it returns the entry address.
func (e *env) text(t testing.TB, code []uint32) uint64 {
	t.Helper()
	size := uint64(4 * len(code))
	addr, err := e.space.Alloc(size, mem.AllocOptions{Region: mem.RegionModules, Perm: mem.PermRW, Name: "test_text"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.space.Write(addr, wordsBytes(code)); err != nil {
		t.Fatal(err)
	}
	if err := e.space.SetPerm(addr, (size+mem.PageSize-1)&^(mem.PageSize-1), mem.PermRX); err != nil {
		t.Fatal(err)
	}
	return addr
}

// asm collects instruction words: each part is a uint32, a []uint32, or
// the (word, error) pair of an a64 encoder wrapped in w().
func asm(parts ...any) []uint32 {
	var out []uint32
	for _, p := range parts {
		switch v := p.(type) {
		case uint32:
			out = append(out, v)
		case []uint32:
			out = append(out, v...)
		default:
			panic("asm: bad part")
		}
	}
	return out
}

func w(word uint32, err error) uint32 {
	if err != nil {
		panic(err)
	}
	return word
}

func ws(words []uint32, err error) []uint32 {
	if err != nil {
		panic(err)
	}
	return words
}

var ret = w(a64.Ret(a64.LR))

type flags struct{ n, z, c, v bool }

// aluCase runs code (followed by RET) with registers in, then checks out
// and, if set, the flags.
type aluCase struct {
	name  string
	in    map[int]uint64
	code  []uint32
	out   map[int]uint64
	flags *flags
}

func runALU(t *testing.T, cases []aluCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			entry := e.text(t, append(tc.code, ret))
			c := e.cpu
			c.PC = entry
			for r, v := range tc.in {
				c.SetX(r, v)
			}
			c.SetX(30, emu.ReturnSentinel)
			var args []uint64
			for i := 0; i < 8; i++ {
				args = append(args, c.X(i))
			}
			if _, err := c.Run(entry, args...); err != nil {
				t.Fatal(err)
			}
			for r, want := range tc.out {
				if got := c.X(r); got != want {
					t.Errorf("x%d = %#x, want %#x", r, got, want)
				}
			}
			if tc.flags != nil {
				got := flags{c.N, c.Z, c.C, c.V}
				if got != *tc.flags {
					t.Errorf("nzcv = %+v, want %+v", got, *tc.flags)
				}
			}
		})
	}
}

const (
	x0, x1, x2, x3 = a64.X0, a64.X1, a64.X2, a64.X3
	w0, w1, w2, w3 = a64.W0, a64.W1, a64.W2, a64.W3
)

func TestAddSubSetsResultsAndFlags(t *testing.T) {
	runALU(t, []aluCase{
		{"add immediate", map[int]uint64{1: 5}, asm(w(a64.AddImm(x0, x1, 7))), map[int]uint64{0: 12}, nil},
		{"add immediate shifted by 12", map[int]uint64{1: 5}, asm(w(a64.AddImm(x0, x1, 0x3000))), map[int]uint64{0: 0x3005}, nil},
		{"32-bit sub wraps and zero-extends", map[int]uint64{1: 0xdead_beef_0000_0001}, asm(w(a64.SubImm(w0, w1, 2))), map[int]uint64{0: 0xffff_ffff}, nil},
		{"sub immediate from sp", nil, asm(w(a64.Mov(x1, a64.SP)), w(a64.SubImm(a64.SP, a64.SP, 32)), w(a64.Mov(x2, a64.SP)), w(a64.Sub(x0, x1, x2)), w(a64.AddImm(a64.SP, a64.SP, 32))), map[int]uint64{0: 32}, nil},
		{"cmp less sets N, clears C", map[int]uint64{1: 1, 2: 2}, asm(w(a64.Cmp(x1, x2))), nil, &flags{n: true}},
		{"cmp equal sets Z and C", map[int]uint64{1: 7, 2: 7}, asm(w(a64.Cmp(x1, x2))), nil, &flags{z: true, c: true}},
		{"cmp immediate greater unsigned sets C", map[int]uint64{1: 9}, asm(w(a64.CmpImm(x1, 3))), nil, &flags{c: true}},
		{"adds signed overflow sets V and N", map[int]uint64{1: math.MaxInt64}, asm(w(a64.AddsImm(x0, x1, 1))), map[int]uint64{0: 1 << 63}, &flags{n: true, v: true}},
		{"32-bit adds carry out gives Z and C", map[int]uint64{1: 0xffff_ffff}, asm(w(a64.AddsImm(w0, w1, 1))), map[int]uint64{0: 0}, &flags{z: true, c: true}},
		{"32-bit cmp ignores upper halves", map[int]uint64{1: 0x1_0000_0005, 2: 5}, asm(w(a64.Cmp(w1, w2))), nil, &flags{z: true, c: true}},
		{"subs signed overflow", map[int]uint64{1: 1 << 63, 2: 1}, asm(w(a64.Subs(x0, x1, x2))), map[int]uint64{0: math.MaxInt64}, &flags{c: true, v: true}},
		{"cmn adds", map[int]uint64{1: ^uint64(0)}, asm(w(a64.CmnImm(x1, 1))), nil, &flags{z: true, c: true}},
		{"add shifted lsl", map[int]uint64{1: 1, 2: 3}, asm(w(a64.AddShifted(x0, x1, x2, a64.LSL, 4))), map[int]uint64{0: 49}, nil},
		{"sub shifted asr", map[int]uint64{1: 0, 2: uint64(0xffff_ffff_ffff_ff00)}, asm(w(a64.SubShifted(x0, x1, x2, a64.ASR, 4))), map[int]uint64{0: 16}, nil},
		{"neg", map[int]uint64{1: 5}, asm(w(a64.Neg(x0, x1))), map[int]uint64{0: uint64(0xffff_ffff_ffff_fffb)}, nil},
		{"32-bit neg zero-extends", map[int]uint64{1: 5}, asm(w(a64.Neg(w0, w1))), map[int]uint64{0: 0xffff_fffb}, nil},
		{"write to xzr is discarded", map[int]uint64{1: 5}, asm(w(a64.Add(a64.XZR, x1, x1)), w(a64.Add(x0, a64.XZR, x1))), map[int]uint64{0: 5}, nil},
	})
}

func TestLogicalOps(t *testing.T) {
	a, b := uint64(0xf0f0_1234_5678_9abc), uint64(0xff00_ff00_ff00_ff00)
	runALU(t, []aluCase{
		{"and", map[int]uint64{1: a, 2: b}, asm(w(a64.And(x0, x1, x2))), map[int]uint64{0: a & b}, nil},
		{"orr", map[int]uint64{1: a, 2: b}, asm(w(a64.Orr(x0, x1, x2))), map[int]uint64{0: a | b}, nil},
		{"eor", map[int]uint64{1: a, 2: b}, asm(w(a64.Eor(x0, x1, x2))), map[int]uint64{0: a ^ b}, nil},
		{"bic", map[int]uint64{1: a, 2: b}, asm(w(a64.Bic(x0, x1, x2))), map[int]uint64{0: a &^ b}, nil},
		{"orn", map[int]uint64{1: a, 2: b}, asm(w(a64.Orn(x0, x1, x2))), map[int]uint64{0: a | ^b}, nil},
		{"mvn 32-bit zero-extends", map[int]uint64{1: a}, asm(w(a64.Mvn(w0, w1))), map[int]uint64{0: uint64(^uint32(a))}, nil},
		{"mov register", map[int]uint64{1: a}, asm(w(a64.MovReg(x0, x1))), map[int]uint64{0: a}, nil},
		{"32-bit mov register zero-extends", map[int]uint64{1: a}, asm(w(a64.MovReg(w0, w1))), map[int]uint64{0: a & 0xffffffff}, nil},
		{"eor shifted ror", map[int]uint64{1: 0, 2: 1}, asm(w(a64.LogicShifted(a64.EOR, x0, x1, x2, a64.ROR, 1))), map[int]uint64{0: 1 << 63}, nil},
		{"tst zero result sets Z", map[int]uint64{1: 0xf0, 2: 0x0f}, asm(w(a64.Tst(x1, x2))), nil, &flags{z: true}},
		{"ands negative sets N, clears C and V", map[int]uint64{1: 1 << 63, 2: 1 << 63}, asm(w(a64.CmpImm(x1, 0)), w(a64.Ands(x0, x1, x2))), map[int]uint64{0: 1 << 63}, &flags{n: true}},
		{"and bitmask immediate", map[int]uint64{1: a}, asm(w(a64.AndImm(x0, x1, b))), map[int]uint64{0: a & b}, nil},
		{"orr bitmask immediate 32-bit", map[int]uint64{1: a}, asm(w(a64.OrrImm(w0, w1, 0xffff))), map[int]uint64{0: (a | 0xffff) & 0xffffffff}, nil},
		{"eor bitmask immediate rotated run", map[int]uint64{1: 0}, asm(w(a64.EorImm(x0, x1, 0x8000_0000_0000_0001))), map[int]uint64{0: 0x8000_0000_0000_0001}, nil},
		{"and immediate element of 2 bits", map[int]uint64{1: ^uint64(0)}, asm(w(a64.AndImm(x0, x1, 0x5555_5555_5555_5555))), map[int]uint64{0: 0x5555_5555_5555_5555}, nil},
		{"tst immediate", map[int]uint64{1: 0x100}, asm(w(a64.TstImm(x1, 0xff))), nil, &flags{z: true}},
	})
}

func TestMoveWideAndJITConstantSequences(t *testing.T) {
	var cases []aluCase
	for _, v := range []uint64{0, 1, 0xffff, 0x1_0000, ^uint64(0), 0xdead_beef_cafe_babe, 0xffff_0000_ffff_0000,
		0x0000_ffff_0000_1234, 0xffff_ffff_ffff_1234, 1 << 63, 0x8000_0000} {
		cases = append(cases, aluCase{name: "mov_i64", code: ws(a64.MovImm64(x0, v)), out: map[int]uint64{0: v}})
	}
	for _, v := range []int32{0, -1, math.MinInt32, 0x1234_5678, -0x1235} {
		cases = append(cases, aluCase{name: "mov_i32 zero-extends", in: map[int]uint64{0: ^uint64(0)}, code: ws(a64.MovImm32(w0, v)), out: map[int]uint64{0: uint64(uint32(v))}})
	}
	cases = append(cases,
		aluCase{"movk keeps other halfwords", map[int]uint64{0: 0x1111_2222_3333_4444}, asm(w(a64.Movk(x0, 0xabcd, 32))), map[int]uint64{0: 0x1111_abcd_3333_4444}, nil},
		aluCase{"32-bit movk clears the upper half", map[int]uint64{0: 0x1111_2222_3333_4444}, asm(w(a64.Movk(w0, 0xabcd, 16))), map[int]uint64{0: 0xabcd_4444}, nil},
		aluCase{"movn", nil, asm(w(a64.Movn(x0, 0x12, 16))), map[int]uint64{0: ^uint64(0x12_0000)}, nil},
		aluCase{"32-bit movn", nil, asm(w(a64.Movn(w0, 0x12, 0))), map[int]uint64{0: 0xffff_ffed}, nil},
	)
	runALU(t, cases)
}

func TestBitfieldAndShiftOps(t *testing.T) {
	v := uint64(0x8123_4567_89ab_cdef)
	runALU(t, []aluCase{
		{"lsl immediate", map[int]uint64{1: v}, asm(w(a64.LslImm(x0, x1, 8))), map[int]uint64{0: v << 8}, nil},
		{"lsr immediate", map[int]uint64{1: v}, asm(w(a64.LsrImm(x0, x1, 60))), map[int]uint64{0: v >> 60}, nil},
		{"asr immediate", map[int]uint64{1: v}, asm(w(a64.AsrImm(x0, x1, 4))), map[int]uint64{0: uint64(int64(v) >> 4)}, nil},
		{"32-bit lsl", map[int]uint64{1: v}, asm(w(a64.LslImm(w0, w1, 4))), map[int]uint64{0: uint64(uint32(v) << 4)}, nil},
		{"32-bit asr", map[int]uint64{1: v}, asm(w(a64.AsrImm(w0, w1, 28))), map[int]uint64{0: uint64(uint32(int32(uint32(v)) >> 28))}, nil},
		{"uxtb", map[int]uint64{1: v}, asm(w(a64.Uxtb(w0, w1))), map[int]uint64{0: 0xef}, nil},
		{"uxth", map[int]uint64{1: v}, asm(w(a64.Uxth(w0, w1))), map[int]uint64{0: 0xcdef}, nil},
		{"uxtw", map[int]uint64{1: v}, asm(w(a64.Uxtw(x0, x1))), map[int]uint64{0: 0x89ab_cdef}, nil},
		{"sxtb", map[int]uint64{1: v}, asm(w(a64.Sxtb(x0, x1))), map[int]uint64{0: 0xffff_ffff_ffff_ffef}, nil},
		{"sxth", map[int]uint64{1: v}, asm(w(a64.Sxth(x0, x1))), map[int]uint64{0: 0xffff_ffff_ffff_cdef}, nil},
		{"sxtw", map[int]uint64{1: v}, asm(w(a64.Sxtw(x0, x1))), map[int]uint64{0: uint64(int64(int32(uint32(v))))}, nil},
		{"32-bit sxtb zero-extends to 64", map[int]uint64{1: 0x80}, asm(w(a64.Sxtb(w0, w1))), map[int]uint64{0: 0xffff_ff80}, nil},
		{"bfm inserts a field", map[int]uint64{0: ^uint64(0), 1: 0}, asm(w(a64.Bfm(x0, x1, 56, 7))), map[int]uint64{0: 0xffff_ffff_ffff_00ff}, nil},
		{"extr", map[int]uint64{1: 0x1, 2: 0x8000_0000_0000_0000}, asm(w(a64.Extr(x0, x1, x2, 63))), map[int]uint64{0: 3}, nil},
		{"ror immediate", map[int]uint64{1: 1}, asm(w(a64.RorImm(x0, x1, 1))), map[int]uint64{0: 1 << 63}, nil},
		{"32-bit ror immediate", map[int]uint64{1: 1}, asm(w(a64.RorImm(w0, w1, 1))), map[int]uint64{0: 1 << 31}, nil},
		{"lslv takes the amount modulo 64", map[int]uint64{1: 1, 2: 65}, asm(w(a64.Lslv(x0, x1, x2))), map[int]uint64{0: 2}, nil},
		{"32-bit lsrv takes the amount modulo 32", map[int]uint64{1: 0x100, 2: 36}, asm(w(a64.Lsrv(w0, w1, w2))), map[int]uint64{0: 0x10}, nil},
		{"asrv", map[int]uint64{1: 1 << 63, 2: 63}, asm(w(a64.Asrv(x0, x1, x2))), map[int]uint64{0: ^uint64(0)}, nil},
		{"rorv", map[int]uint64{1: 0xf, 2: 4}, asm(w(a64.Rorv(x0, x1, x2))), map[int]uint64{0: 0xf000_0000_0000_0000}, nil},
		{"rev16", map[int]uint64{1: 0x0102_0304_0506_0708}, asm(w(a64.Rev16(x0, x1))), map[int]uint64{0: 0x0201_0403_0605_0807}, nil},
		{"32-bit rev16 zero-extends", map[int]uint64{1: 0x0102_0304_0506_0708}, asm(w(a64.Rev16(w0, w1))), map[int]uint64{0: 0x0605_0807}, nil},
		{"rev32", map[int]uint64{1: 0x0102_0304_0506_0708}, asm(w(a64.Rev32(x0, x1))), map[int]uint64{0: 0x0403_0201_0807_0605}, nil},
		{"32-bit rev", map[int]uint64{1: 0x0102_0304_0506_0708}, asm(w(a64.Rev32(w0, w1))), map[int]uint64{0: 0x0807_0605}, nil},
		{"rev64", map[int]uint64{1: 0x0102_0304_0506_0708}, asm(w(a64.Rev64(x0, x1))), map[int]uint64{0: 0x0807_0605_0403_0201}, nil},
		{"rbit", map[int]uint64{1: 1}, asm(w(a64.Rbit(x0, x1))), map[int]uint64{0: 1 << 63}, nil},
		{"clz", map[int]uint64{1: 0x100}, asm(w(a64.Clz(w0, w1))), map[int]uint64{0: 23}, nil},
	})
}

func TestMultiplyAndDivide(t *testing.T) {
	minI64, minI32 := uint64(1)<<63, uint64(1)<<31
	runALU(t, []aluCase{
		{"mul", map[int]uint64{1: 6, 2: 7}, asm(w(a64.Mul(x0, x1, x2))), map[int]uint64{0: 42}, nil},
		{"32-bit mul zero-extends", map[int]uint64{1: 0x1_0000_0001, 2: 0xffff_ffff}, asm(w(a64.Mul(w0, w1, w2))), map[int]uint64{0: 0xffff_ffff}, nil},
		{"madd", map[int]uint64{1: 6, 2: 7, 3: 100}, asm(w(a64.Madd(x0, x1, x2, x3))), map[int]uint64{0: 142}, nil},
		{"msub gives the remainder", map[int]uint64{1: 3, 2: 7, 3: 23}, asm(w(a64.Msub(x0, x1, x2, x3))), map[int]uint64{0: 2}, nil},
		{"udiv", map[int]uint64{1: 100, 2: 7}, asm(w(a64.Udiv(x0, x1, x2))), map[int]uint64{0: 14}, nil},
		{"udiv by zero gives zero", map[int]uint64{0: 99, 1: 100, 2: 0}, asm(w(a64.Udiv(x0, x1, x2))), map[int]uint64{0: 0}, nil},
		{"32-bit udiv by zero in the low half gives zero", map[int]uint64{0: 99, 1: 100, 2: 1 << 32}, asm(w(a64.Udiv(w0, w1, w2))), map[int]uint64{0: 0}, nil},
		{"sdiv rounds toward zero", map[int]uint64{1: uint64(0xffff_ffff_ffff_fff9), 2: 2}, asm(w(a64.Sdiv(x0, x1, x2))), map[int]uint64{0: uint64(0xffff_ffff_ffff_fffd)}, nil},
		{"sdiv by zero gives zero", map[int]uint64{0: 99, 1: 5, 2: 0}, asm(w(a64.Sdiv(x0, x1, x2))), map[int]uint64{0: 0}, nil},
		{"sdiv INT64_MIN by -1 gives INT64_MIN", map[int]uint64{1: minI64, 2: ^uint64(0)}, asm(w(a64.Sdiv(x0, x1, x2))), map[int]uint64{0: minI64}, nil},
		{"32-bit sdiv INT32_MIN by -1 gives INT32_MIN", map[int]uint64{1: minI32, 2: 0xffff_ffff}, asm(w(a64.Sdiv(w0, w1, w2))), map[int]uint64{0: minI32}, nil},
		{"32-bit sdiv by zero gives zero", map[int]uint64{0: 99, 1: 5, 2: 0}, asm(w(a64.Sdiv(w0, w1, w2))), map[int]uint64{0: 0}, nil},
	})
}
