package sim_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// Kernel-differential tests of the skb helpers that read and rewrite the
// packet (skbhelpers.go): which program types may call them, and what
// they return, read and write on the same packets.

const (
	fnStoreBytes        = asm.BuiltinFunc(9)
	fnL3CsumReplace     = asm.BuiltinFunc(10)
	fnL4CsumReplace     = asm.BuiltinFunc(11)
	fnLoadBytes         = asm.BuiltinFunc(26)
	fnLoadBytesRelative = asm.BuiltinFunc(68)
)

// skbHelperCall calls fn with r2-r5 set and the context in r1 (kept in r6),
// stores its return value in cb[0], and returns 0 (a verdict every skb
// type accepts). A load helper reads into the 16 bytes at fp-16, filled
// with 0xaa first, and the program copies them to cb[1..4].
func skbHelperCall(fn asm.BuiltinFunc, r2, r4, r5 int64) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadImm(asm.R7, -0x5555555555555556, asm.DWord), // 0xaaaa...
		asm.StoreMem(asm.RFP, -16, asm.R7, asm.DWord),
		asm.StoreMem(asm.RFP, -8, asm.R7, asm.DWord),
		asm.LoadImm(asm.R2, r2, asm.DWord),
	}
	// r3: where a load helper writes, or the bytes a store helper stores.
	insns = append(insns, asm.Mov.Reg(asm.R3, asm.RFP), asm.Add.Imm(asm.R3, -16),
		asm.LoadImm(asm.R4, r4, asm.DWord),
		asm.LoadImm(asm.R5, r5, asm.DWord),
		fn.Call(),
		asm.StoreMem(asm.R6, 48, asm.R0, asm.Word),
	)
	for i := int16(0); i < 4; i++ { // cb[] takes word stores only
		insns = append(insns,
			asm.LoadMem(asm.R7, asm.RFP, -16+4*i, asm.Word),
			asm.StoreMem(asm.R6, 52+4*i, asm.R7, asm.Word))
	}
	return append(insns, asm.Mov.Imm(asm.R0, 0), asm.Return())
}

// csumCall calls a csum_replace helper with r2 = offset, r3 = from,
// r4 = to and r5 = flags, and stores its return value in cb[0].
func csumCall(fn asm.BuiltinFunc, off, from, to, flags int64) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadImm(asm.R2, off, asm.DWord),
		asm.LoadImm(asm.R3, from, asm.DWord),
		asm.LoadImm(asm.R4, to, asm.DWord),
		asm.LoadImm(asm.R5, flags, asm.DWord),
		fn.Call(),
		asm.StoreMem(asm.R6, 48, asm.R0, asm.Word),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}
}

// helperRuns are the packets the helpers work on, each with the context
// asked back: an IPv4/TCP packet, an IPv6/UDP one, and an IPv4/UDP one
// whose checksum is zero (none).
func helperRuns() []skbRun {
	pkts := testPackets()
	udp0 := append([]byte(nil), pkts[0].data...)
	udp0[14+9] = 17                     // UDP
	udp0[14+20+6], udp0[14+20+7] = 0, 0 // no checksum
	var runs []skbRun
	for _, r := range []skbRun{pkts[0], pkts[1], {name: "IPv4/UDP without a checksum", data: udp0}} {
		r.ctxOut = true
		runs = append(runs, r)
	}
	return runs
}

