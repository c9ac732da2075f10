package sim

import (
	"encoding/binary"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// The helpers of skb programs that read and rewrite the packet
// (net/core/filter.c): bpf_skb_load_bytes, bpf_skb_load_bytes_relative,
// bpf_skb_store_bytes, bpf_l3_csum_replace and bpf_l4_csum_replace. They
// work on the CPU's test-run skb, which is linear (skb_headlen is len),
// and never CHECKSUM_PARTIAL or CHECKSUM_COMPLETE, as the kernel's test
// run leaves it: the checksum helpers only rewrite the packet's checksum
// field, and the csum flags have nothing else to update.
//
// Each is offered only to the program types whose func_proto lists it:
// another type's load fails with the kernel's "program of this type
// cannot use helper".

// Helper ids (include/uapi/linux/bpf.h).
const (
	funcSKBStoreBytes         = 9
	funcCsumDiff              = 28
	funcSKBPullData           = 39
	funcSetHashInvalid        = 41
	funcSetHash               = 48
	funcL3CsumReplace         = 10
	funcL4CsumReplace         = 11
	funcSKBLoadBytes          = 26
	funcSKBLoadBytesRelative  = 68
	bpfFRecomputeCsum         = 1 << 0 // BPF_F_RECOMPUTE_CSUM
	bpfFInvalidateHash        = 1 << 1 // BPF_F_INVALIDATE_HASH
	bpfFHdrFieldMask          = 0xf    // BPF_F_HDR_FIELD_MASK
	bpfFPseudoHdr             = 1 << 4 // BPF_F_PSEUDO_HDR
	bpfFMarkMangled0          = 1 << 5 // BPF_F_MARK_MANGLED_0
	bpfFMarkEnforce           = 1 << 6 // BPF_F_MARK_ENFORCE
	bpfFIPv6                  = 1 << 7 // BPF_F_IPV6
	bpfHdrStartMac            = 0      // BPF_HDR_START_MAC
	bpfHdrStartNet            = 1      // BPF_HDR_START_NET
	csumMangled0              = 0xffff // CSUM_MANGLED_0
	intMax                    = 1<<31 - 1
	skbHelperMaxHeaderOffset  = 0xffff
	skbCsumFieldSize          = 2
	skbLoadBytesRelativeLimit = 0xffff
)

var (
	skbReadTypes  = []ebpf.ProgramType{ebpf.SocketFilter, ebpf.SchedCLS, ebpf.SchedACT, ebpf.CGroupSKB}
	skbWriteTypes = []ebpf.ProgramType{ebpf.SchedCLS, ebpf.SchedACT}
	csumDiffTypes = []ebpf.ProgramType{ebpf.SchedCLS, ebpf.SchedACT, ebpf.XDP}
)

// skbHelperProtos are the prototypes, as filter.c declares them.
var skbHelperProtos = map[int32]*verifier.FuncProto{
	funcSKBLoadBytes: {Args: [5]verifier.ArgType{
		verifier.ArgPtrToCtx, verifier.ArgAnything, verifier.ArgPtrToUninitMem, verifier.ArgConstSize}},
	funcSKBLoadBytesRelative: {Args: [5]verifier.ArgType{
		verifier.ArgPtrToCtx, verifier.ArgAnything, verifier.ArgPtrToUninitMem, verifier.ArgConstSize, verifier.ArgAnything}},
	funcSKBStoreBytes: {ChangesPktData: true, Args: [5]verifier.ArgType{
		verifier.ArgPtrToCtx, verifier.ArgAnything, verifier.ArgPtrToMem, verifier.ArgConstSize, verifier.ArgAnything}},
	funcL3CsumReplace: {ChangesPktData: true, Args: [5]verifier.ArgType{
		verifier.ArgPtrToCtx, verifier.ArgAnything, verifier.ArgAnything, verifier.ArgAnything, verifier.ArgAnything}},
	funcL4CsumReplace: {ChangesPktData: true, Args: [5]verifier.ArgType{
		verifier.ArgPtrToCtx, verifier.ArgAnything, verifier.ArgAnything, verifier.ArgAnything, verifier.ArgAnything}},
	funcSKBPullData:    {ChangesPktData: true, Args: [5]verifier.ArgType{verifier.ArgPtrToCtx, verifier.ArgAnything}},
	funcSetHashInvalid: {Args: [5]verifier.ArgType{verifier.ArgPtrToCtx}},
	funcSetHash:        {Args: [5]verifier.ArgType{verifier.ArgPtrToCtx, verifier.ArgAnything}},
	funcCsumDiff: {PktAccess: true, Args: [5]verifier.ArgType{
		verifier.ArgPtrToMemOrNull, verifier.ArgConstSizeOrZero, verifier.ArgPtrToMemOrNull, verifier.ArgConstSizeOrZero, verifier.ArgAnything}},
}

func (k *Kernel) registerSKBHelpers() {
	for _, h := range []struct {
		id    int32
		fn    func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error)
		types []ebpf.ProgramType
	}{
		{funcSKBLoadBytes, k.onSKB(funcSKBLoadBytes, k.skbLoadBytes), skbReadTypes},
		{funcSKBLoadBytesRelative, k.onSKB(funcSKBLoadBytesRelative, k.skbLoadBytesRelative), skbReadTypes},
		{funcSKBStoreBytes, k.onSKB(funcSKBStoreBytes, k.skbStoreBytes), skbWriteTypes},
		{funcL3CsumReplace, k.onSKB(funcL3CsumReplace, k.l3CsumReplace), skbWriteTypes},
		{funcL4CsumReplace, k.onSKB(funcL4CsumReplace, k.l4CsumReplace), skbWriteTypes},
		{funcCsumDiff, k.csumDiff, csumDiffTypes},
		{funcSKBPullData, k.onSKB(funcSKBPullData, k.skbPullData), skbWriteTypes},
		{funcSetHash, k.onSKB(funcSetHash, k.setHash), skbWriteTypes},
		{funcSetHashInvalid, k.onSKB(funcSetHashInvalid, k.setHashInvalid), skbWriteTypes},
	} {
		if err := k.RegisterHelper(&Helper{ID: h.id, Fn: h.fn, Proto: skbHelperProtos[h.id]}); err != nil {
			panic(err) // the table has unique ids
		}
		k.helperTypes[h.id] = h.types
	}
}

