package sim_test

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/kfunc"
)

// A kfunc registered with a body (seed 003's inlinable kfuncs) is called
// by default; with Options.InlineKfuncs its calls become its body, and a
// test of an argument the verifier knows is constant at the call goes,
// with the code it skips. Called or inlined, the program returns the
// same.
func TestInlinableKfuncLosesTheTestOfAConstantArgument(t *testing.T) {
	u64 := &btf.Int{Name: "u64", Size: 8}
	mask := &kfunc.Func{
		Name:  "bpfsim_test_mask",
		Proto: &btf.FuncProto{Return: u64, Params: []btf.FuncParam{{Name: "x", Type: u64}, {Name: "wide", Type: u64}}},
		Fn: func(m *interp.Machine, x, wide, _, _, _ uint64) (uint64, error) {
			if wide != 0 {
				return x, nil
			}
			return x & 0xff, nil
		},
		Inline: []insn.Insn{
			{Code: insn.ALU64 | insn.MOV | insn.X, Dst: insn.R0, Src: insn.R1},
			{Code: insn.JMP | insn.JNE | insn.K, Dst: insn.R2, Off: 1},
			{Code: insn.ALU64 | insn.AND | insn.K, Dst: insn.R0, Imm: 0xff},
			{Code: insn.JMP | insn.EXIT},
		},
	}
	for _, c := range []struct {
		inline bool
		wide   int32
		want   uint32
		// what the xlated program keeps
		calls, condJumps int
	}{
		{false, 0, 0x34, 1, 0},
		{false, 1, 0x1234, 1, 0},
		{true, 0, 0x34, 0, 0},
		{true, 1, 0x1234, 0, 0},
	} {
		k := newKernel(t, &sim.Options{InlineKfuncs: c.inline})
		if err := k.RegisterKfunc(mask); err != nil {
			t.Fatal(err)
		}
		insns := asm.Instructions{
			asm.Mov.Imm(asm.R1, 0x1234),
			asm.Mov.Imm(asm.R2, c.wide),
			kfuncCall(t, k, "bpfsim_test_mask"),
			asm.Return(),
		}
		p, err := k.NewProgram(testSpec(t, ebpf.XDP, insns))
		if err != nil {
			t.Fatal(err)
		}
		calls, condJumps := 0, 0
		for _, in := range p.Instructions() {
			switch {
			case in.Code == insn.JMP|insn.CALL:
				calls++
			case in.Class() == insn.JMP && in.Op() != insn.JA && in.Op() != insn.EXIT:
				condJumps++
			}
		}
		if got := runXDP(t, p); got != c.want || calls != c.calls || condJumps != c.condJumps {
			t.Errorf("inline %v, wide %d: returned %#x, %d calls, %d conditional jumps; want %#x, %d, %d\n%s",
				c.inline, c.wide, got, calls, condJumps, c.want, c.calls, c.condJumps, insn.Dump(p.Instructions(), nil))
		}
		p.Close()
	}
}
