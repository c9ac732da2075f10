package arraymap

import "github.com/bpfsim/bpfsim/maps"

// Walks of arrays by bpf_for_each_map_elem (bpf_for_each_array_elem):
// ARRAY and PERCPU_ARRAY only; prog arrays and arrays of maps are other
// Go types and cannot be walked, as their kernel ops have no
// map_for_each_callback.

var _ maps.ForEacher = (*array)(nil)

// ForEachElem is bpf_for_each_array_elem: every index in order, with the
// element's value (cpu's copy for a per-CPU array) and no stored key.
func (a *array) ForEachElem(cpu int, fn func(key uint64, idx uint32, value uint64) (bool, error)) (uint32, error) {
	var n uint32
	for i := uint32(0); i < a.m.MaxEntries; i++ {
		var value uint64
		if a.percpu {
			value = a.pptrs[i] + a.k.Percpu().Offset(cpu)
		} else {
			value = a.m.Addr + ValueOffset + uint64(i)*a.elemSize
		}
		n++
		stop, err := fn(0, i, value)
		if err != nil || stop {
			return n, err
		}
	}
	return n, nil
}
