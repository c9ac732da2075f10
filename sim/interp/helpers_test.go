package interp_test

import (
	"testing"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
)

// Instruction builders for tests, named after the kernel's macros in
// include/linux/filter.h.

func alu64Imm(op, dst uint8, imm int32) insn.Insn {
	return insn.Insn{Code: insn.ALU64 | op | insn.K, Dst: dst, Imm: imm}
}

func alu64Reg(op, dst, src uint8) insn.Insn {
	return insn.Insn{Code: insn.ALU64 | op | insn.X, Dst: dst, Src: src}
}

func alu32Imm(op, dst uint8, imm int32) insn.Insn {
	return insn.Insn{Code: insn.ALU | op | insn.K, Dst: dst, Imm: imm}
}

func alu32Reg(op, dst, src uint8) insn.Insn {
	return insn.Insn{Code: insn.ALU | op | insn.X, Dst: dst, Src: src}
}

func movImm(dst uint8, imm int32) insn.Insn { return alu64Imm(insn.MOV, dst, imm) }

func ldImm64(dst uint8, v uint64) []insn.Insn {
	return []insn.Insn{
		{Code: insn.LD | insn.IMM | insn.DW, Dst: dst, Imm: int32(uint32(v))},
		{Imm: int32(uint32(v >> 32))},
	}
}

func ldxMem(size, dst, src uint8, off int16) insn.Insn {
	return insn.Insn{Code: insn.LDX | insn.MEM | size, Dst: dst, Src: src, Off: off}
}

func ldxMemSX(size, dst, src uint8, off int16) insn.Insn {
	return insn.Insn{Code: insn.LDX | insn.MEMSX | size, Dst: dst, Src: src, Off: off}
}

func stxMem(size, dst, src uint8, off int16) insn.Insn {
	return insn.Insn{Code: insn.STX | insn.MEM | size, Dst: dst, Src: src, Off: off}
}

func stMem(size, dst uint8, off int16, imm int32) insn.Insn {
	return insn.Insn{Code: insn.ST | insn.MEM | size, Dst: dst, Off: off, Imm: imm}
}

func atomicOp(size, dst, src uint8, off int16, op int32) insn.Insn {
	return insn.Insn{Code: insn.STX | insn.ATOMIC | size, Dst: dst, Src: src, Off: off, Imm: op}
}

func jmpImm(op, dst uint8, imm int32, off int16) insn.Insn {
	return insn.Insn{Code: insn.JMP | op | insn.K, Dst: dst, Imm: imm, Off: off}
}

func jmpReg(op, dst, src uint8, off int16) insn.Insn {
	return insn.Insn{Code: insn.JMP | op | insn.X, Dst: dst, Src: src, Off: off}
}

func jmp32Imm(op, dst uint8, imm int32, off int16) insn.Insn {
	return insn.Insn{Code: insn.JMP32 | op | insn.K, Dst: dst, Imm: imm, Off: off}
}

func jmp32Reg(op, dst, src uint8, off int16) insn.Insn {
	return insn.Insn{Code: insn.JMP32 | op | insn.X, Dst: dst, Src: src, Off: off}
}

func ja(off int16) insn.Insn { return insn.Insn{Code: insn.JMP | insn.JA, Off: off} }

func callLocal(rel int32) insn.Insn {
	return insn.Insn{Code: insn.JMP | insn.CALL, Src: insn.PseudoCall, Imm: rel}
}

func callHelper(id int32) insn.Insn { return insn.Insn{Code: insn.JMP | insn.CALL, Imm: id} }

func exit() insn.Insn { return insn.Insn{Code: insn.JMP | insn.EXIT} }

// prog concatenates instructions and instruction slices.
func prog(parts ...any) []insn.Insn {
	var out []insn.Insn
	for _, p := range parts {
		switch v := p.(type) {
		case insn.Insn:
			out = append(out, v)
		case []insn.Insn:
			out = append(out, v...)
		default:
			panic("prog: unexpected part")
		}
	}
	return out
}

// testVM is a machine on a fresh address space with an optional data area.
type testVM struct {
	space *mem.Space
	m     *interp.Machine
}

func newTestVM(t testing.TB) *testVM {
	t.Helper()
	space := mem.New()
	base, err := space.Vmalloc(interp.StackSize, mem.PermRW, "bpf_stack")
	if err != nil {
		t.Fatal(err)
	}
	stack, err := space.Bytes(base, interp.StackSize)
	if err != nil {
		t.Fatal(err)
	}
	m, err := interp.NewMachine(0, space.NewTLB(), base, stack)
	if err != nil {
		t.Fatal(err)
	}
	m.MaxInsns = 1 << 24
	return &testVM{space: space, m: m}
}

// data maps b in a fresh area and returns its address.
func (vm *testVM) data(t testing.TB, b []byte, perm mem.Perm) uint64 {
	t.Helper()
	addr, err := vm.space.Vmalloc(uint64(max(len(b), 1)), mem.PermRW, "test_data")
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.space.Write(addr, b); err != nil {
		t.Fatal(err)
	}
	if perm != mem.PermRW {
		if err := vm.space.SetPerm(addr, mem.PageSize, perm); err != nil {
			t.Fatal(err)
		}
	}
	return addr
}

func (vm *testVM) run(t testing.TB, insns []insn.Insn, helpers map[int32]*interp.Helper, r1, r2 uint64) (uint64, error) {
	t.Helper()
	p, err := interp.Compile(insns, func(id int32) (*interp.Helper, error) {
		if h, ok := helpers[id]; ok {
			return h, nil
		}
		t.Fatalf("program calls unknown helper %d", id)
		return nil, nil
	})
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return vm.m.Run(p, r1, r2)
}

// mustRun runs insns and fails the test on any error.
func mustRun(t testing.TB, insns []insn.Insn) uint64 {
	t.Helper()
	r0, err := newTestVM(t).run(t, insns, nil, 0, 0)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return r0
}
