package jit_arm64_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf/asm"
	"golang.org/x/arch/arm64/arm64asm"

	"github.com/bpfsim/bpfsim/jit_arm64"
	"github.com/bpfsim/bpfsim/jit_arm64/a64"
	"github.com/bpfsim/bpfsim/jit_arm64/emu"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/progpack"
)

// jitEnv is an address space with a prog pack allocator, a JIT, a stack
// and a CPU to run images on.
type jitEnv struct {
	space *mem.Space
	jit   *jit_arm64.JIT
	cpu   *emu.CPU
	stack uint64
}

func newJITEnv(t testing.TB) *jitEnv {
	t.Helper()
	s := mem.New()
	alloc, err := progpack.New(s, jit_arm64.NewPatcher(s), progpack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	stack, err := s.Vmalloc(16*mem.PageSize, mem.PermRW, "stack")
	if err != nil {
		t.Fatal(err)
	}
	c := emu.New(s.NewTLB())
	c.Limit = 1 << 20
	return &jitEnv{space: s, jit: jit_arm64.New(alloc), cpu: c, stack: stack + 16*mem.PageSize}
}

func (e *jitEnv) compile(t *testing.T, prog asm.Instructions, funcs ...jit_arm64.Func) *jit_arm64.Image {
	t.Helper()
	insns, err := insn.FromAsm(prog)
	if err != nil {
		t.Fatal(err)
	}
	img, err := e.jit.Compile(&jit_arm64.Input{Insns: insns, Funcs: funcs})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func (e *jitEnv) run(img *jit_arm64.Image, r1 uint64) (uint64, error) {
	e.cpu.SetSP(e.stack)
	e.cpu.FlushDecoded()
	return e.cpu.Run(img.Entry(), r1)
}

// listing disassembles an image, one instruction per line.
func listing(img *jit_arm64.Image) []string {
	var out []string
	for _, w := range img.Words() {
		b := []byte{byte(w), byte(w >> 8), byte(w >> 16), byte(w >> 24)}
		inst, err := arm64asm.Decode(b)
		if err != nil {
			out = append(out, "?")
			continue
		}
		out = append(out, strings.TrimSpace(arm64asm.GNUSyntax(inst)))
	}
	return out
}

// TestPrologueAndEpilogueAreTheKernels compares a program with a stack
// with KERNEL-NOTES §12.2-12.3: the trampoline slot, the frame record,
// the tail call counter, the callee-saved pair of R6 and the frame
// pointer, the frame, then the mirror image.
func TestPrologueAndEpilogueAreTheKernels(t *testing.T) {
	e := newJITEnv(t)
	img := e.compile(t, asm.Instructions{
		asm.Mov.Imm(asm.R6, 3),
		asm.StoreMem(asm.RFP, -8, asm.R6, asm.DWord),
		asm.LoadMem(asm.R0, asm.RFP, -8, asm.DWord),
		asm.Return(),
	}, jit_arm64.Func{Start: 0, End: 4, StackDepth: 8})
	want := []string{
		"mov x9, x30", "nop", "stp x29, x30, [sp,#-16]!", "mov x29, sp", "stp xzr, x26, [sp,#-16]!", "mov x26, sp",
		"stp x19, x25, [sp,#-16]!", "mov x25, sp", "sub sp, sp, #0x10",
		"mov w19, #0x3", "stur x19, [x25,#-8]", "ldur x7, [x25,#-8]",
		"add sp, sp, #0x10", "ldp x19, x25, [sp],#16", "ldp xzr, x26, [sp],#16", "ldp x29, x30, [sp],#16", "mov x0, x7", "ret",
	}
	got := listing(img)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if r0, err := e.run(img, 0); err != nil || r0 != 3 {
		t.Fatalf("ran to %d, %v", r0, err)
	}
	if ws := img.Words(); img.TailCallEntry() != img.Entry()+4*jit_arm64.PrologueOffset || ws[jit_arm64.PrologueOffset-1] != 0x910003fa {
		t.Fatalf("tail calls must land after mov x26, sp")
	}
}

// TestSubprogramWithoutStackKeepsTheCallersFramePointer: a function that
// does not use R10 neither saves nor sets x25, so the caller's stack
// stays reachable after the call (a bpfsim bug the Maglev program found).
func TestSubprogramWithoutStackKeepsTheCallersFramePointer(t *testing.T) {
	e := newJITEnv(t)
	img := e.compile(t, asm.Instructions{
		asm.Mov.Imm(asm.R1, 41),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R1, 1),
		asm.Call.Label("add"),
		asm.LoadMem(asm.R1, asm.RFP, -8, asm.DWord),
		asm.Add.Reg(asm.R0, asm.R1),
		asm.Return(),
		asm.Mov.Reg(asm.R0, asm.R1).WithSymbol("add"),
		asm.Return(),
	}, jit_arm64.Func{Start: 0, End: 7, StackDepth: 8}, jit_arm64.Func{Start: 7, End: 9})
	if r0, err := e.run(img, 0); err != nil || r0 != 42 {
		t.Fatalf("ran to %d, %v", r0, err)
	}
	for _, l := range listing(img)[img.FuncEntries()[1]/4:] {
		if strings.Contains(l, "x25") {
			t.Fatalf("the subprogram touches x25: %s", l)
		}
	}
}

// TestFreedImageReadsAsBRKAndFaultsWhenRun runs an image, frees it, and
// runs it again: its memory holds the break fault instruction in every
// slot, and the run stops at the first with a BRK #0x100 fault.
func TestFreedImageReadsAsBRKAndFaultsWhenRun(t *testing.T) {
	e := newJITEnv(t)
	// Keep the pack alive with a second image, so that the freed one's
	// chunks stay mapped and are refilled rather than unmapped.
	keep := e.compile(t, asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()})
	img := e.compile(t, asm.Instructions{asm.Mov.Imm(asm.R0, 7), asm.Return()})
	if r0, err := e.run(img, 0); err != nil || r0 != 7 {
		t.Fatalf("ran to %d, %v", r0, err)
	}
	entry, n := img.Entry(), img.Len()
	if err := img.Free(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, n)
	if err := e.space.Read(entry, buf); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i += 4 {
		if w := uint32(buf[i]) | uint32(buf[i+1])<<8 | uint32(buf[i+2])<<16 | uint32(buf[i+3])<<24; w != a64.BreakFault {
			t.Fatalf("word %d of the freed image is %#08x, want BRK #0x100", i/4, w)
		}
	}
	e.cpu.SetSP(e.stack)
	_, err := e.cpu.Run(entry, 0)
	var f *emu.Fault
	if !errors.As(err, &f) || f.Kind != emu.KindBrk || f.Imm != 0x100 || f.PC != entry {
		t.Fatalf("running freed code: %v, want brk #0x100 at %#x", err, entry)
	}
	if !strings.Contains(err.Error(), "brk #0x100") {
		t.Fatalf("unclear error: %v", err)
	}
	if err := img.Free(); err == nil {
		t.Fatal("freeing an image twice succeeded")
	}
	if r0, err := e.run(keep, 0); err != nil || r0 != 1 {
		t.Fatalf("the other image of the pack: %d, %v", r0, err)
	}
}

