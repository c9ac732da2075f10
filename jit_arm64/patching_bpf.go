package jit_arm64

import (
	"encoding/binary"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// The arm64 JIT's hooks for the prog pack allocator (sim/progpack.Arch),
// from arch/arm64/net/bpf_jit_comp.c. A *Patcher provides them.

// TextCopy is bpf_arch_text_copy: it copies a finished image from the JIT's
// writable buffer into its read-only executable place with InsnCopy. Like
// the kernel's, any failure of the copy is EINVAL.
func (p *Patcher) TextCopy(dst uint64, src []byte) error {
	if _, err := p.InsnCopy(dst, src); err != nil {
		return errors.Wrapf(uapi.EINVAL, "bpf_arch_text_copy: %v", err)
	}
	return nil
}

// TextInvalidate is bpf_arch_text_invalidate: it overwrites the n bytes of
// executable memory at dst, the place of a freed program, with BreakFault
// instructions, so that a jump into freed code traps instead of running
// whatever was there. Failure is EINVAL, as in the kernel.
func (p *Patcher) TextInvalidate(dst, n uint64) error {
	if _, err := p.InsnSet(dst, BreakFault, n); err != nil {
		return errors.Wrapf(uapi.EINVAL, "bpf_arch_text_invalidate: %v", err)
	}
	return nil
}

// FillHole is jit_fill_hole: it fills memory that is still writable (a
// fresh pack, the JIT's buffer) with BreakFault in every whole 4-byte
// slot. area may be simulated memory (mem.Space.Bytes), so it is written
// with mem.StoreBytes.
func (p *Patcher) FillHole(area []byte) { FillHole(area) }

// FillHole is jit_fill_hole; see Patcher.FillHole.
func FillHole(area []byte) {
	area = area[:len(area)&^(InsnSize-1)]
	for len(area) > 0 {
		area = area[mem.StoreBytes(area, holePattern[:]):]
	}
}

// holePattern is BreakFault repeated, the source of FillHole's copies.
var holePattern = func() (p [64 << 10]byte) {
	for i := 0; i < len(p); i += InsnSize {
		binary.LittleEndian.PutUint32(p[i:], BreakFault)
	}
	return p
}()