// skbHelperFn is a helper of skb programs, given the test-run skb its
// context argument names and the other arguments.
type skbHelperFn func(s *skBuff, m *interp.Machine, r2, r3, r4, r5 uint64) (uint64, error)

// onSKB makes fn the helper with this id: a context that is no skb test
// run's stops the program with EFAULT.
func (k *Kernel) onSKB(id int32, fn skbHelperFn) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
	name := uapi.HelperName(id)
	return func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
		s, err := k.skbOf(m, r1, name)
		if err != nil {
			return 0, err
		}
		return fn(s, m, r2, r3, r4, r5)
	}
}

// skbOf returns the test-run skb whose context is r1.
func (k *Kernel) skbOf(m *interp.Machine, r1 uint64, name string) (*skBuff, error) {
	cpu, ok := m.Data.(*CPU)
	if !ok || cpu.run.skb == nil || cpu.run.skb.ctx != r1 {
		return nil, errors.Wrapf(uapi.EFAULT, "pc %d: %s: r1=%#x is not the context of an skb test run", m.PC(), name, r1)
	}
	return cpu.run.skb, nil
}

// packet returns the n bytes of s's packet at offset off from skb->data,
// or nil when they are not all within skb->len.
func (s *skBuff) packet(off, n uint64) []byte {
	if off > uint64(s.len) || n > uint64(s.len)-off {
		return nil
	}
	start := s.data - s.page + off
	return s.bytes[start : start+n]
}

