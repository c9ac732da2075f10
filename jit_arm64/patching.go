package jit_arm64

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// A64 constants of the patching code (arch/arm64/include/asm/insn.h,
// asm/brk-imm.h, asm/debug-monitors.h).
const (
	// InsnSize is AARCH64_INSN_SIZE: every A64 instruction is one
	// little-endian 32-bit word, 4-byte aligned.
	InsnSize = 4
	// BreakMon is AARCH64_BREAK_MON, "brk #0": the BRK opcode with an
	// immediate of zero (bits 20..5).
	BreakMon uint32 = 0xd4200000
	// FaultBrkImm is FAULT_BRK_IMM, the BRK immediate the kernel reserves
	// for "this should never run".
	FaultBrkImm = 0x100
	// BreakFault is AARCH64_BREAK_FAULT, "brk #0x100" = 0xd4202000: the word
	// the JIT fills holes with, the encoders return on invalid operands and
	// bpf_arch_text_invalidate writes over freed programs. Executing it
	// raises a debug exception that the kernel treats as a fatal fault.
	BreakFault = BreakMon | FaultBrkImm<<5
)

// Patcher writes the executable memory of one address space as
// arch/arm64/kernel/patching.c does. Executable pages are mapped read-only
// (W^X), so a Patcher never writes them directly: for every page it touches
// it maps a temporary writable alias of that page (patch_map with the
// FIX_TEXT_POKE0 fixmap slot), writes through the alias and unmaps it again
// (patch_unmap) before moving on, all under one lock (patch_lock); then it
// flushes the instruction cache for the whole range.
//
// The simulator's address space hands out a fresh virtual address for every
// alias instead of reusing one fixmap slot, so a stale pointer to an old
// alias faults like the unmapped fixmap slot would.
type Patcher struct {
	space *mem.Space

	mu sync.Mutex // patch_lock: one patch at a time, as there is one fixmap slot
	// tlb writes single instructions and literals through the alias with
	// one aligned store, as the kernel does, so that a CPU running the
	// code reads the old value or the new one, never a mix. Guarded by mu.
	tlb *mem.TLB

	// icacheGen counts instruction cache flushes: an emulator that keeps
	// decoded code compares it to know that text changed.
	icacheGen atomic.Uint64
	aliases   atomic.Uint64 // temporary aliases mapped, one per page patched

	// mapped, when set (by tests), is called with every alias right after
	// it is mapped and before anything is written through it.
	mapped func(alias, page uint64)
}

// NewPatcher returns a Patcher for the executable memory of space.
func NewPatcher(space *mem.Space) *Patcher {
	return &Patcher{space: space, tlb: space.NewTLB()}
}

// Space returns the address space the Patcher writes.
func (p *Patcher) Space() *mem.Space { return p.space }

// PatchStats counts what a Patcher did.
type PatchStats struct {
	// Aliases is how many temporary writable aliases were mapped: one per
	// page of every patch.
	Aliases uint64
	// Flushes is how many instruction cache flushes were made: one per
	// patch.
	Flushes uint64
}

// Stats returns the Patcher's counters.
func (p *Patcher) Stats() PatchStats {
	return PatchStats{Aliases: p.aliases.Load(), Flushes: p.icacheGen.Load()}
}

// ICacheGen returns a number that changes whenever the Patcher flushes the
// instruction cache (flush_icache_range). Code decoded from executable
// memory before the number changed may be stale.
func (p *Patcher) ICacheGen() uint64 { return p.icacheGen.Load() }

// FlushICache is flush_icache_range(start, end): it makes instructions
// written through an alias visible to instruction fetch. The simulator has
// no instruction cache; a flush marks the text as changed (ICacheGen) for
// executors that cache decoded code.
func (p *Patcher) FlushICache(start, end uint64) {
	p.icacheGen.Add(1)
}

// InsnCopy is aarch64_insn_copy: it copies src into executable memory at
// dst, an unused part of RX memory the JIT is filling, and returns dst. dst
// must be 4-byte aligned (EINVAL), and every page of the range must be
// mapped memory (EFAULT); a refused patch writes nothing.
func (p *Patcher) InsnCopy(dst uint64, src []byte) (uint64, error) {
	if dst&(InsnSize-1) != 0 {
		return 0, errors.Wrapf(uapi.EINVAL, "aarch64_insn_copy: %#x is not instruction aligned", dst)
	}
	err := p.poke(dst, uint64(len(src)), func(alias uint64, patched, size uint64) error {
		return p.space.Write(alias, src[patched:patched+size])
	})
	if err != nil {
		return 0, errors.WithMessage(err, "aarch64_insn_copy")
	}
	return dst, nil
}

// InsnSet is aarch64_insn_set, memset for RX memory: it writes the
// instruction insn into every whole 4-byte slot of [dst, dst+n) and
// returns dst. JITs fill the regions of freed programs with illegal
// instructions this way. dst must be 4-byte aligned (EINVAL); trailing
// bytes of an n that is not a multiple of 4 are left alone, as memset32
// leaves them.
func (p *Patcher) InsnSet(dst uint64, insn uint32, n uint64) (uint64, error) {
	if dst&(InsnSize-1) != 0 {
		return 0, errors.Wrapf(uapi.EINVAL, "aarch64_insn_set: %#x is not instruction aligned", dst)
	}
	page := holePattern[:mem.PageSize]
	if insn != BreakFault {
		page = make([]byte, mem.PageSize)
		for i := 0; i < len(page); i += InsnSize {
			binary.LittleEndian.PutUint32(page[i:], insn)
		}
	}
	err := p.poke(dst, n, func(alias uint64, patched, size uint64) error {
		// dst is aligned and chunks end at page boundaries (multiples of
		// 4) or at the end of the range, so every chunk starts on a slot.
		return p.space.Write(alias, page[:size&^(InsnSize-1)])
	})
	if err != nil {
		return 0, errors.WithMessage(err, "aarch64_insn_set")
	}
	return dst, nil
}

