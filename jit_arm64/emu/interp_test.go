package emu_test

import (
	"fmt"
	"testing"

	"github.com/bpfsim/bpfsim/jit_arm64/a64"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
)

// runBPF runs "r0 = a; r1 = b; <op>; exit" on the BPF interpreter.
func runBPF(t *testing.T, op insn.Insn, a, b uint64) uint64 {
	t.Helper()
	s := mem.New()
	base, err := s.Vmalloc(interp.StackSize, mem.PermRW, "bpf_stack")
	if err != nil {
		t.Fatal(err)
	}
	stack, err := s.Bytes(base, interp.StackSize)
	if err != nil {
		t.Fatal(err)
	}
	m, err := interp.NewMachine(0, s.NewTLB(), base, stack)
	if err != nil {
		t.Fatal(err)
	}
	ld := func(dst uint8, v uint64) []insn.Insn {
		return []insn.Insn{{Code: insn.LD | insn.IMM | insn.DW, Dst: dst, Imm: int32(uint32(v))}, {Imm: int32(uint32(v >> 32))}}
	}
	prog := append(append(ld(0, a), ld(1, b)...), op, insn.Insn{Code: insn.JMP | insn.EXIT})
	p, err := interp.Compile(prog, func(id int32) (*interp.Helper, error) { return nil, fmt.Errorf("no helper %d", id) })
	if err != nil {
		t.Fatal(err)
	}
	r0, err := m.Run(p, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return r0
}

// TestMatchesInterpreterForJITMappedALUOps runs BPF ALU operations on the
// interpreter and the A64 sequences the arm64 JIT emits for them
// (build_insn in arch/arm64/net/bpf_jit_comp.c; BPF R0 is x7, R1 is x0,
// the temporary is x10), and requires the same results: 32-bit operations
// zero-extend, division by zero gives 0, modulo by zero keeps the
// dividend, and INT_MIN / -1 does not trap.
func TestMatchesInterpreterForJITMappedALUOps(t *testing.T) {
	dst, src, tmp := a64.X7, a64.X0, a64.X10
	dw, sw, tw := dst.AsW(), src.AsW(), tmp.AsW()
	alu := func(class, op uint8, off int16) insn.Insn {
		return insn.Insn{Code: class | op | insn.X, Dst: 0, Src: 1, Off: off}
	}
	ops := []struct {
		name string
		bpf  insn.Insn
		code []uint32
	}{
		{"add32", alu(insn.ALU, insn.ADD, 0), asm(w(a64.Add(dw, dw, sw)))},
		{"sub32", alu(insn.ALU, insn.SUB, 0), asm(w(a64.Sub(dw, dw, sw)))},
		{"mul64", alu(insn.ALU64, insn.MUL, 0), asm(w(a64.Mul(dst, dst, src)))},
		{"mul32", alu(insn.ALU, insn.MUL, 0), asm(w(a64.Mul(dw, dw, sw)))},
		{"div32", alu(insn.ALU, insn.DIV, 0), asm(w(a64.Udiv(dw, dw, sw)))},
		{"div64", alu(insn.ALU64, insn.DIV, 0), asm(w(a64.Udiv(dst, dst, src)))},
		{"sdiv64", alu(insn.ALU64, insn.DIV, 1), asm(w(a64.Sdiv(dst, dst, src)))},
		{"sdiv32", alu(insn.ALU, insn.DIV, 1), asm(w(a64.Sdiv(dw, dw, sw)))},
		{"mod32", alu(insn.ALU, insn.MOD, 0), asm(w(a64.Udiv(tw, dw, sw)), w(a64.Msub(dw, tw, sw, dw)))},
		{"mod64", alu(insn.ALU64, insn.MOD, 0), asm(w(a64.Udiv(tmp, dst, src)), w(a64.Msub(dst, tmp, src, dst)))},
		{"smod64", alu(insn.ALU64, insn.MOD, 1), asm(w(a64.Sdiv(tmp, dst, src)), w(a64.Msub(dst, tmp, src, dst)))},
		{"smod32", alu(insn.ALU, insn.MOD, 1), asm(w(a64.Sdiv(tw, dw, sw)), w(a64.Msub(dw, tw, sw, dw)))},
		{"lsh32", alu(insn.ALU, insn.LSH, 0), asm(w(a64.Lslv(dw, dw, sw)))},
		{"rsh64", alu(insn.ALU64, insn.RSH, 0), asm(w(a64.Lsrv(dst, dst, src)))},
		{"arsh32", alu(insn.ALU, insn.ARSH, 0), asm(w(a64.Asrv(dw, dw, sw)))},
		{"arsh64", alu(insn.ALU64, insn.ARSH, 0), asm(w(a64.Asrv(dst, dst, src)))},
		{"xor32", alu(insn.ALU, insn.XOR, 0), asm(w(a64.Eor(dw, dw, sw)))},
		{"neg32", insn.Insn{Code: insn.ALU | insn.NEG | insn.K}, asm(w(a64.Neg(dw, dw)))},
		{"mov32", alu(insn.ALU, insn.MOV, 0), asm(w(a64.MovReg(dw, sw)))},
	}
	values := []uint64{0, 1, 2, 7, 31, 33, 63, 0xffff_fff9, 1 << 31, 1 << 63, ^uint64(0), 0xdead_beef_1234_5678, 0x1_0000_0003, 0x8000_0000_ffff_ffff}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			e := newEnv(t)
			entry := e.text(t, append(op.code, w(a64.MovReg(a64.X0, dst)), ret))
			for _, a := range values {
				for _, b := range values {
					if (op.name == "lsh32" || op.name == "arsh32") && b&^31 != 0 {
						continue // the verifier rejects such shifts; BPF leaves them undefined
					}
					if (op.name == "rsh64" || op.name == "arsh64") && b&^63 != 0 {
						continue
					}
					want := runBPF(t, op.bpf, a, b)
					e.cpu.SetX(7, a)
					got, err := e.cpu.Run(entry, b)
					if err != nil {
						t.Fatal(err)
					}
					if got != want {
						t.Errorf("%#x, %#x: a64 %#x, interpreter %#x", a, b, got, want)
					}
				}
			}
		})
	}
}
