package sim

import (
	"slices"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// withVariables returns the spec of the data section called section
// (.data, .rodata, .bss...) with the values of the collection's variables
// that live in it, as cilium/ebpf writes them before creating the map
// (MapSpec.updateDataSection): a VariableSpec.Set on a constant before
// loading is how a loader passes a `volatile const` to a program.
func withVariables(ms *ebpf.MapSpec, vars map[string]*ebpf.VariableSpec, section string) (*ebpf.MapSpec, error) {
	var in []*ebpf.VariableSpec
	for _, v := range vars {
		if v.SectionName == section {
			in = append(in, v)
		}
	}
	if len(in) == 0 {
		return ms, nil
	}
	if len(ms.Contents) != 1 {
		return nil, errors.Wrapf(uapi.EINVAL, "data section %s: %d initial values, want 1", section, len(ms.Contents))
	}
	data, ok := ms.Contents[0].Value.([]byte)
	if key, isU32 := ms.Contents[0].Key.(uint32); !ok || !isU32 || key != 0 {
		return nil, errors.Wrapf(uapi.EINVAL, "data section %s: its contents are not one []byte at key 0", section)
	}
	data = slices.Clone(data)
	slices.SortFunc(in, func(a, b *ebpf.VariableSpec) int { return int(int64(a.Offset) - int64(b.Offset)) })
	end := uint32(0)
	for _, v := range in {
		if v.Offset < end {
			return nil, errors.Wrapf(uapi.EINVAL, "variable %s (offset %d) overlaps the one before it", v.Name, v.Offset)
		}
		end = v.Offset + v.Size()
		if int(end) > len(data) {
			return nil, errors.Wrapf(uapi.EINVAL, "variable %s runs past data section %s", v.Name, section)
		}
		copy(data[v.Offset:end], v.Value)
	}
	ms = ms.Copy()
	ms.Contents = []ebpf.MapKV{{Key: uint32(0), Value: data}}
	return ms, nil
}
