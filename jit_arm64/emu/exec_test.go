package emu_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bpfsim/bpfsim/jit_arm64"
	"github.com/bpfsim/bpfsim/jit_arm64/a64"
	"github.com/bpfsim/bpfsim/jit_arm64/emu"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/progpack"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func (e *env) run(t testing.TB, code []uint32, args ...uint64) (uint64, error) {
	t.Helper()
	return e.cpu.Run(e.text(t, code), args...)
}

func (e *env) u64(t testing.TB, addr uint64) uint64 {
	t.Helper()
	var b [8]byte
	if err := e.space.Read(addr, b[:]); err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint64(b[:])
}

func (e *env) put64(t testing.TB, addr, v uint64) {
	t.Helper()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	if err := e.space.Write(addr, b[:]); err != nil {
		t.Fatal(err)
	}
}

func TestLoadsAndStores(t *testing.T) {
	x4, x5 := a64.X4, a64.X5
	cases := []struct {
		name string
		mem  map[uint64]uint64 // offsets into data, 8-byte values set before
		code []uint32
		x0   uint64
		out  map[uint64]uint64 // offsets into data checked after
	}{
		{"str and ldr 64 with unsigned offset", nil, asm(w(a64.StoreImm(a64.Size64, x2, x1, 16)), w(a64.LoadImm(a64.Size64, x0, x1, 16))), 0x1122_3344_5566_7788, map[uint64]uint64{16: 0x1122_3344_5566_7788}},
		{"strb writes one byte", map[uint64]uint64{8: ^uint64(0)}, asm(w(a64.StoreImm(a64.Size8, w2, x1, 9)), w(a64.LoadImm(a64.Size64, x0, x1, 8))), 0xffff_ffff_ffff_88ff, nil},
		{"ldrh zero-extends", map[uint64]uint64{0: 0xffff_ffff_ffff_8001}, asm(w(a64.LoadImm(a64.Size16, w0, x1, 0))), 0x8001, nil},
		{"ldr w zero-extends", map[uint64]uint64{0: 0xffff_ffff_8000_0001}, asm(w(a64.LoadImm(a64.Size32, w0, x1, 0))), 0x8000_0001, nil},
		{"ldrsb to x sign-extends", map[uint64]uint64{0: 0x80}, asm(w(a64.LoadSignedImm(a64.Size8, x0, x1, 0))), 0xffff_ffff_ffff_ff80, nil},
		{"ldrsh to w sign-extends to 32 bits only", map[uint64]uint64{0: 0x8000}, asm(w(a64.LoadSignedImm(a64.Size16, w0, x1, 0))), 0xffff_8000, nil},
		{"ldrsw", map[uint64]uint64{8: 0x8000_0000}, asm(w(a64.LoadSignedImm(a64.Size32, x0, x1, 8))), 0xffff_ffff_8000_0000, nil},
		{"unscaled negative offset", map[uint64]uint64{8: 42}, asm(w(a64.AddImm(x3, x1, 16)), w(a64.LoadUnscaled(a64.Size64, x0, x3, -8))), 42, nil},
		{"unscaled store at odd offset", nil, asm(w(a64.StoreUnscaled(a64.Size32, w2, x1, 3)), w(a64.LoadUnscaled(a64.Size32, w0, x1, 3))), 0x5566_7788, nil},
		{"signed unscaled", map[uint64]uint64{0: 0xff00}, asm(w(a64.LoadSignedUnscaled(a64.Size8, x0, x1, 1))), ^uint64(0), nil},
		{"register offset", map[uint64]uint64{24: 7}, asm(ws(a64.MovImm64(x3, 24)), w(a64.LoadReg(a64.Size64, x0, x1, x3))), 7, nil},
		{"register offset store", nil, asm(ws(a64.MovImm64(x3, 40)), w(a64.StoreReg(a64.Size16, w2, x1, x3)), w(a64.LoadImm(a64.Size64, x0, x1, 40))), 0x7788, nil},
		{"register offset signed", map[uint64]uint64{24: 0xfe}, asm(ws(a64.MovImm64(x3, 24)), w(a64.LoadSignedReg(a64.Size8, x0, x1, x3))), ^uint64(1), nil},
		{"stp pre-index and ldp post-index round trip through sp", nil, asm(
			ws(a64.MovImm64(x4, 0x44)), ws(a64.MovImm64(x5, 0x55)),
			w(a64.StorePair(x4, x5, a64.SP, -16, a64.PreIndex)),
			w(a64.LoadImm(a64.Size64, x3, a64.SP, 8)),
			w(a64.LoadPair(x0, x5, a64.SP, 16, a64.PostIndex)),
			w(a64.Add(x0, x0, x3)), w(a64.Add(x0, x0, x5))), 0x44 + 0x55 + 0x55, nil},
		{"stp with signed offset leaves the base", nil, asm(
			w(a64.StorePair(x2, x2, x1, 32, a64.SignedOffset)), w(a64.LoadImm(a64.Size64, x0, x1, 40)), w(a64.Sub(x0, x0, x2)), w(a64.Add(x0, x0, x1))), 0, map[uint64]uint64{32: 0x1122_3344_5566_7788}},
		{"ldr literal", nil, asm(w(a64.LoadLiteral(x0, 2)), ret, uint32(0x9abc_def0), uint32(0x1234_5678)), 0x1234_5678_9abc_def0, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			for off, v := range tc.mem {
				e.put64(t, e.data+off, v)
			}
			sp := e.cpu.SP()
			x0, err := e.run(t, append(tc.code, ret), 0, e.data, 0x1122_3344_5566_7788)
			if err != nil {
				t.Fatal(err)
			}
			if tc.name == "stp with signed offset leaves the base" {
				tc.x0 = e.data
			}
			if x0 != tc.x0 {
				t.Errorf("x0 = %#x, want %#x", x0, tc.x0)
			}
			if e.cpu.SP() != sp {
				t.Errorf("sp = %#x, want %#x restored", e.cpu.SP(), sp)
			}
			for off, want := range tc.out {
				if got := e.u64(t, e.data+off); got != want {
					t.Errorf("[data+%d] = %#x, want %#x", off, got, want)
				}
			}
		})
	}
}

