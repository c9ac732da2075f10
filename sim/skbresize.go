package sim

import (
	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// bpf_skb_change_tail and bpf_skb_change_head (net/core/filter.c): a tc
// program grows or trims its packet at the end, or pushes room for a new
// link-layer header at the front (zeroed, the MAC header reset to it; the
// network header and protocol stay). Both are capped at BPF_SKB_MAX_LEN,
// and a trim cannot cut into the network header.
//
// The kernel reallocates an skb's head when it runs out of room; bpfsim's
// test-run skb has a buffer large enough for any packet the caps allow,
// and the packet moves within it instead. Bytes a grow takes in are zero,
// as the kernel's are (6.18, measured: even bytes a trim had cut off).

const (
	funcSKBChangeTail = 38
	funcSKBChangeHead = 43

	// bpfSKBMaxLen is BPF_SKB_MAX_LEN, SKB_MAX_ALLOC on x86-64: four
	// pages less the shared info.
	bpfSKBMaxLen = 4*4096 - skbTailroom
)

var skbResizeProto = &verifier.FuncProto{ChangesPktData: true,
	Args: [5]verifier.ArgType{verifier.ArgPtrToCtx, verifier.ArgAnything, verifier.ArgAnything}}

func (k *Kernel) registerSKBResize() {
	for _, h := range []struct {
		id int32
		fn skbHelperFn
	}{
		{funcSKBChangeTail, (*skBuff).changeTail},
		{funcSKBChangeHead, (*skBuff).changeHead},
	} {
		if err := k.RegisterHelper(&Helper{ID: h.id, Fn: k.onSKB(h.id, h.fn), Proto: skbResizeProto}); err != nil {
			panic(err) // the table has unique ids
		}
		k.helperTypes[h.id] = []ebpf.ProgramType{ebpf.SchedCLS, ebpf.SchedACT}
	}
}

// room moves the packet within its buffer so that it has at least head
// bytes before it and tail bytes after its end (short of the shared
// info), or reports ENOMEM (which the caps keep from happening). moved
// says the packet moved.
func (s *skBuff) room(head, tail uint64) (moved bool, e uapi.Errno) {
	off := s.data - s.page
	limit := uint64(len(s.bytes) - skbTailroom)
	if head+uint64(s.len)+tail > limit {
		return false, uapi.ENOMEM
	}
	var to uint64
	switch {
	case off < head:
		to = head
	case off+uint64(s.len)+tail > limit:
		to = limit - tail - uint64(s.len)
	default:
		return false, 0
	}
	copy(s.bytes[to:], s.bytes[off:off+uint64(s.len)])
	s.dirty = max(s.dirty, int(max(to, off)+uint64(s.len)+tail))
	delta := to - off // wraps for a move down; the sums below wrap back
	s.data += delta
	s.mac += delta
	s.network += delta
	return true, 0
}

// changeTail is bpf_skb_change_tail(skb, new_len, flags).
func (s *skBuff) changeTail(m *interp.Machine, newLen, flags, _, _ uint64) (uint64, error) {
	n := uint32(newLen)
	minLen := uint32(s.network - s.data) // __bpf_skb_min_len: the network offset
	if flags != 0 || n > bpfSKBMaxLen || n < minLen {
		return errnoRet(uapi.EINVAL), nil
	}
	if n > s.len {
		if _, e := s.room(0, uint64(n-s.len)); e != 0 {
			return errnoRet(e), nil
		}
		// The bytes a grow takes in are zero, even those a trim
		// had cut off (measured on 6.18).
		end := s.data - s.page + uint64(s.len)
		clear(s.bytes[end : end+uint64(n-s.len)])
		s.dirty = max(s.dirty, int(end)+int(n-s.len))
	}
	s.len = n
	s.gsoSegs, s.gsoSize = 0, 0 // skb_gso_reset
	s.setPacket(m)
	return 0, nil
}

// changeHead is bpf_skb_change_head(skb, head_room, flags).
func (s *skBuff) changeHead(m *interp.Machine, headRoom, flags, _, _ uint64) (uint64, error) {
	hr := uint32(headRoom)
	n := s.len + hr
	if flags != 0 || s.gsoSize == 0 && n > bpfSKBMaxLen || n < s.len {
		return errnoRet(uapi.EINVAL), nil
	}
	if _, e := s.room(uint64(hr), 0); e != 0 {
		return errnoRet(e), nil
	}
	s.data -= uint64(hr)
	off := s.data - s.page
	clear(s.bytes[off : off+uint64(hr)])
	s.len = n
	s.mac = s.data
	s.setPacket(m)
	return 0, nil
}

// bpf_skb_adjust_room(skb, len_diff, mode, flags): room of len_diff bytes
// made (or, negative, taken away) between the link-layer and network
// headers (BPF_ADJ_ROOM_MAC) or after the network header
// (BPF_ADJ_ROOM_NET), of IPv4 and IPv6 packets only; with the ENCAP
// flags the room is a new outer header (the protocol follows its family,
// and the skb is marked encapsulated: a second one is EALREADY), with the
// DECAP ones an outer header goes and the protocol follows what is left.
// A change resets CHECKSUM_UNNECESSARY unless told not to. A GSO skb
// (gso_size set through the context) is refused: its GSO type, which a
// test run cannot set, is not TCP.

const (
	funcSKBAdjustRoom = 50

	adjRoomNet = 0 // BPF_ADJ_ROOM_NET
	adjRoomMac = 1 // BPF_ADJ_ROOM_MAC

	adjRoomFixedGSO     = 1 << 0
	adjRoomEncapL3IPv4  = 1 << 1
	adjRoomEncapL3IPv6  = 1 << 2
	adjRoomEncapL4GRE   = 1 << 3
	adjRoomEncapL4UDP   = 1 << 4
	adjRoomNoCsumReset  = 1 << 5
	adjRoomEncapL2Eth   = 1 << 6
	adjRoomDecapL3IPv4  = 1 << 7
	adjRoomDecapL3IPv6  = 1 << 8
	adjRoomEncapL2Shift = 56

	adjRoomEncapL3Mask = adjRoomEncapL3IPv4 | adjRoomEncapL3IPv6
	adjRoomDecapL3Mask = adjRoomDecapL3IPv4 | adjRoomDecapL3IPv6
	adjRoomMask        = adjRoomFixedGSO | adjRoomEncapL3Mask | adjRoomEncapL4GRE | adjRoomEncapL4UDP |
		adjRoomEncapL2Eth | 0xff<<adjRoomEncapL2Shift | adjRoomDecapL3Mask
)

var adjustRoomProto = &verifier.FuncProto{ChangesPktData: true, Args: [5]verifier.ArgType{
	verifier.ArgPtrToCtx, verifier.ArgAnything, verifier.ArgAnything, verifier.ArgAnything}}

func (k *Kernel) registerSKBAdjustRoom() {
	if err := k.RegisterHelper(&Helper{ID: funcSKBAdjustRoom, Fn: k.onSKB(funcSKBAdjustRoom, (*skBuff).adjustRoom), Proto: adjustRoomProto}); err != nil {
		panic(err) // the table has unique ids
	}
	k.helperTypes[funcSKBAdjustRoom] = []ebpf.ProgramType{ebpf.SchedCLS, ebpf.SchedACT}
}

// netBaseLen is bpf_skb_net_base_len: the network header's fixed size.
func (s *skBuff) netBaseLen() uint32 {
	switch be16(s.protocol) {
	case 0x0800:
		return 20
	case 0x86dd:
		return 40
	}
	return 0
}

func (s *skBuff) adjustRoom(m *interp.Machine, lenDiff, mode, flags, _ uint64) (uint64, error) {
	diff := int32(lenDiff)
	abs := uint32(diff)
	if diff < 0 {
		abs = uint32(-int64(diff))
	}
	shrink := diff < 0
	lenMin := s.netBaseLen()
	switch {
	case flags&^(adjRoomMask|adjRoomNoCsumReset) != 0:
		return errnoRet(uapi.EINVAL), nil
	case abs > 0xfff:
		return errnoRet(uapi.EFAULT), nil
	case s.protocol != be16(0x0800) && s.protocol != be16(0x86dd):
		return errnoRet(uapi.ENOTSUPP), nil
	}
	off := uint32(s.network - s.mac) // skb_mac_header_len
	switch uint32(mode) {
	case adjRoomNet:
		off += lenMin
	case adjRoomMac:
	default:
		return errnoRet(uapi.ENOTSUPP), nil
	}
	if flags&adjRoomDecapL3Mask != 0 {
		if !shrink {
			return errnoRet(uapi.EINVAL), nil
		}
		switch flags & adjRoomDecapL3Mask {
		case adjRoomDecapL3IPv4:
			lenMin = 20
		case adjRoomDecapL3IPv6:
			lenMin = 40
		default:
			return errnoRet(uapi.EINVAL), nil
		}
	}
	lenCur := s.len - uint32(s.network-s.data)
	if shrink && (abs >= lenCur || lenCur-abs < lenMin) || !shrink && s.len+abs > bpfSKBMaxLen && s.gsoSize == 0 {
		return errnoRet(uapi.ENOTSUPP), nil
	}
	var e uapi.Errno
	if shrink {
		e = s.netShrink(off, abs, flags)
	} else {
		e = s.netGrow(off, abs, flags)
	}
	if e == 0 && flags&adjRoomNoCsumReset == 0 {
		s.csumUnnecessary, s.csumLevel = false, 0 // __skb_reset_checksum_unnecessary
	}
	s.setPacket(m)
	return errnoRet(e), nil
}

// netGrow is bpf_skb_net_grow: len zeroed bytes at off from data, the
// headers before them moved to the front.
func (s *skBuff) netGrow(off, n uint32, flags uint64) uapi.Errno {
	innerMacLen := uint32(flags >> adjRoomEncapL2Shift)
	encap := flags&adjRoomEncapL3Mask != 0
	if s.gsoSize != 0 {
		return uapi.ENOTSUPP // not TCP, and no UDP GSO a test run can set
	}
	if _, e := s.room(uint64(n), 0); e != 0 {
		return e
	}
	var macLen uint64
	if encap {
		switch {
		case flags&adjRoomEncapL3IPv4 != 0 && flags&adjRoomEncapL3IPv6 != 0,
			flags&adjRoomEncapL4GRE != 0 && flags&adjRoomEncapL4UDP != 0,
			flags&adjRoomEncapL2Eth != 0 && innerMacLen < ethHlen:
			return uapi.EINVAL
		case s.encapsulation:
			return ealready
		case innerMacLen > n:
			return uapi.EINVAL
		}
		macLen = s.network - s.mac
	}
	// bpf_skb_generic_push.
	start := s.data - s.page
	copy(s.bytes[start-uint64(n):], s.bytes[start:start+uint64(off)])
	clear(s.bytes[start-uint64(n)+uint64(off) : start+uint64(off)])
	s.data -= uint64(n)
	s.len += n
	s.mac -= uint64(n)
	s.network -= uint64(n)
	if encap {
		s.encapsulation = true
		s.network = s.data + macLen
		switch {
		case s.protocol == be16(0x0800) && flags&adjRoomEncapL3IPv6 != 0:
			s.protocol = be16(0x86dd)
		case s.protocol == be16(0x86dd) && flags&adjRoomEncapL3IPv4 != 0:
			s.protocol = be16(0x0800)
		}
	}
	return 0
}

// netShrink is bpf_skb_net_shrink: the n bytes at off from data go, the
// headers before them moved up.
func (s *skBuff) netShrink(off, n uint32, flags uint64) uapi.Errno {
	if flags&^(adjRoomFixedGSO|adjRoomDecapL3Mask|adjRoomNoCsumReset) != 0 {
		return uapi.EINVAL
	}
	if s.gsoSize != 0 {
		return uapi.ENOTSUPP
	}
	if off+n > s.len {
		return uapi.ENOMEM // skb_ensure_writable
	}
	start := s.data - s.page
	copy(s.bytes[start+uint64(n):], s.bytes[start:start+uint64(off)])
	s.data += uint64(n)
	s.len -= n
	s.mac += uint64(n)
	s.network += uint64(n)
	switch {
	case flags&adjRoomDecapL3IPv4 != 0:
		s.protocol = be16(0x0800)
	case flags&adjRoomDecapL3IPv6 != 0:
		s.protocol = be16(0x86dd)
	}
	return 0
}

// ealready is EALREADY.
const ealready = uapi.Errno(114)

// bpf_skb_change_proto(skb, proto, flags): the groundwork of an IPv4 to
// IPv6 translation or back (bpf_skb_proto_xlat): 20 bytes of room made
// for the longer header after the link-layer one, or taken from the
// shorter, the protocol switched and the hash cleared; the program writes
// the new header itself.

const funcSKBChangeProto = 31

// ipv6MinusIPv4 is sizeof(struct ipv6hdr) - sizeof(struct iphdr).
const ipv6MinusIPv4 = 20

func (k *Kernel) registerSKBChangeProto() {
	if err := k.RegisterHelper(&Helper{ID: funcSKBChangeProto, Fn: k.onSKB(funcSKBChangeProto, (*skBuff).changeProto), Proto: skbResizeProto}); err != nil {
		panic(err) // the table has unique ids
	}
	k.helperTypes[funcSKBChangeProto] = []ebpf.ProgramType{ebpf.SchedCLS, ebpf.SchedACT}
}

func (s *skBuff) changeProto(m *interp.Machine, proto, flags, _, _ uint64) (uint64, error) {
	if flags != 0 {
		return errnoRet(uapi.EINVAL), nil
	}
	off := uint32(s.network - s.mac) // skb_mac_header_len
	to := uint16(proto)
	var e uapi.Errno
	switch {
	case s.protocol == be16(0x0800) && to == be16(0x86dd):
		e = s.netGrow(off, ipv6MinusIPv4, 0)
	case s.protocol == be16(0x86dd) && to == be16(0x0800):
		e = s.netShrink(off, ipv6MinusIPv4, 0)
	default:
		e = uapi.ENOTSUPP
	}
	if e == 0 {
		s.protocol = to
		s.hash = 0 // skb_clear_hash
	}
	s.setPacket(m)
	return errnoRet(e), nil
}
