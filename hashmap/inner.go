package hashmap

import (
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/insn"
)

// Hash maps as inner maps of a map of maps. Their map_meta_equal is
// bpf_map_meta_equal (maps.DefaultMetaEqual): max_entries may differ from
// the template's, since neither the verifier nor the inlined lookup uses
// it ("bpf: Relax max_entries check for most of the inner map types").

var (
	_ maps.MetaOpser       = (*htab)(nil)
	_ maps.LookupGenerator = (*htabMeta)(nil)
	_ maps.PercpuValues    = (*percpuHtabMeta)(nil)
)

// MetaOps is what the verifier keeps of a hash template: the inlined
// lookup, which depends only on the key size, and the per-CPU abilities.
func (h *htab) MetaOps(meta *maps.Map) maps.Ops {
	hm := &htabMeta{valueOff: h.valueOff, percpu: h.percpu}
	if h.percpu {
		return &percpuHtabMeta{hm}
	}
	return hm
}

// htabMeta is the template of inner HASH and PERCPU_HASH maps.
type htabMeta struct {
	maps.TemplateOps
	maps.TemplateWalk
	valueOff uint64
	percpu   bool
}

// GenLookup is htab_map_gen_lookup (htab_percpu_map_gen_lookup) for every
// inner map: their key size, and so the value offset, is the template's.
func (h *htabMeta) GenLookup(call func(string) (insn.Insn, error)) ([]insn.Insn, error) {
	return genLookup(call, h.valueOff, h.percpu)
}

// percpuHtabMeta adds the per-CPU abilities, so that the verifier finds
// the per-CPU functions for calls through the template.
type percpuHtabMeta struct{ *htabMeta }

func (h *percpuHtabMeta) LookupPercpu([]byte, []byte) error { return h.UpdateElem(0, nil, nil, 0) }
func (h *percpuHtabMeta) UpdatePercpu([]byte, []byte, uint64) error {
	return h.UpdateElem(0, nil, nil, 0)
}
func (h *percpuHtabMeta) LookupPercpuElem([]byte, int) (uint64, error) { return h.LookupElem(0, nil) }
