package a64_test

import (
	"testing"

	"golang.org/x/arch/arm64/arm64asm"

	"github.com/bpfsim/bpfsim/jit_arm64/a64"
)

// seq collects the words of a JIT sequence, failing the test on the first
// encoding error.
type seq struct {
	t     *testing.T
	words []uint32
}

func (s *seq) emit(w uint32, err error) {
	s.t.Helper()
	if err != nil {
		s.t.Fatal(err)
	}
	s.words = append(s.words, w)
}

func (s *seq) emitAll(ws []uint32, err error) {
	s.t.Helper()
	if err != nil {
		s.t.Fatal(err)
	}
	s.words = append(s.words, ws...)
}

// check disassembles the sequence with arm64asm (objdump when present) and
// compares it line by line with the listing; "<T>" targets are given as
// arm64asm's PC-relative text.
func (s *seq) check(listing []string, goListing map[int]string) {
	s.t.Helper()
	if len(s.words) != len(listing) {
		s.t.Fatalf("%d instructions, listing has %d", len(s.words), len(listing))
	}
	for i, w := range s.words {
		want := listing[i]
		if g, ok := goListing[i]; ok {
			want = g
		}
		inst, err := arm64asm.Decode(word(nil, w))
		if err != nil || normalize(arm64asm.GNUSyntax(inst)) != normalize(want) {
			s.t.Errorf("[%d] %08x: %q (%v), want %q", i, w, arm64asm.GNUSyntax(inst), err, want)
		}
	}
}

// TestTailCallSequence builds emit_bpf_tail_call as in KERNEL-NOTES §12.4
// (bpf_array.map.max_entries at 0x24, ptrs at 0x110, bpf_prog.bpf_func at
// 0x30, an 8-instruction prologue offset, 16 bytes of stack, no callee-saved
// registers to pop) and compares it with the expected listing.
func TestTailCallSequence(t *testing.T) {
	const (
		maxEntriesOff = 0x24
		ptrsOff       = 0x110
		bpfFuncOff    = 0x30
		prologueOff   = 8
		stackSize     = 16
		maxTailCalls  = 33
	)
	r2, r3 := a64.X1, a64.X2 // BPF R2, R3
	tmp, prg, tmp3 := a64.X10, a64.X11, a64.X12
	tcc := a64.X26
	s := &seq{t: t}
	// The three forward branches go to "out", 21 instructions in.
	out := int32(21)
	s.emitAll(a64.MovImm64(tmp, maxEntriesOff))
	s.emit(a64.LoadReg(a64.Size32, tmp.AsW(), r2, tmp))
	// A64_MOV is ADD #0 (bpf_jit.h); the notes' "mov w2, w2" describes it.
	s.emit(a64.Mov(r3.AsW(), r3.AsW()))
	s.emit(a64.Cmp(r3.AsW(), tmp.AsW()))
	s.emit(a64.BCond(a64.CondCS, out-int32(len(s.words))))
	s.emitAll(a64.MovImm64(tmp, maxTailCalls))
	s.emit(a64.LoadImm(a64.Size64, tmp3, tcc, 0))
	s.emit(a64.Cmp(tmp3, tmp))
	s.emit(a64.BCond(a64.CondCS, out-int32(len(s.words))))
	s.emit(a64.AddImm(tmp3, tmp3, 1))
	s.emitAll(a64.MovImm64(tmp, ptrsOff))
	s.emit(a64.Add(tmp, r2, tmp))
	s.emit(a64.LslImm(prg, r3, 3))
	s.emit(a64.LoadReg(a64.Size64, prg, tmp, prg))
	s.emit(a64.Cbz(prg, out-int32(len(s.words))))
	s.emit(a64.StoreImm(a64.Size64, tmp3, tcc, 0))
	s.emit(a64.AddImm(a64.SP, a64.SP, stackSize))
	s.emitAll(a64.MovImm64(tmp, bpfFuncOff))
	s.emit(a64.LoadReg(a64.Size64, tmp, prg, tmp))
	s.emit(a64.AddImm(tmp, tmp, 4*prologueOff))
	s.emit(a64.Br(tmp))
	s.emit(a64.NOP, nil) // out: (the next BPF instruction)
	s.check([]string{
		"mov w10, #0x24",
		"ldr w10, [x1, x10]",
		"add w2, w2, #0x0",
		"cmp w2, w10",
		"b.cs .+0x44",
		"mov w10, #0x21",
		"ldr x12, [x26]",
		"cmp x12, x10",
		"b.cs .+0x34",
		"add x12, x12, #0x1",
		"mov w10, #0x110",
		"add x10, x1, x10",
		"lsl x11, x2, #3",
		"ldr x11, [x10, x11]",
		"cbz x11, .+0x1c",
		"str x12, [x26]",
		"add sp, sp, #0x10",
		"mov w10, #0x30",
		"ldr x10, [x11, x10]",
		"add x10, x10, #0x20",
		"br x10",
		"nop",
	}, nil)
	if len(s.words)-1 != int(out) {
		t.Fatalf("out is at %d, the branches assumed %d", len(s.words)-1, out)
	}
}

