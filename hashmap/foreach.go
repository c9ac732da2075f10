package hashmap

import "github.com/bpfsim/bpfsim/maps"

// Walks of hash maps by bpf_for_each_map_elem (bpf_for_each_hash_elem):
// HASH, PERCPU_HASH and the LRU types. A hash of maps holds its table
// rather than embedding it, so it cannot be walked, as in the kernel.

var (
	_ maps.ForEacher = (*htab)(nil)
	_ maps.ForEacher = (*lruHtab)(nil)
	_ maps.ForEacher = (*lruPercpuHtab)(nil)
)

// ForEachElem is bpf_for_each_hash_elem: bucket by bucket, each chain from
// its head. The successor is read before fn runs
// (hlist_nulls_for_each_entry_safe), so fn may delete the element it is
// given; an unlinked element keeps its next pointer and is not reused
// while the program that walks runs, so the walk goes on either way. The
// walk does not mark LRU elements referenced.
func (h *htab) ForEachElem(cpu int, fn func(key uint64, idx uint32, value uint64) (bool, error)) (uint32, error) {
	if h.percpu && (cpu < 0 || cpu >= h.ncpu) {
		return 0, errBadCPU
	}
	var n uint32
	for i := uint32(0); i < h.nBuckets; i++ {
		seg := h.segs[i>>segShift].Load()
		if seg == nil {
			i |= segMask // the segment's buckets were never used
			continue
		}
		for e := seg[i&segMask].head.Load(); e != nil; {
			next := e.next.Load()
			value := e.addr + h.valueOff
			if h.percpu {
				value = e.pptr + h.percpuA.Offset(cpu)
			}
			n++
			stop, err := fn(e.addr+KeyOffset, 0, value)
			if err != nil || stop {
				return n, err
			}
			e = next
		}
	}
	return n, nil
}

// ForEachElem walks an LRU_HASH as htab_lru_map_ops does
// (bpf_for_each_hash_elem).
func (l *lruHtab) ForEachElem(cpu int, fn func(key uint64, idx uint32, value uint64) (bool, error)) (uint32, error) {
	return l.h.ForEachElem(cpu, fn)
}

// ForEachElem walks an LRU_PERCPU_HASH, with cpu's copies of the values.
func (l *lruPercpuHtab) ForEachElem(cpu int, fn func(key uint64, idx uint32, value uint64) (bool, error)) (uint32, error) {
	return l.h.ForEachElem(cpu, fn)
}

var (
	_ maps.SeqWalker = (*htab)(nil)
	_ maps.SeqWalker = (*lruHtab)(nil)
	_ maps.SeqWalker = (*lruPercpuHtab)(nil)
)

// SeqFind is bpf_hash_map_seq_find_next: from pos's bucket, skipping
// pos.Skip of its elements, the first element left, bucket by bucket.
// The kernel follows the previous element's successor within a bucket;
// counting gives the same element while the bucket does not change.
func (h *htab) SeqFind(cpu int, pos maps.SeqPos) (key uint64, idx uint32, value uint64, at maps.SeqPos, ok bool) {
	skip := pos.Skip
	for i := pos.Bucket; i < h.nBuckets; i, skip = i+1, 0 {
		seg := h.segs[i>>segShift].Load()
		if seg == nil {
			i |= segMask // the segment's buckets were never used
			continue
		}
		n := uint32(0)
		for e := seg[i&segMask].head.Load(); e != nil; e = e.next.Load() {
			if n < skip {
				n++
				continue
			}
			value := e.addr + h.valueOff
			if h.percpu {
				value = e.pptr + h.percpuA.Offset(cpu)
			}
			return e.addr + KeyOffset, 0, value, maps.SeqPos{Bucket: i, Skip: n}, true
		}
	}
	return 0, 0, 0, maps.SeqPos{Bucket: h.nBuckets}, false
}

// SeqFind walks an LRU_HASH as htab_lru_map_ops does.
func (l *lruHtab) SeqFind(cpu int, pos maps.SeqPos) (uint64, uint32, uint64, maps.SeqPos, bool) {
	return l.h.SeqFind(cpu, pos)
}

// SeqFind walks an LRU_PERCPU_HASH, with cpu's copies of the values.
func (l *lruPercpuHtab) SeqFind(cpu int, pos maps.SeqPos) (uint64, uint32, uint64, maps.SeqPos, bool) {
	return l.h.SeqFind(cpu, pos)
}
