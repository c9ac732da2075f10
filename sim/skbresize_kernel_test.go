package sim_test

import (
	"fmt"
	"strings"
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
			kErr, kOuts := kernelSKB(typ, p.insns, runs)
			sErr, sOuts := simSKB(k, typ, p.insns, runs)
			if kErr != nil || sErr != nil {
				if (kErr == nil) != (sErr == nil) || !strings.Contains(fmt.Sprint(sErr), kdiff.LastLogLine(kErr)) {
					t.Errorf("%s, %s: kernel %v; bpfsim %v", typ, p.name, kErr, sErr)
				}
				continue
			}
			for _, d := range skbDiff(runs, nil, nil, kOuts, nil, sOuts) {
				t.Errorf("%s, %s: %s", typ, p.name, d)
			}
			compared += len(kOuts)
		}
	}
	t.Logf("%d runs compared", compared)
}
