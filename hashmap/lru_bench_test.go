package hashmap_test

import (
	"encoding/binary"
	"testing"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// BenchmarkLRUUpdateEvicting updates keys that cycle through four times
// the map's capacity, so that in steady state every update evicts.
func BenchmarkLRUUpdateEvicting(b *testing.B) {
	for _, c := range lruConfigs {
		b.Run(c.name, func(b *testing.B) {
			const maxEntries = 1024
			k := newKernel(4)
			k.Immediate = true
			m := newLRUMap(b, k, maps.Attr{Type: c.typ, KeySize: 4, ValueSize: 16, MaxEntries: maxEntries, Flags: c.flags})
			key, value := make([]byte, 4), make([]byte, 16)
			b.ReportAllocs()
			i := uint32(0)
			for b.Loop() {
				binary.LittleEndian.PutUint32(key, i%(4*maxEntries))
				if err := m.Ops.UpdateElem(int(i)&3, key, value, uapi.BPF_ANY); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkLRULookup is a program's lookup that hits (LookupElem, which
// sets the ref as htab_lru_map_lookup_elem does).
func BenchmarkLRULookup(b *testing.B) {
	for _, c := range lruConfigs {
		b.Run(c.name, func(b *testing.B) {
			k := newKernel(4)
			k.Immediate = true
			m := newLRUMap(b, k, maps.Attr{Type: c.typ, KeySize: 4, ValueSize: 16, MaxEntries: 2048, Flags: c.flags})
			keys := make([][]byte, 1024)
			for i := range keys {
				keys[i] = u32Key(uint32(i) * 2654435761)
				if err := m.Ops.UpdateElem(i&3, keys[i], make([]byte, 16), uapi.BPF_ANY); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if addr, _ := m.Ops.LookupElem(i&3, keys[i&1023]); addr == 0 {
					b.Fatal("key not found")
				}
				i++
			}
		})
	}
}