func TestSKBHelpersMatchKernel(t *testing.T) {
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
	offs := []int64{0, 1, 13, 14, 30, 44, 45, 46, 59, 60, 0x7fffffff, 0x80000000, 0xffffffff, -1}
	for _, off := range offs {
		for _, n := range []int64{1, 4, 16} {
			progs = append(progs, prog{fmt.Sprintf("skb_load_bytes off=%#x len=%d", off, n), skbHelperCall(fnLoadBytes, off, n, 0)})
			for _, hdr := range []int64{0, 1, 2, -1} {
				if n == 4 || off > 0xffff || off < 0 {
					progs = append(progs, prog{fmt.Sprintf("skb_load_bytes_relative off=%#x len=%d hdr=%d", off, n, hdr),
						skbHelperCall(fnLoadBytesRelative, off, n, hdr)})
				}
			}
			for _, flags := range []int64{0, 1, 2, 3, 4} {
				if n == 4 || flags == 0 {
					progs = append(progs, prog{fmt.Sprintf("skb_store_bytes off=%#x len=%d flags=%d", off, n, flags),
						skbHelperCall(fnStoreBytes, off, n, flags)})
				}
			}
		}
	}
	progs = append(progs, prog{"skb_load_bytes_relative off=0xffff", skbHelperCall(fnLoadBytesRelative, 0xffff, 4, 0)},
		prog{"skb_load_bytes_relative off=0x10000", skbHelperCall(fnLoadBytesRelative, 0x10000, 4, 0)})
	// The IPv4 header checksum is at 24, TCP's at 50, UDP's at 40 (IPv4)
	// or 60 (IPv6): each helper at each, with every field size and flag.
	for _, off := range []int64{24, 25, 40, 50, 58, 60, 62, 0x10000, 0x10002} {
		for _, c := range []struct{ from, to int64 }{{0x0100000a, 0x6300000a}, {0x5000, 0xbb01}, {0, 0x12345678}, {0xffffffff, 0}, {0x1_0000_0001, 2}} {
			for _, flags := range []int64{0, 2, 4, 8, 0x12, 0x14} {
				progs = append(progs, prog{fmt.Sprintf("l3_csum_replace off=%d from=%#x to=%#x flags=%#x", off, c.from, c.to, flags),
					csumCall(fnL3CsumReplace, off, c.from, c.to, flags)})
			}
			for _, flags := range []int64{0, 2, 4, 8, 0x14, 0x24, 0x64, 0x84, 0x94, 0x100, 0x22, 0x20} {
				progs = append(progs, prog{fmt.Sprintf("l4_csum_replace off=%d from=%#x to=%#x flags=%#x", off, c.from, c.to, flags),
					csumCall(fnL4CsumReplace, off, c.from, c.to, flags)})
			}
		}
	}
	// A result of zero with BPF_F_MARK_MANGLED_0: the field becomes
	// 0xffff. The TCP checksum field of the IPv4 packet holds 0x8a81 as
	// a little-endian load reads it; replacing it by difference with
	// its complement folds to zero.
	progs = append(progs, prog{"l4_csum_replace to a zero checksum, mangled", csumCall(fnL4CsumReplace, 50, 0, 0, 0x20)})

	compared, refused, failures := 0, 0, 0
	for _, typ := range []ebpf.ProgramType{ebpf.SocketFilter, ebpf.SchedCLS, ebpf.SchedACT, ebpf.CGroupSKB, ebpf.XDP} {
		for _, p := range progs {
			kErr, kOuts := kernelSKB(typ, p.insns, runs)
			sErr, sOuts := simSKB(k, typ, p.insns, runs)
			if kErr != nil || sErr != nil {
				refused++
				if (kErr == nil) != (sErr == nil) || errnoOf(kErr) != errnoOf(sErr) ||
					!strings.Contains(fmt.Sprint(sErr), kdiff.LastLogLine(kErr)) {
					failures++
					if failures <= 30 {
						t.Errorf("%s, %s: kernel %v; bpfsim %v", typ, p.name, kErr, sErr)
					}
				}
				continue
			}
			if typ == ebpf.XDP {
				continue // the skb runs below do not apply
			}
			for _, d := range skbDiff(runs, nil, nil, kOuts, nil, sOuts) {
				failures++
				if failures <= 30 {
					t.Errorf("%s, %s: %s", typ, p.name, d)
				}
			}
			compared += len(kOuts)
		}
	}
	t.Logf("%d runs compared, %d programs refused by both", compared, refused)
	if compared < 1000 {
		t.Errorf("only %d runs compared", compared)
	}
}

