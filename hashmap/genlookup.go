package hashmap

import (
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/insn"
)

var _ maps.LookupGenerator = (*htab)(nil)

// ElemLookupFunc is the kernel function an inlined hash lookup calls:
// __htab_map_lookup_elem(map, key), which returns the address of the key's
// struct htab_elem or NULL (LookupElemAddr).
const ElemLookupFunc = "__htab_map_lookup_elem"

// GenLookup is htab_map_gen_lookup and htab_percpu_map_gen_lookup. The
// hashing and the bucket walk stay a call; what is inlined is the step
// from the element to its value, which skips the generic helper's call
// of the map's lookup:
//
//	HASH                                PERCPU_HASH
//	call __htab_map_lookup_elem         call __htab_map_lookup_elem
//	if r0 == 0x0 goto +1                if r0 == 0x0 goto +3
//	r0 += ValueOffset(key_size)         r0 += ValueOffset(key_size)
//	                                    r0 = *(u64 *)(r0 +0)
//	                                    r0 = &(void __percpu *)(r0)
func (h *htab) GenLookup(call func(string) (insn.Insn, error)) ([]insn.Insn, error) {
	return genLookup(call, h.valueOff, h.percpu)
}

// genLookup builds GenLookup's sequence for elements whose value is
// valueOff bytes in: a hash map's, or an inner map template's.
func genLookup(call func(string) (insn.Insn, error), valueOff uint64, percpu bool) ([]insn.Insn, error) {
	c, err := call(ElemLookupFunc)
	if err != nil {
		return nil, err
	}
	seq := []insn.Insn{
		c,
		{Code: insn.JMP | insn.JEQ | insn.K, Dst: insn.R0, Off: 1},
		{Code: insn.ALU64 | insn.ADD | insn.K, Dst: insn.R0, Imm: int32(valueOff)},
	}
	if percpu {
		seq[1].Off = 3
		seq = append(seq,
			insn.Insn{Code: insn.LDX | insn.MEM | insn.DW, Dst: insn.R0, Src: insn.R0}, // the per-CPU pointer
			insn.Insn{Code: insn.ALU64 | insn.MOV | insn.X, Dst: insn.R0, Src: insn.R0, Off: -1},
		)
	}
	return seq, nil
}
