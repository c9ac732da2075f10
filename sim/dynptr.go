package sim

import (
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Dynamic pointers (kernel/bpf/helpers.c, kernel/bpf/ringbuf.c): a struct
// bpf_dynptr on the program's stack names memory and its size, and the
// helpers below check every access against that size at run time, so the
// verifier need not know it. At run time the 16 bytes are struct
// bpf_dynptr_kern: the data's address, the size word (the size in its
// low 24 bits, the type in bits 28-30, read-only in bit 31) and an offset
// into the data. A NULL dynptr (data 0) is what a failed constructor
// leaves: every helper then fails, except the release helpers, which
// have nothing to give back.

func (k *Kernel) registerDynptrHelpers() {
	for _, h := range []*Helper{
		{ID: uapi.FuncDynptrFromMem, Fn: k.helperDynptrFromMem},
		{ID: uapi.FuncRingbufReserveDynptr, Fn: k.helperRingbufReserveDynptr},
		{ID: uapi.FuncRingbufSubmitDynptr, Fn: k.helperRingbufSubmitDynptr},
		{ID: uapi.FuncRingbufDiscardDynptr, Fn: k.helperRingbufDiscardDynptr},
		{ID: uapi.FuncDynptrRead, Fn: k.helperDynptrRead},
		{ID: uapi.FuncDynptrWrite, Fn: k.helperDynptrWrite},
		{ID: uapi.FuncDynptrData, Fn: k.helperDynptrData},
	} {
		if err := k.RegisterHelper(h); err != nil {
			panic(err) // the table has unique ids
		}
	}
}

// dynptr is struct bpf_dynptr_kern as a helper reads it.
type dynptr struct {
	data   uint64
	word   uint32 // size, type and read-only bit
	offset uint32
}

func (d *dynptr) size() uint32         { return d.word & uapi.DynptrSizeMask }
func (d *dynptr) typ() uint8           { return uint8(d.word>>uapi.DynptrTypeShift) & uapi.DynptrTypeMask }
func (d *dynptr) rdonly() bool         { return d.word&uapi.DynptrRdonlyBit != 0 }
func (d *dynptr) at(off uint32) uint64 { return d.data + uint64(d.offset) + uint64(off) }

// checkOffLen is bpf_dynptr_check_off_len: len bytes at off must lie
// within the dynptr.
func (d *dynptr) checkOffLen(off, n uint64) uapi.Errno {
	size := uint64(d.size())
	if n > size || off > size-n {
		return uapi.E2BIG
	}
	return 0
}

func loadDynptr(m *interp.Machine, addr uint64) (dynptr, error) {
	// Through the CPU's TLB, word by word: the dynptr is on the stack the
	// program runs on, whose pages it holds.
	data, f := m.TLB.Load64(addr)
	var word, off uint64
	if f == nil {
		word, f = m.TLB.Load32(addr + uapi.DynptrOffSize)
	}
	if f == nil {
		off, f = m.TLB.Load32(addr + uapi.DynptrOffOffset)
	}
	if f != nil {
		f.PC = m.PC()
		return dynptr{}, f
	}
	return dynptr{data: data, word: uint32(word), offset: uint32(off)}, nil
}

func storeDynptr(m *interp.Machine, addr uint64, d dynptr) error {
	f := m.TLB.Store64(addr, d.data)
	if f == nil {
		f = m.TLB.Store32(addr+uapi.DynptrOffSize, uint64(d.word))
	}
	if f == nil {
		f = m.TLB.Store32(addr+uapi.DynptrOffOffset, uint64(d.offset))
	}
	if f != nil {
		f.PC = m.PC()
		return f
	}
	return nil
}

// tlbWrite writes p at addr through the CPU's TLB, as a program's stores
// go.
func tlbWrite(m *interp.Machine, addr uint64, p []byte) error {
	if f := m.TLB.Write(addr, p); f != nil {
		f.PC = m.PC()
		return f
	}
	return nil
}

// newDynptr is bpf_dynptr_init.
func newDynptr(data uint64, t uint8, size uint32) dynptr {
	return dynptr{data: data, word: size | uint32(t)<<uapi.DynptrTypeShift}
}

// helperDynptrFromMem is bpf_dynptr_from_mem(data, size, flags, ptr): a
// local dynptr over size bytes; -E2BIG past DYNPTR_MAX_SIZE and -EINVAL
// for any flag, each leaving a NULL dynptr.
func (k *Kernel) helperDynptrFromMem(m *interp.Machine, data, size, flags, ptr, _ uint64) (uint64, error) {
	var d dynptr
	var errno uapi.Errno
	switch {
	case uint32(size) > uapi.DynptrMaxSize:
		errno = uapi.E2BIG
	case flags != 0:
		errno = uapi.EINVAL
	default:
		d = newDynptr(data, uapi.DynptrTypeLocal, uint32(size))
	}
	return errnoRet(errno), storeDynptr(m, ptr, d) // errnoRet(0) is 0
}

// helperRingbufReserveDynptr is bpf_ringbuf_reserve_dynptr(ringbuf,
// size, flags, ptr): a record in a ring buffer dynptr, or a NULL one and
// -EINVAL (flags, a full ring) or -E2BIG (too large for a dynptr).
func (k *Kernel) helperRingbufReserveDynptr(m *interp.Machine, r1, size, flags, ptr, _ uint64) (uint64, error) {
	r, err := k.ringOf(m, r1)
	if err != nil {
		return 0, err
	}
	var d dynptr
	errno := uapi.EINVAL
	if flags == 0 {
		if uint32(size) > uapi.DynptrMaxSize {
			errno = uapi.E2BIG
		} else if sample := r.Reserve(uint64(uint32(size)), 0); sample != 0 {
			d, errno = newDynptr(sample, uapi.DynptrTypeRingbuf, uint32(size)), 0
		}
	}
	return errnoRet(errno), storeDynptr(m, ptr, d) // errnoRet(0) is 0
}

// helperRingbufSubmitDynptr is bpf_ringbuf_submit_dynptr(ptr, flags).
func (k *Kernel) helperRingbufSubmitDynptr(m *interp.Machine, ptr, flags, _, _, _ uint64) (uint64, error) {
	return 0, k.commitDynptr(m, ptr, false, flags)
}

// helperRingbufDiscardDynptr is bpf_ringbuf_discard_dynptr(ptr, flags).
func (k *Kernel) helperRingbufDiscardDynptr(m *interp.Machine, ptr, flags, _, _, _ uint64) (uint64, error) {
	return 0, k.commitDynptr(m, ptr, true, flags)
}

// commitDynptr commits the record of a ring buffer dynptr, if it has
// one, and leaves the dynptr NULL.
func (k *Kernel) commitDynptr(m *interp.Machine, ptr uint64, discard bool, flags uint64) error {
	d, err := loadDynptr(m, ptr)
	if err != nil || d.data == 0 {
		return err
	}
	if err := k.commitSample(m, d.data, discard, flags); err != nil {
		return err
	}
	return storeDynptr(m, ptr, dynptr{})
}

// helperDynptrRead is bpf_dynptr_read(dst, len, src, offset, flags):
// -EINVAL for a NULL dynptr or any flag, -E2BIG out of its bounds. The
// bytes are copied as by memmove: the two may overlap.
func (k *Kernel) helperDynptrRead(m *interp.Machine, dst, n, src, off, flags uint64) (uint64, error) {
	d, err := loadDynptr(m, src)
	if err != nil {
		return 0, err
	}
	n, off = uint64(uint32(n)), uint64(uint32(off))
	b, errno, err := k.dynptrRead(m, d, off, n, flags)
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		if errno == uapi.EFAULT && d.typ() == uapi.DynptrTypeSKB {
			// __bpf_skb_load_bytes clears what it could not read.
			return errnoRet(errno), m.WriteMem(dst, make([]byte, n))
		}
		return errnoRet(errno), nil
	}
	return 0, tlbWrite(m, dst, b)
}