// TestSKBHelpersThatChangeThePacketInvalidatePacketPointersLikeKernel: a
// packet pointer read before bpf_skb_store_bytes (or a checksum helper)
// cannot be used after it, in the kernel and in bpfsim; before a helper
// that only reads, it can.
func TestSKBHelpersThatChangeThePacketInvalidatePacketPointersLikeKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	for _, c := range []struct {
		fn   asm.BuiltinFunc
		args asm.Instructions
	}{
		{fnStoreBytes, asm.Instructions{asm.Mov.Imm(asm.R2, 0), asm.Mov.Reg(asm.R3, asm.RFP), asm.Add.Imm(asm.R3, -8), asm.Mov.Imm(asm.R4, 4), asm.Mov.Imm(asm.R5, 0)}},
		{fnL3CsumReplace, asm.Instructions{asm.Mov.Imm(asm.R2, 24), asm.Mov.Imm(asm.R3, 0), asm.Mov.Imm(asm.R4, 0), asm.Mov.Imm(asm.R5, 0)}},
		{fnL4CsumReplace, asm.Instructions{asm.Mov.Imm(asm.R2, 50), asm.Mov.Imm(asm.R3, 0), asm.Mov.Imm(asm.R4, 0), asm.Mov.Imm(asm.R5, 0)}},
		{fnLoadBytes, asm.Instructions{asm.Mov.Imm(asm.R2, 0), asm.Mov.Reg(asm.R3, asm.RFP), asm.Add.Imm(asm.R3, -8), asm.Mov.Imm(asm.R4, 4)}},
	} {
		insns := asm.Instructions{
			asm.Mov.Reg(asm.R6, asm.R1),
			asm.Mov.Imm(asm.R7, 0),
			asm.StoreMem(asm.RFP, -8, asm.R7, asm.DWord), // asm.StoreImm cannot make a DW store
			asm.LoadMem(asm.R7, asm.R1, 76, asm.Word),    // data
			asm.LoadMem(asm.R8, asm.R1, 80, asm.Word),    // data_end
			asm.Mov.Reg(asm.R9, asm.R7),
			asm.Add.Imm(asm.R9, 4),
			asm.Mov.Imm(asm.R0, 0),
			asm.JGT.Reg(asm.R9, asm.R8, "out"),
			asm.Mov.Reg(asm.R1, asm.R6),
		}
		insns = append(insns, c.args...)
		insns = append(insns,
			c.fn.Call(),
			asm.LoadMem(asm.R0, asm.R7, 0, asm.Word), // the pointer from before the call
			asm.Return().WithSymbol("out"),
		)
		spec := &ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: insns}
		kp, kErr := ebpf.NewProgram(spec)
		sp, sErr := k.NewProgram(spec)
		if (kErr == nil) != (sErr == nil) || errnoOf(kErr) != errnoOf(sErr) || !strings.Contains(fmt.Sprint(sErr), kdiff.LastLogLine(kErr)) {
			t.Errorf("%v: kernel %v; bpfsim %v", c.fn, kErr, sErr)
		}
		if kp != nil {
			kp.Close()
		}
		if sp != nil {
			sp.Close()
		}
	}
}

