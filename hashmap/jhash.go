package hashmap

import (
	"encoding/binary"
	"math/bits"
)

// JhashInitval is JHASH_INITVAL, the arbitrary start value of Bob Jenkins'
// lookup3 that include/linux/jhash.h keeps.
const JhashInitval = 0xdeadbeef

// JhashMix is __jhash_mix: it mixes three 32-bit values reversibly.
// Exported with JhashFinal and Jhash3Words for BPF programs' hashes built
// from the same pieces (Cilium's flow hash).
func JhashMix(a, b, c uint32) (uint32, uint32, uint32) {
	a -= c
	a ^= bits.RotateLeft32(c, 4)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 6)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 8)
	b += a
	a -= c
	a ^= bits.RotateLeft32(c, 16)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 19)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 4)
	b += a
	return a, b, c
}

// JhashFinal is __jhash_final: the final mixing of (a, b, c) into c.
func JhashFinal(a, b, c uint32) uint32 {
	c ^= b
	c -= bits.RotateLeft32(b, 14)
	a ^= c
	a -= bits.RotateLeft32(c, 11)
	b ^= a
	b -= bits.RotateLeft32(a, 25)
	c ^= b
	c -= bits.RotateLeft32(b, 16)
	a ^= c
	a -= bits.RotateLeft32(c, 4)
	b ^= a
	b -= bits.RotateLeft32(a, 14)
	c ^= b
	c -= bits.RotateLeft32(b, 24)
	return c
}

// Jhash3Words is jhash_3words: lookup3's final mix of three words and a
// seed.
func Jhash3Words(a, b, c, initval uint32) uint32 {
	initval += JhashInitval + 3<<2
	return JhashFinal(a+initval, b+initval, c+initval)
}

// Jhash is the kernel's jhash(key, length, initval): lookup3's hashlittle.
// Whole 12-byte blocks are read as little-endian words (the kernel reads
// them in CPU order, and every CPU the simulator models is little-endian);
// the last 1 to 12 bytes are added byte by byte and finished with
// __jhash_final. An empty key returns the initial state unmixed, as the
// kernel does.
func Jhash(key []byte, initval uint32) uint32 {
	length := uint32(len(key))
	a := JhashInitval + length + initval
	b, c := a, a
	k := key
	for len(k) > 12 {
		a += binary.LittleEndian.Uint32(k)
		b += binary.LittleEndian.Uint32(k[4:])
		c += binary.LittleEndian.Uint32(k[8:])
		a, b, c = JhashMix(a, b, c)
		k = k[12:]
	}
	if len(k) == 0 {
		return c
	}
	// The kernel's switch falls through from the highest byte down: byte i
	// of the block lands in word i/4 at bit 8*(i%4).
	var w [3]uint32
	for i := len(k) - 1; i >= 0; i-- {
		w[i/4] += uint32(k[i]) << (8 * (i % 4))
	}
	return JhashFinal(a+w[0], b+w[1], c+w[2])
}

// Jhash2 is the kernel's jhash2(k, length, initval) over 32-bit words:
// lookup3's hashword. On a little-endian machine it equals Jhash of the
// same words' bytes.
func Jhash2(k []uint32, initval uint32) uint32 {
	a := JhashInitval + uint32(len(k))<<2 + initval
	b, c := a, a
	for len(k) > 3 {
		a += k[0]
		b += k[1]
		c += k[2]
		a, b, c = JhashMix(a, b, c)
		k = k[3:]
	}
	switch len(k) {
	case 3:
		c += k[2]
		fallthrough
	case 2:
		b += k[1]
		fallthrough
	case 1:
		a += k[0]
		return JhashFinal(a, b, c)
	}
	return c
}

// HashKey is htab_map_hash: jhash2 over the key's 32-bit words when
// key_size is a multiple of 4, jhash over its bytes otherwise. The words
// are the key's bytes in CPU (little-endian) order, read straight from the
// key without building a []uint32, so the lookup path does not allocate.
func HashKey(key []byte, hashrnd uint32) uint32 {
	if len(key)%4 != 0 {
		return Jhash(key, hashrnd)
	}
	a := JhashInitval + uint32(len(key)) + hashrnd
	b, c := a, a
	k := key
	for len(k) > 12 {
		a += binary.LittleEndian.Uint32(k)
		b += binary.LittleEndian.Uint32(k[4:])
		c += binary.LittleEndian.Uint32(k[8:])
		a, b, c = JhashMix(a, b, c)
		k = k[12:]
	}
	switch len(k) {
	case 12:
		c += binary.LittleEndian.Uint32(k[8:])
		fallthrough
	case 8:
		b += binary.LittleEndian.Uint32(k[4:])
		fallthrough
	case 4:
		a += binary.LittleEndian.Uint32(k)
		return JhashFinal(a, b, c)
	}
	return c
}
