package progpack

import (
	"math/rand/v2"
	"testing"
)

// naiveZeroArea is bitmap_find_next_zero_area from bit 0, bit by bit.
func naiveZeroArea(b *bitmap, nr int) int {
	for start := 0; start+nr <= ChunkCount; start++ {
		ok := true
		for i := start; i < start+nr; i++ {
			if b[i/64]&(1<<uint(i%64)) != 0 {
				ok = false
				break
			}
		}
		if ok {
			return start
		}
	}
	return -1
}

// The word-at-a-time search finds the same first fit as a bit-by-bit one,
// with runs crossing word boundaries and requests up to a whole pack.
func TestBitmapFirstFitMatchesABitByBitSearch(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 100; round++ {
		var b bitmap
		// Random runs of set and clear bits of random lengths.
		for pos := 0; pos < ChunkCount; {
			n := 1 + rng.IntN(1<<uint(rng.IntN(12)))
			if rng.IntN(3) != 0 {
				b.set(pos, min(n, ChunkCount-pos))
			}
			pos += n + rng.IntN(200)
		}
		for _, nr := range []int{1, 2, 3, 63, 64, 65, 130, 1000, 5000, ChunkCount} {
			if got, want := b.findZeroArea(nr), naiveZeroArea(&b, nr); got != want {
				t.Fatalf("round %d: findZeroArea(%d) = %d, want %d", round, nr, got, want)
			}
		}
	}
	var b bitmap
	if b.findZeroArea(ChunkCount) != 0 {
		t.Error("an empty pack has no room for a pack-sized request")
	}
	b.set(ChunkCount-1, 1)
	if b.findZeroArea(ChunkCount) != -1 || b.findZeroArea(ChunkCount-1) != 0 {
		t.Error("the last chunk in use was not seen")
	}
	b.clear(ChunkCount-1, 1)
	if b != (bitmap{}) {
		t.Error("clear left bits set")
	}
}
