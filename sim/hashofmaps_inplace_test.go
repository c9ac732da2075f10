package sim_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// hashOfMapsKeys walks a hash of maps with get_next_key and returns its
// keys with the id of the inner map each holds.
func hashOfMapsKeys(t *testing.T, m *sim.Map) []string {
	t.Helper()
	var out []string
	var key any
	for {
		var next uint32
		if err := m.NextKey(key, &next); errors.Is(err, uapi.ENOENT) {
			return out
		} else if err != nil {
			t.Fatal(err)
		}
		var id uint32
		if err := m.Lookup(next, &id); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d:%d", next, id))
		key = next
	}
}

// Since Linux 6.16 ("bpf: Support atomic update for htab of maps"), an
// update of an existing key of a HASH_OF_MAPS writes the new inner map
// pointer into the element in place (htab_map_update_elem_in_place):
// the key keeps its place in the get_next_key walk, where an ordinary
// hash update puts a new element at the head of the bucket. A full map
// still takes replacements; the replaced inner map loses the element's
// reference. The map-in-map corpus found bpfsim moving replaced keys to
// the head of their bucket.
func TestHashOfMapsReplacesInnerMapsInPlace(t *testing.T) {
	for _, flags := range []uint32{uapi.BPF_F_ZERO_SEED, uapi.BPF_F_ZERO_SEED | uapi.BPF_F_NO_PREALLOC} {
		t.Run(fmt.Sprintf("flags %#x", flags), func(t *testing.T) {
			k := newKernel(t, nil)
			// Two buckets for four keys: keys share buckets.
			spec := outerSpec("outer", ebpf.HashOfMaps, 2, intArray("tmpl", 1, 0))
			spec.Flags = flags
			outer := newMapT(t, k, spec)
			a, b := newMapT(t, k, intArray("a", 1, 0)), newMapT(t, k, intArray("b", 1, 0))
			victim, err := k.NewMap(intArray("victim", 1, 0))
			if err != nil {
				t.Fatal(err)
			}
			victimID := victim.ID()
			wantErrno(t, "insert 5", outer.Put(uint32(5), a), 0)
			wantErrno(t, "insert 2", outer.Put(uint32(2), victim), 0)
			wantErrno(t, "insert 7 into a full map", outer.Put(uint32(7), a), uapi.E2BIG)
			victim.Close()
			before := hashOfMapsKeys(t, outer)
			for _, key := range []uint32{2, 5} {
				wantErrno(t, fmt.Sprintf("replace %d in a full map", key), outer.Update(key, b, ebpf.UpdateExist), 0)
			}
			after := hashOfMapsKeys(t, outer)
			want := []string{}
			for _, kv := range before {
				var key, id uint32
				fmt.Sscanf(kv, "%d:%d", &key, &id)
				want = append(want, fmt.Sprintf("%d:%d", key, b.ID()))
			}
			if fmt.Sprint(after) != fmt.Sprint(want) {
				t.Errorf("keys and inner maps after replacing every inner map: %v, want %v (before: %v)", after, want, before)
			}
			k.SynchronizeRCU()
			if _, err := k.NewMapFromID(victimID); !errors.Is(err, uapi.ENOENT) {
				t.Errorf("the replaced inner map is still alive: %v", err)
			}
			wantErrno(t, "NOEXIST on an existing key", outer.Update(uint32(5), a, ebpf.UpdateNoExist), uapi.EEXIST)
			wantErrno(t, "delete 2", outer.Delete(uint32(2)), 0)
			wantErrno(t, "insert 7 once there is room", outer.Put(uint32(7), a), 0)
		})
	}
}
