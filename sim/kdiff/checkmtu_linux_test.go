//go:build linux

package kdiff

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// checkMTUProgram calls bpf_check_mtu with *mtu_len = in and returns the
// result in the top byte and what *mtu_len became in the low 24 bits.
func checkMTUProgram(ifindex, in, lenDiff, flags int64) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Imm(asm.R1, int32(in)),
		asm.StoreMem(asm.R10, -4, asm.R1, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadImm(asm.R2, ifindex, asm.DWord),
		asm.Mov.Reg(asm.R3, asm.R10),
		asm.Add.Imm(asm.R3, -4),
		asm.LoadImm(asm.R4, lenDiff, asm.DWord),
		asm.LoadImm(asm.R5, flags, asm.DWord),
		asm.FnCheckMtu.Call(),
		asm.And.Imm(asm.R0, 0xff),
		asm.LSh.Imm(asm.R0, 24),
		asm.LoadMem(asm.R1, asm.R10, -4, asm.Word),
		asm.And.Imm(asm.R1, 0xffffff),
		asm.Or.Reg(asm.R0, asm.R1),
		asm.Return(),
	}
}

// bpf_check_mtu in XDP and tc programs: devices by index (the one the
// packet arrived on, 0 or loopback's 1, and one that does not exist),
// lengths given or taken from the packet, growths that cross the MTU,
// and flags; the same results and the same *mtu_len.
func TestCheckMTUMatchesKernel(t *testing.T) {
	k := linuxLikeSim(t)
	kern, err := OpenKernel()
	if err != nil {
		t.Fatal(err)
	}
	s := &Sim{K: k}
	pkt := make([]byte, 100)
	pkt[12], pkt[13] = 0x08, 0x00
	pkt[14] = 0x45
	runs := 0
	for _, typ := range []ebpf.ProgramType{ebpf.XDP, ebpf.SchedCLS} {
		for _, ifindex := range []int64{0, 1, 0x7fffff00} {
			for _, in := range []int64{0, 1500, 65536, 65537} {
				for _, diff := range []int64{0, 65436, 65437, 65450, -100, -1 << 31} {
					for _, flags := range []int64{0, 1, 2} {
						p := &Program{Spec: &ebpf.ProgramSpec{Type: typ, License: "GPL",
							Instructions: checkMTUProgram(ifindex, in, diff, flags)}, Packet: pkt}
						kOut, sOut := kern.Run(p), s.Run(p)
						name := fmt.Sprintf("%s ifindex=%d mtu_len=%d len_diff=%d flags=%d", typ, ifindex, in, diff, flags)
						if d := Diff(kOut, sOut); d != "" {
							t.Errorf("%s: %s", name, d)
						}
						if kOut.Rejected != nil {
							t.Fatalf("%s: the kernel refused it: %v", name, kOut.Rejected)
						}
						runs++
					}
				}
			}
		}
	}
	t.Logf("%d runs compared", runs)
}
