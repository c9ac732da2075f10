package a64

import (
	"math/bits"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestZeroHalfwordsCounts checks the loop-free count against counting
// halfword by halfword, on values made of 0, 0xffff, single-bit and
// random halfwords.
func TestZeroHalfwordsCounts(t *testing.T) {
	halves := []uint64{0, 0xffff, 1, 0x8000, 0x7fff, 0x8001, 0x0100}
	rnd := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		var v uint64
		for h := 0; h < 4; h++ {
			x := rnd.Uint64() & 0xffff
			if rnd.IntN(2) == 0 {
				x = halves[rnd.IntN(len(halves))]
			}
			v |= x << (16 * h)
		}
		want := 0
		for shift := 0; shift < 64; shift += 16 {
			if (v>>shift)&0xffff == 0 {
				want++
			}
		}
		if got := zeroHalfwords(v); got != want {
			t.Fatalf("zeroHalfwords(%#016x) = %d, want %d", v, got, want)
		}
	}
}

// TestMovImmSequencesAreTheLoopVersions compares the constant sequences
// with the straightforward versions they replaced (halfwords counted in
// loops, each instruction appended by itself), for X and W registers.
func TestMovImmSequencesAreTheLoopVersions(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	halves := []uint64{0, 0xffff, 1, 0x8000, 0x7fff}
	for k := range 50000 {
		v := rnd.Uint64()
		for h := 0; h < 4; h++ {
			if rnd.IntN(2) == 0 {
				v = v&^(0xffff<<(16*h)) | halves[rnd.IntN(len(halves))]<<(16*h)
			}
		}
		if k%3 == 0 {
			v = uint64(int64(int32(v))) // the JIT's sign-extended imm32
		}
		rd := X(k % 31)
		got, err := AppendMovImm64(nil, rd, v)
		if err != nil {
			t.Fatal(err)
		}
		if want := loopMovImm64(rd, v); !slices.Equal(got, want) {
			t.Fatalf("AppendMovImm64(%v, %#x) = %08x, want %08x", rd, v, got, want)
		}
		for _, r := range []Reg{rd, rd.AsW()} {
			got, err := AppendMovImm32(nil, r, int32(v))
			if err != nil {
				t.Fatal(err)
			}
			if want := loopMovImm32(r, int32(v)); !slices.Equal(got, want) {
				t.Fatalf("AppendMovImm32(%v, %#x) = %08x, want %08x", r, int32(v), got, want)
			}
		}
	}
}

func loopMovImm32(rd Reg, val int32) []uint32 {
	var dst []uint32
	hi, lo := uint64(uint32(val)>>16), uint64(uint32(val)&0xffff)
	if hi&0x8000 != 0 {
		if hi == 0xffff {
			return append(dst, mustWide(opMOVN, rd, ^lo, 0))
		}
		dst = append(dst, mustWide(opMOVN, rd, ^hi, 16))
		if lo != 0xffff {
			dst = append(dst, mustWide(opMOVK, rd, lo, 0))
		}
		return dst
	}
	dst = append(dst, mustWide(opMOVZ, rd, lo, 0))
	if hi != 0 {
		dst = append(dst, mustWide(opMOVK, rd, hi, 16))
	}
	return dst
}

func halfwordsNot(val uint64, fill uint64) int {
	n := 0
	for shift := 0; shift < 64; shift += 16 {
		if (val>>shift)&0xffff != fill {
			n++
		}
	}
	return n
}

func loopMovImm64(rd Reg, val uint64) []uint32 {
	if val>>32 == 0 {
		return loopMovImm32(rd.AsW(), int32(uint32(val)))
	}
	inverse := halfwordsNot(val, 0xffff) < halfwordsNot(val, 0)
	top, fill, op := val, uint64(0), uint32(opMOVZ)
	if inverse {
		top, fill, op = ^val, 0xffff, opMOVN
	}
	shift := 0
	if top != 0 {
		shift = (63 - bits.LeadingZeros64(top)) &^ 15
	}
	dst := []uint32{mustWide(op, rd, top>>uint(shift), uint(shift))}
	for shift -= 16; shift >= 0; shift -= 16 {
		if h := (val >> uint(shift)) & 0xffff; h != fill {
			dst = append(dst, mustWide(opMOVK, rd, h, uint(shift)))
		}
	}
	return dst
}
