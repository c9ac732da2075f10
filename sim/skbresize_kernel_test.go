package sim_test

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim/kdiff"
)

const (
	fnChangeTail = asm.BuiltinFunc(38)
	fnChangeHead = asm.BuiltinFunc(43)
)

// resizeCall calls fn(skb, arg, flags) and stores its result in cb[0] and
// __sk_buff->len after it in cb[1]. With restore, a change_tail that
// worked is followed by a change_tail back to the length before (its
// result in cb[2]), so that the packet out holds no byte a reallocation
// left undefined.
func resizeCall(fn asm.BuiltinFunc, arg, flags int64, restore bool) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R6, 0, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadImm(asm.R2, arg, asm.DWord),
		asm.LoadImm(asm.R3, flags, asm.DWord),
		fn.Call(),
		asm.StoreMem(asm.R6, 48, asm.R0, asm.Word),
		asm.Mov.Reg(asm.R8, asm.R0),
		asm.LoadMem(asm.R1, asm.R6, 0, asm.Word),
		asm.StoreMem(asm.R6, 52, asm.R1, asm.Word),
	}
	if restore {
		insns = append(insns,
			asm.JNE.Imm(asm.R8, 0, "out"),
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Mov.Reg(asm.R2, asm.R7),
			asm.Mov.Imm(asm.R3, 0),
			fnChangeTail.Call(),
			asm.StoreMem(asm.R6, 56, asm.R0, asm.Word),
		)
	}
	return append(insns, asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return())
}

// bpf_skb_change_tail and bpf_skb_change_head on the test packets: trims
// to every edge, grows within the buffer and past it, rooms at the front
// of every size up to the cap, and flags; the same results, lengths,
// packets and contexts in this machine's kernel. A packet moved to a new
// head has its grown bytes undefined in the kernel, so those programs
// trim it back before comparing.
func TestSKBResizeMatchesKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	runs := helperRuns()
	type prog struct {
		name  string
		insns asm.Instructions
	}
	var progs []prog
	for _, n := range []int64{0, 13, 14, 15, 33, 34, 59, 60, 61, 66, 67, 68, 120, 1000, 3000, 16064, 16065, 0xffffffff} {
		for _, flags := range []int64{0, 1} {
			// Grows past the slack of the first buffer are trimmed back.
			restore := n > 120
			progs = append(progs, prog{fmt.Sprintf("change_tail %d flags %d", n, flags), resizeCall(fnChangeTail, n, flags, restore)})
		}
	}
	for _, n := range []int64{15, 34, 59} {
		// A trim and a grow back: the bytes trimmed come back.
		progs = append(progs, prog{fmt.Sprintf("change_tail %d and back", n), resizeCall(fnChangeTail, n, 0, true)})
	}
	for _, hr := range []int64{0, 1, 14, 63, 64, 65, 200, 3000, 16000, 16064, 0xffffffff} {
		for _, flags := range []int64{0, 1} {
			progs = append(progs, prog{fmt.Sprintf("change_head %d flags %d", hr, flags), resizeCall(fnChangeHead, hr, flags, false)})
		}
	}
	compared := 0
	for _, typ := range []ebpf.ProgramType{ebpf.SchedCLS, ebpf.SchedACT} {
		for _, p := range progs {
			compared += len(compareSKBProgram(t, k, typ, p.name, p.insns, runs))
		}
	}
	t.Logf("%d runs compared", compared)
}

// adjustRoomProgram raises the checksum level, calls
// bpf_skb_adjust_room(skb, diff, mode, flags) twice, and records in cb[]
// the first result, the length, the protocol, the second result, 4 bytes
// from the network header (as bpf_skb_load_bytes_relative finds it) and
// the checksum level after (in the mark).
func adjustRoomProgram(diff, mode, flags int64) asm.Instructions {
	call := func(cb int16) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.LoadImm(asm.R2, diff, asm.DWord),
			asm.LoadImm(asm.R3, mode, asm.DWord),
			asm.LoadImm(asm.R4, flags, asm.DWord),
			asm.BuiltinFunc(50).Call(),
			asm.StoreMem(asm.R6, 48+4*cb, asm.R0, asm.Word),
		}
	}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Reg(asm.R1, asm.R6), asm.Mov.Imm(asm.R2, 1), asm.BuiltinFunc(135).Call(), // csum_level inc
	}
	insns = append(insns, call(0)...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.R6, 0, asm.Word), asm.StoreMem(asm.R6, 52, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, asm.R6, 16, asm.Word), asm.StoreMem(asm.R6, 56, asm.R1, asm.Word),
	)
	insns = append(insns, call(3)...)
	insns = append(insns,
		asm.Mov.Imm(asm.R1, 0), asm.StoreMem(asm.R10, -8, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R6), asm.Mov.Imm(asm.R2, 0), asm.Mov.Reg(asm.R3, asm.R10), asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 4), asm.Mov.Imm(asm.R5, 1), asm.BuiltinFunc(68).Call(), // load_bytes_relative, NET
		asm.LoadMem(asm.R1, asm.R10, -8, asm.Word), asm.StoreMem(asm.R6, 64, asm.R1, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R6), asm.Mov.Imm(asm.R2, 0), asm.BuiltinFunc(135).Call(), // csum_level query
		asm.StoreMem(asm.R6, 8, asm.R0, asm.Word), // into the mark
		asm.Mov.Imm(asm.R0, 0), asm.Return(),
	)
	return insns
}

