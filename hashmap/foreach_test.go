package hashmap_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/bpfsim/bpfsim/hashmap"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// walkKeys walks m on cpu and returns each key and the first 8 bytes of
// each value, as a program's callback would read them.
func walkKeys(t *testing.T, k *fakeKernel, m *maps.Map, cpu int, fn func(key []byte, value uint64) bool) ([][]byte, []uint64, uint32) {
	t.Helper()
	fe, ok := m.Ops.(maps.ForEacher)
	if !ok {
		t.Fatalf("%s maps cannot be walked", m.Type.Name)
	}
	var keys [][]byte
	var vals []uint64
	n, err := fe.ForEachElem(cpu, func(key uint64, idx uint32, value uint64) (bool, error) {
		if key == 0 {
			t.Fatalf("a hash walk passed no key address (idx %d)", idx)
		}
		kb := read(t, k, key, int(m.KeySize))
		v := binary.LittleEndian.Uint64(read(t, k, value, 8))
		keys, vals = append(keys, kb), append(vals, v)
		return fn != nil && fn(kb, v), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys, vals, n
}

// nextKeyOrder is the keys in get_next_key's order.
func nextKeyOrder(t *testing.T, m *maps.Map) [][]byte {
	t.Helper()
	var keys [][]byte
	var cur []byte
	for {
		next := make([]byte, m.KeySize)
		if err := m.Ops.GetNextKey(cur, next); err != nil {
			if errors.Is(err, uapi.ENOENT) {
				return keys
			}
			t.Fatal(err)
		}
		keys, cur = append(keys, next), next
	}
}

// TestForEachWalksInGetNextKeyOrder fills each hash flavour and walks it:
// every key once, in get_next_key's order (the kernel's buckets, each
// chain from its head), with the value the key was given; per-CPU maps
// show the walking CPU's copy.
func TestForEachWalksInGetNextKeyOrder(t *testing.T) {
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			k := newKernel(2)
			m := newConfigMap(t, k, c, 4, 8, 64, 0)
			for i := uint32(0); i < 40; i++ {
				v := val(8, uint64(i)*100)
				if c.percpu {
					vs := append(val(8, uint64(i)*100), val(8, uint64(i)*100+1)...)
					if err := m.Ops.(maps.PercpuValues).UpdatePercpu(key32(i*7919), vs, 0); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if err := m.Ops.UpdateElem(0, key32(i*7919), v, 0); err != nil {
					t.Fatal(err)
				}
			}
			for cpu := 0; cpu < 2; cpu++ {
				keys, vals, n := walkKeys(t, k, m, cpu, nil)
				if n != 40 || len(keys) != 40 {
					t.Fatalf("CPU %d: %d calls, %d keys; want 40", cpu, n, len(keys))
				}
				for i, want := range nextKeyOrder(t, m) {
					if !bytes.Equal(keys[i], want) {
						t.Fatalf("CPU %d: key %d is %x, get_next_key gives %x", cpu, i, keys[i], want)
					}
				}
				for i, kb := range keys {
					want := uint64(binary.LittleEndian.Uint32(kb)/7919) * 100
					if c.percpu {
						want += uint64(cpu)
					}
					if vals[i] != want {
						t.Errorf("CPU %d: key %x has value %d, want %d", cpu, kb, vals[i], want)
					}
				}
			}
		})
	}
}

