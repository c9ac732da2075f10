package verifier

import "github.com/bpfsim/bpfsim/maps"

// Maps of maps in the verifier. A lookup in an outer map returns, as any
// lookup, a map value or NULL (PTR_TO_MAP_VALUE | PTR_MAYBE_NULL, whose
// map is the outer map); the null check makes it a CONST_PTR_TO_MAP whose
// map is the outer map's inner map template (mark_ptr_not_null_reg), a
// map argument for the map helpers. Those calls are checked against the
// template, and the fix-ups specialize them by it: its inlined lookup,
// built from its constants, or a direct call of its type's function. The
// map in r1 at run time is the real inner map, loaded from the outer map.

// innerMeta returns the inner map template of m, nil if m is not a map of
// maps.
func innerMeta(m *maps.Map) *maps.Map {
	if m == nil {
		return nil
	}
	if o, ok := m.Ops.(maps.Outer); ok {
		return o.InnerMeta()
	}
	return nil
}