func TestBranches(t *testing.T) {
	// cmp x1, x2; b.<cond> taken; x0 = 0; ret; taken: x0 = 1; ret
	condProg := func(c a64.Cond) []uint32 {
		return asm(w(a64.Cmp(x1, x2)), w(a64.BCond(c, 3)), w(a64.Movz(x0, 0, 0)), ret, w(a64.Movz(x0, 1, 0)), ret)
	}
	neg := ^uint64(0)
	type cc struct {
		c    a64.Cond
		a, b uint64
		want uint64
	}
	conds := []cc{
		{a64.CondEQ, 3, 3, 1}, {a64.CondEQ, 3, 4, 0}, {a64.CondNE, 3, 4, 1},
		{a64.CondCS, neg, 1, 1}, {a64.CondCC, neg, 1, 0}, {a64.CondCC, 1, neg, 1},
		{a64.CondHI, 2, 1, 1}, {a64.CondHI, 1, 1, 0}, {a64.CondLS, 1, 1, 1},
		{a64.CondGT, 1, neg, 1}, {a64.CondGT, neg, 1, 0}, {a64.CondGE, 1, 1, 1},
		{a64.CondLT, neg, 1, 1}, {a64.CondLE, 1, 1, 1}, {a64.CondLE, 2, 1, 0},
		{a64.CondMI, 1, 2, 1}, {a64.CondPL, 1, 2, 0}, {a64.CondVS, 1 << 63, 1, 1}, {a64.CondVC, 1 << 63, 1, 0},
		{a64.CondAL, 0, 1, 1},
	}
	for _, tc := range conds {
		t.Run(fmt.Sprintf("b.%v %#x,%#x", tc.c, tc.a, tc.b), func(t *testing.T) {
			got, err := newEnv(t).run(t, condProg(tc.c), 0, tc.a, tc.b)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("taken = %d, want %d", got, tc.want)
			}
		})
	}
	others := []struct {
		name string
		code []uint32
		args []uint64
		want uint64
	}{
		{"b.ne counted loop", asm(w(a64.Movz(x0, 0, 0)), w(a64.Movz(x1, 10, 0)),
			w(a64.AddImm(x0, x0, 3)), w(a64.SubsImm(x1, x1, 1)), w(a64.BCond(a64.CondNE, -2)), ret), nil, 30},
		{"cbz on a w register ignores the upper half", asm(w(a64.Movz(x0, 0, 0)), w(a64.Cbz(w1, 2)), ret, w(a64.Movz(x0, 1, 0)), ret), []uint64{0, 1 << 32}, 1},
		{"cbnz x not taken on zero", asm(w(a64.Movz(x0, 0, 0)), w(a64.Cbnz(x1, 2)), ret, w(a64.Movz(x0, 1, 0)), ret), []uint64{0, 0}, 0},
		{"b skips", asm(w(a64.Movz(x0, 1, 0)), w(a64.B(2)), w(a64.Movz(x0, 2, 0)), ret), nil, 1},
		{"bl and ret to a local function", asm(
			w(a64.StorePair(a64.FP, a64.LR, a64.SP, -16, a64.PreIndex)),
			w(a64.Bl(4)),
			w(a64.LoadPair(a64.FP, a64.LR, a64.SP, 16, a64.PostIndex)),
			w(a64.AddImm(x0, x0, 1)), ret,
			w(a64.Movz(x0, 41, 0)), ret), nil, 42},
		{"adr and br", asm(w(a64.Adr(x3, 12)), w(a64.Br(x3)), w(a64.Movz(x0, 1, 0)), w(a64.Movz(x0, 2, 0)), ret), nil, 2},
		{"hints and barriers are no-ops", asm(a64.BTIJC, a64.PACIASP, a64.NOP, w(a64.Dmb(a64.BarrierISH)), w(a64.Dsb(a64.BarrierNSH)), a64.ISB, a64.SB, a64.AUTIASP, w(a64.Movz(x0, 9, 0))), nil, 9},
	}
	for _, tc := range others {
		t.Run(tc.name, func(t *testing.T) {
			code := tc.code
			if code[len(code)-1] != ret {
				code = append(code, ret)
			}
			got, err := newEnv(t).run(t, code, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("x0 = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestMrsReadsSystemRegisters(t *testing.T) {
	e := newEnv(t)
	e.cpu.SysRegs[uint32(a64.SysRegSP_EL0)] = 0xffff_8000_1234_0000
	got, err := e.run(t, asm(w(a64.Mrs(x0, a64.SysRegSP_EL0)), ret))
	if err != nil || got != 0xffff_8000_1234_0000 {
		t.Fatalf("mrs sp_el0 = %#x, %v", got, err)
	}
	_, err = e.run(t, asm(w(a64.Mrs(x0, a64.SysRegTPIDR_EL2)), ret))
	var f *emu.Fault
	if !errors.As(err, &f) || f.Kind != emu.KindUnknown {
		t.Fatalf("mrs of an unset system register: %v, want an unknown-instruction fault", err)
	}
}

func TestGoFunctionCallRoundTrip(t *testing.T) {
	const helper = 0xffff_8000_0010_0000 // a kernel text address, not mapped
	e := newEnv(t)
	var seen [2]uint64
	e.cpu.Funcs[helper] = func(c *emu.CPU) error {
		seen = [2]uint64{c.X(0), c.X(1)}
		c.SetX(0, c.X(0)*c.X(1))
		return nil
	}
	// The JIT's call sequence: save FP/LR, materialise the address in a
	// temporary, blr, restore, use x0.
	code := asm(
		w(a64.StorePair(a64.FP, a64.LR, a64.SP, -16, a64.PreIndex)),
		w(a64.Mov(a64.FP, a64.SP)),
		ws(a64.AppendMovAddr(nil, a64.X10, helper)),
		w(a64.Blr(a64.X10)),
		w(a64.LoadPair(a64.FP, a64.LR, a64.SP, 16, a64.PostIndex)),
		w(a64.AddImm(x0, x0, 1)),
		ret)
	sp := e.cpu.SP()
	got, err := e.run(t, code, 6, 7)
	if err != nil {
		t.Fatal(err)
	}
	if got != 43 || seen != [2]uint64{6, 7} {
		t.Errorf("x0 = %d (helper saw %v), want 43 from (6, 7)", got, seen)
	}
	if e.cpu.SP() != sp {
		t.Errorf("sp not restored")
	}

	// An error from the Go function stops the run and is kept.
	errBoom := errors.New("boom")
	e.cpu.Funcs[helper] = func(*emu.CPU) error { return errBoom }
	_, err = e.run(t, code, 1, 2)
	var f *emu.Fault
	if !errors.Is(err, errBoom) || !errors.As(err, &f) || f.Kind != emu.KindFunc {
		t.Errorf("err = %v, want the function's error as a KindFunc fault", err)
	}
}

func TestFaults(t *testing.T) {
	t.Run("fetch from a non-executable page faults naming the pc", func(t *testing.T) {
		e := newEnv(t)
		e.put64(t, e.data, uint64(ret)) // valid code, but in RW data
		_, err := e.cpu.Run(e.data)
		var f *emu.Fault
		if !errors.As(err, &f) || f.Kind != emu.KindFetch || f.PC != e.data || f.Mem.Access != mem.Exec {
			t.Fatalf("err = %v, want an exec fetch fault at %#x", err, e.data)
		}
		if !errors.Is(err, uapi.EFAULT) || !strings.Contains(err.Error(), fmt.Sprintf("%#x", e.data)) {
			t.Errorf("err = %v: want EFAULT and the pc in the message", err)
		}
	})
	t.Run("branch to unmapped memory faults at the target", func(t *testing.T) {
		e := newEnv(t)
		_, err := e.run(t, asm(w(a64.Br(x1))), 0, 0xffff_8000_dead_0000)
		var f *emu.Fault
		if !errors.As(err, &f) || f.Kind != emu.KindFetch || f.PC != 0xffff_8000_dead_0000 {
			t.Fatalf("err = %v, want a fetch fault at the branch target", err)
		}
	})
	t.Run("load from unmapped memory is an EFAULT memory fault", func(t *testing.T) {
		e := newEnv(t)
		entry := e.text(t, asm(w(a64.LoadImm(a64.Size64, x0, x1, 0)), ret))
		_, err := e.cpu.Run(entry, 0, 0x10)
		var f *emu.Fault
		if !errors.As(err, &f) || f.Kind != emu.KindMemory || f.PC != entry || !errors.Is(err, uapi.EFAULT) {
			t.Fatalf("err = %v, want a memory fault at %#x", err, entry)
		}
	})
	t.Run("store into read-execute text faults", func(t *testing.T) {
		e := newEnv(t)
		entry := e.text(t, asm(w(a64.Adr(x1, 0)), w(a64.StoreImm(a64.Size32, w0, x1, 0)), ret))
		_, err := e.cpu.Run(entry)
		var f *emu.Fault
		if !errors.As(err, &f) || f.Kind != emu.KindMemory || f.Mem.Access != mem.Write {
			t.Fatalf("err = %v, want a write fault", err)
		}
	})
	t.Run("brk gives the immediate and the pc", func(t *testing.T) {
		e := newEnv(t)
		entry := e.text(t, asm(a64.NOP, a64.BreakFault))
		_, err := e.cpu.Run(entry)
		want := fmt.Sprintf("brk #0x100 at pc %#x", entry+4)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v, want %q", err, want)
		}
	})
	t.Run("program memory refilled with brk after a run is seen at the next fetch", func(t *testing.T) {
		e := newEnv(t)
		code := asm(w(a64.Movz(x0, 5, 0)), ret)
		entry := e.text(t, code)
		if got, err := e.cpu.Run(entry); err != nil || got != 5 {
			t.Fatalf("first run: %d, %v", got, err)
		}
		// Free the program the way the kernel does: jit_fill_hole through
		// a writable alias of the read-only text.
		alias, err := e.space.Alias(entry, mem.PageSize, mem.PermRW, "text_poke")
		if err != nil {
			t.Fatal(err)
		}
		if err := e.space.Write(alias, wordsBytes([]uint32{a64.BreakFault, a64.BreakFault})); err != nil {
			t.Fatal(err)
		}
		_, err = e.cpu.Run(entry)
		var f *emu.Fault
		if !errors.As(err, &f) || f.Kind != emu.KindBrk || f.Imm != 0x100 || f.PC != entry {
			t.Fatalf("err = %v, want brk #0x100 at %#x", err, entry)
		}
	})
	t.Run("freed program memory faults on fetch", func(t *testing.T) {
		e := newEnv(t)
		entry := e.text(t, asm(w(a64.Movz(x0, 5, 0)), ret))
		if _, err := e.cpu.Run(entry); err != nil {
			t.Fatal(err)
		}
		if err := e.space.Free(entry); err != nil {
			t.Fatal(err)
		}
		_, err := e.cpu.Run(entry)
		var f *emu.Fault
		if !errors.As(err, &f) || f.Kind != emu.KindFetch {
			t.Fatalf("err = %v, want a fetch fault", err)
		}
	})
	t.Run("unknown word names the word and the pc", func(t *testing.T) {
		e := newEnv(t)
		entry := e.text(t, asm(a64.NOP, uint32(0x1e602820))) // fadd d0, d1, d0: no FP
		_, err := e.cpu.Run(entry)
		want := fmt.Sprintf("unknown instruction 0x1e602820 at pc %#x", entry+4)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v, want %q", err, want)
		}
	})
	t.Run("udf #0 is unknown", func(t *testing.T) {
		_, err := newEnv(t).run(t, asm(uint32(0)))
		if err == nil || !strings.Contains(err.Error(), "unknown instruction 0x00000000") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("an endless loop stops at the limit", func(t *testing.T) {
		e := newEnv(t)
		e.cpu.Limit = 1000
		_, err := e.run(t, asm(w(a64.B(0))))
		var f *emu.Fault
		if !errors.As(err, &f) || f.Kind != emu.KindLimit {
			t.Fatalf("err = %v, want the limit", err)
		}
	})
	t.Run("misaligned branch target", func(t *testing.T) {
		_, err := newEnv(t).run(t, asm(w(a64.Br(x1))), 0, 0xffff_8000_0000_0002)
		var f *emu.Fault
		if !errors.As(err, &f) || f.Kind != emu.KindAlign {
			t.Fatalf("err = %v, want an alignment fault", err)
		}
	})
}

func TestRetiredCountsInstructions(t *testing.T) {
	e := newEnv(t)
	before := e.cpu.Retired
	// movz, movz, then 10 x (add, subs, b.ne), ret
	if _, err := e.run(t, asm(w(a64.Movz(x0, 0, 0)), w(a64.Movz(x1, 10, 0)),
		w(a64.AddImm(x0, x0, 3)), w(a64.SubsImm(x1, x1, 1)), w(a64.BCond(a64.CondNE, -2)), ret)); err != nil {
		t.Fatal(err)
	}
	if got := e.cpu.Retired - before; got != 2+30+1 {
		t.Errorf("retired %d, want 33", got)
	}
}

func TestAtomics(t *testing.T) {
	const old = uint64(0xf0f0_0000_0000_00ff)
	cases := []struct {
		name    string
		code    []uint32
		src     uint64
		wantX0  uint64 // the returned old value
		wantMem uint64
	}{
		{"ldaddal", asm(w(a64.AtomicLoadOp(a64.AtomicAdd, a64.OrderAcqRel, x2, x0, x1))), 1, old, old + 1},
		{"ldclral", asm(w(a64.AtomicLoadOp(a64.AtomicClr, a64.OrderAcqRel, x2, x0, x1))), 0xff, old, old &^ 0xff},
		{"ldeoral", asm(w(a64.AtomicLoadOp(a64.AtomicEor, a64.OrderAcqRel, x2, x0, x1))), 0xffff, old, old ^ 0xffff},
		{"ldsetal", asm(w(a64.AtomicLoadOp(a64.AtomicSet, a64.OrderAcqRel, x2, x0, x1))), 0xf00, old, old | 0xf00},
		{"swpal", asm(w(a64.AtomicLoadOp(a64.AtomicSwp, a64.OrderAcqRel, x2, x0, x1))), 7, old, 7},
		{"32-bit ldadd wraps within the word", asm(w(a64.AtomicLoadOp(a64.AtomicAdd, a64.OrderNone, w2, w0, x1))), 0xffff_ff01, 0xff, old &^ 0xffff_ffff},
		{"stadd discards the old value", asm(w(a64.Movz(x0, 3, 0)), w(a64.AtomicStoreOp(a64.AtomicAdd, a64.OrderNone, x2, x1))), 5, 3, old + 5},
		{"casal succeeds when memory equals the expected value", asm(ws(a64.MovImm64(x0, old)), w(a64.Cas(a64.OrderAcqRel, x0, x2, x1))), 9, old, 9},
		{"casal fails and returns the current value", asm(w(a64.Movz(x0, 1, 0)), w(a64.Cas(a64.OrderAcqRel, x0, x2, x1))), 9, old, old},
		{"ldxr/stxr loop adds", asm(
			w(a64.Ldxr(x3, x1)), w(a64.Add(x3, x3, x2)), w(a64.Stxr(a64.W4, x3, x1)), w(a64.Cbnz(a64.W4, -3)), w(a64.Mov(x0, x3))), 2, old + 2, old + 2},
		{"stxr without ldxr fails", asm(w(a64.Stxr(w0, x2, x1))), 2, 1, old},
		{"a second stxr fails: a store clears the monitor", asm(
			w(a64.Ldxr(x3, x1)), w(a64.Stxr(a64.W4, x3, x1)), w(a64.Stxr(w0, x2, x1))), 2, 1, old},
		{"ldar and stlr", asm(w(a64.Ldar(a64.Size64, x0, x1)), w(a64.Stlr(a64.Size32, w2, x1))), 0x1234_5678, old, old&^0xffff_ffff | 0x1234_5678},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.put64(t, e.data+8, old)
			got, err := e.run(t, append(tc.code, ret), 0, e.data+8, tc.src)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.wantX0 {
				t.Errorf("x0 = %#x, want %#x", got, tc.wantX0)
			}
			if m := e.u64(t, e.data+8); m != tc.wantMem {
				t.Errorf("memory = %#x, want %#x", m, tc.wantMem)
			}
		})
	}
	t.Run("misaligned atomic is an alignment fault", func(t *testing.T) {
		e := newEnv(t)
		_, err := e.run(t, asm(w(a64.AtomicLoadOp(a64.AtomicAdd, a64.OrderAcqRel, x2, x0, x1)), ret), 0, e.data+4, 1)
		var f *emu.Fault
		if !errors.As(err, &f) || f.Kind != emu.KindAlign {
			t.Fatalf("err = %v, want an alignment fault", err)
		}
	})
}

// TestAtomicsAreAtomicAcrossCPUs runs LDADD and LL/SC increments of one
// counter on several CPUs at once: no increment may be lost.
func TestAtomicsAreAtomicAcrossCPUs(t *testing.T) {
	const cpus, iters = 4, 2000
	e := newEnv(t)
	counter := e.data
	// for x5 = iters; x5 != 0; x5-- { ldadd x2, xzr, [x1]; ll/sc add x2 }
	code := asm(
		ws(a64.MovImm64(a64.X5, iters)),
		w(a64.AtomicStoreOp(a64.AtomicAdd, a64.OrderNone, x2, x1)),
		w(a64.Ldxr(x3, x1)), w(a64.Add(x3, x3, x2)), w(a64.Stxr(a64.W4, x3, x1)), w(a64.Cbnz(a64.W4, -3)),
		w(a64.SubImm(a64.X5, a64.X5, 1)), w(a64.Cbnz(a64.X5, -6)),
		ret)
	entry := e.text(t, code)
	var wg sync.WaitGroup
	errs := make([]error, cpus)
	for i := 0; i < cpus; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := emu.New(e.space.NewTLB())
			_, errs[i] = c.Run(entry, 0, counter, 1)
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := e.u64(t, counter); got != 2*cpus*iters {
		t.Errorf("counter = %d, want %d", got, 2*cpus*iters)
	}
}

// loopCode is the shape of the kernel's loop benchmark as the JIT emits
// it: add, eor, str, ldr, add, sub, cbnz. x6 counts iterations.
func loopCode() []uint32 {
	return asm(
		w(a64.AddImm(x2, x2, 1)),
		w(a64.Eor(a64.X4, a64.X4, x2)),
		w(a64.StoreImm(a64.Size64, a64.X4, x1, 8)),
		w(a64.LoadImm(a64.Size64, a64.X5, x1, 8)),
		w(a64.Add(x0, x0, a64.X5)),
		w(a64.SubImm(a64.X6, a64.X6, 1)),
		w(a64.Cbnz(a64.X6, -6)),
		ret)
}

func TestLoopComputesWhatGoComputes(t *testing.T) {
	e := newEnv(t)
	entry := e.text(t, loopCode())
	c := e.cpu
	c.SetX(6, 1000)
	c.SetX(2, 0)
	c.SetX(4, 0)
	c.SetX(1, e.data)
	got, err := c.Run(entry, 0, e.data)
	if err != nil {
		t.Fatal(err)
	}
	var x0, x2, x4 uint64
	for i := 0; i < 1000; i++ {
		x2++
		x4 ^= x2
		x0 += x4
	}
	if got != x0 || e.u64(t, e.data+8) != x4 {
		t.Errorf("x0 = %d, [data+8] = %d; want %d, %d", got, e.u64(t, e.data+8), x0, x4)
	}
}

func BenchmarkLoop(b *testing.B) {
	e := newEnv(b)
	entry := e.text(b, loopCode())
	c := e.cpu
	c.Limit = 0
	b.ResetTimer()
	start := time.Now()
	retired := c.Retired
	c.SetX(6, uint64(b.N))
	if _, err := c.Run(entry, 0, e.data); err != nil {
		b.Fatal(err)
	}
	el := time.Since(start)
	n := c.Retired - retired
	b.ReportMetric(float64(n)/el.Seconds(), "insns/s")
	b.ReportMetric(float64(el.Nanoseconds())/float64(n), "ns/insn")
}

// TestGoFunctionMayRunCodeOnTheSameCPU is the shape of bpf_loop: a helper
// that calls back into JIT-compiled code on the CPU that called it. The
// outer program must continue after the helper returns.
func TestGoFunctionMayRunCodeOnTheSameCPU(t *testing.T) {
	const helper = 0xffff_8000_0020_0000
	e := newEnv(t)
	callback := e.text(t, asm(w(a64.Add(x0, x0, x1)), ret)) // x0 = acc + i
	e.cpu.Funcs[helper] = func(c *emu.CPU) error {
		n, acc := c.X(0), uint64(0)
		for i := uint64(0); i < n; i++ {
			r, err := c.Run(callback, acc, i)
			if err != nil {
				return err
			}
			acc = r
		}
		c.SetX(0, acc)
		return nil
	}
	code := asm(
		w(a64.StorePair(a64.FP, a64.LR, a64.SP, -16, a64.PreIndex)),
		ws(a64.AppendMovAddr(nil, a64.X10, helper)),
		w(a64.Blr(a64.X10)),
		w(a64.AddImm(x0, x0, 1000)),
		w(a64.LoadPair(a64.FP, a64.LR, a64.SP, 16, a64.PostIndex)),
		ret)
	got, err := e.run(t, code, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got != 45+1000 {
		t.Errorf("x0 = %d, want %d", got, 45+1000)
	}
}

// TestRunsImagesPlacedByProgPack places an image with the prog pack
// allocator and the arm64 text patcher, runs it, frees it (which fills the
// place with BRK #0x100 while another image keeps the pack mapped), and
// requires the next run of the stale address to stop with that BRK.
func TestRunsImagesPlacedByProgPack(t *testing.T) {
	s := mem.New()
	a, err := progpack.New(s, jit_arm64.NewPatcher(s), progpack.Options{Mode: progpack.Packs})
	if err != nil {
		t.Fatal(err)
	}
	place := func(code []uint32) *progpack.Binary {
		b, err := a.Alloc(uint32(4*len(code)), 4)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Write(b.RWImage(), wordsBytes(code)); err != nil {
			t.Fatal(err)
		}
		if err := a.Finalize(b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	keep := place(asm(w(a64.Movz(x0, 1, 0)), ret))
	b := place(asm(w(a64.AddImm(x0, x0, 2)), ret))
	c := emu.New(s.NewTLB())
	if got, err := c.Run(b.Image(), 40); err != nil || got != 42 {
		t.Fatalf("run: %d, %v; want 42", got, err)
	}
	img := b.Image()
	if err := a.Free(b); err != nil {
		t.Fatal(err)
	}
	_, err = c.Run(img, 40)
	want := fmt.Sprintf("brk #0x100 at pc %#x", img)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("run of freed image: %v, want %q", err, want)
	}
	if got, err := c.Run(keep.Image()); err != nil || got != 1 {
		t.Fatalf("the other image: %d, %v", got, err)
	}
}

// ctxDevice is a device mapping like a program's context: loads return
// the offset plus 0x100, stores are recorded.
type ctxDevice struct{ stored map[uint64]uint64 }

func (d *ctxDevice) Load(off uint64, size int, signExtend bool) (uint64, error) {
	return off + 0x100, nil
}

func (d *ctxDevice) Store(off uint64, size int, v uint64) error {
	d.stored[off] = v
	return nil
}

func TestLoadsAndStoresReachDeviceMappings(t *testing.T) {
	e := newEnv(t)
	d := &ctxDevice{stored: map[uint64]uint64{}}
	ctx, err := e.space.Alloc(mem.PageSize, mem.AllocOptions{Perm: mem.PermRW, Name: "ctx", Device: d})
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.run(t, asm(w(a64.LoadImm(a64.Size32, w0, x1, 8)), w(a64.StoreImm(a64.Size64, x2, x1, 16)), ret), 0, ctx, 77)
	if err != nil {
		t.Fatal(err)
	}
	if got != 0x108 || d.stored[16] != 77 {
		t.Errorf("load %#x (want 0x108), stored %v (want 16:77)", got, d.stored)
	}
	// Atomics need plain memory.
	_, err = e.run(t, asm(w(a64.AtomicLoadOp(a64.AtomicAdd, a64.OrderAcqRel, x2, x0, x1)), ret), 0, ctx, 1)
	var f *emu.Fault
	if !errors.As(err, &f) || f.Kind != emu.KindAlign {
		t.Fatalf("atomic on a device mapping: %v, want an alignment fault", err)
	}
}

// BenchmarkGoFunctionCall measures a BLR to a Go function and back, the
// JIT's helper call, in a counted loop.
func BenchmarkGoFunctionCall(b *testing.B) {
	const helper = 0xffff_8000_0030_0000
	e := newEnv(b)
	c := e.cpu
	c.Limit = 0
	c.Funcs[helper] = func(c *emu.CPU) error { c.SetX(0, c.X(0)+1); return nil }
	entry := e.text(b, asm(
		w(a64.StorePair(a64.FP, a64.LR, a64.SP, -16, a64.PreIndex)),
		ws(a64.AppendMovAddr(nil, a64.X10, helper)),
		w(a64.Blr(a64.X10)),
		w(a64.SubImm(a64.X6, a64.X6, 1)),
		w(a64.Cbnz(a64.X6, -2)),
		w(a64.LoadPair(a64.FP, a64.LR, a64.SP, 16, a64.PostIndex)),
		ret))
	b.ResetTimer()
	c.SetX(6, uint64(b.N))
	got, err := c.Run(entry, 0)
	if err != nil {
		b.Fatal(err)
	}
	if got != uint64(b.N) {
		b.Fatalf("x0 = %d, want %d", got, b.N)
	}
}

// TestExecutePermissionIsCheckedPerPage: in an area whose first page was
// made executable and whose second was not, code runs from the first and
// a fetch from the second faults, as the page table says.
func TestExecutePermissionIsCheckedPerPage(t *testing.T) {
	e := newEnv(t)
	ret := w(a64.Ret(a64.LR))
	addr, err := e.space.Alloc(2*mem.PageSize, mem.AllocOptions{Region: mem.RegionModules, Perm: mem.PermRW, Name: "half_text"})
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range []uint64{addr, addr + mem.PageSize} {
		if err := e.space.Write(at, wordsBytes([]uint32{ret})); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.space.SetPerm(addr, mem.PageSize, mem.PermRX); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cpu.Run(addr, 7); err != nil {
		t.Fatalf("the executable page: %v", err)
	}
	_, err = e.cpu.Run(addr+mem.PageSize, 7)
	var f *emu.Fault
	if !errors.As(err, &f) || f.Kind != emu.KindFetch || f.Mem.Access != mem.Exec {
		t.Fatalf("a fetch from the read-write page of the same area: %v", err)
	}
}
