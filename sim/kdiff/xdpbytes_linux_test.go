//go:build linux

package kdiff

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// xdpBytesProgram calls bpf_xdp_load_bytes (load) or bpf_xdp_store_bytes
// with off and n, on a 64-byte stack buffer filled with a pattern first.
// A load returns the helper's result folded with a hash of the buffer
// (what it wrote, or that it left it alone); a store returns the result,
// and the packet shows what it wrote.
func xdpBytesProgram(load bool, off int64, n int32) asm.Instructions {
	fn := asm.BuiltinFunc(190)
	if load {
		fn = 189
	}
	ins := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadImm(asm.R7, 0x1122334455667788, asm.DWord),
	}
	for i := int16(1); i <= 8; i++ {
		ins = append(ins, asm.StoreMem(asm.R10, -8*i, asm.R7, asm.DWord), asm.Add.Imm(asm.R7, 0x0101))
	}
	ins = append(ins,
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadImm(asm.R2, off, asm.DWord),
		asm.Mov.Reg(asm.R3, asm.R10),
		asm.Add.Imm(asm.R3, -64),
		asm.Mov.Imm(asm.R4, n),
		fn.Call(),
	)
	if load {
		for i := int16(1); i <= 8; i++ {
			ins = append(ins, asm.LoadMem(asm.R1, asm.R10, -8*i, asm.DWord), asm.Mul.Imm(asm.R0, 31), asm.Add.Reg(asm.R0, asm.R1))
		}
		ins = append(ins, asm.Mov.Reg(asm.R1, asm.R0), asm.RSh.Imm(asm.R1, 32), asm.Xor.Reg(asm.R0, asm.R1))
	}
	return append(ins, asm.Return())
}

// bpf_xdp_load_bytes, bpf_xdp_store_bytes and bpf_xdp_get_buff_len on
// windows in, across and past the packet, and offsets and lengths past
// their 0xffff bound: the same results, buffers and packets.
func TestXDPBytesHelpersMatchKernel(t *testing.T) {
	k := linuxLikeSim(t)
	kern, err := OpenKernel()
	if err != nil {
		t.Fatal(err)
	}
	s := &Sim{K: k}
	runs := 0
	for _, size := range []int{60, 200} {
		pkt := make([]byte, size)
		for i := range pkt {
			pkt[i] = byte(i*7 + 3)
		}
		progs := map[string]asm.Instructions{
			"get_buff_len": {asm.FnXdpGetBuffLen.Call(), asm.Return()},
		}
		for _, off := range []int64{0, 1, 14, 59, 60, 196, 0xffff, 0x10000, 0xffffffff, -1} {
			for _, n := range []int32{1, 4, 64} {
				progs[fmt.Sprintf("load off %d n %d", off, n)] = xdpBytesProgram(true, off, n)
				progs[fmt.Sprintf("store off %d n %d", off, n)] = xdpBytesProgram(false, off, n)
			}
		}
		for name, ins := range progs {
			p := &Program{Spec: &ebpf.ProgramSpec{Type: ebpf.XDP, Instructions: ins, License: "GPL"}, Packet: pkt}
			kOut, sOut := kern.Run(p), s.Run(p)
			if d := Diff(kOut, sOut); d != "" {
				t.Errorf("%d-byte packet, %s: %s", size, name, d)
			}
			if kOut.Rejected != nil {
				t.Errorf("%d-byte packet, %s: the kernel refused it: %v", size, name, kOut.Rejected)
			}
			runs++
		}
	}
	t.Logf("%d runs compared", runs)
}

// A packet pointer checked before bpf_xdp_store_bytes or
// bpf_xdp_load_bytes is still good after it, in both kernels alike.
func TestXDPBytesHelpersKeepPacketPointersLikeKernel(t *testing.T) {
	k := linuxLikeSim(t)
	kern, err := OpenKernel()
	if err != nil {
		t.Fatal(err)
	}
	s := &Sim{K: k}
	for _, fn := range []asm.BuiltinFunc{189, 190} {
		ins := asm.Instructions{
			asm.Mov.Reg(asm.R6, asm.R1),
			asm.LoadMem(asm.R7, asm.R1, 0, asm.Word), // data
			asm.LoadMem(asm.R8, asm.R1, 4, asm.Word), // data_end
			asm.Mov.Reg(asm.R2, asm.R7),
			asm.Add.Imm(asm.R2, 8),
			asm.JGT.Reg(asm.R2, asm.R8, "out"),
			asm.Mov.Imm(asm.R9, 0),
			asm.StoreMem(asm.R10, -8, asm.R9, asm.DWord),
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Mov.Imm(asm.R2, 0),
			asm.Mov.Reg(asm.R3, asm.R10),
			asm.Add.Imm(asm.R3, -8),
			asm.Mov.Imm(asm.R4, 8),
			fn.Call(),
			asm.LoadMem(asm.R0, asm.R7, 0, asm.Byte), // through the old pointer
			asm.Return(),
			asm.Mov.Imm(asm.R0, 2).WithSymbol("out"),
			asm.Return(),
		}
		p := &Program{Spec: &ebpf.ProgramSpec{Type: ebpf.XDP, Instructions: ins, License: "GPL"}, Packet: make([]byte, 64)}
		kOut, sOut := kern.Run(p), s.Run(p)
		if d := Diff(kOut, sOut); d != "" {
			t.Errorf("%v: %s", fn, d)
		}
		if kOut.Rejected != nil {
			t.Errorf("%v: the kernel refused it: %v", fn, kOut.Rejected)
		}
	}
}