// dynptrRead is __bpf_dynptr_read: the n bytes at off of d, valid until
// the next read of a helper's argument (readArg's slot 0).
func (k *Kernel) dynptrRead(m *interp.Machine, d dynptr, off, n, flags uint64) ([]byte, uapi.Errno, error) {
	if d.data == 0 || flags != 0 {
		return nil, uapi.EINVAL, nil
	}
	if errno := d.checkOffLen(off, n); errno != 0 {
		return nil, errno, nil
	}
	switch d.typ() {
	case uapi.DynptrTypeSKB, uapi.DynptrTypeXDP:
		b, errno, err := k.dynptrPacket(m, d, off, n)
		if err != nil || errno != 0 {
			return nil, errno, err
		}
		return append([]byte(nil), b...), 0, nil
	}
	if err := checkHelperSize(m, n); err != nil {
		return nil, 0, err
	}
	b, err := readArg(m, d.at(uint32(off)), uint32(n), 0)
	return b, 0, err
}

// dynptrPacket returns the n packet bytes at off of an skb or xdp
// dynptr, or the errno of a packet that has shrunk since.
func (k *Kernel) dynptrPacket(m *interp.Machine, d dynptr, off, n uint64) ([]byte, uapi.Errno, error) {
	off += uint64(d.offset)
	if d.typ() == uapi.DynptrTypeXDP {
		x, err := xdpOf(m, d.data, "dynptr")
		if err != nil {
			return nil, 0, err
		}
		b, errno := x.window(off, n)
		return b, errno, nil
	}
	s, err := k.skbOf(m, d.data, "dynptr")
	if err != nil {
		return nil, 0, err
	}
	if b := s.packet(off, n); b != nil {
		return b, 0, nil
	}
	return nil, uapi.EFAULT, nil
}