// TestCsumDiffMatchesKernel: bpf_csum_diff on stack words and on packet
// bytes, with NULL ends, misaligned sizes and seeds, in the types that
// have it and those that do not, returns what this machine's kernel
// returns (6.18's folded 16-bit value), or is refused alike.
func TestCsumDiffMatchesKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	const fnCsumDiff = asm.BuiltinFunc(28)
	// stack puts words at fp-64 (from) and fp-32 (to).
	stack := func(from, to []uint32) asm.Instructions {
		var insns asm.Instructions
		for i, w := range from {
			insns = append(insns, asm.StoreImm(asm.RFP, -64+int16(4*i), int64(int32(w)), asm.Word))
		}
		for i, w := range to {
			insns = append(insns, asm.StoreImm(asm.RFP, -32+int16(4*i), int64(int32(w)), asm.Word))
		}
		return insns
	}
	ptr := func(r asm.Register, off int32, null bool) asm.Instruction {
		if null {
			return asm.Mov.Imm(r, 0)
		}
		return asm.Add.Imm(r, off)
	}
	call := func(fromNull, toNull bool, fromSize, toSize int32, seed int64) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.RFP), ptr(asm.R1, -64, fromNull), asm.Mov.Imm(asm.R2, fromSize),
			asm.Mov.Reg(asm.R3, asm.RFP), ptr(asm.R3, -32, toNull), asm.Mov.Imm(asm.R4, toSize),
			asm.LoadImm(asm.R5, seed, asm.DWord),
			fnCsumDiff.Call(),
			asm.Return(),
		}
	}
	words := []uint32{0x0100000a, 0x6300000a, 0xdeadbeef, 0x12345678, 0xffff0000, 0xffffffff, 0, 1}
	type prog struct {
		name  string
		insns asm.Instructions
	}
	var progs []prog
	for _, seed := range []int64{0, 0x1234, 0xffffffff, 0x87654321, -2, 0x1_0000_0005} {
		for fn := 0; fn <= 3; fn++ {
			for tn := 0; tn <= 3; tn++ {
				from, to := words[:fn], words[8-tn:]
				insns := append(stack(from, to), call(false, false, int32(4*fn), int32(4*tn), seed)...)
				progs = append(progs, prog{fmt.Sprintf("from %x to %x seed %#x", from, to, seed), insns})
			}
		}
		progs = append(progs,
			prog{fmt.Sprintf("NULL from, seed %#x", seed), append(stack(nil, words[:2]), call(true, false, 0, 8, seed)...)},
			prog{fmt.Sprintf("NULL to, seed %#x", seed), append(stack(words[:2], nil), call(false, true, 8, 0, seed)...)},
			prog{fmt.Sprintf("both NULL, seed %#x", seed), call(true, true, 0, 0, seed)})
	}
	progs = append(progs,
		prog{"size 2", append(stack(words[:1], words[:1]), call(false, false, 2, 4, 0)...)},
		prog{"size 6", append(stack(words[:2], words[:2]), call(false, false, 4, 6, 0)...)},
		prog{"sizes 1 and 0", append(stack(words[2:4], nil), call(false, true, 1, 0, 0x55)...)},
		prog{"sizes 0 and 3", append(stack(nil, words[2:4]), call(true, false, 0, 3, 0x55)...)},
		prog{"sizes 5 and 7", append(stack(words[2:4], words[3:5]), call(false, false, 5, 7, 0xabcdef)...)},
		prog{"sizes 3 and 1", append(stack(words[4:6], words[5:7]), call(false, false, 3, 1, -1)...)},
		prog{"NULL with a size", call(true, false, 4, 0, 0)},
		prog{"past the stack", append(stack(nil, words[:1]), call(false, false, 0, 40, 0)...)},
		prog{"the packet's first 20 bytes against nothing", asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // xdp_md->data (tc: len, refused below)
			asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, 20),
			asm.Mov.Imm(asm.R0, 0),
			asm.JGT.Reg(asm.R4, asm.R3, "out"),
			asm.Mov.Imm(asm.R1, 0),
			asm.Mov.Imm(asm.R2, 0),
			asm.Mov.Reg(asm.R3, asm.R2),
			asm.Mov.Imm(asm.R4, 20),
			asm.Mov.Imm(asm.R5, 0),
			fnCsumDiff.Call(),
			asm.Return().WithSymbol("out"),
		}})
	pkt := testPackets()[0].data
	compared := 0
	for _, typ := range []ebpf.ProgramType{ebpf.XDP, ebpf.SchedCLS, ebpf.SocketFilter, ebpf.CGroupSKB} {
		for _, p := range progs {
			spec := &ebpf.ProgramSpec{Type: typ, License: "GPL", Instructions: forType(typ, p.insns)}
			if loadAndRunBoth(t, k, fmt.Sprintf("%s, %s", typ, p.name), spec, pkt) {
				compared++
			}
		}
	}
	t.Logf("%d programs run in both", compared)
	if compared < 100 {
		t.Errorf("only %d programs ran", compared)
	}
}

