package sim

import (
	"encoding/binary"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// The smaller helpers of tc programs (net/core/filter.c) whose answer a
// test run's skb decides: it arrives on the loopback device with no route
// (dst) and no net_cls class, checksummed by no one (CHECKSUM_NONE), and
// the run's process sits in no net_cls cgroup.
//
//   - bpf_csum_update adds to a CHECKSUM_COMPLETE skb's csum: -ENOTSUPP
//     for every other;
//   - bpf_csum_level moves the CHECKSUM_UNNECESSARY level up, down or
//     back, or asks for it;
//   - bpf_redirect_neigh and bpf_redirect_peer are the verdict
//     TC_ACT_REDIRECT, or TC_ACT_SHOT for flags (or neighbour parameters
//     too short);
//   - bpf_get_route_realm is the route's realm: 0 without a route;
//   - bpf_get_cgroup_classid and bpf_skb_cgroup_classid are the net_cls
//     class id of the task and of the socket: 0;
//   - bpf_skb_ecn_set_ce marks an ECN-capable IPv4 or IPv6 packet as
//     having met congestion (INET_ECN_set_ce), fixing the IPv4 header's
//     checksum.

// Helper ids (include/uapi/linux/bpf.h).
const (
	funcGetCgroupClassid = 17
	funcGetRouteRealm    = 24
	funcCsumUpdate       = 40
	funcSKBEcnSetCE      = 97
	funcCsumLevel        = 135
	funcSKBCgroupClassid = 151
	funcRedirectNeigh    = 152
	funcRedirectPeer     = 155
)

// bpf_csum_level's levels (BPF_CSUM_LEVEL_*) and SKB_MAX_CSUM_LEVEL.
const (
	csumLevelQuery  = 0
	csumLevelInc    = 1
	csumLevelDec    = 2
	csumLevelReset  = 3
	skbMaxCsumLevel = 3
)

// redirNeighSize is sizeof(struct bpf_redir_neigh): a family and an
// address of 16 bytes.
const redirNeighSize = 20

var (
	ctxOnlyProto        = &verifier.FuncProto{Args: [5]verifier.ArgType{verifier.ArgPtrToCtx}}
	ctxAndAnythingProto = &verifier.FuncProto{Args: [5]verifier.ArgType{verifier.ArgPtrToCtx, verifier.ArgAnything}}
	redirectNeighProto  = &verifier.FuncProto{Args: [5]verifier.ArgType{
		verifier.ArgAnything, verifier.ArgPtrToMemOrNull, verifier.ArgConstSizeOrZero, verifier.ArgAnything}}
	redirectPeerProto = &verifier.FuncProto{Args: [5]verifier.ArgType{verifier.ArgAnything, verifier.ArgAnything}}
)

func (k *Kernel) registerSKBMiscHelpers() {
	tc := []ebpf.ProgramType{ebpf.SchedCLS, ebpf.SchedACT}
	zero := func(s *skBuff, _ *interp.Machine, _, _, _, _ uint64) (uint64, error) { return 0, nil }
	for _, h := range []struct {
		id    int32
		proto *verifier.FuncProto
		fn    func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error)
		types []ebpf.ProgramType
	}{
		{funcCsumUpdate, ctxAndAnythingProto, k.onSKB(funcCsumUpdate, func(*skBuff, *interp.Machine, uint64, uint64, uint64, uint64) (uint64, error) {
			return errnoRet(uapi.ENOTSUPP), nil
		}), tc},
		{funcCsumLevel, ctxAndAnythingProto, k.onSKB(funcCsumLevel, (*skBuff).csumLevelHelper), tc},
		{funcRedirectNeigh, redirectNeighProto, func(_ *interp.Machine, _, _, plen, flags, _ uint64) (uint64, error) {
			if plen = uint64(uint32(plen)); plen != 0 && plen < redirNeighSize || flags != 0 {
				return tcActShot, nil
			}
			return tcActRedirect, nil
		}, tc},
		{funcRedirectPeer, redirectPeerProto, func(_ *interp.Machine, _, flags, _, _, _ uint64) (uint64, error) {
			if flags != 0 {
				return tcActShot, nil
			}
			return tcActRedirect, nil
		}, tc},
		{funcGetRouteRealm, ctxOnlyProto, k.onSKB(funcGetRouteRealm, zero), tc},
		{funcSKBCgroupClassid, ctxOnlyProto, k.onSKB(funcSKBCgroupClassid, zero), tc},
		{funcSKBEcnSetCE, ctxOnlyProto, k.onSKB(funcSKBEcnSetCE, (*skBuff).ecnSetCE), []ebpf.ProgramType{ebpf.SchedCLS, ebpf.SchedACT, ebpf.CGroupSKB}},
	} {
		if err := k.RegisterHelper(&Helper{ID: h.id, Fn: h.fn, Proto: h.proto}); err != nil {
			panic(err) // the table has unique ids
		}
		k.helperTypes[h.id] = h.types
	}
	// bpf_get_cgroup_classid: tc's takes the skb, every other type's
	// (bpf_get_cgroup_classid_curr) nothing; both read the task's class.
	err := k.RegisterHelper(&Helper{ID: funcGetCgroupClassid, Proto: noArgsProto,
		Fn: func(*interp.Machine, uint64, uint64, uint64, uint64, uint64) (uint64, error) { return 0, nil }})
	if err != nil {
		panic(err)
	}
	k.helperTypeProtos[funcGetCgroupClassid] = map[ebpf.ProgramType]*verifier.FuncProto{
		ebpf.SchedCLS: ctxOnlyProto, ebpf.SchedACT: ctxOnlyProto}
}