// TestPrivateStackPrologue builds the sequence the kernel's selftest
// verifier_private_stack.c ("Private stack, single prog") expects from the
// arm64 JIT: push x25/x27, load the per-CPU stack address with the fixed
// movn/movk/movk form, add TPIDR_EL1, set FP, store r1=42 at fp-256, pop.
func TestPrivateStackPrologue(t *testing.T) {
	const privStack = 0xffff_8000_8123_4560
	s := &seq{t: t}
	s.emit(a64.StorePair(a64.X25, a64.X27, a64.SP, -16, a64.PreIndex))
	s.emitAll(a64.AppendMovAddr(nil, a64.X27, privStack))
	s.emit(a64.Mrs(a64.X10, a64.SysRegTPIDR_EL1))
	s.emit(a64.Add(a64.X27, a64.X27, a64.X10))
	s.emit(a64.AddImm(a64.X25, a64.X27, 256))
	s.emitAll(a64.MovImm64(a64.X0, 42))
	s.emit(a64.StoreImm(a64.Size64, a64.X0, a64.X27, 0))
	s.emit(a64.LoadPair(a64.X25, a64.X27, a64.SP, 16, a64.PostIndex))
	s.check([]string{
		"stp x25, x27, [sp, #-16]!",
		"mov x27, #0xffffffffffff4560",
		"movk x27, #0x8123, lsl #16",
		"movk x27, #0x8000, lsl #32",
		"mrs x10, tpidr_el1",
		"add x27, x27, x10",
		"add x25, x27, #0x100",
		"mov w0, #0x2a",
		"str x0, [x27]",
		"ldp x25, x27, [sp], #16",
	}, map[int]string{4: "mrs x10, s3_0_c13_c0_4"})
}

// TestLLSCFetchAddSequence builds emit_ll_sc_atomic's BPF_ADD|BPF_FETCH
// fallback for CPUs without LSE: the retry loop branches back three
// instructions to the LDXR.
func TestLLSCFetchAddSequence(t *testing.T) {
	src, reg, tmp2, tmp3, ax := a64.X1, a64.X0, a64.X11, a64.X12, a64.X9
	s := &seq{t: t}
	s.emit(a64.Mov(ax, src)) // A64_MOV: ADD #0
	s.emit(a64.Ldxr(src, reg))
	s.emit(a64.Add(tmp2, src, ax))
	s.emit(a64.Stlxr(tmp3.AsW(), tmp2, reg))
	s.emit(a64.Cbnz(tmp3.AsW(), -3))
	s.emit(a64.Dmb(a64.BarrierISH))
	s.check([]string{
		"add x9, x1, #0x0",
		"ldxr x1, [x0]",
		"add x11, x1, x9",
		"stlxr w12, x11, [x0]",
		"cbnz w12, .+0xfffffffffffffff4",
		"dmb ish",
	}, nil)
}

// TestAddImmChoosesTheKernelsForm checks emit_a64_add_i's three shapes.
func TestAddImmChoosesTheKernelsForm(t *testing.T) {
	for _, c := range []struct {
		imm  int32
		want []string
	}{
		{8, []string{"add x0, x1, #0x8"}},
		{0x7000, []string{"add x0, x1, #0x7, lsl #12"}},
		{-8, []string{"sub x0, x1, #0x8"}},
		{-0x1000, []string{"sub x0, x1, #0x1, lsl #12"}},
		{0x1001, []string{"mov x10, #0x1001", "add x0, x1, x10"}},
		{-0x1001, []string{"mov x10, #0xffffffffffffefff", "add x0, x1, x10"}},
		{-2147483648, []string{"mov x10, #0xffffffff8000ffff", "movk x10, #0x0", "add x0, x1, x10"}},
	} {
		s := &seq{t: t}
		s.emitAll(a64.AppendAddImm(nil, a64.X0, a64.X1, a64.X10, c.imm))
		s.check(c.want, nil)
	}
	if _, err := a64.AppendAddImm(nil, a64.X0, a64.X1, a64.X1, 0x12345); err == nil {
		t.Error("scratch equal to the source must be refused")
	}
}
