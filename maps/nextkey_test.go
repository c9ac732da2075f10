package maps

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

func TestIndexNextKeyWalksIndexesAsArraysDo(t *testing.T) {
	key := func(i uint32) []byte { return binary.LittleEndian.AppendUint32(nil, i) }
	for _, tc := range []struct {
		name string
		max  uint32
		key  []byte
		want uint32
		err  error
	}{
		{"no key: the first", 4, nil, 0, nil},
		{"the next", 4, key(1), 2, nil},
		{"after the last: ENOENT", 4, key(3), 0, uapi.ENOENT},
		{"out of range: the first", 4, key(9), 0, nil},
		{"an empty map: the first", 0, key(0xffffffff), 0, nil},
	} {
		next := make([]byte, 4)
		err := IndexNextKey(tc.max, tc.key, next)
		if !errors.Is(err, tc.err) || err == nil && tc.err != nil || err == nil && binary.LittleEndian.Uint32(next) != tc.want {
			t.Errorf("%s: %d, %v; want %d, %v", tc.name, binary.LittleEndian.Uint32(next), err, tc.want, tc.err)
		}
	}
}
