package kdiff

import (
	"testing"

	"github.com/cilium/ebpf/asm"
)

// Scalar tracking details of 6.18 that random programs found, each in a
// small program whose whole level-2 log is compared with this machine's
// kernel: the registers a byte swap reads, a constant subtracted from a
// linked scalar, and sums and differences whose unsigned ranges wrap at
// both ends (6.17's scalar_min_max_add and _sub).
func TestScalarEdgesAreTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	rand := func() asm.Instructions {
		return asm.Instructions{asm.FnGetPrandomU32.Call(), asm.Mov.Reg(asm.R6, asm.R0)}
	}
	for _, c := range []struct {
		name  string
		insns asm.Instructions
	}{
		// to_be's source bit picks the byte order: R0 is not read, so
		// it is dead before the swap (the liveness table).
		{"a byte swap reads its register only", append(rand(),
			asm.HostTo(asm.BE, asm.R6, asm.Half),
			asm.Mov.Reg(asm.R0, asm.R6),
			asm.Return(),
		)},
		// r1 = r6; r1 -= -5: r1 is r6 plus 5, and learns r6's bound.
		{"a constant subtracted from a linked scalar", append(rand(),
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Sub.Imm(asm.R1, -5),
			asm.JGT.Imm(asm.R6, 10, "out"),
			asm.Mov.Reg(asm.R0, asm.R1),
			asm.Return(),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
			asm.Return(),
		)},
		// -x of a nonzero x: 0 - [1, max] wraps at both ends, so the
		// result is nonzero too.
		{"a negated nonzero scalar stays nonzero", append(rand(),
			asm.JEq.Imm(asm.R6, 0, "out"),
			asm.Neg.Imm(asm.R6, 0),
			asm.Mov.Reg(asm.R0, asm.R6),
			asm.Return(),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
			asm.Return(),
		)},
		// [2^63-2, 2^63+1] + (2^63+2) wraps at both ends: [0, 3],
		// though the signed range knows nothing; and 32-bit alike.
		{"sums that wrap at both ends", append(rand(),
			asm.And.Imm(asm.R6, 3),
			asm.LoadImm(asm.R1, 0x7ffffffffffffffe, asm.DWord),
			asm.Add.Reg(asm.R1, asm.R6),
			asm.LoadImm(asm.R2, -0x7ffffffffffffffe, asm.DWord),
			asm.Add.Reg(asm.R1, asm.R2),
			asm.Mov.Imm32(asm.R3, 0x7ffffffe),
			asm.Add.Reg32(asm.R3, asm.R6),
			asm.Add.Imm32(asm.R3, -0x7ffffffe),
			asm.Mov.Reg(asm.R0, asm.R1),
			asm.Add.Reg(asm.R0, asm.R3),
			asm.Return(),
		)},
		// [2^63-1, 2^63+2] - (2^63+3) wraps at both ends: [2^64-4,
		// 2^64-1]; and 32-bit alike.
		{"differences that wrap at both ends", append(rand(),
			asm.And.Imm(asm.R6, 3),
			asm.LoadImm(asm.R1, 0x7fffffffffffffff, asm.DWord),
			asm.Add.Reg(asm.R1, asm.R6),
			asm.LoadImm(asm.R2, -0x7ffffffffffffffd, asm.DWord),
			asm.Sub.Reg(asm.R1, asm.R2),
			asm.Mov.Imm32(asm.R3, 0x7fffffff),
			asm.Add.Reg32(asm.R3, asm.R6),
			asm.Sub.Imm32(asm.R3, -0x7ffffffd),
			asm.Mov.Reg(asm.R0, asm.R1),
			asm.Add.Reg(asm.R0, asm.R3),
			asm.Return(),
		)},
	} {
		t.Run(c.name, func(t *testing.T) { sameAcceptedLog(t, k, c.insns) })
	}
}
