package sim_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// TestXDPAdjustHelpersMatchKernel moves an XDP packet's head, metadata
// and tail by deltas around every bound, alone and in sequence, then
// marks the new packet start and metadata start: the helpers' return
// values and the output bytes (from the metadata on) must be this
// machine's kernel's, for single and repeated runs.
func TestXDPAdjustHelpersMatchKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	const (
		head = asm.BuiltinFunc(44)
		meta = asm.BuiltinFunc(54)
		tail = asm.BuiltinFunc(65)
	)
	type step struct {
		fn    asm.BuiltinFunc
		delta int32
	}
	prog := func(steps ...step) asm.Instructions {
		insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1), asm.Mov.Imm(asm.R7, 0)}
		for _, s := range steps {
			// r7 = r7 * 16 + (the helper's result & 15): every step's
			// errno shows in the return value.
			insns = append(insns,
				asm.Mov.Reg(asm.R1, asm.R6),
				asm.Mov.Imm(asm.R2, s.delta),
				s.fn.Call(),
				asm.And.Imm(asm.R0, 15),
				asm.LSh.Imm(asm.R7, 4),
				asm.Or.Reg(asm.R7, asm.R0))
		}
		return append(insns,
			asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), // data
			asm.LoadMem(asm.R3, asm.R6, 4, asm.Word), // data_end
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, 1),
			asm.JGT.Reg(asm.R4, asm.R3, "meta"),
			asm.StoreImm(asm.R2, 0, 0x5a, asm.Byte),
			asm.LoadMem(asm.R4, asm.R6, 8, asm.Word).WithSymbol("meta"), // data_meta
			asm.LoadMem(asm.R2, asm.R6, 0, asm.Word),
			asm.Mov.Reg(asm.R5, asm.R4),
			asm.Add.Imm(asm.R5, 1),
			asm.JGT.Reg(asm.R5, asm.R2, "out"),
			asm.StoreImm(asm.R4, 0, 0xa5, asm.Byte),
			asm.Mov.Reg(asm.R0, asm.R7).WithSymbol("out"),
			asm.Return(),
		)
	}
	var cases []struct {
		name  string
		insns asm.Instructions
	}
	add := func(name string, steps ...step) {
		cases = append(cases, struct {
			name  string
			insns asm.Instructions
		}{name, prog(steps...)})
	}
	for _, d := range []int32{-300, -217, -216, -215, -200, -14, -1, 0, 1, 13, 32, 46, 47, 60, 1000} {
		add(fmt.Sprintf("head %d", d), step{head, d})
	}
	for _, d := range []int32{-220, -217, -216, -212, -41, -36, -33, -32, -31, -8, -4, -2, 0, 1, 4} {
		add(fmt.Sprintf("meta %d", d), step{meta, d})
	}
	for _, d := range []int32{-60, -47, -46, -45, -1, 0, 1, 100, 3400, 3460, 3461, 3500, 100000} {
		add(fmt.Sprintf("tail %d", d), step{tail, d})
	}
	add("meta -8, then head -20", step{meta, -8}, step{head, -20})
	add("meta -8, then head +20", step{meta, -8}, step{head, 20})
	add("head -200, then meta -16", step{head, -200}, step{meta, -16})
	add("head -210, then meta -8 (no room)", step{head, -210}, step{meta, -8})
	add("meta -32, then head -184", step{meta, -32}, step{head, -184})
	add("meta -32, then head -185", step{meta, -32}, step{head, -185})
	add("tail +40, then head +80", step{tail, 40}, step{head, 80})
	add("head +20, then tail -26", step{head, 20}, step{tail, -26})
	add("head +20, then tail -27", step{head, 20}, step{tail, -27})
	add("encapsulate: head -20, tail +8, meta -4", step{head, -20}, step{tail, 8}, step{meta, -4})

	pkts := [][]byte{testPackets()[0].data, ethFrame([6]byte{}, 0x0800, nil)}
	compared := 0
	for _, c := range cases {
		spec := &ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: c.insns}
		kp, kErr := ebpf.NewProgram(spec)
		if kErr != nil {
			t.Fatalf("%s: the kernel refuses the program: %v", c.name, kErr)
		}
		sp, sErr := k.NewProgram(spec)
		if sErr != nil {
			t.Fatalf("%s: bpfsim refuses the program: %v", c.name, sErr)
		}
		for _, pkt := range pkts {
			for _, repeat := range []uint32{1, 3} {
				ko := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, 4096), Repeat: repeat}
				kr, kRunErr := kp.Run(ko)
				kOut := ko.DataOut // cut to the output's size
				res, sRunErr := sp.Test(&sim.RunOptions{Data: pkt, Repeat: repeat})
				name := fmt.Sprintf("%s, %d-byte packet, repeat %d", c.name, len(pkt), repeat)
				if (kRunErr == nil) != (sRunErr == nil) {
					t.Errorf("%s: kernel %v, bpfsim %v", name, kRunErr, sRunErr)
					continue
				}
				if kRunErr != nil {
					continue
				}
				compared++
				if kr != uint32(res.R0) || !bytes.Equal(kOut, res.Data) {
					t.Errorf("%s: kernel returns %#x and % x; bpfsim %#x and % x", name, kr, kOut, res.R0, res.Data)
				}
			}
		}
		kp.Close()
		sp.Close()
	}
	t.Logf("%d runs compared", compared)
	if compared < 100 {
		t.Errorf("only %d runs compared", compared)
	}
}