// TestNoWritableMappingOfAnImageRemains: after Compile, every mapping of
// the image's addresses is read-only and executable (the RW buffer the
// JIT wrote is gone, no patching alias is left), and a store to the image
// faults.
func TestNoWritableMappingOfAnImageRemains(t *testing.T) {
	e := newJITEnv(t)
	img := e.compile(t, asm.Instructions{asm.Mov.Imm(asm.R0, 7), asm.Return()})
	for _, a := range e.space.Areas() {
		if a.Perm&mem.PermWrite != 0 && strings.Contains(a.Name, "bpf") {
			t.Errorf("writable area %q at %#x-%#x remains", a.Name, a.Start, a.End())
		}
	}
	if err := e.space.Write(img.Entry(), []byte{0, 0, 0, 0}); err == nil {
		t.Fatal("a direct write to the image succeeded")
	}
	if n := e.jit.Allocator().Stats(); n.Images != 1 {
		t.Fatalf("allocator stats: %+v", n)
	}
}

// TestProgramsTheJITCannotTranslateAreENOTSUPP: without a packet loader
// (Input.LdAbs), legacy packet loads are left to the interpreter.
func TestProgramsTheJITCannotTranslateAreENOTSUPP(t *testing.T) {
	e := newJITEnv(t)
	prog := []insn.Insn{{Code: insn.LD | insn.ABS | insn.W, Imm: 0}, {Code: insn.JMP | insn.EXIT}}
	if _, err := e.jit.Compile(&jit_arm64.Input{Insns: prog}); !errors.Is(err, jit_arm64.ErrNotSupported) {
		t.Errorf("ld_abs: %v, want ENOTSUPP", err)
	}
	if n := e.jit.Allocator().Stats(); n.Images != 0 {
		t.Fatalf("a failed compile left an image: %+v", n)
	}
}
