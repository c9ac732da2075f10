// Package bloomfilter simulates BPF_MAP_TYPE_BLOOM_FILTER
// (kernel/bpf/bloom_filter.c): a set that answers "maybe present" or
// "certainly absent". Values are added with bpf_map_push_elem (an update
// from user space) and tested with bpf_map_peek_elem (a lookup): ENOENT
// means absent; nothing is ever removed.
//
// The bit array and the hashes are the kernel's: map_extra hash functions
// (5 by default), each jhash of the value seeded with the map's seed plus
// its index, into an array of max_entries * functions * 7/5 bits rounded
// up to a power of two. With BPF_F_ZERO_SEED the seed is 0, so a filter
// gives the kernel's answers, false positives included; otherwise it comes
// from the kernel's seeded random source.
package bloomfilter

import (
	"math"
	"math/bits"
	"sync/atomic"
	"unsafe"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/hashmap"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

const createFlags = uapi.BPF_F_NUMA_NODE | uapi.BPF_F_ZERO_SEED | uapi.BPF_F_ACCESS_MASK

// BloomFilter is the map type, for a kernel's registry.
var BloomFilter = &maps.Type{
	ID:         uapi.MapTypeBloomFilter,
	Name:       "bloom_filter",
	AllocCheck: allocCheck,
	Alloc:      alloc,
	MetaEqual:  maps.DefaultMetaEqual,
}

// allocCheck is bloom_map_alloc's check: no key, a value, entries, and at
// most 15 hash functions in the low bits of map_extra.
func allocCheck(attr *maps.Attr) error {
	switch {
	case attr.KeySize != 0 || attr.ValueSize == 0 || attr.MaxEntries == 0:
		return errors.Wrapf(uapi.EINVAL, "a bloom filter has no key and needs values and max_entries (got %d, %d, %d)",
			attr.KeySize, attr.ValueSize, attr.MaxEntries)
	case attr.Flags&^createFlags != 0:
		return errors.Wrapf(uapi.EINVAL, "bloom filter map_flags %#x include unsupported flags", attr.Flags)
	case attr.MapExtra&^0xf != 0:
		return errors.Wrapf(uapi.EINVAL, "map_extra %#x: only its low 4 bits (the number of hash functions) mean anything", attr.MapExtra)
	}
	return nil
}

// bloom is struct bpf_bloom_filter.
type bloom struct {
	m      *maps.Map
	k      maps.Kernel
	nrHash uint32
	mask   uint32 // bitset_mask
	seed   uint32
	bitset []byte // in simulated memory, after the map object
}

// objectSize is the room for the map object before the bits.
const objectSize = 256

func alloc(k maps.Kernel, m *maps.Map) (maps.Ops, error) {
	b := &bloom{m: m, k: k, nrHash: uint32(m.MapExtra)}
	if b.nrHash == 0 {
		b.nrHash = 5
	}
	// n * k / ln 2 bits, with 7/5 for 1/ln 2, rounded up to a power of
	// two; past 2^31 the array has 2^32 bits.
	var bytes uint64
	nrBits := uint64(m.MaxEntries) * uint64(b.nrHash)
	if nrBits > math.MaxUint32 || nrBits/5*7 > math.MaxUint32 || nrBits/5*7 > 1<<31 {
		bytes, b.mask = (math.MaxUint32+7)/8, math.MaxUint32
	} else {
		nrBits = nrBits / 5 * 7
		if nrBits <= 64 {
			nrBits = 64
		} else {
			nrBits = 1 << bits.Len64(nrBits-1)
		}
		bytes, b.mask = (nrBits+7)/8, uint32(nrBits-1)
	}
	bytes = (bytes + 7) &^ 7
	addr, err := k.Memory().Vmalloc(objectSize+bytes, mem.PermRW, "bloom_filter")
	if err != nil {
		return nil, err
	}
	m.Addr = addr
	if b.bitset, err = k.Memory().Bytes(addr+objectSize, bytes); err != nil {
		k.Memory().Free(addr)
		return nil, err
	}
	if m.Flags&uapi.BPF_F_ZERO_SEED == 0 {
		b.seed = k.Random()
	}
	return b, nil
}

// hash is the kernel's hash: jhash2 of the value's words when its size is
// a multiple of 4, jhash of its bytes otherwise, seeded per function.
func (b *bloom) hash(value []byte, index uint32) uint32 {
	return hashmap.HashKey(value, b.seed+index) & b.mask
}

// word is the 32-bit word of the bit array that holds bit h: bit h%32 of
// a little-endian word is bit h%8 of byte h/8, as the kernel's bitmap
// lays it out. Bits are set and tested atomically (set_bit, test_bit):
// programs on several CPUs push at once.
func (b *bloom) word(h uint32) *uint32 {
	return (*uint32)(unsafe.Pointer(&b.bitset[h/32*4]))
}

// PushElem is bloom_map_push_elem: set the value's bits; only BPF_ANY.
func (b *bloom) PushElem(_ int, value []byte, flags uint64) error {
	if flags != uapi.BPF_ANY {
		return errors.Wrapf(uapi.EINVAL, "a bloom filter takes values with BPF_ANY only (flags %#x)", flags)
	}
	for i := uint32(0); i < b.nrHash; i++ {
		h := b.hash(value, i)
		atomic.OrUint32(b.word(h), 1<<(h%32))
	}
	return nil
}

// PeekElem is bloom_map_peek_elem: ENOENT if some bit of the value is
// clear, so that the value was never pushed.
func (b *bloom) PeekElem(_ int, value []byte) error {
	for i := uint32(0); i < b.nrHash; i++ {
		h := b.hash(value, i)
		if atomic.LoadUint32(b.word(h))&(1<<(h%32)) == 0 {
			return errors.Wrap(uapi.ENOENT, "the value is not in the bloom filter")
		}
	}
	return nil
}

// PopElem is bloom_map_pop_elem: a bloom filter cannot give values back.
func (b *bloom) PopElem(int, []byte) error {
	return errors.Wrap(uapi.EOPNOTSUPP, "values cannot be taken out of a bloom filter")
}

// LookupElem: programs peek instead (the verifier refuses the call).
func (b *bloom) LookupElem(int, []byte) (uint64, error) {
	return 0, errors.Wrap(uapi.EINVAL, "bloom filters are peeked, not looked up")
}

// UpdateElem: values are pushed.
func (b *bloom) UpdateElem(int, []byte, []byte, uint64) error {
	return errors.Wrap(uapi.EINVAL, "bloom filters take pushes, not updates")
}

// DeleteElem is bloom_map_delete_elem: nothing is ever removed.
func (b *bloom) DeleteElem(int, []byte) error {
	return errors.Wrap(uapi.EOPNOTSUPP, "values cannot be removed from a bloom filter")
}

// GetNextKey is bloom_map_get_next_key: a bloom filter has no keys.
func (b *bloom) GetNextKey([]byte, []byte) error {
	return errors.Wrap(uapi.EOPNOTSUPP, "bloom filters have no keys")
}

// Free releases the bits.
func (b *bloom) Free() { b.k.Memory().Free(b.m.Addr) }
