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
