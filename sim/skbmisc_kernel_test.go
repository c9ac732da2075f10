package sim_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// skbCalls calls each helper of calls in turn, with the context in r1 and
// the call's r2, and stores the results in cb[0], cb[1]...
func skbCalls(calls ...struct {
	fn asm.BuiltinFunc
	r2 int64
}) asm.Instructions {
	insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	for i, c := range calls {
		insns = append(insns,
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.LoadImm(asm.R2, c.r2, asm.DWord),
			c.fn.Call(),
			asm.StoreMem(asm.R6, int16(48+4*i), asm.R0, asm.Word))
	}
	return append(insns, asm.Mov.Imm(asm.R0, 0), asm.Return())
}

type skbCall = struct {
	fn asm.BuiltinFunc
	r2 int64
}

// ecnPackets are IPv4 and IPv6 packets with each ECN codepoint, and ones
// too short for their header.
func ecnPackets() []skbRun {
	base := testPackets()
	var runs []skbRun
	for ecn := byte(0); ecn < 4; ecn++ {
		v4 := append([]byte(nil), base[0].data...)
		v4[14+1] = 0xb8 | ecn // DSCP EF
		v6 := append([]byte(nil), base[1].data...)
		v6[14+0], v6[14+1] = 0x6b, 0x80|ecn<<4 // traffic class 0xb8|ecn
		runs = append(runs, skbRun{name: fmt.Sprintf("IPv4, ECN %d", ecn), data: v4, ctxOut: true},
			skbRun{name: fmt.Sprintf("IPv6, ECN %d", ecn), data: v6, ctxOut: true})
	}
	short := append([]byte(nil), base[0].data[:14+19]...)
	short[14+1] = 2
	return append(runs, skbRun{name: "IPv4 header cut short", data: short, ctxOut: true})
}

// The small tc helpers, and bpf_skb_ecn_set_ce on every codepoint: the
// same results, contexts and packets in this machine's kernel.
func TestSKBMiscHelpersMatchKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	const (
		csumUpdate, csumLevel  = asm.BuiltinFunc(40), asm.BuiltinFunc(135)
		routeRealm, cgClassid  = asm.BuiltinFunc(24), asm.BuiltinFunc(17)
		skbCgClassid, ecnSetCE = asm.BuiltinFunc(151), asm.BuiltinFunc(97)
		redirectPeer           = asm.BuiltinFunc(155)
	)
	progs := map[string]asm.Instructions{
		"csum_update":                     skbCalls(skbCall{csumUpdate, 0x1234}),
		"csum_level query":                skbCalls(skbCall{csumLevel, 0}),
		"csum_level inc, query":           skbCalls(skbCall{csumLevel, 1}, skbCall{csumLevel, 0}),
		"csum_level inc x5, query":        skbCalls(skbCall{csumLevel, 1}, skbCall{csumLevel, 1}, skbCall{csumLevel, 1}, skbCall{csumLevel, 1}, skbCall{csumLevel, 1}, skbCall{csumLevel, 0}),
		"csum_level inc x2, dec, query":   skbCalls(skbCall{csumLevel, 1}, skbCall{csumLevel, 1}, skbCall{csumLevel, 2}, skbCall{csumLevel, 0}),
		"csum_level inc, dec x2, query":   skbCalls(skbCall{csumLevel, 1}, skbCall{csumLevel, 2}, skbCall{csumLevel, 2}, skbCall{csumLevel, 0}),
		"csum_level inc x2, reset, query": skbCalls(skbCall{csumLevel, 1}, skbCall{csumLevel, 1}, skbCall{csumLevel, 3}, skbCall{csumLevel, 0}),
		"csum_level 4":                    skbCalls(skbCall{csumLevel, 4}),
		"get_route_realm":                 skbCalls(skbCall{routeRealm, 0}),
		"get_cgroup_classid":              skbCalls(skbCall{cgClassid, 0}),
		"skb_cgroup_classid":              skbCalls(skbCall{skbCgClassid, 0}),
		"skb_ecn_set_ce twice":            skbCalls(skbCall{ecnSetCE, 0}, skbCall{ecnSetCE, 0}),
		"redirect_peer":                   {asm.Mov.Imm(asm.R1, 1), asm.Mov.Imm(asm.R2, 0), redirectPeer.Call(), asm.Return()},
		"redirect_peer with flags":        {asm.Mov.Imm(asm.R1, 1), asm.Mov.Imm(asm.R2, 1), redirectPeer.Call(), asm.Return()},
	}
	for _, c := range []struct {
		plen, flags int32
		null        bool
	}{{0, 0, true}, {0, 1, true}, {20, 0, false}, {8, 0, false}, {24, 0, false}} {
		ins := asm.Instructions{asm.StoreImm(asm.R10, -24, 0, asm.Word)}
		for off := int16(-20); off < 0; off += 4 {
			ins = append(ins, asm.StoreImm(asm.R10, off, 0, asm.Word))
		}
		ins = append(ins, asm.Mov.Imm(asm.R1, 1), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -24))
		if c.null {
			ins = append(ins, asm.Mov.Imm(asm.R2, 0))
		}
		ins = append(ins, asm.Mov.Imm(asm.R3, c.plen), asm.Mov.Imm(asm.R4, c.flags), asm.BuiltinFunc(152).Call(), asm.Return())
		progs[fmt.Sprintf("redirect_neigh plen=%d flags=%d null=%v", c.plen, c.flags, c.null)] = ins
	}
	runs := append(helperRuns(), ecnPackets()...)
	compared := 0
	for _, typ := range []ebpf.ProgramType{ebpf.SchedCLS, ebpf.SchedACT, ebpf.CGroupSKB} {
		for name, insns := range progs {
			compared += len(compareSKBProgram(t, k, typ, name, insns, runs))
		}
	}
	t.Logf("%d runs compared", compared)
}