// skbLoadBytes is bpf_skb_load_bytes(skb, offset, to, len): len bytes
// from offset past skb->data, or -EFAULT and to cleared.
func (k *Kernel) skbLoadBytes(s *skBuff, m *interp.Machine, off, to, n, _ uint64) (uint64, error) {
	off, n = uint64(uint32(off)), uint64(uint32(n))
	var src []byte
	if off <= intMax {
		src = s.packet(off, n)
	}
	return k.loadInto(m, to, n, src)
}

// loadInto copies src to the program's memory at to, or clears n bytes
// there and returns -EFAULT when src is nil.
func (k *Kernel) loadInto(m *interp.Machine, to, n uint64, src []byte) (uint64, error) {
	if src == nil {
		if err := m.WriteMem(to, make([]byte, n)); err != nil {
			return 0, err
		}
		return errnoRet(uapi.EFAULT), nil
	}
	if err := m.WriteMem(to, src); err != nil {
		return 0, err
	}
	return 0, nil
}

// skbLoadBytesRelative is bpf_skb_load_bytes_relative(skb, offset, to,
// len, start_header): offset counts from the MAC or the network header,
// and the bytes must end by the packet's tail.
func (k *Kernel) skbLoadBytesRelative(s *skBuff, m *interp.Machine, off, to, n, hdr uint64) (uint64, error) {
	off, n = uint64(uint32(off)), uint64(uint32(n))
	var src []byte
	if off <= skbLoadBytesRelativeLimit {
		// The MAC header is where the frame started, the network
		// header 14 bytes later, whatever data the type starts at.
		mac := int64(s.mac - s.page)
		start := int64(-1)
		switch uint32(hdr) {
		case bpfHdrStartMac:
			start = mac
		case bpfHdrStartNet:
			start = mac + ethHlen
		}
		tail := int64(s.data-s.page) + int64(s.len)
		if start >= 0 && start+int64(off)+int64(n) <= tail {
			src = s.bytes[start+int64(off) : start+int64(off)+int64(n)]
		}
	}
	return k.loadInto(m, to, n, src)
}

// skbStoreBytes is bpf_skb_store_bytes(skb, offset, from, len, flags).
func (k *Kernel) skbStoreBytes(s *skBuff, m *interp.Machine, off, from, n, flags uint64) (uint64, error) {
	off, n = uint64(uint32(off)), uint64(uint32(n))
	dst, errno := s.storeWindow(off, n, flags)
	if errno != 0 {
		return errnoRet(errno), nil
	}
	src := make([]byte, n)
	if err := m.ReadMem(from, src); err != nil {
		return 0, err
	}
	s.store(dst, src, flags)
	return 0, nil
}

// storeWindow is __bpf_skb_store_bytes's checks: the n packet bytes at
// off the store may write, or why not.
func (s *skBuff) storeWindow(off, n, flags uint64) ([]byte, uapi.Errno) {
	if flags&^(bpfFRecomputeCsum|bpfFInvalidateHash) != 0 {
		return nil, uapi.EINVAL
	}
	if off > intMax {
		return nil, uapi.EFAULT
	}
	// bpf_try_make_writable(skb, offset + len): the bytes must be in the
	// packet (the sum is a u32, as the kernel computes it).
	if uint64(uint32(off+n)) > uint64(s.len) {
		return nil, uapi.EFAULT
	}
	dst := s.packet(off, n)
	if dst == nil {
		return nil, uapi.EFAULT
	}
	return dst, 0
}

// store writes src into the window storeWindow gave, with the flags'
// effects.
func (s *skBuff) store(dst, src []byte, flags uint64) {
	copy(dst, src)
	if flags&bpfFInvalidateHash != 0 {
		s.hash = 0 // skb_clear_hash
	}
}

