package arraymap

import (
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Arrays as inner maps of a map of maps (kernel/bpf/map_in_map.c and
// array_map_meta_equal in arraymap.c).

var (
	_ maps.MetaOpser       = (*array)(nil)
	_ maps.LookupGenerator = (*arrayMeta)(nil)
	_ maps.PercpuValues    = (*percpuArrayMeta)(nil)
)

// arrayMetaEqual is array_map_meta_equal. An ARRAY's inlined lookup
// embeds max_entries, so an inner array must have the template's, unless
// the template has BPF_F_INNER_MAP: lookups into such arrays are calls of
// array_map_lookup_elem, which reads the real array's max_entries. Since
// the flags must be equal too, every such inner array has BPF_F_INNER_MAP
// itself ("bpf: Allow for map-in-map with dynamic inner array map
// entries").
func arrayMetaEqual(meta, m *maps.Map) bool {
	if !maps.DefaultMetaEqual(meta, m) {
		return false
	}
	return meta.Attr.Flags&uapi.BPF_F_INNER_MAP != 0 || meta.MaxEntries == m.MaxEntries
}

// MetaOps is what bpf_map_meta_alloc keeps of an array template: for
// ARRAY and PERCPU_ARRAY it allocates a whole struct bpf_array header and
// copies elem_size and index_mask, which the inlined lookup uses.
func (a *array) MetaOps(meta *maps.Map) maps.Ops {
	am := &arrayMeta{m: meta, elemSize: a.elemSize}
	if a.percpu {
		return &percpuArrayMeta{am}
	}
	return am
}

// arrayMeta is the template of inner ARRAY maps.
type arrayMeta struct {
	maps.TemplateOps
	maps.TemplateWalk
	m        *maps.Map
	elemSize uint64
}

// GenLookup inlines lookups into inner arrays with the template's
// max_entries and element size, which arrayMetaEqual made every inner
// array's; with BPF_F_INNER_MAP it declines, as for the array itself.
func (a *arrayMeta) GenLookup(func(string) (insn.Insn, error)) ([]insn.Insn, error) {
	return genLookup(a.m.Flags, a.m.MaxEntries, a.elemSize, false)
}

// percpuArrayMeta is the template of inner PERCPU_ARRAY maps.
//
// The kernel compares PERCPU_ARRAY inner maps with bpf_map_meta_equal,
// which ignores max_entries, yet percpu_array_map_gen_lookup inlines the
// template's max_entries: a key past the template's max_entries finds
// nothing even in a larger inner array, and in an inner per-CPU array
// smaller than its template a key between the two sizes is read past the
// array's end. bpfsim keeps the kernel's rule for what may be stored (an
// update accepts the same maps, with the same errnos) and the template's
// bound, then calls percpu_array_map_lookup_elem, which also checks the
// real array's max_entries: the kernel's result wherever it is defined,
// NULL where the kernel reads past the array. Only the xlated code
// differs from the kernel's.
type percpuArrayMeta struct{ *arrayMeta }

// PercpuInnerLookupFunc is the function lookups into per-CPU inner arrays
// call, after the template's bound.
const PercpuInnerLookupFunc = "percpu_array_map_lookup_elem"

// GenLookup bounds the key by the template's max_entries, as the kernel's
// inlined lookup does, and calls the real array's lookup:
//
//	r0 = *(u32 *)(r2 +0)
//	if r0 >= max_entries goto +2
//	call percpu_array_map_lookup_elem
//	goto +1
//	r0 = 0
func (a *percpuArrayMeta) GenLookup(call func(string) (insn.Insn, error)) ([]insn.Insn, error) {
	c, err := call(PercpuInnerLookupFunc)
	if err != nil {
		return nil, err
	}
	return []insn.Insn{
		{Code: insn.LDX | insn.MEM | insn.W, Dst: insn.R0, Src: insn.R2},
		{Code: insn.JMP | insn.JGE | insn.K, Dst: insn.R0, Off: 2, Imm: int32(a.m.MaxEntries)},
		c,
		{Code: insn.JMP | insn.JA, Off: 1},
		{Code: insn.ALU64 | insn.MOV | insn.K, Dst: insn.R0},
	}, nil
}

// The per-CPU abilities, so that the verifier finds the per-CPU functions
// for calls through the template; the template itself has no elements.
func (a *percpuArrayMeta) LookupPercpu([]byte, []byte) error { return a.UpdateElem(0, nil, nil, 0) }
func (a *percpuArrayMeta) UpdatePercpu([]byte, []byte, uint64) error {
	return a.UpdateElem(0, nil, nil, 0)
}
func (a *percpuArrayMeta) LookupPercpuElem([]byte, int) (uint64, error) {
	return a.LookupElem(0, nil)
}
