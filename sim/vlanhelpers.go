package sim

import (
	"encoding/binary"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// The tc helpers that change an skb's VLAN tags and packet type
// (net/core/filter.c, net/core/skbuff.c): bpf_skb_vlan_push and
// bpf_skb_vlan_pop work on the offloaded tag (vlan_proto, vlan_tci) the
// way skb_vlan_push and skb_vlan_pop do, moving a tag into the packet
// when a second is pushed and back out when one is popped;
// bpf_skb_change_type sets pkt_type within the types a program may set.

// Helper ids (include/uapi/linux/bpf.h).
const (
	funcSKBVlanPush   = 18
	funcSKBVlanPop    = 19
	funcSKBChangeType = 32
)

const (
	vlanHlen         = 4      // VLAN_HLEN
	ethAlen          = 6      // ETH_ALEN
	ethP8021Q        = 0x8100 // ETH_P_8021Q
	ethP8021AD       = 0x88a8 // ETH_P_8021AD
	vlanEthHlen      = ethHlen + vlanHlen
	packetOtherhostT = 3 // PACKET_OTHERHOST, the last type a program may set
)

func (k *Kernel) registerVlanHelpers() {
	ctxOnly := [5]verifier.ArgType{verifier.ArgPtrToCtx}
	for _, h := range []struct {
		id    int32
		proto *verifier.FuncProto
		fn    func(s *skBuff, m *interp.Machine, r2, r3 uint64) uapi.Errno
	}{
		{funcSKBVlanPush, &verifier.FuncProto{ChangesPktData: true, Args: [5]verifier.ArgType{
			verifier.ArgPtrToCtx, verifier.ArgAnything, verifier.ArgAnything}}, (*skBuff).vlanPush},
		{funcSKBVlanPop, &verifier.FuncProto{ChangesPktData: true, Args: ctxOnly}, (*skBuff).vlanPop},
		{funcSKBChangeType, &verifier.FuncProto{Args: [5]verifier.ArgType{verifier.ArgPtrToCtx, verifier.ArgAnything}},
			(*skBuff).changeType},
	} {
		fn := h.fn
		err := k.RegisterHelper(&Helper{ID: h.id, Proto: h.proto, Fn: k.onSKB(h.id, func(s *skBuff, m *interp.Machine, r2, r3, _, _ uint64) (uint64, error) {
			if e := fn(s, m, r2, r3); e != 0 {
				return errnoRet(e), nil
			}
			return 0, nil
		})})
		if err != nil {
			panic(err) // the table has unique ids
		}
		k.helperTypes[h.id] = []ebpf.ProgramType{ebpf.SchedCLS, ebpf.SchedACT}
	}
}

// be16 is a protocol number as the kernel's __be16 holds it: what a
// little-endian load of its network-order bytes reads.
func be16(v uint16) uint16 { return v>>8 | v<<8 }

// isVlan is eth_type_vlan for a __be16.
func isVlan(proto uint16) bool { return proto == be16(ethP8021Q) || proto == be16(ethP8021AD) }

// vlanPush is bpf_skb_vlan_push(skb, vlan_proto, vlan_tci): a tag already
// offloaded goes into the packet after the MAC addresses (the packet's
// protocol becomes its), and the new one is offloaded; a protocol other
// than 802.1Q and 802.1ad is taken as 802.1Q.
func (s *skBuff) vlanPush(m *interp.Machine, proto, tci uint64) uapi.Errno {
	p := uint16(proto)
	if !isVlan(p) {
		p = be16(ethP8021Q)
	}
	if s.vlanProto != 0 {
		if s.data-s.page < vlanHlen {
			return uapi.ENOMEM // bpfsim's skb cannot grow its headroom
		}
		// __vlan_insert_tag: the MAC addresses move 4 bytes forward,
		// the tag goes after them.
		d := s.data - s.page
		copy(s.bytes[d-vlanHlen:], s.bytes[d:d+2*ethAlen])
		tag := s.bytes[d-vlanHlen+2*ethAlen:]
		binary.LittleEndian.PutUint16(tag, s.vlanProto)
		binary.BigEndian.PutUint16(tag[2:], s.vlanTCI)
		s.data -= vlanHlen
		s.len += vlanHlen
		s.mac -= vlanHlen
		s.network -= vlanHlen
		s.protocol = s.vlanProto
	}
	s.vlanProto, s.vlanTCI = p, uint16(tci)
	s.setPacket(m)
	return 0
}

// vlanPop is bpf_skb_vlan_pop: the offloaded tag goes, or else the
// packet's own first tag; then a tag left in the packet moves to the
// offloaded one.
func (s *skBuff) vlanPop(m *interp.Machine, _, _ uint64) uapi.Errno {
	defer s.setPacket(m)
	if s.vlanProto != 0 {
		s.vlanProto, s.vlanTCI = 0, 0
	} else {
		if !isVlan(s.protocol) {
			return 0
		}
		if _, e := s.popPacketTag(); e != 0 {
			return e
		}
	}
	if !isVlan(s.protocol) {
		return 0
	}
	proto := s.protocol
	tci, e := s.popPacketTag()
	if e != 0 {
		return e
	}
	s.vlanProto, s.vlanTCI = proto, tci
	return 0
}

// popPacketTag is __skb_vlan_pop: the tag after the MAC addresses leaves
// the packet, and the protocol becomes the one it carried.
func (s *skBuff) popPacketTag() (uint16, uapi.Errno) {
	if s.len < vlanEthHlen {
		return 0, uapi.ENOMEM // skb_ensure_writable(skb, VLAN_ETH_HLEN)
	}
	d := s.data - s.page
	hdr := s.bytes[d+ethHlen : d+vlanEthHlen]
	tci, encap := binary.BigEndian.Uint16(hdr), binary.LittleEndian.Uint16(hdr[2:])
	copy(s.bytes[d+vlanHlen:], s.bytes[d:d+2*ethAlen])
	s.data += vlanHlen
	s.len -= vlanHlen
	s.mac += vlanHlen
	if s.network < s.data+ethHlen {
		s.network = s.data + ethHlen
	}
	// vlan_set_encap_proto: a length rather than a type is raw 802.3 if
	// 0xffff follows the tag, 802.2 otherwise.
	switch raw := s.data - s.page + ethHlen; {
	case be16(encap) >= ethP8023Min:
		s.protocol = encap
	case raw+2 <= uint64(len(s.bytes)) && s.bytes[raw] == 0xff && s.bytes[raw+1] == 0xff:
		s.protocol = be16(ethP8023)
	default:
		s.protocol = be16(ethP8022)
	}
	return tci, 0
}

// changeType is bpf_skb_change_type(skb, pkt_type): from and to the
// types up to PACKET_OTHERHOST.
func (s *skBuff) changeType(_ *interp.Machine, t, _ uint64) uapi.Errno {
	if s.pktType > packetOtherhostT || uint32(t) > packetOtherhostT {
		return uapi.EINVAL
	}
	s.pktType = uint8(t)
	return 0
}