// TestForEachStopsAndSurvivesDeletes stops a walk early (the count
// includes the call that stopped it) and deletes elements from inside
// it, the current one and others, as a callback may.
func TestForEachStopsAndSurvivesDeletes(t *testing.T) {
	k := newKernel(1)
	m := newConfigMap(t, k, configs[0], 4, 8, 32, 0)
	for i := uint32(1); i <= 20; i++ {
		if err := m.Ops.UpdateElem(0, key32(i), val(8, uint64(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	all, _, _ := walkKeys(t, k, m, 0, nil)
	_, _, n := walkKeys(t, k, m, 0, func(key []byte, _ uint64) bool { return bytes.Equal(key, all[4]) })
	if n != 5 {
		t.Errorf("stopping at the fifth element: %d calls, want 5", n)
	}
	// Delete every element as it is passed, and key 20 as well on the
	// way: the walk still visits each remaining element once.
	seen := map[uint32]bool{}
	_, _, n = walkKeys(t, k, m, 0, func(key []byte, _ uint64) bool {
		seen[binary.LittleEndian.Uint32(key)] = true
		if err := m.Ops.DeleteElem(0, key); err != nil {
			t.Fatal(err)
		}
		_ = m.Ops.DeleteElem(0, key32(20))
		return false
	})
	if len(seen) != int(n) || (n != 20 && n != 19) {
		t.Errorf("%d calls over %d distinct keys, want 19 or 20 (key 20 deleted on the way)", n, len(seen))
	}
	if left, _, _ := walkKeys(t, k, m, 0, nil); len(left) != 0 {
		t.Errorf("%d elements left after deleting all", len(left))
	}
}

// TestForEachReturnsTheCallbacksError passes a failing callback's error
// on after one call.
func TestForEachReturnsTheCallbacksError(t *testing.T) {
	k := newKernel(1)
	m := newConfigMap(t, k, configs[0], 4, 8, 8, 0)
	for i := uint32(0); i < 3; i++ {
		if err := m.Ops.UpdateElem(0, key32(i), val(8, 1), 0); err != nil {
			t.Fatal(err)
		}
	}
	boom := errors.New("boom")
	n, err := m.Ops.(maps.ForEacher).ForEachElem(0, func(uint64, uint32, uint64) (bool, error) { return false, boom })
	if !errors.Is(err, boom) || n != 1 {
		t.Errorf("got %d calls, %v; want 1, boom", n, err)
	}
}

// TestForEachWalksLRUHashes walks the LRU flavours: every key once, in
// get_next_key's order.
func TestForEachWalksLRUHashes(t *testing.T) {
	for _, typ := range []*maps.Type{hashmap.LRUHash, hashmap.LRUPercpuHash} {
		t.Run(typ.Name, func(t *testing.T) {
			k := newKernel(1)
			m := newLRUMap(t, k, maps.Attr{Type: typ.ID, KeySize: 4, ValueSize: 8, MaxEntries: 16})
			for i := uint32(0); i < 10; i++ {
				if err := m.Ops.UpdateElem(0, key32(i), val(8, uint64(i)), 0); err != nil {
					t.Fatal(err)
				}
			}
			keys, _, n := walkKeys(t, k, m, 0, nil)
			if n != 10 || len(keys) != 10 {
				t.Fatalf("%d calls, want 10", n)
			}
			for i, want := range nextKeyOrder(t, m) {
				if !bytes.Equal(keys[i], want) {
					t.Fatalf("key %d is %x, get_next_key gives %x", i, keys[i], want)
				}
			}
		})
	}
}

// TestSeqFindWalksAsForEach walks each hash flavour with SeqFind and
// Next, as an iterator's reads do: the elements and values of
// ForEachElem's walk, in its order, and past the last one nothing; a walk
// resumed at a position finds the same element again, and a position
// past a bucket's end moves on to the next bucket.
func TestSeqFindWalksAsForEach(t *testing.T) {
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			k := newKernel(2)
			m := newConfigMap(t, k, c, 4, 8, 64, 0)
			for i := uint32(0); i < 40; i++ {
				if err := m.Ops.UpdateElem(0, key32(i*7919), val(8, uint64(i)), 0); err != nil {
					t.Fatal(err)
				}
			}
			type elem struct{ key, value uint64 }
			var want []elem
			if _, err := m.Ops.(maps.ForEacher).ForEachElem(1, func(key uint64, _ uint32, value uint64) (bool, error) {
				want = append(want, elem{key, value})
				return false, nil
			}); err != nil {
				t.Fatal(err)
			}
			sw := m.Ops.(maps.SeqWalker)
			var got []elem
			var pos maps.SeqPos
			for {
				key, _, value, at, ok := sw.SeqFind(1, pos)
				if !ok {
					break
				}
				if k2, _, _, at2, _ := sw.SeqFind(1, at); k2 != key || at2 != at {
					t.Fatalf("resuming at %+v finds %#x at %+v, not %#x", at, k2, at2, key)
				}
				got = append(got, elem{key, value})
				pos = at.Next()
			}
			if len(got) != len(want) {
				t.Fatalf("SeqFind walks %d elements, ForEachElem %d", len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("element %d: SeqFind %+v, ForEachElem %+v", i, got[i], want[i])
				}
			}
		})
	}
}
