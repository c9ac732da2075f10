package kdiff

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Scalars linked by a copy and a 32-bit add or subtraction of a constant
// (BPF_ADD_CONST32, in 6.18 since its stable updates of 2026), and the
// rules that keep such links sound: no link from a register whose upper
// half may be set, the sum zero-extended when a jump's bounds carry over,
// no carrying over between a 32-bit and a 64-bit link, and pruning only
// against a checkpoint with the same kind of link to the same register.
// Verdicts, errnos and whole level-2 logs compared with this machine's
// kernel.
func TestLinkedScalarsAcross32BitAddsAreTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	// u32 is a random number in r6 whose upper half is known zero.
	u32 := func(reg asm.Register) asm.Instructions {
		return asm.Instructions{asm.FnGetPrandomU32.Call(), asm.Mov.Reg32(reg, asm.R0)}
	}
	seq := func(parts ...asm.Instructions) asm.Instructions {
		var out asm.Instructions
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	exit0 := func(sym string) asm.Instructions {
		return asm.Instructions{asm.Mov.Imm(asm.R0, 0).WithSymbol(sym), asm.Return()}
	}
	// stackAt writes a byte at fp-16+off: the verifier wants off
	// bounded, and marks it precise.
	stackAt := func(off asm.Register) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -16),
			asm.Add.Reg(asm.R2, off),
			asm.Mov.Imm(asm.R3, 0),
			asm.StoreMem(asm.R2, 0, asm.R3, asm.Byte),
		}
	}
	for _, c := range []struct {
		name  string
		flags uint32
		insns asm.Instructions
	}{
		// r1 = r6 + 4 in 32 bits: r6 <= 10 bounds r1 to [4, 14].
		{"a 32-bit add links the copy", 0, seq(u32(asm.R6), asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Add.Imm32(asm.R1, 4),
			asm.JGT.Imm(asm.R6, 10, "out"),
			asm.Mov.Reg(asm.R0, asm.R1),
			asm.Return(),
		}, exit0("out"))},
		// w1 -= 3 is r6 - 3: the log shows "id=N-3".
		{"a 32-bit subtraction links too", 0, seq(u32(asm.R6), asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Sub.Imm32(asm.R1, 3),
			asm.JLT.Imm(asm.R1, 8, "out"),
			asm.Mov.Reg(asm.R0, asm.R6),
			asm.Return(),
		}, exit0("out"))},
		// r6 may exceed 32 bits: w1 += 1 loses the upper half, so r1
		// is no longer r6 plus a constant.
		{"no link from a register wider than 32 bits", 0, seq(asm.Instructions{
			asm.FnGetPrandomU32.Call(),
			asm.Mov.Reg(asm.R6, asm.R0),
			asm.LSh.Imm(asm.R6, 16),
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Add.Imm32(asm.R1, 1),
			asm.JGT.Imm(asm.R6, 10, "out"),
			asm.Mov.Reg(asm.R0, asm.R1),
			asm.Return(),
		}, exit0("out"))},
		// r0 is in [0xffffff00, 0xffffffff], w1 = w0 + 0x100 wraps to
		// [0, 0xff]: r1 <= 0x80 gives r0 in [0xffffff00, 0xffffff80],
		// whose upper half is zero, so the division by zero is dead.
		{"the delta of a 32-bit link wraps in 32 bits", 0, seq(asm.Instructions{
			asm.FnGetPrandomU32.Call(),
			asm.Or.Imm32(asm.R0, -256),
			asm.Mov.Reg(asm.R1, asm.R0),
			asm.Add.Imm32(asm.R1, 0x100),
			asm.JGT.Imm(asm.R1, 0x80, "out"),
			asm.Mov.Reg(asm.R2, asm.R0),
			asm.RSh.Imm(asm.R2, 32),
			asm.JEq.Imm(asm.R2, 0, "out"),
			asm.Div.Imm(asm.R0, 0),
		}, exit0("out"))},
		// r6 = 0xffffffff makes w7 = r6 + 1 wrap to 0: the copy learns
		// 0, zero-extended, not 1<<32, so the division is dead.
		{"a bound carried into a 32-bit sum is zero-extended", 0, seq(u32(asm.R6), asm.Instructions{
			asm.Mov.Reg(asm.R7, asm.R6),
			asm.Add.Imm32(asm.R7, 1),
			asm.LoadImm(asm.R8, 0xffffffff, asm.DWord),
			asm.JLT.Reg(asm.R6, asm.R8, "out"),
			asm.RSh.Imm(asm.R7, 32),
			asm.JEq.Imm(asm.R7, 0, "out"),
			asm.Div.Imm(asm.R0, 0),
		}, exit0("out"))},
		// r7 = r6 + 1 in 32 bits, r8 = r6 + 2 in 64: a bound on r7
		// tells nothing about r8, which stays as it was.
		{"32-bit and 64-bit links do not carry over to each other", 0, seq(u32(asm.R6), asm.Instructions{
			asm.Mov.Reg(asm.R7, asm.R6),
			asm.Add.Imm32(asm.R7, 1),
			asm.Mov.Reg(asm.R8, asm.R6),
			asm.Add.Imm(asm.R8, 2),
			asm.LoadImm(asm.R9, 0xffffffff, asm.DWord),
			asm.JLT.Reg(asm.R7, asm.R9, "out"),
			asm.Mov.Reg(asm.R0, asm.R8),
			asm.Add.Reg(asm.R0, asm.R7),
			asm.Return(),
		}, exit0("out"))},
		// The first path reaches the join with r1 = r6 + 1 in 64 bits,
		// the second with w1 = w6 + 1: the checkpoint does not cover it,
		// and the second path is walked to the end.
		{"a 64-bit link's checkpoint does not cover a 32-bit link", uapi.BPF_F_TEST_STATE_FREQ, seq(u32(asm.R6), asm.Instructions{
			asm.FnGetPrandomU32.Call(),
			asm.JEq.Imm(asm.R0, 0, "alu32"),
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Add.Imm(asm.R1, 1),
			asm.Ja.Label("join"),
			asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("alu32"),
			asm.Add.Imm32(asm.R1, 1),
			asm.JGT.Imm(asm.R6, 7, "out").WithSymbol("join"),
		}, stackAt(asm.R1), exit0("ok"), exit0("out"))},
		// The first path reaches the join with r1 = r6 + 1, the second
		// with r1 = r7 + 1 and r6 linked to r8: the checkpoint's r1 is
		// bounded by r6's bound, the second path's is not, and its
		// stack write is refused.
		{"a link to another register is not the same link", uapi.BPF_F_TEST_STATE_FREQ, seq(u32(asm.R6), u32(asm.R7), asm.Instructions{
			asm.FnGetPrandomU32.Call(),
			asm.JEq.Imm(asm.R0, 0, "other"),
			asm.Mov.Imm(asm.R8, 0),
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Add.Imm(asm.R1, 1),
			asm.Ja.Label("join"),
			asm.Mov.Reg(asm.R8, asm.R6).WithSymbol("other"),
			asm.Mov.Reg(asm.R1, asm.R7),
			asm.Add.Imm(asm.R1, 1),
			asm.JGT.Imm(asm.R6, 7, "out").WithSymbol("join"),
			asm.Mov.Reg(asm.R0, asm.R8),
		}, stackAt(asm.R1), exit0("ok"), exit0("out"))},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := &ebpf.ProgramSpec{Type: ebpf.XDP, Instructions: c.insns, License: "GPL", Flags: c.flags}
			sameVerdictAndLog(t, k, spec)
		})
	}
}
