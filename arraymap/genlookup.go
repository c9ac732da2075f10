package arraymap

import (
	"math/bits"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

var _ maps.LookupGenerator = (*array)(nil)

// errInnerMap declines inlining for BPF_F_INNER_MAP arrays: their
// max_entries may differ from one inner map to the next, so it cannot be
// a constant of the program.
var errInnerMap = errors.WithMessage(uapi.EOPNOTSUPP, "BPF_F_INNER_MAP arrays are not inlined")

// GenLookup is array_map_gen_lookup and percpu_array_map_gen_lookup: the
// lookup computed in the program itself, from the very layout LookupElem
// reads. The simulated loader may bypass Spectre v1 masking (see the
// package comment), so these are the kernel's variants without the index
// mask, the ones it emits for root:
//
//	ARRAY                              PERCPU_ARRAY
//	r1 += ValueOffset                  r1 += ValueOffset
//	r0 = *(u32 *)(r2 +0)               r0 = *(u32 *)(r2 +0)
//	if r0 >= max_entries goto +3       if r0 >= max_entries goto +5
//	r0 <<= log2(elem) (or r0 *= elem)  r0 <<= 3
//	r0 += r1                           r0 += r1
//	goto +1                            r0 = *(u64 *)(r0 +0)
//	r0 = 0                             r0 = &(void __percpu *)(r0)
//	                                   goto +1
//	                                   r0 = 0
func (a *array) GenLookup(func(string) (insn.Insn, error)) ([]insn.Insn, error) {
	return genLookup(a.m.Flags, a.m.MaxEntries, a.elemSize, a.percpu)
}

// genLookup builds the sequence of GenLookup for an array with these
// flags, max_entries and element size: the array itself, or the inner map
// template that stands for every inner array of a map of maps.
func genLookup(flags, maxEntries uint32, elemSize uint64, percpu bool) ([]insn.Insn, error) {
	if flags&uapi.BPF_F_INNER_MAP != 0 {
		return nil, errInnerMap
	}
	const r0, r1, r2 = insn.R0, insn.R1, insn.R2
	seq := []insn.Insn{
		{Code: insn.ALU64 | insn.ADD | insn.K, Dst: r1, Imm: ValueOffset},
		{Code: insn.LDX | insn.MEM | insn.W, Dst: r0, Src: r2},
		{Code: insn.JMP | insn.JGE | insn.K, Dst: r0, Imm: int32(maxEntries)},
	}
	jge := len(seq) - 1
	if percpu {
		seq = append(seq,
			insn.Insn{Code: insn.ALU64 | insn.LSH | insn.K, Dst: r0, Imm: 3}, // one pointer per element
			insn.Insn{Code: insn.ALU64 | insn.ADD | insn.X, Dst: r0, Src: r1},
			insn.Insn{Code: insn.LDX | insn.MEM | insn.DW, Dst: r0, Src: r0},
			insn.Insn{Code: insn.ALU64 | insn.MOV | insn.X, Dst: r0, Src: r0, Off: -1}, // this CPU's copy
		)
	} else {
		seq = append(seq, scaleIndex(elemSize))
		seq = append(seq, insn.Insn{Code: insn.ALU64 | insn.ADD | insn.X, Dst: r0, Src: r1})
	}
	seq = append(seq,
		insn.Insn{Code: insn.JMP | insn.JA, Off: 1},
		insn.Insn{Code: insn.ALU64 | insn.MOV | insn.K, Dst: r0},
	)
	// Out of range: to the last instruction, r0 = 0.
	seq[jge].Off = int16(len(seq) - 1 - (jge + 1))
	return seq, nil
}

// scaleIndex turns the index in r0 into a byte offset: a shift when the
// element size is a power of two, else a multiplication.
func scaleIndex(elemSize uint64) insn.Insn {
	if bits.OnesCount64(elemSize) == 1 {
		return insn.Insn{Code: insn.ALU64 | insn.LSH | insn.K, Dst: insn.R0, Imm: int32(bits.TrailingZeros64(elemSize))}
	}
	return insn.Insn{Code: insn.ALU64 | insn.MUL | insn.K, Dst: insn.R0, Imm: int32(elemSize)}
}
