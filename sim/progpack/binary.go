package progpack

import (
	"encoding/binary"
	"math"
	"sync/atomic"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Binary is one JIT image: struct bpf_binary_header in read-only
// executable memory (the RX header, where the program runs) and, until
// Finalize, the writable copy the JIT writes (the RW header). The JIT
// computes every address (branch targets, calls, its exception table)
// against Image and stores the bytes at the same offsets from RWImage.
//
// A Binary belongs to the JIT that allocated it: its methods may be
// called from any goroutine, but Finalize and Free of one Binary must not
// race with each other (a second one fails with EINVAL).
type Binary struct {
	a       *Allocator
	ro, rw  uint64 // headers; equal in NoPacks mode
	start   uint32 // offset of the image after the header
	size    uint32 // header->size: bytes reserved from the header on
	proglen uint32
	state   atomic.Int32
}

// Binary states.
const (
	writable   int32 = iota // allocated, the JIT writes RWImage
	finalizing              // Finalize or Free in progress
	final                   // finalized: runs from Image, no writable copy left
	freed
)

// Header returns the address of the RX header, the start of the image's
// memory (ro_header).
func (b *Binary) Header() uint64 { return b.ro }

// Image returns the address the program runs from (ro_image): the JIT
// computes addresses against it.
func (b *Binary) Image() uint64 { return b.ro + HeaderSize + uint64(b.start) }

// RWHeader returns the address of the writable header (rw_header), or 0
// once the image is finalized or freed. In NoPacks mode it is Header: the
// JIT writes the image in place before Finalize locks it.
func (b *Binary) RWHeader() uint64 {
	if b.state.Load() != writable {
		return 0
	}
	return b.rw
}

// RWImage returns where the JIT writes the code that will run at Image
// (rw_image), or 0 once the image is finalized or freed.
func (b *Binary) RWImage() uint64 {
	if b.state.Load() != writable {
		return 0
	}
	return b.rw + HeaderSize + uint64(b.start)
}

// Size returns header->size, the bytes reserved for the image from its
// header on: proglen plus the header and the random gap, rounded up to a
// chunk (Packs) or a page (NoPacks).
func (b *Binary) Size() uint32 { return b.size }

// Len returns the proglen the image was allocated for.
func (b *Binary) Len() uint32 { return b.proglen }

// Finalized reports whether Finalize succeeded and the image was not freed
// since.
func (b *Binary) Finalized() bool { return b.state.Load() == final }

// Alloc is bpf_jit_binary_pack_alloc (Packs mode) or bpf_jit_binary_alloc
// (NoPacks mode): it reserves room for an image of proglen bytes, with
// the image's start aligned to align (a power of two up to
// ImageAlignment) at a random offset after the header, and charges it to
// the JIT memory (bpf_jit_current). Both copies are filled with the
// architecture's illegal instruction and the writable header's size is
// set. Bad sizes and alignments are EINVAL; exhausted memory is ENOMEM.
func (a *Allocator) Alloc(proglen, align uint32) (*Binary, error) {
	if proglen == 0 {
		return nil, errors.Wrap(uapi.EINVAL, "bpf_jit_binary_alloc: zero-length image")
	}
	if align == 0 || align&(align-1) != 0 || align > ImageAlignment {
		return nil, errors.Wrapf(uapi.EINVAL, "bpf_jit_binary_alloc: alignment %d is not a power of two up to %d", align, ImageAlignment)
	}
	// Where the image may start: in the header's first chunk (Packs) or
	// page (NoPacks), so that the header is found from the image address.
	var size, first uint64
	if a.opts.Mode == Packs {
		size = roundUp(uint64(proglen)+HeaderSize+packGap, ChunkSize)
		first = ChunkSize
	} else {
		size = roundUp(uint64(proglen)+HeaderSize+pageGap, mem.PageSize)
		first = mem.PageSize
	}
	if size > math.MaxUint32 {
		return nil, errors.Wrapf(uapi.EINVAL, "bpf_jit_binary_alloc: %d bytes do not fit the header's size", proglen)
	}
	a.charged.Add(int64(size))
	b := &Binary{a: a, size: uint32(size), proglen: proglen}
	if err := a.allocBinary(b); err != nil {
		a.charged.Add(-int64(size))
		return nil, err
	}
	hole := min(size-(uint64(proglen)+HeaderSize), first-HeaderSize)
	b.start = a.opts.Rand(uint32(hole)) &^ (align - 1)
	a.binMu.Lock()
	a.binaries[b.ro] = b
	a.binMu.Unlock()
	return b, nil
}

// allocBinary maps b's memory and writes its RW header.
func (a *Allocator) allocBinary(b *Binary) error {
	size := uint64(b.size)
	if a.opts.Mode == NoPacks {
		a.mu.Lock()
		addr, err := a.allocOwn(size, false, "bpf_jit_binary")
		a.mu.Unlock()
		if err != nil {
			return errors.WithMessage(err, "bpf_jit_binary_alloc")
		}
		b.ro, b.rw = addr, addr
	} else {
		ro, err := a.PackAlloc(size)
		if err != nil {
			return errors.WithMessage(err, "bpf_jit_binary_pack_alloc")
		}
		// The kernel's kvmalloc: ordinary writable kernel memory.
		rw, err := a.space.Vmalloc(size, mem.PermRW, "bpf_jit_rw")
		if err == nil {
			var area []byte
			if area, err = a.space.Bytes(rw, size); err == nil {
				a.arch.FillHole(area)
			} else {
				a.space.Free(rw)
			}
		}
		if err != nil {
			// The chunk was never written: nothing to invalidate.
			a.PackFree(ro, size)
			return errors.WithMessage(err, "bpf_jit_binary_pack_alloc")
		}
		b.ro, b.rw = ro, rw
	}
	var hdr [4]byte
	binary.LittleEndian.PutUint32(hdr[:], b.size)
	if err := a.space.Write(b.rw, hdr[:]); err != nil {
		// The area was mapped writable a moment ago: a bug if it fails.
		a.PackFree(b.ro, size)
		if b.rw != b.ro {
			a.space.Free(b.rw)
		}
		return errors.WithMessage(err, "bpf_jit_binary_alloc: writing the header")
	}
	return nil
}

// Finalize is bpf_jit_binary_pack_finalize (Packs mode): it copies the
// whole RW header and image into the RX memory with the architecture's
// text-copy hook and frees the writable buffer, so that no writable
// mapping of the code remains. If the copy fails, the image is freed and
// the error returned, as the kernel does. In NoPacks mode it is
// bpf_jit_binary_lock_ro: the image, written in place, becomes read-only
// and executable. Finalizing an image twice, or a freed one, is EINVAL.
func (a *Allocator) Finalize(b *Binary) error {
	if b == nil || b.a != a {
		return errors.Wrap(uapi.EINVAL, "bpf_jit_binary_pack_finalize: not an image of this allocator")
	}
	if !b.state.CompareAndSwap(writable, finalizing) {
		return errors.Wrapf(uapi.EINVAL, "bpf_jit_binary_pack_finalize: image at %#x is not being written", b.ro)
	}
	size := uint64(b.size)
	var err error
	if a.opts.Mode == NoPacks {
		err = a.space.SetPerm(b.ro, roundUp(size, mem.PageSize), mem.PermRX)
	} else {
		buf := make([]byte, size)
		if err = a.space.Read(b.rw, buf); err == nil {
			err = a.arch.TextCopy(b.ro, buf)
		}
		if ferr := a.space.Free(b.rw); ferr != nil && err == nil {
			err = ferr
		}
	}
	if err != nil {
		a.release(b, false)
		b.state.Store(freed)
		return errors.WithMessage(err, "bpf_jit_binary_pack_finalize")
	}
	b.state.Store(final)
	return nil
}

// Free is bpf_jit_binary_pack_free (Packs mode) or bpf_jit_binary_free
// (NoPacks mode): it gives the image's memory back and uncharges it.
// Pack chunks are overwritten with the illegal instruction, so that code
// jumping into the freed image traps; an image that never reached
// Finalize (a JIT that failed) also loses its writable buffer. Freeing an
// image twice is EINVAL.
func (a *Allocator) Free(b *Binary) error {
	if b == nil || b.a != a {
		return errors.Wrap(uapi.EINVAL, "bpf_jit_binary_pack_free: not an image of this allocator")
	}
	st := b.state.Load()
	if st == final && a.opts.Mode == Packs {
		// The kernel takes the size from the RX header, which Finalize
		// copied there; check that it did.
		var hdr [4]byte
		if err := a.space.Read(b.ro, hdr[:]); err != nil {
			return errors.WithMessage(err, "bpf_jit_binary_pack_free")
		}
		if got := binary.LittleEndian.Uint32(hdr[:]); got != b.size {
			return errors.Wrapf(uapi.EINVAL, "bpf_jit_binary_pack_free: header at %#x says %d bytes, the image has %d", b.ro, got, b.size)
		}
	}
	if (st != writable && st != final) || !b.state.CompareAndSwap(st, finalizing) {
		return errors.Wrapf(uapi.EINVAL, "bpf_jit_binary_pack_free: image at %#x is not live", b.ro)
	}
	if err := a.release(b, st == writable); err != nil {
		b.state.Store(st)
		return errors.WithMessage(err, "bpf_jit_binary_pack_free")
	}
	b.state.Store(freed)
	return nil
}

// release frees b's memory and charge and forgets it; rwLive says that
// its writable buffer, if it has one of its own, is still mapped.
func (a *Allocator) release(b *Binary, rwLive bool) error {
	if err := a.PackFree(b.ro, uint64(b.size)); err != nil {
		return err
	}
	if rwLive && b.rw != b.ro {
		// kvfree of a buffer that was never finalized.
		if err := a.space.Free(b.rw); err != nil {
			return err
		}
	}
	a.charged.Add(-int64(b.size))
	a.binMu.Lock()
	delete(a.binaries, b.ro)
	a.binMu.Unlock()
	return nil
}

// Hdr is bpf_jit_binary_pack_hdr (Packs mode) or bpf_jit_binary_hdr
// (NoPacks mode): the header of the image that runs at image, found by
// rounding down to a chunk or a page, since Alloc starts every image in
// its header's first chunk or page.
func (a *Allocator) Hdr(image uint64) uint64 {
	if a.opts.Mode == NoPacks {
		return image &^ (mem.PageSize - 1)
	}
	return image &^ (ChunkSize - 1)
}

// Lookup returns the live image whose header is at hdr.
func (a *Allocator) Lookup(hdr uint64) (*Binary, bool) {
	a.binMu.Lock()
	defer a.binMu.Unlock()
	b, ok := a.binaries[hdr]
	return b, ok
}

// FreeImage frees the image that runs at image, as bpf_jit_free does
// with prog->bpf_func: Hdr, then Free. An address that is not a live
// image is EINVAL.
func (a *Allocator) FreeImage(image uint64) error {
	b, ok := a.Lookup(a.Hdr(image))
	if !ok || b.Image() != image {
		return errors.Wrapf(uapi.EINVAL, "bpf_jit_free: no image runs at %#x", image)
	}
	return a.Free(b)
}