// Which skb test-run inputs the kernel refuses: every packet of
// testPackets cut to every length, for each skb type.
func TestSKBInputLengthsAreTheKernels(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	ret0 := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	compared := 0
	for _, typ := range []ebpf.ProgramType{ebpf.SocketFilter, ebpf.SchedCLS, ebpf.CGroupSKB} {
		var runs []skbRun
		for _, base := range testPackets() {
			for n := 0; n <= len(base.data); n++ {
				runs = append(runs, skbRun{name: fmt.Sprintf("%s cut to %d", base.name, n), data: base.data[:n]})
			}
		}
		kErr, kOuts := kernelSKB(typ, ret0, runs)
		sErr, sOuts := simSKB(k, typ, ret0, runs)
		for _, d := range skbDiff(runs, nil, kErr, kOuts, sErr, sOuts) {
			t.Errorf("%s: %s", typ, d)
		}
		compared += len(runs)
	}
	t.Logf("%d inputs compared", compared)
}

// compareSKBProgram runs insns as typ in this machine's kernel and in
// bpfsim on runs and reports every difference under name: a program both
// refuse, with the kernel's message in bpfsim's, passes. It returns the
// kernel's outcomes (none for a refused program).
func compareSKBProgram(t *testing.T, k *sim.Kernel, typ ebpf.ProgramType, name string, insns asm.Instructions, runs []skbRun) []skbOutcome {
	t.Helper()
	kErr, kOuts := kernelSKB(typ, insns, runs)
	sErr, sOuts := simSKB(k, typ, insns, runs)
	if kErr != nil || sErr != nil {
		if (kErr == nil) != (sErr == nil) || !strings.Contains(fmt.Sprint(sErr), kdiff.LastLogLine(kErr)) {
			t.Errorf("%s, %s: kernel %v; bpfsim %v", typ, name, kErr, sErr)
		}
		return nil
	}
	for _, d := range skbDiff(runs, nil, nil, kOuts, nil, sOuts) {
		t.Errorf("%s, %s: %s", typ, name, d)
	}
	return kOuts
}
