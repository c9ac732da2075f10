package kdiff

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
)

// Scalars linked by a copy (the same id) learn the bounds a jump finds
// for one of them, but only those live after the jump: a dead copy is
// left alone and not traced back for precision (collect_linked_regs,
// Linux 6.16). Whole level-2 logs compared with this machine's kernel.
func TestLinkedScalarsAreTheLiveOnes(t *testing.T) {
	k := linuxLikeSim(t)
	body := func(tail ...asm.Instruction) asm.Instructions {
		return append(asm.Instructions{
			asm.Mov.Imm(asm.R6, 0),
			asm.StoreMem(asm.RFP, -16, asm.R6, asm.DWord),
			asm.FnGetPrandomU32.Call(),
			asm.Mov.Reg(asm.R7, asm.R0),
			asm.JGT.Imm(asm.R7, 7, "skip"),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -16),
			asm.Add.Reg(asm.R2, asm.R7),
			asm.StoreMem(asm.R2, 0, asm.R7, asm.Byte),
			asm.LoadMem(asm.R1, asm.RFP, -16, asm.DWord).WithSymbol("skip"),
		}, tail...)
	}
	for _, c := range []struct {
		name  string
		insns asm.Instructions
	}{
		// R0 is overwritten before it is read: only R7 is linked.
		{"the copy is dead", body(asm.Mov.Imm(asm.R0, 0), asm.Return())},
		// R0 is returned: both learn the bound, both are traced.
		{"the copy is live", body(asm.Add.Reg(asm.R0, asm.R1), asm.Return())},
	} {
		t.Run(c.name, func(t *testing.T) { sameAcceptedLog(t, k, c.insns) })
	}
}

// sameAcceptedLog loads an XDP program in this machine's kernel and in
// bpfsim at log level 2: both must accept it with the same whole log.
func sameAcceptedLog(t *testing.T, k *sim.Kernel, insns asm.Instructions) {
	t.Helper()
	spec := &ebpf.ProgramSpec{Type: ebpf.XDP, Instructions: insns, License: "GPL"}
	kerr, serr, klog, slog := loadBothLogged(t, k, spec.Copy(), spec.Copy())
	if kerr != nil || serr != nil {
		t.Fatalf("kernel: %v\nbpfsim: %v", kerr, serr)
	}
	if a, b := refLog(klog), refLog(slog); a != b {
		t.Errorf("logs differ\nkernel:\n%s\nbpfsim:\n%s", a, b)
	}
}
