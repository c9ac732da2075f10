package lpmtrie_test

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/mapstest"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// BenchmarkLookup is trie_lookup_elem on tries of IPv4 prefixes (/8 to
// /32, random), for random /32 keys: what a program's lookup costs, call
// aside.
func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{16, 1024, 65536} {
		b.Run(map[int]string{16: "16 prefixes", 1024: "1024 prefixes", 65536: "65536 prefixes"}[n], func(b *testing.B) {
			k := mapstest.NewKernel(1)
			m, err := registry.Create(k, maps.Attr{Type: uapi.MapTypeLPMTrie, KeySize: 8, ValueSize: 4,
				MaxEntries: uint32(n), Flags: uapi.BPF_F_NO_PREALLOC}, 1, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Ops.Free()
			rng := rand.New(rand.NewPCG(1, 2))
			for i := 0; i < n; i++ {
				key := binary.LittleEndian.AppendUint32(nil, uint32(8+rng.IntN(25)))
				key = binary.BigEndian.AppendUint32(key, rng.Uint32())
				if err := m.Ops.UpdateElem(0, key, []byte{1, 2, 3, 4}, uapi.BPF_ANY); err != nil {
					b.Fatal(err)
				}
			}
			keys := make([][]byte, 1024)
			for i := range keys {
				keys[i] = binary.BigEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, 32), rng.Uint32())
			}
			found := 0
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if a, _ := m.Ops.LookupElem(0, keys[i%len(keys)]); a != 0 {
					found++
				}
			}
			b.ReportMetric(float64(found)/float64(b.N), "found/lookup")
		})
	}
}
