package arraymap_test

import (
	"encoding/binary"
	"testing"

	"github.com/bpfsim/bpfsim/arraymap"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/mapstest"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// TestForEachWalksEveryIndexInOrder walks arrays and per-CPU arrays: every
// index in order with no stored key, the value a lookup on the walking
// CPU returns, and a stop after the call that asks for it.
func TestForEachWalksEveryIndexInOrder(t *testing.T) {
	for _, typ := range []uapi.MapType{uapi.MapTypeArray, uapi.MapTypePercpuArray} {
		t.Run(typ.String(), func(t *testing.T) {
			k := mapstest.NewKernel(2)
			m := newArray(t, k, maps.Attr{Type: typ, KeySize: 4, ValueSize: 8, MaxEntries: 5})
			fe, ok := m.Ops.(maps.ForEacher)
			if !ok {
				t.Fatalf("%s maps cannot be walked", typ)
			}
			for cpu := 0; cpu < 2; cpu++ {
				var idxs []uint32
				n, err := fe.ForEachElem(cpu, func(key uint64, idx uint32, value uint64) (bool, error) {
					if key != 0 {
						t.Errorf("an array walk passed a key address %#x", key)
					}
					want, err := m.Ops.LookupElem(cpu, binary.LittleEndian.AppendUint32(nil, idx))
					if err != nil || value != want {
						t.Errorf("CPU %d index %d: value at %#x, a lookup gives %#x (%v)", cpu, idx, value, want, err)
					}
					idxs = append(idxs, idx)
					return idx == 3, nil
				})
				if err != nil || n != 4 || len(idxs) != 4 || idxs[0] != 0 || idxs[3] != 3 {
					t.Errorf("CPU %d: %d calls over %v, %v; want 4 calls over 0-3", cpu, n, idxs, err)
				}
			}
		})
	}
}

// TestProgArraysCannotBeWalked: only ARRAY and PERCPU_ARRAY have
// map_for_each_callback among the array types.
func TestProgArraysCannotBeWalked(t *testing.T) {
	r := &maps.Registry{}
	if err := r.Register(arraymap.ProgArray); err != nil {
		t.Fatal(err)
	}
	k := mapstest.NewKernel(1)
	m, err := r.Create(k, maps.Attr{Type: uapi.MapTypeProgArray, KeySize: 4, ValueSize: 4, MaxEntries: 4}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Ops.Free)
	if _, ok := m.Ops.(maps.ForEacher); ok {
		t.Error("a prog array can be walked")
	}
}

// TestSeqFindWalksEveryIndex walks arrays with SeqFind and Next, as an
// iterator's reads do: every index in order with the value a lookup on
// the CPU returns, then nothing past max_entries.
func TestSeqFindWalksEveryIndex(t *testing.T) {
	for _, typ := range []uapi.MapType{uapi.MapTypeArray, uapi.MapTypePercpuArray} {
		t.Run(typ.String(), func(t *testing.T) {
			k := mapstest.NewKernel(2)
			m := newArray(t, k, maps.Attr{Type: typ, KeySize: 4, ValueSize: 8, MaxEntries: 5})
			sw := m.Ops.(maps.SeqWalker)
			var pos maps.SeqPos
			for i := uint32(0); i < 5; i++ {
				key, idx, value, at, ok := sw.SeqFind(1, pos)
				want, err := m.Ops.LookupElem(1, binary.LittleEndian.AppendUint32(nil, i))
				if !ok || key != 0 || idx != i || value != want || err != nil {
					t.Fatalf("index %d: key %#x, index %d, value %#x, ok %v; want index %d, value %#x (%v)", i, key, idx, value, ok, i, want, err)
				}
				pos = at.Next()
			}
			if _, _, _, _, ok := sw.SeqFind(1, pos); ok {
				t.Errorf("an element past max_entries")
			}
		})
	}
}