// csumLevelHelper is bpf_csum_level(skb, level).
func (s *skBuff) csumLevelHelper(_ *interp.Machine, level, _, _, _ uint64) (uint64, error) {
	switch level {
	case csumLevelInc:
		switch {
		case s.csumUnnecessary && s.csumLevel < skbMaxCsumLevel:
			s.csumLevel++
		case !s.csumUnnecessary:
			s.csumUnnecessary, s.csumLevel = true, 0
		}
	case csumLevelDec:
		if s.csumUnnecessary {
			if s.csumLevel == 0 {
				s.csumUnnecessary = false
			} else {
				s.csumLevel--
			}
		}
	case csumLevelReset:
		if s.csumUnnecessary {
			s.csumUnnecessary, s.csumLevel = false, 0
		}
	case csumLevelQuery:
		if s.csumUnnecessary {
			return uint64(s.csumLevel), nil
		}
		return errnoRet(uapi.EACCES), nil
	default:
		return errnoRet(uapi.EINVAL), nil
	}
	return 0, nil
}

// ecnSetCE is bpf_skb_ecn_set_ce(skb): 1 if the packet now carries CE
// (set now or before), 0 if it is not ECN-capable, not IP, or its header
// is not all in the buffer.
func (s *skBuff) ecnSetCE(*interp.Machine, uint64, uint64, uint64, uint64) (uint64, error) {
	proto := s.protocol>>8 | s.protocol<<8
	var hdrLen uint64
	switch proto {
	case 0x0800:
		hdrLen = 20
	case 0x86dd:
		hdrLen = 40
	default:
		return 0, nil
	}
	// skb_headlen from data, then the network header to the tail.
	tail := s.data + uint64(s.len)
	if uint64(s.len) < hdrLen || s.network+hdrLen > tail {
		return 0, nil
	}
	h := s.bytes[s.network-s.page:][:hdrLen]
	if proto == 0x0800 {
		ecn := (uint32(h[1]) + 1) & 3 // IP_ECN_set_ce's trick: not-ECT 01, ECT(1) 10, ECT(0) 11, CE 00
		if ecn&2 == 0 {
			if ecn == 0 {
				return 1, nil
			}
			return 0, nil
		}
		// The checksum, as a little-endian u16 of its network-order
		// bytes, plus htons(0xFFFB) + htons(ecn), with the carry
		// folded (csum16_add).
		add := uint16(0xfbff) + uint16(ecn)<<8
		sum := binary.LittleEndian.Uint16(h[10:]) + add
		if sum < add {
			sum++
		}
		binary.LittleEndian.PutUint16(h[10:], sum)
		h[1] |= 3
		return 1, nil
	}
	// IPv6: the traffic class straddles the first two bytes.
	if (h[1]>>4)&3 == 0 {
		return 0, nil
	}
	h[1] |= 3 << 4
	return 1, nil
}
