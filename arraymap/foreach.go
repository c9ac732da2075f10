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

var _ maps.SeqWalker = (*array)(nil)

// SeqFind is bpf_array_map_seq_start's: the element at index
// pos.Bucket+pos.Skip, while it is below max_entries.
func (a *array) SeqFind(cpu int, pos maps.SeqPos) (key uint64, idx uint32, value uint64, at maps.SeqPos, ok bool) {
	i := uint64(pos.Bucket) + uint64(pos.Skip)
	if i >= uint64(a.m.MaxEntries) {
		return 0, 0, 0, maps.SeqPos{Bucket: a.m.MaxEntries}, false
	}
	if a.percpu {
		value = a.pptrs[i] + a.k.Percpu().Offset(cpu)
	} else {
		value = a.m.Addr + ValueOffset + i*a.elemSize
	}
	return 0, uint32(i), value, maps.SeqPos{Bucket: uint32(i)}, true
}
