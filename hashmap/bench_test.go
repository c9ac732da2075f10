package hashmap_test

import (
	"encoding/binary"
	"testing"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// benchMap is a map of n keys of keySize bytes, with callbacks run at once
// (no reader outlives an operation in a benchmark).
func benchMap(b *testing.B, typ uapi.MapType, keySize uint32, n int) (*maps.Map, [][]byte) {
	k := newKernel(4)
	k.Immediate = true
	m := newMap(b, k, maps.Attr{Type: typ, KeySize: keySize, ValueSize: 16, MaxEntries: uint32(2 * n)})
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = make([]byte, keySize)
		binary.LittleEndian.PutUint32(keys[i], uint32(i)*2654435761)
		if err := m.Ops.UpdateElem(0, keys[i], make([]byte, 16), uapi.BPF_ANY); err != nil {
			b.Fatal(err)
		}
	}
	return m, keys
}

func BenchmarkLookupElem(b *testing.B) {
	for _, bc := range []struct {
		name    string
		typ     uapi.MapType
		keySize uint32
	}{
		{"hash/key4", uapi.MapTypeHash, 4},
		{"hash/key16", uapi.MapTypeHash, 16},
		{"hash/key13", uapi.MapTypeHash, 13},
		{"percpu_hash/key4", uapi.MapTypePercpuHash, 4},
	} {
		b.Run(bc.name, func(b *testing.B) {
			m, keys := benchMap(b, bc.typ, bc.keySize, 1024)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if addr, _ := m.Ops.LookupElem(1, keys[i&1023]); addr == 0 {
					b.Fatal("key not found")
				}
				i++
			}
		})
	}
}

func BenchmarkLookupElemMiss(b *testing.B) {
	m, _ := benchMap(b, uapi.MapTypeHash, 4, 1024)
	key := make([]byte, 4)
	b.ReportAllocs()
	i := uint32(0)
	for b.Loop() {
		binary.LittleEndian.PutUint32(key, i|1<<31)
		if addr, _ := m.Ops.LookupElem(0, key); addr != 0 {
			b.Fatal("found a key never added")
		}
		i++
	}
}

func BenchmarkLookupElemParallel(b *testing.B) {
	m, keys := benchMap(b, uapi.MapTypeHash, 4, 1024)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if addr, _ := m.Ops.LookupElem(0, keys[i&1023]); addr == 0 {
				b.Error("key not found")
				return
			}
			i++
		}
	})
}

// BenchmarkUpdateDeleteElem inserts a new key and deletes it: the
// element's round trip through the free list.
func BenchmarkUpdateDeleteElem(b *testing.B) {
	for _, typ := range []uapi.MapType{uapi.MapTypeHash, uapi.MapTypePercpuHash} {
		b.Run(typ.String(), func(b *testing.B) {
			m, _ := benchMap(b, typ, 4, 1024)
			key, value := make([]byte, 4), make([]byte, 16)
			b.ReportAllocs()
			i := uint32(0)
			for b.Loop() {
				binary.LittleEndian.PutUint32(key, i|1<<31)
				if err := m.Ops.UpdateElem(0, key, value, uapi.BPF_NOEXIST); err != nil {
					b.Fatal(err)
				}
				if err := m.Ops.DeleteElem(0, key); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkUpdateExisting replaces the value of a present key: a new
// element for HASH, in place for PERCPU_HASH.
func BenchmarkUpdateExisting(b *testing.B) {
	for _, typ := range []uapi.MapType{uapi.MapTypeHash, uapi.MapTypePercpuHash} {
		b.Run(typ.String(), func(b *testing.B) {
			m, keys := benchMap(b, typ, 4, 1024)
			value := make([]byte, 16)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := m.Ops.UpdateElem(0, keys[i&1023], value, uapi.BPF_EXIST); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
