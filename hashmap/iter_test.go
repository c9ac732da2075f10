package hashmap_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/bpfsim/bpfsim/hashmap"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// chainModel is the kernel's bucket array reduced to what get_next_key
// shows: each bucket's keys, head first.
type chainModel struct {
	seed   uint32
	chains [][][]byte
}

func newChainModel(maxEntries, seed uint32) *chainModel {
	n := uint32(1)
	for n < maxEntries {
		n <<= 1
	}
	return &chainModel{seed: seed, chains: make([][][]byte, n)}
}

func (cm *chainModel) bucket(key []byte) int {
	return int(hashmap.HashKey(key, cm.seed) & uint32(len(cm.chains)-1))
}

func (cm *chainModel) index(key []byte) (int, int) {
	b := cm.bucket(key)
	for i, k := range cm.chains[b] {
		if bytes.Equal(k, key) {
			return b, i
		}
	}
	return b, -1
}

// insert adds key at the head of its chain; a HASH update of an existing
// key does the same (a new element at the head, the old one unlinked),
// while a per-CPU update of one leaves it in place.
func (cm *chainModel) insert(key []byte, inPlace bool) {
	b, i := cm.index(key)
	if i >= 0 {
		if inPlace {
			return
		}
		cm.chains[b] = append(cm.chains[b][:i], cm.chains[b][i+1:]...)
	}
	cm.chains[b] = append([][]byte{append([]byte(nil), key...)}, cm.chains[b]...)
}

func (cm *chainModel) remove(key []byte) {
	if b, i := cm.index(key); i >= 0 {
		cm.chains[b] = append(cm.chains[b][:i], cm.chains[b][i+1:]...)
	}
}

func (cm *chainModel) order() [][]byte {
	var out [][]byte
	for _, c := range cm.chains {
		out = append(out, c...)
	}
	return out
}

func (cm *chainModel) size() int { return len(cm.order()) }

func sameOrder(t *testing.T, what string, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: walked %d keys, want %d", what, len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%s: key %d of the walk is % x, want % x\ngot  %x\nwant %x", what, i, got[i], want[i], got, want)
		}
	}
}

// With a known seed the walk must follow the kernel's buckets and chains
// exactly: bucket 0 upward, each chain from its head, new and replaced
// keys at the head, in-place per-CPU updates where they were. Key sizes
// cover both hash functions (jhash2 for multiples of 4, jhash otherwise).
func TestGetNextKeyFollowsTheKernelsBucketOrder(t *testing.T) {
	for _, c := range configs {
		for _, keySize := range []uint32{4, 3, 12, 7, 100, 101} {
			for _, seeded := range []bool{false, true} {
				name := fmt.Sprintf("%s/key%d/zero_seed=%v", c.name, keySize, !seeded)
				t.Run(name, func(t *testing.T) {
					k := newKernel(2)
					seed, flags := uint32(0), uint32(uapi.BPF_F_ZERO_SEED)
					if seeded {
						seed, flags = 0x9e3779b9, 0
						k.SetRandom(seed)
					}
					const max = 48 // 64 buckets: chains of several keys appear
					m := newConfigMap(t, k, c, keySize, 8, max, flags)
					cm := newChainModel(max, seed)
					rng := rand.New(rand.NewPCG(uint64(keySize), 7))
					keys := make([][]byte, 80)
					for i := range keys {
						keys[i] = make([]byte, keySize)
						for j := range keys[i] {
							keys[i][j] = byte(rng.Uint32())
						}
					}
					for step := 0; step < 400; step++ {
						key := keys[rng.IntN(len(keys))]
						switch op := rng.IntN(10); {
						case op < 6:
							_, i := cm.index(key)
							err := update(t, k, m, key, val(8, uint64(step)), uapi.BPF_ANY)
							if i < 0 && cm.size() == max {
								wantErrno(t, err, uapi.E2BIG, "update of a full map")
								continue
							}
							wantErrno(t, err, 0, "update")
							cm.insert(key, c.percpu)
						case op < 9:
							_, i := cm.index(key)
							err := m.Ops.DeleteElem(0, key)
							if i < 0 {
								wantErrno(t, err, uapi.ENOENT, "delete of a missing key")
								continue
							}
							wantErrno(t, err, 0, "delete")
							cm.remove(key)
						default:
							k.GracePeriod()
						}
						if step%20 == 0 {
							sameOrder(t, fmt.Sprintf("step %d", step), walk(t, m), cm.order())
						}
					}
					sameOrder(t, "end", walk(t, m), cm.order())
				})
			}
		}
	}
}

func TestGetNextKeyStartsOverOnNilOrUnknownKeyAndEndsWithENOENT(t *testing.T) {
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			k := newKernel(2)
			m := newConfigMap(t, k, c, 4, 8, 32, 0)
			next := make([]byte, 4)
			wantErrno(t, m.Ops.GetNextKey(nil, next), uapi.ENOENT, "nil key of an empty map")
			wantErrno(t, m.Ops.GetNextKey(key32(5), next), uapi.ENOENT, "unknown key of an empty map")
			for i := uint32(0); i < 20; i++ {
				wantErrno(t, update(t, k, m, key32(i*3), val(8, 1), uapi.BPF_ANY), 0, "update")
			}
			keys := walk(t, m)
			if len(keys) != 20 {
				t.Fatalf("walk found %d keys, want 20", len(keys))
			}
			seen := map[string]bool{}
			for _, key := range keys {
				if seen[string(key)] {
					t.Errorf("key % x walked twice", key)
				}
				seen[string(key)] = true
			}
			for i := uint32(0); i < 20; i++ {
				if !seen[string(key32(i*3))] {
					t.Errorf("key %d not walked", i*3)
				}
			}
			wantErrno(t, m.Ops.GetNextKey(nil, next), 0, "nil key")
			if !bytes.Equal(next, keys[0]) {
				t.Errorf("nil key gives % x, want the first key % x", next, keys[0])
			}
			wantErrno(t, m.Ops.GetNextKey(key32(1), next), 0, "unknown key")
			if !bytes.Equal(next, keys[0]) {
				t.Errorf("unknown key gives % x, want the first key % x", next, keys[0])
			}
			wantErrno(t, m.Ops.GetNextKey(keys[len(keys)-1], next), uapi.ENOENT, "last key")
		})
	}
}

// Deleting the current key during a walk restarts it from the first key,
// as in the kernel; a walk that deletes what it visits therefore still
// empties the map.
func TestWalkThatDeletesEachKeyEmptiesTheMap(t *testing.T) {
	k := newKernel(2)
	m := newMap(t, k, maps.Attr{Type: uapi.MapTypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 100})
	for i := uint32(0); i < 100; i++ {
		wantErrno(t, m.Ops.UpdateElem(0, key32(i), val(8, 1), uapi.BPF_ANY), 0, "update")
	}
	next := make([]byte, 4)
	var cur []byte
	deleted := 0
	for m.Ops.GetNextKey(cur, next) == nil {
		cur = append(cur[:0], next...)
		wantErrno(t, m.Ops.DeleteElem(0, cur), 0, "delete")
		deleted++
		if deleted > 100 {
			t.Fatal("the walk does not end")
		}
	}
	if deleted != 100 {
		t.Errorf("deleted %d keys, want 100", deleted)
	}
}