// skbPullData is bpf_skb_pull_data(skb, len): make the first len bytes
// (all of the head for 0) linear and writable. The test run's skb is all
// linear, so only a len past its end fails, with -ENOMEM.
func (k *Kernel) skbPullData(s *skBuff, m *interp.Machine, n, _, _, _ uint64) (uint64, error) {
	if uint64(uint32(n)) > uint64(s.len) {
		return errnoRet(uapi.ENOMEM), nil
	}
	return 0, nil
}

// setHash is bpf_set_hash(skb, hash): the hash __sk_buff->hash reads
// until something clears it.
func (k *Kernel) setHash(s *skBuff, m *interp.Machine, hash, _, _, _ uint64) (uint64, error) {
	s.hash = uint32(hash)
	return 0, nil
}

// setHashInvalid is bpf_set_hash_invalid(skb): skb_clear_hash.
func (k *Kernel) setHashInvalid(s *skBuff, m *interp.Machine, _, _, _, _ uint64) (uint64, error) {
	s.hash = 0
	return 0, nil
}

// csumField returns the 2-byte checksum field at offset off past
// skb->data that the csum_replace helpers update, or an errno.
func csumField(s *skBuff, off uint64) ([]byte, uapi.Errno) {
	off = uint64(uint32(off))
	if off > skbHelperMaxHeaderOffset || off&1 != 0 {
		return nil, uapi.EFAULT
	}
	f := s.packet(off, skbCsumFieldSize)
	if f == nil {
		return nil, uapi.EFAULT
	}
	return f, 0
}

// l3CsumReplace is bpf_l3_csum_replace(skb, offset, from, to, flags):
// the checksum at offset updated for a 2- or 4-byte field changing from
// from to to, or (size 0) for a precomputed difference to.
func (k *Kernel) l3CsumReplace(s *skBuff, m *interp.Machine, off, from, to, flags uint64) (uint64, error) {
	if flags&^bpfFHdrFieldMask != 0 {
		return errnoRet(uapi.EINVAL), nil
	}
	f, e := csumField(s, off)
	if e != 0 {
		return errnoRet(e), nil
	}
	sum := binary.LittleEndian.Uint16(f)
	switch flags & bpfFHdrFieldMask {
	case 0:
		if from != 0 {
			return errnoRet(uapi.EINVAL), nil
		}
		sum = csumFold(csumAdd(uint32(to), ^uint32(sum)))
	case 2:
		sum = ^csum16Add(csum16Sub(^sum, uint16(from)), uint16(to))
	case 4:
		sum = csumFold(csumAdd(csumSub(^uint32(sum), uint32(from)), uint32(to)))
	default:
		return errnoRet(uapi.EINVAL), nil
	}
	binary.LittleEndian.PutUint16(f, sum)
	return 0, nil
}

// l4CsumReplace is bpf_l4_csum_replace(skb, offset, from, to, flags), as
// inet_proto_csum_replace* computes it for an skb that is not
// CHECKSUM_PARTIAL. BPF_F_MARK_MANGLED_0 leaves a zero checksum (a UDP
// datagram without one) alone and writes a result of zero as 0xffff.
func (k *Kernel) l4CsumReplace(s *skBuff, m *interp.Machine, off, from, to, flags uint64) (uint64, error) {
	if flags&^(bpfFMarkMangled0|bpfFMarkEnforce|bpfFPseudoHdr|bpfFHdrFieldMask|bpfFIPv6) != 0 {
		return errnoRet(uapi.EINVAL), nil
	}
	f, e := csumField(s, off)
	if e != 0 {
		return errnoRet(e), nil
	}
	sum := binary.LittleEndian.Uint16(f)
	mangled0 := flags&bpfFMarkMangled0 != 0
	if mangled0 && flags&bpfFMarkEnforce == 0 && sum == 0 {
		return 0, nil
	}
	switch flags & bpfFHdrFieldMask {
	case 0:
		if from != 0 {
			return errnoRet(uapi.EINVAL), nil
		}
		sum = csumFold(csumAdd(uint32(to), ^uint32(sum)))
	case 2:
		sum = csumReplaceWords(sum, uint32(uint16(from)), uint32(uint16(to)))
	case 4:
		sum = csumReplaceWords(sum, uint32(from), uint32(to))
	default:
		return errnoRet(uapi.EINVAL), nil
	}
	if mangled0 && sum == 0 {
		sum = csumMangled0
	}
	binary.LittleEndian.PutUint16(f, sum)
	return 0, nil
}

