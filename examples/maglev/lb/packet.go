package lb

import (
	"encoding/binary"
	"math/bits"
	"net/netip"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/hashmap"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// The MAC addresses BuildPacket uses: a client's (or its router's) and
// the balancer's own.
var (
	ClientMAC = [6]byte{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	LBMAC     = [6]byte{0x02, 0x00, 0x00, 0x00, 0x00, 0xfe}
)

const (
	ethHdrLen  = 14
	ipv4HdrLen = 20
	ipv6HdrLen = 40
	tcpHdrLen  = 20
	udpHdrLen  = 8

	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	etherTypeVLAN = 0x8100
	etherTypeQinQ = 0x88a8
)

// BuildPacket builds an Ethernet frame from ClientMAC to LBMAC carrying
// f: IPv4 (or IPv6, if the addresses are) with TCP or UDP (another
// protocol gets payload bytes only), payload bytes of a fixed pattern,
// and valid checksums.
func BuildPacket(f Flow, payload int) []byte {
	if payload < 0 {
		payload = 0
	}
	l4 := l4Header(f, payload)
	v6 := f.Src.Is6() && !f.Src.Is4In6()
	ipLen := ipv4HdrLen
	etherType := uint16(etherTypeIPv4)
	if v6 {
		ipLen, etherType = ipv6HdrLen, etherTypeIPv6
	}
	pkt := make([]byte, ethHdrLen+ipLen+len(l4))
	copy(pkt[0:6], LBMAC[:])
	copy(pkt[6:12], ClientMAC[:])
	binary.BigEndian.PutUint16(pkt[12:], etherType)
	ip := pkt[ethHdrLen:]
	if v6 {
		ip[0] = 6 << 4
		binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
		ip[6] = f.Proto
		ip[7] = 64
		src, dst := f.Src.As16(), f.Dst.As16()
		copy(ip[8:], src[:])
		copy(ip[24:], dst[:])
	} else {
		ip[0] = 4<<4 | 5
		binary.BigEndian.PutUint16(ip[2:], uint16(ipv4HdrLen+len(l4)))
		binary.BigEndian.PutUint16(ip[4:], f.SrcPort) // an id
		binary.BigEndian.PutUint16(ip[6:], 0x4000)    // don't fragment
		ip[8] = 64
		ip[9] = f.Proto
		src, dst := f.Src.As4(), f.Dst.As4()
		copy(ip[12:], src[:])
		copy(ip[16:], dst[:])
		binary.BigEndian.PutUint16(ip[10:], ^onesSum(0, ip[:ipv4HdrLen]))
	}
	copy(ip[ipLen:], l4)
	setL4Checksum(pkt[ethHdrLen:], ipLen, v6)
	return pkt
}

// l4Header is the TCP or UDP header and payload of f, checksum 0.
func l4Header(f Flow, payload int) []byte {
	var h []byte
	switch f.Proto {
	case ProtoTCP:
		h = make([]byte, tcpHdrLen+payload)
		binary.BigEndian.PutUint32(h[4:], uint32(f.SrcPort)*2654435761) // seq
		h[12] = 5 << 4                                                  // data offset
		h[13] = 0x18                                                    // PSH, ACK
		binary.BigEndian.PutUint16(h[14:], 64240)                       // window
	case ProtoUDP:
		h = make([]byte, udpHdrLen+payload)
		binary.BigEndian.PutUint16(h[4:], uint16(len(h)))
	default:
		h = make([]byte, payload)
		for i := range h {
			h[i] = byte(i*7 + 1)
		}
		return h
	}
	binary.BigEndian.PutUint16(h[0:], f.SrcPort)
	binary.BigEndian.PutUint16(h[2:], f.DstPort)
	for i := len(h) - payload; i < len(h); i++ {
		h[i] = byte(i*7 + 1)
	}
	return h
}

// setL4Checksum computes the TCP or UDP checksum of the IP packet ip
// whose header is hdrLen bytes.
func setL4Checksum(ip []byte, hdrLen int, v6 bool) {
	var proto uint8
	if v6 {
		proto = ip[6]
	} else {
		proto = ip[9]
	}
	var off int
	switch proto {
	case ProtoTCP:
		off = 16
	case ProtoUDP:
		off = 6
	default:
		return
	}
	seg := ip[hdrLen:]
	seg[off], seg[off+1] = 0, 0
	c := ^onesSum(pseudoSum(ip, v6, len(seg)), seg)
	if c == 0 && proto == ProtoUDP {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(seg[off:], c)
}

// pseudoSum is the one's complement sum of the pseudo-header.
func pseudoSum(ip []byte, v6 bool, l4len int) uint16 {
	var s uint16
	var proto byte
	if v6 {
		s = onesSum(0, ip[8:40])
		proto = ip[6]
	} else {
		s = onesSum(0, ip[12:20])
		proto = ip[9]
	}
	var tail [4]byte
	binary.BigEndian.PutUint16(tail[0:], uint16(proto))
	binary.BigEndian.PutUint16(tail[2:], uint16(l4len))
	return onesSum(s, tail[:])
}

// onesSum adds b, as big-endian 16-bit words (an odd last byte padded with
// zero), to the one's complement sum s.
func onesSum(s uint16, b []byte) uint16 {
	sum := uint64(s)
	for len(b) >= 2 {
		sum += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint64(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// packet is a parsed frame.
type packet struct {
	l3     int // offset of the IP header
	ipLen  int // its length
	v6     bool
	proto  uint8
	l4     int // offset of the TCP/UDP header, 0 if none
	l4len  int
	src    netip.Addr
	dst    netip.Addr
	sport  uint16
	dport  uint16
	frag   bool
	vlanID int // -1 without a tag
}

// parse reads the headers of pkt.
func parse(pkt []byte) (*packet, error) {
	if len(pkt) < ethHdrLen {
		return nil, errors.Wrapf(uapi.EINVAL, "a frame of %d bytes", len(pkt))
	}
	p := &packet{l3: ethHdrLen, vlanID: -1}
	et := binary.BigEndian.Uint16(pkt[12:])
	if et == etherTypeVLAN || et == etherTypeQinQ {
		if len(pkt) < ethHdrLen+4 {
			return nil, errors.Wrap(uapi.EINVAL, "a VLAN tag cut short")
		}
		p.vlanID = int(binary.BigEndian.Uint16(pkt[14:]) & 0xfff)
		et = binary.BigEndian.Uint16(pkt[16:])
		p.l3 += 4
	}
	ip := pkt[p.l3:]
	switch et {
	case etherTypeIPv4:
		if len(ip) < ipv4HdrLen || ip[0]>>4 != 4 || int(ip[0]&0xf)*4 < ipv4HdrLen {
			return nil, errors.Wrap(uapi.EINVAL, "not a valid IPv4 header")
		}
		p.ipLen = int(ip[0]&0xf) * 4
		if len(ip) < p.ipLen {
			return nil, errors.Wrap(uapi.EINVAL, "IPv4 options cut short")
		}
		p.proto = ip[9]
		p.src = netip.AddrFrom4([4]byte(ip[12:16]))
		p.dst = netip.AddrFrom4([4]byte(ip[16:20]))
		p.frag = binary.BigEndian.Uint16(ip[6:])&0x3fff != 0
	case etherTypeIPv6:
		if len(ip) < ipv6HdrLen || ip[0]>>4 != 6 {
			return nil, errors.Wrap(uapi.EINVAL, "not a valid IPv6 header")
		}
		p.v6 = true
		p.ipLen = ipv6HdrLen
		p.proto = ip[6]
		p.src = netip.AddrFrom16([16]byte(ip[8:24]))
		p.dst = netip.AddrFrom16([16]byte(ip[24:40]))
	default:
		return nil, errors.Wrapf(uapi.EINVAL, "ethertype %#04x is not IP", et)
	}
	if p.frag {
		return p, nil
	}
	l4 := ip[p.ipLen:]
	need := 0
	switch p.proto {
	case ProtoTCP:
		need = tcpHdrLen
	case ProtoUDP:
		need = udpHdrLen
	default:
		return p, nil
	}
	if len(l4) < need {
		return nil, errors.Wrapf(uapi.EINVAL, "a %d-byte L4 header cut short", len(l4))
	}
	p.l4 = p.l3 + p.ipLen
	p.l4len = len(l4)
	p.sport = binary.BigEndian.Uint16(l4[0:])
	p.dport = binary.BigEndian.Uint16(l4[2:])
	return p, nil
}

// ParseDest returns the destination address and port of an Ethernet frame
// with an IPv4 or IPv6 packet (port 0 without TCP or UDP).
func ParseDest(pkt []byte) (netip.Addr, uint16, error) {
	p, err := parse(pkt)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	return p.dst, p.dport, nil
}

// ParseFlow returns the 5-tuple of an Ethernet frame with an IPv4 or IPv6
// packet (ports 0 without TCP or UDP).
func ParseFlow(pkt []byte) (Flow, error) {
	p, err := parse(pkt)
	if err != nil {
		return Flow{}, err
	}
	return Flow{Src: p.src, Dst: p.dst, SrcPort: p.sport, DstPort: p.dport, Proto: p.proto}, nil
}

// CheckChecksums verifies the IPv4 header checksum and the TCP or UDP
// checksum (a UDP checksum of 0 means none) of an Ethernet frame; the L4
// segment runs to the end of the frame.
func CheckChecksums(pkt []byte) error {
	p, err := parse(pkt)
	if err != nil {
		return err
	}
	ip := pkt[p.l3:]
	if !p.v6 && onesSum(0, ip[:p.ipLen]) != 0xffff {
		return errors.Wrapf(uapi.EINVAL, "bad IPv4 header checksum %#04x", binary.BigEndian.Uint16(ip[10:]))
	}
	if p.l4 == 0 {
		return nil
	}
	seg := pkt[p.l4:]
	if p.proto == ProtoUDP && binary.BigEndian.Uint16(seg[6:]) == 0 {
		if p.v6 {
			return errors.Wrap(uapi.EINVAL, "an IPv6 UDP checksum of 0")
		}
		return nil
	}
	if s := onesSum(pseudoSum(ip, p.v6, len(seg)), seg); s != 0xffff {
		return errors.Wrapf(uapi.EINVAL, "bad %s checksum (sum %#04x)", protoName(p.proto), s)
	}
	return nil
}

func protoName(p uint8) string {
	if p == ProtoTCP {
		return "TCP"
	}
	return "UDP"
}

// FlowHash is the program's flow hash, Cilium's: for IPv4
// hash_from_tuple_v4, that is the kernel's jhash_3words(saddr,
// (sport << 16) | dport, proto, seed); for IPv6 hash_from_tuple_v6, lookup3
// over the source address's four words, the ports word and proto, then
// the seed. Each field is taken as the program loads it from the packet
// (a little-endian load of network-order bytes). The destination address
// is not hashed. The backend is table[FlowHash(f, seed) % len(table)].
func FlowHash(f Flow, seed uint32) uint32 {
	ports := uint32(bits.ReverseBytes16(f.SrcPort))<<16 | uint32(bits.ReverseBytes16(f.DstPort))
	if f.Src.Is4() {
		src := f.Src.As4()
		return hashmap.Jhash3Words(binary.LittleEndian.Uint32(src[:]), ports, uint32(f.Proto), seed)
	}
	src := f.Src.As16()
	w := func(i int) uint32 { return binary.LittleEndian.Uint32(src[4*i:]) }
	a, b, c := hashmap.JhashMix(w(0), w(1), w(2))
	a, b, c = hashmap.JhashMix(a+w(3), b+ports, c+uint32(f.Proto))
	return hashmap.JhashFinal(a+seed, b, c)
}