// TestSKBHashAndPullMatchKernel: bpf_set_hash sets what __sk_buff->hash
// reads, bpf_skb_store_bytes with BPF_F_INVALIDATE_HASH and
// bpf_set_hash_invalid clear it, and bpf_skb_pull_data fails only past
// the packet; each step's hash and return value lands in cb[] for the
// output context.
func TestSKBHashAndPullMatchKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	const (
		fnPullData       = asm.BuiltinFunc(39)
		fnSetHashInvalid = asm.BuiltinFunc(41)
		fnSetHash        = asm.BuiltinFunc(48)
	)
	saveHash := func(cb int16) asm.Instructions {
		return asm.Instructions{asm.LoadMem(asm.R7, asm.R6, 68, asm.Word), asm.StoreMem(asm.R6, 48+4*cb, asm.R7, asm.Word)}
	}
	var progs []struct {
		name  string
		insns asm.Instructions
	}
	for _, storeFlags := range []int32{0, 1, 2, 3} {
		for _, pull := range []int64{0, 1, 59, 60, 61, 0xffffffff} {
			insns := asm.Instructions{
				asm.Mov.Reg(asm.R6, asm.R1),
				asm.Mov.Reg(asm.R1, asm.R6),
				asm.LoadImm(asm.R2, 0xabcd1234, asm.DWord),
				fnSetHash.Call(),
			}
			insns = append(insns, saveHash(0)...)
			insns = append(insns,
				asm.Mov.Imm(asm.R7, 0x11223344),
				asm.StoreMem(asm.RFP, -8, asm.R7, asm.Word),
				asm.Mov.Reg(asm.R1, asm.R6),
				asm.Mov.Imm(asm.R2, 20),
				asm.Mov.Reg(asm.R3, asm.RFP),
				asm.Add.Imm(asm.R3, -8),
				asm.Mov.Imm(asm.R4, 4),
				asm.Mov.Imm(asm.R5, storeFlags),
				fnStoreBytes.Call(),
			)
			insns = append(insns, saveHash(1)...)
			insns = append(insns,
				asm.Mov.Reg(asm.R1, asm.R6),
				asm.LoadImm(asm.R2, pull, asm.DWord),
				fnPullData.Call(),
				asm.StoreMem(asm.R6, 56, asm.R0, asm.Word),
				asm.Mov.Reg(asm.R1, asm.R6),
				asm.Mov.Imm(asm.R2, 7),
				fnSetHash.Call(),
				asm.Mov.Reg(asm.R1, asm.R6),
				fnSetHashInvalid.Call(),
			)
			insns = append(insns, saveHash(3)...)
			insns = append(insns, asm.Mov.Imm(asm.R0, 0), asm.Return())
			progs = append(progs, struct {
				name  string
				insns asm.Instructions
			}{fmt.Sprintf("store flags %d, pull %#x", storeFlags, pull), insns})
		}
	}
	runs := helperRuns()
	compared := 0
	for _, typ := range []ebpf.ProgramType{ebpf.SchedCLS, ebpf.SchedACT, ebpf.SocketFilter} {
		for _, p := range progs {
			kErr, kOuts := kernelSKB(typ, p.insns, runs)
			sErr, sOuts := simSKB(k, typ, p.insns, runs)
			if (kErr == nil) != (sErr == nil) || errnoOf(kErr) != errnoOf(sErr) || !strings.Contains(fmt.Sprint(sErr), kdiff.LastLogLine(kErr)) {
				t.Errorf("%s, %s: kernel %v; bpfsim %v", typ, p.name, kErr, sErr)
				continue
			}
			if kErr != nil {
				continue
			}
			for _, d := range skbDiff(runs, nil, nil, kOuts, nil, sOuts) {
				t.Errorf("%s, %s: %s", typ, p.name, d)
			}
			compared += len(kOuts)
		}
	}
	t.Logf("%d runs compared", compared)
	if compared < 100 {
		t.Errorf("only %d runs compared", compared)
	}
}

