package interp

import (
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Legacy packet access: BPF_LD|BPF_ABS and BPF_LD|BPF_IND, the classic BPF
// packet loads kept for socket filters and tc programs.
//
// The kernel never runs these instructions as they are: the verifier's
// do_misc_fixups replaces each with a call to a bpf_skb_load_helper_*
// function on the skb in r6 (bpf_gen_ld_abs in net/core/filter.c),
// followed by "if r0 s< 0 { w0 = 0; exit }". bpfsim executes that
// sequence's meaning directly:
//
//   - the offset is imm (ABS) or src_reg + imm (IND), truncated to a
//     32-bit int as the helper's int argument truncates it;
//   - offsets from SKF_NET_OFF up to -1 address the network header,
//     offsets from SKF_LL_OFF below that the link-layer (MAC) header, and
//     anything lower is out of bounds;
//   - r0 gets the big-endian value of 1, 2 or 4 bytes at that offset of
//     the packet, zero-extended;
//   - an access out of the packet's linear data makes the current function
//     return 0 at once: the main program's exit ends the run with r0 = 0,
//     and in a bpf-to-bpf callee it returns 0 to the caller, as the
//     rewrite's exit instruction does.
//
// The rewrite's helper call clobbers r1-r5; the verifier then forbids
// reading them, so bpfsim leaves them alone. The verifier's demand that
// the context be in r6 is not checked either: the packet is the Machine's.

// Offsets that select a header rather than skb->data
// (include/uapi/linux/filter.h).
const (
	SKFNetOff = -0x100000 // SKF_NET_OFF
	SKFLLOff  = -0x200000 // SKF_LL_OFF
)

// Packet is the linear data of the skb a program runs on, as legacy packet
// access sees it.
type Packet struct {
	// Data is the address of skb->data, offset 0 of an LD_ABS.
	Data uint64
	// Len is the number of bytes from Data on (skb_headlen).
	Len uint32
	// MacOff and NetOff are the offsets of the link-layer and network
	// headers from Data; they may be negative (a socket filter's data
	// starts after the Ethernet header).
	MacOff, NetOff int32
}

// offset turns an LD_ABS/LD_IND offset into one relative to Data, as the
// kernel's bpf_skb_load_helper_convert_offset does.
func (p *Packet) offset(k int32) (int64, bool) {
	switch {
	case k >= 0:
		return int64(k), true
	case k >= SKFNetOff:
		return int64(k) - SKFNetOff + int64(p.NetOff), true
	case k >= SKFLLOff:
		return int64(k) - SKFLLOff + int64(p.MacOff), true
	}
	return 0, false
}

// Load is bpf_skb_load_helper_8/16/32 on the packet: the big-endian value
// of size bytes at LD_ABS/LD_IND offset k, and whether they all lie in
// the packet's linear data. A fault reading them is returned as such.
func (p *Packet) Load(tlb *mem.TLB, k int32, size int) (uint64, bool, *mem.Fault) {
	pos, ok := p.offset(k)
	if !ok || p.Data == 0 || pos+int64(size) > int64(p.Len) {
		return 0, false, nil
	}
	addr := p.Data + uint64(pos)
	var v uint64
	for i := 0; i < size; i++ {
		b, f := tlb.Load8(addr + uint64(i))
		if f != nil {
			f.Addr, f.Size = addr, size
			return 0, false, f
		}
		v = v<<8 | b
	}
	return v, true, nil
}

var ldAbsKinds = map[uint8][3]opKind{ // mode -> by size B, H, W
	insn.ABS: {opLdAbsB, opLdAbsH, opLdAbsW},
	insn.IND: {opLdIndB, opLdIndH, opLdIndW},
}

// ldAbsKind compiles an LD|ABS or LD|IND instruction, refusing the
// encodings check_ld_abs refuses.
func ldAbsKind(in insn.Insn) (opKind, error) {
	size := in.SizeBits()
	if in.Dst != insn.R0 || in.Off != 0 || size == insn.DW || (in.Mode() == insn.ABS && in.Src != insn.R0) {
		return 0, errors.Wrap(uapi.EINVAL, "BPF_LD_[ABS|IND] uses reserved fields")
	}
	return ldAbsKinds[in.Mode()][sizeIndex(size)], nil
}

// ldAbsMiss is what ldAbs returns for a miss in the outermost function:
// not a fault, but the run's end with r0 = 0 (see Machine.fault).
var ldAbsMiss = &mem.Fault{Reason: "legacy packet access out of bounds"}

// ldAbs runs the legacy packet load at the parked pc. A miss sets r0 to 0
// and returns from the current function: from a callee to its caller, and
// from the outermost function by returning ldAbsMiss.
func (m *Machine) ldAbs(r *[16]uint64) *mem.Fault {
	o := &m.prog.ops[m.pc-1]
	var k int32
	var size int
	switch o.kind {
	case opLdAbsB, opLdAbsH, opLdAbsW:
		k = int32(o.imm)
		size = 1 << (o.kind - opLdAbsB)
	default:
		k = int32(r[o.src&15] + o.imm)
		size = 1 << (o.kind - opLdIndB)
	}
	// r0 gets the big-endian value if the bytes are all in the packet.
	v, ok, f := m.Packet.Load(m.TLB, k, size)
	if f != nil {
		return f
	}
	if ok {
		r[0] = v
		return nil
	}
	r[0] = 0
	if m.depth == 0 {
		return ldAbsMiss
	}
	m.depth--
	fr := &m.frames[m.depth]
	r[6], r[7], r[8], r[9] = fr.saved[0], fr.saved[1], fr.saved[2], fr.saved[3]
	r[10] = fr.fp
	m.pc = fr.ret
	return nil
}