// InsnRead is aarch64_insn_read: it reads the instruction at addr. Text is
// readable, so no alias is needed.
func (p *Patcher) InsnRead(addr uint64) (uint32, error) {
	var b [InsnSize]byte
	if err := p.space.Read(addr, b[:]); err != nil {
		return 0, errors.WithMessage(err, "aarch64_insn_read")
	}
	return binary.LittleEndian.Uint32(b[:]), nil
}

// InsnWrite is aarch64_insn_write: it replaces the one instruction at
// addr through an alias, without flushing the instruction cache. addr
// must be 4-byte aligned (EINVAL): an aligned instruction never straddles
// two pages.
func (p *Patcher) InsnWrite(addr uint64, insn uint32) error {
	if addr&(InsnSize-1) != 0 {
		return errors.Wrapf(uapi.EINVAL, "aarch64_insn_write: %#x is not instruction aligned", addr)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.writePage(addr, func(alias uint64) error { return p.store(alias, 4, uint64(insn)) }); err != nil {
		return errors.WithMessage(err, "aarch64_insn_write")
	}
	return nil
}

// WriteLiteral64 replaces the naturally aligned 8-byte value at addr in
// executable memory (a literal that code loads, like the PLT's target)
// with one 64-bit store through an alias, as the kernel's WRITE_ONCE of
// the PLT target: a CPU loading it sees the old value or the new one.
// addr must be 8-byte aligned (EINVAL).
func (p *Patcher) WriteLiteral64(addr, v uint64) error {
	if addr&7 != 0 {
		return errors.Wrapf(uapi.EINVAL, "text literal at %#x is not 8-byte aligned", addr)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.writePage(addr, func(alias uint64) error { return p.store(alias, 8, v) }); err != nil {
		return errors.WithMessage(err, "writing a text literal")
	}
	return nil
}

// store is one aligned store of size 4 or 8 through the TLB. The caller
// holds mu.
func (p *Patcher) store(addr uint64, size int, v uint64) error {
	p.tlb.Sync() // the alias was just mapped
	var f *mem.Fault
	if size == 8 {
		f = p.tlb.Store64(addr, v)
	} else {
		f = p.tlb.Store32(addr, v)
	}
	if f != nil {
		return f
	}
	return nil
}

// PatchTextNosync is aarch64_insn_patch_text_nosync: InsnWrite followed
// by a flush of that one instruction. A single aligned 32-bit store is
// atomic, so CPUs running the code see either the old or the new
// instruction.
func (p *Patcher) PatchTextNosync(addr uint64, insn uint32) error {
	if err := p.InsnWrite(addr, insn); err != nil {
		return err
	}
	p.FlushICache(addr, addr+InsnSize)
	return nil
}

// poke is __text_poke: it checks that [dst, dst+n) is mapped memory, then
// calls write once per page with a temporary writable alias of the part of
// the range that lies in that page (at the part's offset in the alias),
// how many bytes came before it and its size, and finally flushes the
// instruction cache for the range.
func (p *Patcher) poke(dst, n uint64, write func(alias, patched, size uint64) error) error {
	if dst+n < dst {
		return errors.Wrapf(uapi.EINVAL, "range %#x+%d wraps around", dst, n)
	}
	// All or nothing: a range that runs into an unmapped page is refused
	// before the first byte is written. Text is always readable, so a
	// one-byte read tells whether a page is mapped memory.
	var probe [1]byte
	for page := dst &^ (mem.PageSize - 1); page < dst+n; page += mem.PageSize {
		if err := p.space.Read(max(page, dst), probe[:]); err != nil {
			return err
		}
	}
	p.mu.Lock()
	for patched := uint64(0); patched < n; {
		ptr := dst + patched
		size := min(mem.PageSize-ptr&(mem.PageSize-1), n-patched)
		err := p.writePage(ptr, func(alias uint64) error { return write(alias, patched, size) })
		if err != nil {
			p.mu.Unlock()
			return err
		}
		patched += size
	}
	p.mu.Unlock()
	p.FlushICache(dst, dst+n)
	return nil
}

// writePage maps a writable alias of the page holding addr (patch_map),
// calls write with the alias of addr and unmaps the alias (patch_unmap),
// whatever write returned. The caller holds mu.
func (p *Patcher) writePage(addr uint64, write func(alias uint64) error) error {
	page := addr &^ (mem.PageSize - 1)
	alias, err := p.space.Alias(page, mem.PageSize, mem.PermRW, "text_poke")
	if err != nil {
		return err
	}
	p.aliases.Add(1)
	if p.mapped != nil {
		p.mapped(alias, page)
	}
	werr := write(alias + addr - page)
	if err := p.space.Free(alias); err != nil && werr == nil {
		werr = err
	}
	return werr
}
