package progpack

import "math/bits"

// bitmap tracks the chunks of one pack: bit i set means chunk i is in use.
type bitmap [ChunkCount / 64]uint64

// findZeroArea returns the first position of a run of nr clear bits, or -1,
// as bitmap_find_next_zero_area(map, ChunkCount, 0, nr, 0) does (first
// fit from bit 0).
func (b *bitmap) findZeroArea(nr int) int {
	for start := 0; ; {
		start = b.next(start, ChunkCount, false)
		if start < 0 || start+nr > ChunkCount {
			return -1
		}
		set := b.next(start, start+nr, true)
		if set < 0 {
			return start
		}
		start = set + 1
	}
}

// next returns the first position in [from, limit) whose bit equals want,
// or -1.
func (b *bitmap) next(from, limit int, want bool) int {
	for i := from; i < limit; {
		w := b[i/64]
		if !want {
			w = ^w
		}
		w >>= uint(i % 64)
		if w != 0 {
			if p := i + bits.TrailingZeros64(w); p < limit {
				return p
			}
			return -1
		}
		i = (i/64 + 1) * 64
	}
	return -1
}

// set sets n bits from pos (bitmap_set).
func (b *bitmap) set(pos, n int) {
	for i := pos; i < pos+n; i++ {
		b[i/64] |= 1 << uint(i%64)
	}
}

// clear clears n bits from pos (bitmap_clear).
func (b *bitmap) clear(pos, n int) {
	for i := pos; i < pos+n; i++ {
		b[i/64] &^= 1 << uint(i%64)
	}
}