// bpf_skb_adjust_room in both modes, growing and shrinking, with every
// encapsulation and decapsulation flag and their bad mixes: the same
// results, packets, protocols, network headers and checksum states.
func TestSKBAdjustRoomMatchesKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	runs := append(helperRuns(), testPackets()[2]) // and ARP, which it refuses
	runs[len(runs)-1].ctxOut = true
	const (
		gso, v4, v6, gre, udp, noReset, l2eth, d4, d6 = 1, 2, 4, 8, 16, 32, 64, 128, 256
	)
	l2 := func(n int64) int64 { return n << 56 }
	compared, resized := 0, 0
	for _, diff := range []int64{-41, -40, -26, -20, -8, -1, 0, 1, 8, 20, 40, 0xfff, 0x1000, -0x1000} {
		for _, mode := range []int64{0, 1, 2} {
			for _, flags := range []int64{0, gso, v4, v6, v4 | udp, v6 | gre, v4 | v6, v4 | gre | udp, v4 | l2eth | l2(14), v4 | l2eth | l2(8),
				v4 | l2(50), v4 | l2(8), noReset, d4, d6, d4 | d6, 1 << 9, gso | d6} {
				if mode == 2 && flags != 0 {
					continue
				}
				name := fmt.Sprintf("diff %d mode %d flags %#x", diff, mode, flags)
				kOuts := compareSKBProgram(t, k, ebpf.SchedCLS, name, adjustRoomProgram(diff, mode, flags), runs)
				for i, o := range kOuts {
					if o.err == nil && len(o.ctx) >= 52 && binary.LittleEndian.Uint32(o.ctx[48:]) == 0 && len(o.data) != len(runs[i].data) {
						resized++
					}
				}
				compared += len(kOuts)
			}
		}
	}
	t.Logf("%d runs compared, %d of them resized the packet", compared, resized)
	if resized < 100 {
		t.Errorf("only %d runs resized the packet", resized)
	}
}

// bpf_skb_change_proto between IPv4 and IPv6 and to everything else: the
// same results, packets, protocols and hashes (set first, cleared by a
// change).
func TestSKBChangeProtoMatchesKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	runs := append(helperRuns(), testPackets()[2])
	runs[len(runs)-1].ctxOut = true
	compared := 0
	for _, proto := range []int64{0xdd86, 0x0008, 0x0608, 0x86dd, 0} {
		for _, flags := range []int64{0, 1} {
			insns := asm.Instructions{
				asm.Mov.Reg(asm.R6, asm.R1),
				asm.Mov.Reg(asm.R1, asm.R6), asm.Mov.Imm(asm.R2, 0x1234), asm.BuiltinFunc(48).Call(), // set_hash
				asm.Mov.Reg(asm.R1, asm.R6),
				asm.LoadImm(asm.R2, proto, asm.DWord),
				asm.LoadImm(asm.R3, flags, asm.DWord),
				asm.BuiltinFunc(31).Call(),
				asm.StoreMem(asm.R6, 48, asm.R0, asm.Word),
				asm.LoadMem(asm.R1, asm.R6, 0, asm.Word), asm.StoreMem(asm.R6, 52, asm.R1, asm.Word),
				asm.LoadMem(asm.R1, asm.R6, 16, asm.Word), asm.StoreMem(asm.R6, 56, asm.R1, asm.Word),
				asm.LoadMem(asm.R1, asm.R6, 68, asm.Word), asm.StoreMem(asm.R6, 60, asm.R1, asm.Word), // hash
				asm.Mov.Imm(asm.R0, 0), asm.Return(),
			}
			compared += len(compareSKBProgram(t, k, ebpf.SchedCLS, fmt.Sprintf("proto %#x flags %d", proto, flags), insns, runs))
		}
	}
	t.Logf("%d runs compared", compared)
}
