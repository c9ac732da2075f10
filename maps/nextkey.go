package maps

import (
	"encoding/binary"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// IndexNextKey is array_map_get_next_key, which every map type keyed by a
// u32 index below max_entries shares (arrays, prog and perf event arrays,
// devmaps, cpumaps): the index after key, index 0 for no key or one out
// of range, ENOENT after the last.
func IndexNextKey(maxEntries uint32, key, next []byte) error {
	idx := uint32(0)
	if key != nil {
		if i := binary.LittleEndian.Uint32(key); i < maxEntries {
			if i == maxEntries-1 {
				return errors.Wrap(uapi.ENOENT, "last element")
			}
			idx = i + 1
		}
	}
	binary.LittleEndian.PutUint32(next, idx)
	return nil
}