// helperDynptrWrite is bpf_dynptr_write(dst, offset, src, len, flags):
// -EINVAL for a NULL or read-only dynptr or a flag its type does not
// take, -E2BIG out of its bounds.
func (k *Kernel) helperDynptrWrite(m *interp.Machine, dst, off, src, n, flags uint64) (uint64, error) {
	d, err := loadDynptr(m, dst)
	if err != nil {
		return 0, err
	}
	n, off = uint64(uint32(n)), uint64(uint32(off))
	if errno := d.writable(off, n); errno != 0 {
		return errnoRet(errno), nil
	}
	if err := checkHelperSize(m, n); err != nil {
		return 0, err
	}
	b, err := readArg(m, src, uint32(n), 0)
	if err != nil {
		return 0, err
	}
	errno, err := k.dynptrWrite(m, d, off, b, flags)
	return errnoRet(errno), err
}

// writable is __bpf_dynptr_write's first checks.
func (d *dynptr) writable(off, n uint64) uapi.Errno {
	if d.data == 0 || d.rdonly() {
		return uapi.EINVAL
	}
	return d.checkOffLen(off, n)
}

// dynptrWrite is __bpf_dynptr_write of src at off of d: an skb's with
// bpf_skb_store_bytes's flags, the others' with none.
func (k *Kernel) dynptrWrite(m *interp.Machine, d dynptr, off uint64, src []byte, flags uint64) (uapi.Errno, error) {
	n := uint64(len(src))
	if errno := d.writable(off, n); errno != 0 {
		return errno, nil
	}
	if d.typ() == uapi.DynptrTypeSKB {
		s, err := k.skbOf(m, d.data, "bpf_dynptr_write")
		if err != nil {
			return 0, err
		}
		dst, errno := s.storeWindow(uint64(d.offset)+off, n, flags)
		if errno != 0 {
			return errno, nil
		}
		s.store(dst, src, flags)
		return 0, nil
	}
	if flags != 0 {
		return uapi.EINVAL, nil
	}
	if d.typ() == uapi.DynptrTypeXDP {
		b, errno, err := k.dynptrPacket(m, d, off, n)
		if err != nil || errno != 0 {
			return errno, err
		}
		copy(b, src)
		return 0, nil
	}
	return 0, tlbWrite(m, d.at(uint32(off)), src)
}

// helperDynptrData is bpf_dynptr_data(ptr, offset, len): the address of
// len bytes of a local or ring buffer dynptr's data, or NULL (a NULL or
// read-only dynptr, bytes out of bounds).
func (k *Kernel) helperDynptrData(m *interp.Machine, ptr, off, n, _, _ uint64) (uint64, error) {
	d, err := loadDynptr(m, ptr)
	if err != nil {
		return 0, err
	}
	off, n = uint64(uint32(off)), uint64(uint32(n))
	if d.data == 0 || d.checkOffLen(off, n) != 0 || d.rdonly() {
		return 0, nil
	}
	switch d.typ() {
	case uapi.DynptrTypeLocal, uapi.DynptrTypeRingbuf:
		return d.at(uint32(off)), nil
	}
	return 0, nil
}

// copyMem copies n bytes of simulated memory from src to dst as memmove
// does.
func copyMem(m *interp.Machine, dst, src, n uint64) error {
	if n == 0 {
		return nil
	}
	if err := checkHelperSize(m, n); err != nil {
		return err
	}
	buf := make([]byte, n)
	if err := m.ReadMem(src, buf); err != nil {
		return err
	}
	return m.WriteMem(dst, buf)
}
