package sim

import (
	"encoding/binary"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// Tunnel metadata (net/core/filter.c: bpf_skb_set_tunnel_key,
// bpf_skb_get_tunnel_key, bpf_skb_set_tunnel_opt, bpf_skb_get_tunnel_opt).
// A tc program that sends a packet into a collect-metadata tunnel device
// (VXLAN, Geneve) gives it the outer header's key, addresses, TOS, TTL and
// options as the skb's tunnel info (a metadata dst); one that receives
// from such a device reads them back. A test run's skb arrives with no
// tunnel info, so what a program reads is what it set: the kernel keeps
// the info in transmit form, the remote address as the destination, and
// reading it back gives the remote address where the receive side's source
// would be, as the kernel does.
//
// struct bpf_tunnel_key (44 bytes): tunnel_id (u32), remote_ipv4 or
// remote_ipv6[4], tunnel_tos, tunnel_ttl, tunnel_ext or tunnel_flags
// (__be16), tunnel_label, local_ipv4 or local_ipv6[4]. Older, shorter
// layouts are accepted as the kernel accepts them.

const (
	funcSKBGetTunnelKey = 20
	funcSKBSetTunnelKey = 21
	funcSKBGetTunnelOpt = 29
	funcSKBSetTunnelOpt = 30

	tunnelKeySize = 44

	tunInfoIPv6   = 1 << 0 // BPF_F_TUNINFO_IPV6
	tunInfoFlags  = 1 << 4 // BPF_F_TUNINFO_FLAGS (get)
	zeroCsumTx    = 1 << 1 // BPF_F_ZERO_CSUM_TX
	dontFragment  = 1 << 2 // BPF_F_DONT_FRAGMENT
	seqNumber     = 1 << 3 // BPF_F_SEQ_NUMBER
	noTunnelKey   = 1 << 4 // BPF_F_NO_TUNNEL_KEY (set)
	tunnelOptsMax = 255    // IP_TUNNEL_OPTS_MAX

	// The TUNNEL_* flags as tunnel_flags shows them (host-order values
	// of the __be16).
	tunnelCsum     = 0x0001
	tunnelKey      = 0x0004
	tunnelSeq      = 0x0008
	tunnelDontFrag = 0x0100
	tunnelNoCache  = 0x2000
	// The options-present flags set_tunnel_opt adds (GENEVE, VXLAN,
	// ERSPAN, GTP; PFCP's is past the 16 bits tunnel_flags holds).
	tunnelOptsPresent = 0x0800 | 0x1000 | 0x4000 | 0x8000
)

// tunnelInfo is the skb's struct ip_tunnel_info, in transmit form.
type tunnelInfo struct {
	ipv6     bool
	id       uint32 // tun_id's low 32 bits, which is all a program can set
	tos, ttl uint8
	flags    uint16 // TUNNEL_* values
	label    uint32 // IPv6 flow label
	dst, src [16]byte
	opts     []byte
}

// Offsets in struct bpf_tunnel_key.
const (
	tkRemote = 4
	tkTOS    = 20
	tkTTL    = 21
	tkExt    = 22
	tkLabel  = 24
	tkLocal  = 28
)

// tunnelKeyCompat says whether size is one of the older layouts:
// offsetof remote_ipv6[1], tunnel_ext, tunnel_label and local_ipv4 (6.18
// measured: a layout cut after local_ipv6[0] is not one).
func tunnelKeyCompat(size uint32) bool {
	switch size {
	case 8, tkExt, tkLabel, tkLocal:
		return true
	}
	return false
}

var (
	getTunnelKeyProto = &verifier.FuncProto{Args: [5]verifier.ArgType{
		verifier.ArgPtrToCtx, verifier.ArgPtrToUninitMem, verifier.ArgConstSize, verifier.ArgAnything}}
	setTunnelKeyProto = &verifier.FuncProto{Args: [5]verifier.ArgType{
		verifier.ArgPtrToCtx, verifier.ArgPtrToMem, verifier.ArgConstSize, verifier.ArgAnything}}
	getTunnelOptProto = &verifier.FuncProto{Args: [5]verifier.ArgType{
		verifier.ArgPtrToCtx, verifier.ArgPtrToUninitMem, verifier.ArgConstSize}}
	setTunnelOptProto = &verifier.FuncProto{Args: [5]verifier.ArgType{
		verifier.ArgPtrToCtx, verifier.ArgPtrToMem, verifier.ArgConstSize}}
)

func (k *Kernel) registerTunnelHelpers() {
	for _, h := range []struct {
		id    int32
		proto *verifier.FuncProto
		fn    skbHelperFn
	}{
		{funcSKBGetTunnelKey, getTunnelKeyProto, (*skBuff).getTunnelKey},
		{funcSKBSetTunnelKey, setTunnelKeyProto, (*skBuff).setTunnelKey},
		{funcSKBGetTunnelOpt, getTunnelOptProto, (*skBuff).getTunnelOpt},
		{funcSKBSetTunnelOpt, setTunnelOptProto, (*skBuff).setTunnelOpt},
	} {
		if err := k.RegisterHelper(&Helper{ID: h.id, Fn: k.onSKB(h.id, h.fn), Proto: h.proto}); err != nil {
			panic(err) // the table has unique ids
		}
		k.helperTypes[h.id] = []ebpf.ProgramType{ebpf.SchedCLS, ebpf.SchedACT}
	}
}

// setTunnelKey is bpf_skb_set_tunnel_key(skb, key, size, flags).
func (s *skBuff) setTunnelKey(m *interp.Machine, from, size, flags, _ uint64) (uint64, error) {
	n := uint32(size)
	if flags&^(tunInfoIPv6|zeroCsumTx|dontFragment|seqNumber|noTunnelKey) != 0 {
		return errnoRet(uapi.EINVAL), nil
	}
	if n != tunnelKeySize && !tunnelKeyCompat(n) {
		return errnoRet(uapi.EINVAL), nil
	}
	key := make([]byte, tunnelKeySize)
	if err := m.ReadMem(from, key[:n]); err != nil {
		return 0, err
	}
	le := binary.LittleEndian
	ipv6 := flags&tunInfoIPv6 != 0
	if !ipv6 && le.Uint32(key[tkLabel:]) != 0 || le.Uint16(key[tkExt:]) != 0 {
		return errnoRet(uapi.EINVAL), nil
	}
	info := &tunnelInfo{ipv6: ipv6, id: le.Uint32(key), tos: key[tkTOS], ttl: key[tkTTL], flags: tunnelNoCache}
	if flags&dontFragment != 0 {
		info.flags |= tunnelDontFrag
	}
	if flags&zeroCsumTx == 0 {
		info.flags |= tunnelCsum
	}
	if flags&seqNumber != 0 {
		info.flags |= tunnelSeq
	}
	if flags&noTunnelKey == 0 {
		info.flags |= tunnelKey
	}
	// The addresses are host-order words to the kernel (cpu_to_be32 for
	// IPv4; IPv6 is copied as it is).
	if ipv6 {
		copy(info.dst[:], key[tkRemote:tkRemote+16])
		copy(info.src[:], key[tkLocal:tkLocal+16])
		info.label = le.Uint32(key[tkLabel:]) & 0xfffff // IPV6_FLOWLABEL_MASK
	} else {
		binary.BigEndian.PutUint32(info.dst[:], le.Uint32(key[tkRemote:]))
		binary.BigEndian.PutUint32(info.src[:], le.Uint32(key[tkLocal:]))
	}
	s.tunnel = info
	return 0, nil
}

// getTunnelKey is bpf_skb_get_tunnel_key(skb, key, size, flags).
func (s *skBuff) getTunnelKey(m *interp.Machine, to, size, flags, _ uint64) (uint64, error) {
	n := uint32(size)
	fail := func(e uapi.Errno) (uint64, error) {
		if err := m.WriteMem(to, make([]byte, n)); err != nil {
			return 0, err
		}
		return errnoRet(e), nil
	}
	info := s.tunnel
	if info == nil || flags&^(tunInfoIPv6|tunInfoFlags) != 0 {
		return fail(uapi.EINVAL)
	}
	if info.ipv6 != (flags&tunInfoIPv6 != 0) {
		return fail(eproto)
	}
	if n != tunnelKeySize {
		switch {
		case n == 8:
			// The oldest layout: IPv4 only.
			if info.ipv6 {
				return fail(uapi.EINVAL)
			}
		case !tunnelKeyCompat(n):
			return fail(uapi.EINVAL)
		}
	}
	key := make([]byte, tunnelKeySize)
	le := binary.LittleEndian
	le.PutUint32(key, info.id)
	key[tkTOS], key[tkTTL] = info.tos, info.ttl
	if flags&tunInfoFlags != 0 {
		binary.BigEndian.PutUint16(key[tkExt:], info.flags)
	}
	// Read back, the remote address is the source's place and the local
	// the destination's (the receive side's view).
	if info.ipv6 {
		copy(key[tkRemote:], info.src[:])
		copy(key[tkLocal:], info.dst[:])
		le.PutUint32(key[tkLabel:], info.label)
	} else {
		le.PutUint32(key[tkRemote:], binary.BigEndian.Uint32(info.src[:]))
		le.PutUint32(key[tkLocal:], binary.BigEndian.Uint32(info.dst[:]))
	}
	if err := m.WriteMem(to, key[:n]); err != nil {
		return 0, err
	}
	return 0, nil
}

// setTunnelOpt is bpf_skb_set_tunnel_opt(skb, opt, size): options for
// the tunnel info the program set.
func (s *skBuff) setTunnelOpt(m *interp.Machine, from, size, _, _ uint64) (uint64, error) {
	n := uint32(size)
	if s.tunnel == nil || n&3 != 0 {
		return errnoRet(uapi.EINVAL), nil
	}
	if n > tunnelOptsMax {
		return errnoRet(uapi.ENOMEM), nil
	}
	opts := make([]byte, n)
	if err := m.ReadMem(from, opts); err != nil {
		return 0, err
	}
	s.tunnel.opts = opts
	if n > 0 {
		s.tunnel.flags |= tunnelOptsPresent
	}
	return 0, nil
}

// getTunnelOpt is bpf_skb_get_tunnel_opt(skb, opt, size): the options'
// length, the rest of the buffer zeroed.
func (s *skBuff) getTunnelOpt(m *interp.Machine, to, size, _, _ uint64) (uint64, error) {
	n := uint64(uint32(size))
	out := make([]byte, n)
	info := s.tunnel
	var e uapi.Errno
	switch {
	case info == nil || info.flags&tunnelOptsPresent == 0:
		e = uapi.ENOENT
	case n < uint64(len(info.opts)):
		e = uapi.ENOMEM
	default:
		copy(out, info.opts)
	}
	if err := m.WriteMem(to, out); err != nil {
		return 0, err
	}
	if e != 0 {
		return errnoRet(e), nil
	}
	return uint64(len(info.opts)), nil
}

// eproto is EPROTO.
const eproto = uapi.Errno(71)