// The ones'-complement arithmetic of include/net/checksum.h, on values as
// little-endian loads of network-order bytes read them (as the kernel's
// __wsum and __sum16 are).

// onesAdd adds with the carry out added back in.
func onesAdd[T uint16 | uint32](a, b T) T {
	r := a + b
	if r < b {
		r++
	}
	return r
}

func csumAdd(a, b uint32) uint32 { return onesAdd(a, b) }

func csumSub(a, b uint32) uint32 { return onesAdd(a, ^b) }

// csumFold folds a 32-bit sum to 16 bits and complements it.
func csumFold(s uint32) uint16 {
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	return ^uint16(s)
}

func csum16Add(a, b uint16) uint16 { return onesAdd(a, b) }

func csum16Sub(a, b uint16) uint16 { return onesAdd(a, ^b) }

// csumPartial is csum_partial over 32-bit words: their ones'-complement
// sum with seed, in 32 bits.
func csumPartial(seed uint32, words ...uint32) uint32 {
	acc := uint64(seed)
	for _, w := range words {
		acc += uint64(w)
	}
	acc = acc&0xffffffff + acc>>32
	acc = acc&0xffffffff + acc>>32
	return uint32(acc)
}

// csumReplaceWords is inet_proto_csum_replace4's update: the sum of the
// words {~from, to} added to the unfolded old checksum, folded.
func csumReplaceWords(sum uint16, from, to uint32) uint16 {
	return csumFold(csumPartial(^uint32(sum), ^from, to))
}

// csumDiff is bpf_csum_diff(from, from_size, to, to_size, seed): the
// checksum difference of replacing the words at from by those at to,
// added to seed, folded to 16 bits (csum_from32to16) as 6.18 returns it
// on every architecture. 6.18 takes any sizes (older kernels wanted
// multiples of 4): a tail sums as if zero-padded to a whole word, which
// the fold makes the same as csum_partial's.
func (k *Kernel) csumDiff(m *interp.Machine, from, fromSize, to, toSize, seed uint64) (uint64, error) {
	fromSize, toSize = uint64(uint32(fromSize)), uint64(uint32(toSize))
	sum := func(addr, n uint64, seed uint32) (uint32, error) {
		b := make([]byte, (n+3)&^3)
		if err := m.ReadMem(addr, b[:n]); err != nil {
			return 0, err
		}
		words := make([]uint32, len(b)/4)
		for i := range words {
			words[i] = binary.LittleEndian.Uint32(b[4*i:])
		}
		return csumPartial(seed, words...), nil
	}
	w := uint32(seed)
	switch {
	case fromSize != 0 && toSize != 0:
		t, err := sum(to, toSize, w)
		if err != nil {
			return 0, err
		}
		f, err := sum(from, fromSize, 0)
		if err != nil {
			return 0, err
		}
		w = csumSub(t, f)
	case toSize != 0:
		t, err := sum(to, toSize, w)
		if err != nil {
			return 0, err
		}
		w = t
	case fromSize != 0:
		f, err := sum(from, fromSize, ^w)
		if err != nil {
			return 0, err
		}
		w = ^f
	}
	return uint64(csumFrom32To16(w)), nil
}

// csumFrom32To16 folds a 32-bit sum to 16 bits without complementing it.
func csumFrom32To16(s uint32) uint16 {
	s += s>>16 | s<<16
	return uint16(s >> 16)
}
