package kdiff

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim/insn"
)

// A tc program that writes its packet starts, in the kernel's xlated code
// and in bpfsim's, with tc's unclone prologue (the test of sk_buff's
// cloned bit and the bpf_skb_pull_data call); a socket filter, which may
// not write, and a tc program that only reads get none. Only the
// prologue is compared: bpfsim leaves __sk_buff loads as written.
func TestTCProgramsThatWriteTheirPacketGetTheUnclonePrologue(t *testing.T) {
	k := linuxLikeSim(t)
	const prologueLen = 10
	// r2 = skb->data; r3 = skb->data_end; if r2 + 1 > r3 goto out;
	// then a store (or a load) of the first byte.
	prog := func(typ ebpf.ProgramType, write bool) []insn.Insn {
		if typ == ebpf.SocketFilter {
			// skb->len: a socket filter has no packet pointers.
			return []insn.Insn{
				{Code: insn.LDX | insn.MEM | insn.W, Dst: insn.R0, Src: insn.R1},
				{Code: insn.JMP | insn.EXIT},
			}
		}
		access := insn.Insn{Code: insn.LDX | insn.MEM | insn.B, Dst: insn.R4, Src: insn.R2}
		if write {
			access = insn.Insn{Code: insn.ST | insn.MEM | insn.B, Dst: insn.R2, Imm: 1}
		}
		return []insn.Insn{
			{Code: insn.LDX | insn.MEM | insn.W, Dst: insn.R2, Src: insn.R1, Off: 76},
			{Code: insn.LDX | insn.MEM | insn.W, Dst: insn.R3, Src: insn.R1, Off: 80},
			{Code: insn.ALU64 | insn.MOV | insn.X, Dst: insn.R4, Src: insn.R2},
			{Code: insn.ALU64 | insn.ADD | insn.K, Dst: insn.R4, Imm: 1},
			{Code: insn.JMP | insn.JGT | insn.X, Dst: insn.R4, Src: insn.R3, Off: 1},
			access,
			{Code: insn.ALU64 | insn.MOV | insn.K, Dst: insn.R0, Imm: 0},
			{Code: insn.JMP | insn.EXIT},
		}
	}
	for _, c := range []struct {
		name     string
		typ      ebpf.ProgramType
		write    bool
		prologue bool
	}{
		{"tc writing", ebpf.SchedCLS, true, true},
		{"tc action writing", ebpf.SchedACT, true, true},
		{"tc reading", ebpf.SchedCLS, false, false},
		{"socket filter reading", ebpf.SocketFilter, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			kx := loadInKernel(t, c.typ, prog(c.typ, c.write))
			sx := loadInSim(t, k, c.typ, prog(c.typ, c.write))
			if got := len(kx) - len(prog(c.typ, c.write)); (got >= prologueLen) != c.prologue {
				t.Fatalf("the kernel's program grew by %d instructions", got)
			}
			if got := len(sx) - len(prog(c.typ, c.write)); got != 0 && got != prologueLen || (got == prologueLen) != c.prologue {
				t.Fatalf("bpfsim's program grew by %d instructions", got)
			}
			if c.prologue {
				sameXlated(t, k, kx[:prologueLen], sx[:prologueLen])
			}
		})
	}
}
