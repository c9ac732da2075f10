package hashmap_test

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/bpfsim/bpfsim/hashmap"
)

// The kernel's jhash is Bob Jenkins' lookup3 hashlittle and jhash2 its
// hashword, so lookup3's published test values pin both: the vectors of
// lookup3.c's driver5 and hashword values printed by lookup3.c.
func TestJhashMatchesLookup3Vectors(t *testing.T) {
	for _, tc := range []struct {
		key     string
		initval uint32
		want    uint32
	}{
		{"", 0, 0xdeadbeef},
		{"", 0xdeadbeef, 0xbd5b7dde},
		{"", 0xbd5b7dde, 0x9c093ccd},
		{"Four score and seven years ago", 0, 0x17770551},
		{"Four score and seven years ago", 1, 0xcd628161},
	} {
		if got := hashmap.Jhash([]byte(tc.key), tc.initval); got != tc.want {
			t.Errorf("Jhash(%q, %#x) = %#08x, want %#08x", tc.key, tc.initval, got, tc.want)
		}
	}
}

func TestJhash2MatchesLookup3HashwordVectors(t *testing.T) {
	for _, tc := range []struct {
		words   []uint32
		initval uint32
		want    uint32
	}{
		// No words: the initial state, JHASH_INITVAL + 0 + initval, unmixed.
		{nil, 0, 0xdeadbeef},
		{nil, 5, 0xdeadbeef + 5},
		{[]uint32{1}, 0, 0x72a82a9b},
		{[]uint32{1, 2}, 1, 0x73989811},
		{[]uint32{1, 2, 3}, 0, 0xa46158f5},
		{[]uint32{1, 2, 3, 4}, 1, 0x044ec9ea},
		{[]uint32{1, 2, 3, 4, 5}, 2, 0x39a100d5},
	} {
		if got := hashmap.Jhash2(tc.words, tc.initval); got != tc.want {
			t.Errorf("Jhash2(%v, %#x) = %#08x, want %#08x", tc.words, tc.initval, got, tc.want)
		}
	}
}

// On a little-endian CPU jhash2 of words equals jhash of their bytes: the
// kernel relies on it nowhere, but it follows from both being lookup3, and
// it ties the two implementations (and HashKey) to each other at every
// length, including the 12-byte boundaries of the block loop.
func TestJhash2EqualsJhashOfLittleEndianWords(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 0; n <= 20; n++ {
		for trial := 0; trial < 20; trial++ {
			words := make([]uint32, n)
			buf := make([]byte, 0, 4*n)
			for i := range words {
				words[i] = rng.Uint32()
				buf = binary.LittleEndian.AppendUint32(buf, words[i])
			}
			seed := rng.Uint32()
			j2, j := hashmap.Jhash2(words, seed), hashmap.Jhash(buf, seed)
			if j2 != j {
				t.Fatalf("%d words: Jhash2 = %#x, Jhash = %#x", n, j2, j)
			}
			if hk := hashmap.HashKey(buf, seed); hk != j2 {
				t.Fatalf("%d-byte key: HashKey = %#x, Jhash2 = %#x", len(buf), hk, j2)
			}
		}
	}
}

func TestHashKeyUsesJhashForKeySizesNotMultipleOf4(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 2, 3, 5, 6, 7, 11, 13, 23, 25, 37} {
		key := make([]byte, n)
		for i := range key {
			key[i] = byte(rng.Uint32())
		}
		if hk, j := hashmap.HashKey(key, 7), hashmap.Jhash(key, 7); hk != j {
			t.Errorf("%d-byte key: HashKey = %#x, Jhash = %#x", n, hk, j)
		}
	}
}

// Every byte of the tail block counts: changing any single byte of keys
// of 1 to 12 bytes changes the hash.
func TestJhashTailBytesAllMatter(t *testing.T) {
	for n := 1; n <= 24; n++ {
		key := make([]byte, n)
		base := hashmap.Jhash(key, 0)
		for i := 0; i < n; i++ {
			key[i] = 1
			if hashmap.Jhash(key, 0) == base {
				t.Errorf("%d-byte key: byte %d does not change the hash", n, i)
			}
			key[i] = 0
		}
	}
}

func BenchmarkHashKey(b *testing.B) {
	key := make([]byte, 16)
	for i := 0; i < b.N; i++ {
		key[0] = byte(i)
		hashmap.HashKey(key, 0)
	}
}
