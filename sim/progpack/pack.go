package progpack

import (
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Constants of kernel/bpf/core.c and include/linux/filter.h.
const (
	// ChunkShift and ChunkSize are BPF_PROG_CHUNK_SHIFT and _SIZE: packs
	// are handed out in 64-byte chunks.
	ChunkShift = 6
	ChunkSize  = 1 << ChunkShift
	// PackSize is BPF_PROG_PACK_SIZE on an architecture with PMD_SIZE and
	// one NUMA node: SZ_2M, one huge page.
	PackSize = 2 << 20
	// ChunkCount is BPF_PROG_CHUNK_COUNT, the chunks of one pack.
	ChunkCount = PackSize / ChunkSize
	// HeaderSize is sizeof(struct bpf_binary_header): a u32 size, then the
	// image aligned to BPF_IMAGE_ALIGNMENT.
	HeaderSize = 8
	// ImageAlignment is BPF_IMAGE_ALIGNMENT, the largest alignment a JIT
	// may ask for its image.
	ImageAlignment = 8
	// packGap is the room bpf_jit_binary_pack_alloc adds for a random
	// section of illegal instructions before the image.
	packGap = 16
	// pageGap is the same room for bpf_jit_binary_alloc, which then rounds
	// up to a page.
	pageGap = 128
)

// Arch holds an architecture's hooks for writing executable memory, the
// functions a JIT provides to kernel/bpf/core.c. jit_arm64.Patcher
// implements it for arm64.
type Arch interface {
	// FillHole fills writable memory with the architecture's illegal
	// instruction (the JIT's jit_fill_hole, bpf_fill_ill_insns). area may
	// be simulated memory and must be written with mem.StoreBytes.
	FillHole(area []byte)
	// TextCopy copies src into read-only executable memory at dst
	// (bpf_arch_text_copy).
	TextCopy(dst uint64, src []byte) error
	// TextInvalidate overwrites n bytes of read-only executable memory at
	// dst with the illegal instruction (bpf_arch_text_invalidate).
	TextInvalidate(dst, n uint64) error
}

// Mode chooses how JIT images are placed in memory.
type Mode int

// Modes.
const (
	// Packs shares 2 MiB read-only executable packs between images
	// (bpf_prog_pack; x86-64 since Linux 5.18, arm64 since 6.10).
	Packs Mode = iota
	// NoPacks gives every image its own page-rounded allocation
	// (bpf_jit_binary_alloc), as before the prog pack allocator.
	NoPacks
)

func (m Mode) String() string {
	switch m {
	case Packs:
		return "packs"
	case NoPacks:
		return "no packs"
	}
	return "unknown mode"
}

// Options configure an Allocator. The zero value is the kernel's: packs
// mapped by 2 MiB blocks and random image offsets.
type Options struct {
	Mode Mode
	// PageMappedPacks maps packs with 4 KiB pages instead of one 2 MiB
	// block entry, as on a kernel whose execmem has no huge mappings.
	PageMappedPacks bool
	// Rand returns a uniformly random number below n, n > 0
	// (get_random_u32_below); it places the image at a random offset in
	// its first chunk or page. Nil uses math/rand/v2. It must be safe for
	// concurrent use.
	Rand func(n uint32) uint32
}

// Allocator hands out memory for JIT images in one simulated address
// space. It is safe for concurrent use.
type Allocator struct {
	space *mem.Space
	arch  Arch
	opts  Options

	// mu is pack_mutex: it guards packs, allocs and the pack counters.
	mu     sync.Mutex
	packs  []*pack           // in creation order, the order first fit scans
	allocs map[uint64]*alloc // live PackAlloc results by address

	packsCreated, packsFreed uint64
	chunksUsed               int

	// binMu guards binaries, the images of Alloc by header address.
	binMu    sync.Mutex
	binaries map[uint64]*Binary

	charged atomic.Int64 // bpf_jit_current: bytes charged to the JIT limit
}

// pack is struct bpf_prog_pack: one 2 MiB area and its chunk bitmap.
type pack struct {
	addr   uint64
	used   int // chunks in use
	bitmap bitmap
}

// alloc is one live PackAlloc result.
type alloc struct {
	size uint64
	pack *pack // nil for an allocation of its own
	// mapped is the size of an allocation of its own (page-rounded).
	mapped uint64
}

// New returns an Allocator for JIT images in space, using arch's hooks.
func New(space *mem.Space, arch Arch, opts Options) (*Allocator, error) {
	if space == nil || arch == nil {
		return nil, errors.Wrap(uapi.EINVAL, "progpack: nil address space or architecture hooks")
	}
	if opts.Mode != Packs && opts.Mode != NoPacks {
		return nil, errors.Wrapf(uapi.EINVAL, "progpack: unknown mode %d", opts.Mode)
	}
	// Hooks bound to another address space would patch the wrong memory.
	if s, ok := arch.(interface{ Space() *mem.Space }); ok && s.Space() != space {
		return nil, errors.Wrap(uapi.EINVAL, "progpack: the architecture hooks write another address space")
	}
	if opts.Rand == nil {
		opts.Rand = rand.Uint32N
	}
	return &Allocator{
		space:    space,
		arch:     arch,
		opts:     opts,
		allocs:   make(map[uint64]*alloc),
		binaries: make(map[uint64]*Binary),
	}, nil
}

// Space returns the address space the Allocator maps images in.
func (a *Allocator) Space() *mem.Space { return a.space }

// Mode returns how the Allocator places images.
func (a *Allocator) Mode() Mode { return a.opts.Mode }

// PackAlloc is bpf_prog_pack_alloc: it returns size bytes of read-only
// executable memory filled with the illegal instruction, chunk-aligned.
// Sizes up to PackSize come from a pack, larger ones from an allocation of
// their own. In NoPacks mode every request gets an allocation of its own.
// Trampolines use it directly; JIT images go through Alloc.
func (a *Allocator) PackAlloc(size uint64) (uint64, error) {
	if size == 0 {
		return 0, errors.Wrap(uapi.EINVAL, "bpf_prog_pack_alloc: zero size")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if size > PackSize || a.opts.Mode == NoPacks {
		return a.allocOwn(size, true, "bpf_jit_alloc_exec")
	}
	nbits := int(roundUp(size, ChunkSize) / ChunkSize)
	var p *pack
	pos := -1
	for _, q := range a.packs {
		if pos = q.bitmap.findZeroArea(nbits); pos >= 0 {
			p = q
			break
		}
	}
	if p == nil {
		addr, err := a.mapText(PackSize, !a.opts.PageMappedPacks, true, "bpf_prog_pack")
		if err != nil {
			return 0, err
		}
		p = &pack{addr: addr}
		a.packs = append(a.packs, p)
		a.packsCreated++
		pos = 0
	}
	p.bitmap.set(pos, nbits)
	p.used += nbits
	a.chunksUsed += nbits
	addr := p.addr + uint64(pos)<<ChunkShift
	a.allocs[addr] = &alloc{size: size, pack: p}
	return addr, nil
}

// allocOwn maps an allocation of its own for size bytes, page-rounded,
// read-only and executable if rx is set, else writable until
// Finalize makes it so. The caller holds mu.
func (a *Allocator) allocOwn(size uint64, rx bool, name string) (uint64, error) {
	mapped := roundUp(size, mem.PageSize)
	addr, err := a.mapText(mapped, false, rx, name)
	if err != nil {
		return 0, err
	}
	a.allocs[addr] = &alloc{size: size, mapped: mapped}
	return addr, nil
}

// mapText maps size bytes of executable memory in the modules region the
// way bpf_jit_alloc_exec and alloc_new_pack do: writable at first, filled
// with illegal instructions, then (if rx is set) read-only and executable.
// The caller holds mu.
func (a *Allocator) mapText(size uint64, huge, rx bool, name string) (uint64, error) {
	// A block-mapped pack may take the memory of a freed one, which is
	// the illegal instruction throughout: each chunk was refilled
	// (TextInvalidate) when freed, and the pack freed when its last
	// chunk went. Only a fresh one needs filling.
	o := mem.AllocOptions{Region: mem.RegionModules, Perm: mem.PermRW, Huge: huge, Name: name}
	if huge && size == mem.HugeSize {
		o.Recycle = "bpf_prog_pack"
	}
	addr, recycled, err := a.space.AllocRecycled(size, o)
	if err != nil {
		return 0, errors.WithMessage(err, name)
	}
	if !recycled {
		var b []byte
		if b, err = a.space.Bytes(addr, size); err == nil {
			a.arch.FillHole(b)
		}
	}
	if err == nil && rx {
		err = a.space.SetPerm(addr, size, mem.PermRX)
	}
	if err != nil {
		a.space.Free(addr)
		return 0, errors.WithMessage(err, name)
	}
	return addr, nil
}

// PackFree is bpf_prog_pack_free: it gives back memory from PackAlloc,
// with the size it was asked with. Pack chunks are overwritten with the
// illegal instruction (TextInvalidate) and the pack is unmapped when its
// last chunk goes; an allocation of its own is unmapped. A pointer or size
// that PackAlloc did not return is EINVAL (where the kernel warns
// "bpf_prog_pack bug"), and so is a failed invalidation, which leaves the
// allocation in place.
func (a *Allocator) PackFree(addr, size uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	al := a.allocs[addr]
	if al == nil || al.size != size {
		return errors.Wrapf(uapi.EINVAL, "bpf_prog_pack_free: bpf_prog_pack bug: %#x is not an allocation of %d bytes", addr, size)
	}
	p := al.pack
	if p == nil {
		if err := a.space.Free(addr); err != nil {
			return errors.WithMessage(err, "bpf_prog_pack_free")
		}
		delete(a.allocs, addr)
		return nil
	}
	if err := a.arch.TextInvalidate(addr, size); err != nil {
		return errors.WithMessage(err, "bpf_prog_pack_free")
	}
	nbits := int(roundUp(size, ChunkSize) / ChunkSize)
	pos := int((addr - p.addr) >> ChunkShift)
	p.bitmap.clear(pos, nbits)
	p.used -= nbits
	a.chunksUsed -= nbits
	delete(a.allocs, addr)
	if p.used == 0 {
		a.packs = slices.DeleteFunc(a.packs, func(q *pack) bool { return q == p })
		a.packsFreed++
		if err := a.space.Free(p.addr); err != nil {
			// Only a bug in this package can get here: the pack was
			// mapped by mapText and nothing else frees it.
			return errors.WithMessage(err, "bpf_prog_pack_free: unmapping an empty pack")
		}
	}
	return nil
}

func roundUp(x, align uint64) uint64 { return (x + align - 1) &^ (align - 1) }