// TestXDPAdjustHelpersAreXDPsOnly: a tc program cannot call them, in the
// kernel as in bpfsim.
func TestXDPAdjustHelpersAreXDPsOnly(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	for _, fn := range []asm.BuiltinFunc{44, 54, 65} {
		spec := &ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R2, 0), fn.Call(), asm.Return()}}
		_, kErr := ebpf.NewProgram(spec)
		_, sErr := k.NewProgram(spec)
		if kErr == nil || sErr == nil || errnoOf(kErr) != errnoOf(sErr) || !strings.Contains(sErr.Error(), kdiff.LastLogLine(kErr)) {
			t.Errorf("%v: kernel %v; bpfsim %v", fn, kErr, sErr)
		}
	}
}

// TestRedirectMatchesKernel: bpf_redirect's verdict for every flag in XDP
// and tc programs, and its refusal in the types without it.
func TestRedirectMatchesKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	pkt := testPackets()[0].data
	for _, typ := range []ebpf.ProgramType{ebpf.XDP, ebpf.SchedCLS, ebpf.SchedACT, ebpf.SocketFilter, ebpf.CGroupSKB} {
		for _, flags := range []int64{0, 1, 2, 3, 8, 16, 1 << 32} {
			spec := &ebpf.ProgramSpec{Type: typ, License: "GPL", Instructions: forType(typ, asm.Instructions{
				asm.Mov.Imm(asm.R1, 1), asm.LoadImm(asm.R2, flags, asm.DWord), asm.FnRedirect.Call(), asm.Return()})}
			loadAndRunBoth(t, k, fmt.Sprintf("%s, flags %#x", typ, flags), spec, pkt)
		}
	}
}

// TestTimeHelpersAreOfferedLikeKernel: bpf_ktime_get_boot_ns,
// bpf_ktime_get_coarse_ns, bpf_jiffies64 and bpf_get_numa_node_id load in
// the same program types as in the kernel; their values are the
// simulated clock's, checked in TestTimeHelpersFollowTheClock.
func TestTimeHelpersAreOfferedLikeKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	for _, fn := range []asm.BuiltinFunc{asm.FnKtimeGetBootNs, asm.FnKtimeGetCoarseNs, asm.FnJiffies64, asm.FnGetNumaNodeId} {
		for _, typ := range []ebpf.ProgramType{ebpf.XDP, ebpf.SchedCLS, ebpf.SocketFilter, ebpf.CGroupSKB,
			ebpf.Kprobe, ebpf.TracePoint, ebpf.RawTracepoint, ebpf.Syscall} {
			spec := testSpec(t, typ, asm.Instructions{fn.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return()})
			kp, kErr := ebpf.NewProgram(spec)
			sp, sErr := k.NewProgram(spec)
			if (kErr == nil) != (sErr == nil) || errnoOf(kErr) != errnoOf(sErr) || !strings.Contains(fmt.Sprint(sErr), kdiff.LastLogLine(kErr)) {
				t.Errorf("%v, %s: kernel %v; bpfsim %v", fn, typ, kErr, sErr)
			}
			if kp != nil {
				kp.Close()
			}
			if sp != nil {
				sp.Close()
			}
		}
	}
}
