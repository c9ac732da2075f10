package jit_arm64

import (
	"encoding/binary"
	"sort"
	"unsafe"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/jit_arm64/a64"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/progpack"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// JIT compiles programs into the memory of a prog pack allocator: the
// arm64 half of bpf_int_jit_compile, with the allocator doing
// bpf_jit_binary_pack_alloc, _finalize and _free. It is safe for
// concurrent use.
type JIT struct {
	alloc *progpack.Allocator
}

// New returns a JIT that places its images with alloc.
func New(alloc *progpack.Allocator) *JIT { return &JIT{alloc: alloc} }

// Allocator returns the allocator images go to.
func (j *JIT) Allocator() *progpack.Allocator { return j.alloc }

// imageAlign is the alignment of an image's start: sizeof(u64) since
// 2026, for the PLT target's single-copy atomicity.
const imageAlign = 8

// Image is one compiled program in executable memory.
type Image struct {
	j         *JIT
	bin       *progpack.Binary
	words     []uint32
	offsets   []int32 // A64 index of each BPF instruction; last = end
	entries   []int   // A64 index of each function's entry
	epilogues []int
	callers   []callSite
	direct    []directSite
	extable   []exEntry // by word
}

// DirectTailCall is where a direct tail call's patched instructions are.
type DirectTailCall struct {
	Insn int // the BPF tail call instruction
	// Bypass is "b Out" while the slot is empty, NOP otherwise; Target
	// is NOP while empty, "b Stub" otherwise; Literal (8 bytes) holds
	// the address Stub branches to: the target's tail call entry.
	Bypass, Target, Out, Stub, Literal uint64
}

// DirectTailCalls returns the image's direct tail call sites, in the
// order of their instructions.
func (im *Image) DirectTailCalls() []DirectTailCall {
	base := im.Entry()
	out := make([]DirectTailCall, len(im.direct))
	for k, d := range im.direct {
		out[k] = DirectTailCall{Insn: d.insn, Bypass: base + 4*uint64(d.bypass), Target: base + 4*uint64(d.target),
			Out: base + 4*uint64(d.out), Stub: base + 4*uint64(d.stub), Literal: base + 4*uint64(d.stub+2)}
	}
	return out
}

// Compile translates the program and places it: a sizing pass, the
// allocation, a pass against the image address when the program calls
// the kernel (translate), then the copy into executable memory
// (finalize). A program the JIT cannot translate is an
// error wrapping ErrNotSupported; bad programs are EINVAL.
func (j *JIT) Compile(in *Input) (*Image, error) {
	var bin *progpack.Binary
	var c jitCtx
	err := translate(&c, in, func(size int) (uint64, error) {
		b, err := j.alloc.Alloc(uint32(size), imageAlign)
		if err != nil {
			return 0, err
		}
		bin = b
		return b.Image(), nil
	}, false)
	if err != nil {
		if bin != nil {
			if ferr := j.alloc.Free(bin); ferr != nil {
				return nil, errors.WithMessagef(err, "and freeing the image failed: %v", ferr)
			}
		}
		return nil, err
	}
	err = writeWords(j.alloc.Space(), bin.RWImage(), c.words)
	if err != nil {
		j.alloc.Free(bin)
		return nil, errors.WithMessage(err, "writing the JIT image")
	}
	if err := j.alloc.Finalize(bin); err != nil {
		return nil, err
	}
	return &Image{j: j, bin: bin, words: c.words, offsets: c.offsets, entries: c.entries, epilogues: c.epilogues, callers: c.callers, direct: c.direct, extable: c.extable}, nil
}

// writeWords writes A64 instructions, little-endian, at addr.
func writeWords(space *mem.Space, addr uint64, words []uint32) error {
	if len(words) == 0 {
		return nil
	}
	if hostLittleEndian {
		// The words' memory already holds those bytes.
		return space.Write(addr, unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), 4*len(words)))
	}
	buf := make([]byte, 4*len(words))
	for i, w := range words {
		binary.LittleEndian.PutUint32(buf[4*i:], w)
	}
	return space.Write(addr, buf)
}

var hostLittleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// Translate runs the JIT's passes for an image that will run at address
// image and returns its instructions, without placing it: for callers
// that allocate executable memory themselves. With image 0 (unknown) it is
// the sizing pass, whose length no later pass exceeds.
func Translate(in *Input, image uint64) ([]uint32, error) {
	var c jitCtx
	if err := translate(&c, in, func(int) (uint64, error) { return image, nil }, false); err != nil {
		return nil, err
	}
	return c.words, nil
}

// Free gives the image's memory back: it is refilled with the break fault
// instruction, so a late jump into it traps.
func (im *Image) Free() error {
	if im == nil || im.bin == nil {
		return errors.Wrap(uapi.EINVAL, "jit: freeing an image twice")
	}
	err := im.j.alloc.Free(im.bin)
	im.bin = nil
	return err
}

// Entry is the program's bpf_func: where it is called.
func (im *Image) Entry() uint64 { return im.bin.Image() }

// TailCallEntry is where tail calls enter the program.
func (im *Image) TailCallEntry() uint64 { return im.Entry() + 4*PrologueOffset }

// Len is jited_len: the image's bytes.
func (im *Image) Len() int { return 4 * len(im.words) }

// Binary returns the allocator's record of the image.
func (im *Image) Binary() *progpack.Binary { return im.bin }

// Words returns the image's instructions as the JIT wrote them.
func (im *Image) Words() []uint32 { return im.words }

// Offset returns the byte offset in the image of BPF instruction i's code
// (i = the number of instructions gives the end of the last function's
// body).
func (im *Image) Offset(i int) int { return 4 * int(im.offsets[i]) }

// FuncEntries returns the byte offset of each function's entry.
func (im *Image) FuncEntries() []int {
	out := make([]int, len(im.entries))
	for i, e := range im.entries {
		out[i] = 4 * e
	}
	return out
}

// Epilogues returns the byte offset of each function's epilogue.
func (im *Image) Epilogues() []int {
	out := make([]int, len(im.epilogues))
	for i, e := range im.epilogues {
		out[i] = 4 * e
	}
	return out
}

// InsnAt returns the BPF instruction whose code holds address pc (a
// function's epilogue counts as its last instruction's; a prologue as the
// previous function's), or -1 for an address before the first
// instruction's code or outside the image.
func (im *Image) InsnAt(pc uint64) int {
	base := im.Entry()
	if pc < base || pc >= base+uint64(im.Len()) {
		return -1
	}
	w := int(pc-base) / 4
	// the last instruction starting at or before w
	i := sort.Search(len(im.offsets), func(i int) bool { return int(im.offsets[i]) > w }) - 1
	if i < 0 || i >= len(im.offsets)-1 {
		return -1
	}
	return i
}

// CallSite returns the BPF instruction of the call that returns to ret,
// the link register a kernel function sees, or -1.
func (im *Image) CallSite(ret uint64) int {
	base := im.Entry()
	if ret < base {
		return -1
	}
	w := int(ret-base) / 4
	for _, c := range im.callers {
		if c.word == w {
			return c.bpf
		}
	}
	return -1
}

// Fixup is the image's exception table (search_bpf_extables): for a data
// access at pc that faulted, the register a probe load there loads,
// which the fault handler zeroes before the code goes on at pc+4
// (ex_handler_bpf); ok is false for any other instruction.
func (im *Image) Fixup(pc uint64) (reg a64.Reg, ok bool) {
	base := im.Entry()
	if pc < base || (pc-base)%4 != 0 {
		return 0, false
	}
	w := int((pc - base) / 4)
	i := sort.Search(len(im.extable), func(i int) bool { return im.extable[i].word >= w })
	if i == len(im.extable) || im.extable[i].word != w {
		return 0, false
	}
	return im.extable[i].reg, true
}