// TestVlanHelpersAndChangeTypeMatchKernel pushes and pops VLAN tags in
// every order on untagged, tagged and doubly tagged frames, and changes
// the packet type: the output frame, and the return values, protocol,
// VLAN fields and packet type seen after each step (in cb[]), must be
// the kernel's.
func TestVlanHelpersAndChangeTypeMatchKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	const (
		push       = asm.BuiltinFunc(18)
		pop        = asm.BuiltinFunc(19)
		changeType = asm.BuiltinFunc(32)
	)
	type step struct {
		fn       asm.BuiltinFunc
		arg, tci int32
	}
	prog := func(steps ...step) asm.Instructions {
		insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1), asm.Mov.Imm(asm.R8, 0)}
		for _, s := range steps {
			insns = append(insns, asm.Mov.Reg(asm.R1, asm.R6), asm.Mov.Imm(asm.R2, s.arg), asm.Mov.Imm(asm.R3, s.tci), s.fn.Call(),
				// r8 = r8 * 16 + (ret & 15): every step's errno.
				asm.And.Imm(asm.R0, 15), asm.LSh.Imm(asm.R8, 4), asm.Or.Reg(asm.R8, asm.R0))
		}
		insns = append(insns, asm.StoreMem(asm.R6, 48, asm.R8, asm.Word))
		// cb[1..4] = protocol, vlan_present, vlan_tci | vlan_proto << 16, pkt_type.
		for i, off := range []int16{16, 20, 24, 4} {
			insns = append(insns, asm.LoadMem(asm.R7, asm.R6, off, asm.Word))
			if off == 24 {
				insns = append(insns, asm.LoadMem(asm.R9, asm.R6, 28, asm.Word), asm.LSh.Imm(asm.R9, 16), asm.Or.Reg(asm.R7, asm.R9))
			}
			insns = append(insns, asm.StoreMem(asm.R6, 52+4*int16(i), asm.R7, asm.Word))
		}
		return append(insns, asm.Mov.Imm(asm.R0, 0), asm.Return())
	}
	const q, ad, ip = 0x0081, 0xa888, 0x0008 // __be16 as loaded
	cases := map[string][]step{
		"push":                   {{push, q, 5}},
		"push 802.1ad":           {{push, ad, 0x1fff}},
		"push another protocol":  {{push, ip, 7}},
		"push a 17-bit tci":      {{push, q, 0x1abcd}},
		"push twice":             {{push, q, 5}, {push, ad, 9}},
		"push three times":       {{push, q, 5}, {push, ad, 9}, {push, q, 11}},
		"pop":                    {{pop, 0, 0}},
		"pop twice":              {{pop, 0, 0}, {pop, 0, 0}},
		"push, pop":              {{push, q, 5}, {pop, 0, 0}},
		"push twice, pop":        {{push, q, 5}, {push, q, 9}, {pop, 0, 0}},
		"push twice, pop twice":  {{push, q, 5}, {push, q, 9}, {pop, 0, 0}, {pop, 0, 0}},
		"change type to 3":       {{changeType, 3, 0}},
		"change type to 1":       {{changeType, 1, 0}},
		"change type to 4":       {{changeType, 4, 0}},
		"change type to -1":      {{changeType, -1, 0}},
		"push, change type, pop": {{push, q, 5}, {changeType, 2, 0}, {pop, 0, 0}},
	}
	ipv4 := testPackets()[0].data
	tag := func(frame []byte, proto uint16, tci uint16) []byte {
		out := append([]byte(nil), frame[:12]...)
		out = append(out, byte(proto>>8), byte(proto), byte(tci>>8), byte(tci))
		return append(out, frame[12:]...)
	}
	runs := []skbRun{
		{name: "untagged IPv4", data: ipv4, ctxOut: true},
		{name: "802.1Q IPv4", data: tag(ipv4, 0x8100, 3), ctxOut: true},
		{name: "802.1ad then 802.1Q", data: tag(tag(ipv4, 0x8100, 3), 0x88a8, 0x0fff), ctxOut: true},
		{name: "802.1Q of raw 802.3", data: tag(ethFrame([6]byte{}, 0x0010, append([]byte{0xff, 0xff}, seq(14, 1)...)), 0x8100, 1), ctxOut: true},
		{name: "802.1Q of 802.2", data: tag(ethFrame([6]byte{}, 0x0020, seq(16, 1)), 0x8100, 1), ctxOut: true},
		{name: "802.1Q, 3 bytes after the tag", data: tag(ethFrame([6]byte{}, 0x0800, nil), 0x8100, 1)[:17], ctxOut: true},
	}
	compared := 0
	for name, steps := range cases {
		for _, typ := range []ebpf.ProgramType{ebpf.SchedCLS, ebpf.SocketFilter} {
			insns := prog(steps...)
			kErr, kOuts := kernelSKB(typ, insns, runs)
			sErr, sOuts := simSKB(k, typ, insns, runs)
			if (kErr == nil) != (sErr == nil) || errnoOf(kErr) != errnoOf(sErr) || !strings.Contains(fmt.Sprint(sErr), kdiff.LastLogLine(kErr)) {
				t.Errorf("%s, %s: kernel %v; bpfsim %v", typ, name, kErr, sErr)
				continue
			}
			if kErr != nil {
				continue
			}
			for _, d := range skbDiff(runs, nil, nil, kOuts, nil, sOuts) {
				t.Errorf("%s, %s: %s", typ, name, d)
			}
			compared += len(kOuts)
		}
	}
	t.Logf("%d runs compared", compared)
	if compared < 80 {
		t.Errorf("only %d runs compared", compared)
	}
}
