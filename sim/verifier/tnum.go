package verifier

import (
	"fmt"
	"math/bits"
)

// tnum is a tristate number (kernel/bpf/tnum.c): each bit is known 0, known
// 1 or unknown. value holds the known bits, mask the unknown ones; a bit is
// never set in both.
type tnum struct {
	value, mask uint64
}

var tnumUnknown = tnum{mask: ^uint64(0)}

func tnumConst(v uint64) tnum { return tnum{value: v} }

// tnumRange is the tnum of every number in [min, max].
func tnumRange(min, max uint64) tnum {
	chi := min ^ max
	b := uint(bits.Len64(chi))
	if b > 63 {
		return tnumUnknown
	}
	delta := uint64(1)<<b - 1
	return tnum{value: min &^ delta, mask: delta}
}

func (a tnum) isConst() bool   { return a.mask == 0 }
func (a tnum) isUnknown() bool { return a.mask == ^uint64(0) }

func (a tnum) lsh(shift uint8) tnum { return tnum{a.value << shift, a.mask << shift} }
func (a tnum) rsh(shift uint8) tnum { return tnum{a.value >> shift, a.mask >> shift} }

// arsh shifts right keeping the sign of bit width-1 (32 or 64).
func (a tnum) arsh(shift uint8, width uint8) tnum {
	if width == 32 {
		return tnum{
			uint64(uint32(int32(uint32(a.value)) >> shift)),
			uint64(uint32(int32(uint32(a.mask)) >> shift)),
		}
	}
	return tnum{uint64(int64(a.value) >> shift), uint64(int64(a.mask) >> shift)}
}

// bswap16, bswap32 and bswap64 reverse the bytes of the low 2, 4 or 8
// bytes, known and unknown bits alike; the rest becomes known zero.
func (a tnum) bswap16() tnum {
	return tnum{uint64(bits.ReverseBytes16(uint16(a.value))), uint64(bits.ReverseBytes16(uint16(a.mask)))}
}

func (a tnum) bswap32() tnum {
	return tnum{uint64(bits.ReverseBytes32(uint32(a.value))), uint64(bits.ReverseBytes32(uint32(a.mask)))}
}

func (a tnum) bswap64() tnum { return tnum{bits.ReverseBytes64(a.value), bits.ReverseBytes64(a.mask)} }

func (a tnum) add(b tnum) tnum {
	sm := a.mask + b.mask
	sv := a.value + b.value
	sigma := sm + sv
	chi := sigma ^ sv
	mu := chi | a.mask | b.mask
	return tnum{sv &^ mu, mu}
}

func (a tnum) sub(b tnum) tnum {
	dv := a.value - b.value
	alpha := dv + a.mask
	beta := dv - b.mask
	chi := alpha ^ beta
	mu := chi | a.mask | b.mask
	return tnum{dv &^ mu, mu}
}

func (a tnum) and(b tnum) tnum {
	alpha := a.value | a.mask
	beta := b.value | b.mask
	v := a.value & b.value
	return tnum{v, alpha & beta &^ v}
}

func (a tnum) or(b tnum) tnum {
	v := a.value | b.value
	mu := a.mask | b.mask
	return tnum{v, mu &^ v}
}

func (a tnum) xor(b tnum) tnum {
	v := a.value ^ b.value
	mu := a.mask | b.mask
	return tnum{v &^ mu, mu}
}

// mul multiplies by shifting and adding, as tnum_mul does.
func (a tnum) mul(b tnum) tnum {
	accV := a.value * b.value
	accM := tnumConst(0)
	for a.value != 0 || a.mask != 0 {
		if a.value&1 != 0 {
			accM = accM.add(tnum{0, b.mask})
		} else if a.mask&1 != 0 {
			accM = accM.add(tnum{0, b.value | b.mask})
		}
		a = a.rsh(1)
		b = b.lsh(1)
	}
	return tnumConst(accV).add(accM)
}

// intersect combines two facts about the same number.
func (a tnum) intersect(b tnum) tnum {
	v := a.value | b.value
	mu := a.mask & b.mask
	return tnum{v &^ mu, mu}
}

// cast keeps the low size bytes.
func (a tnum) cast(size uint8) tnum {
	if size >= 8 {
		return a
	}
	m := uint64(1)<<(size*8) - 1
	return tnum{a.value & m, a.mask & m}
}

func (a tnum) subreg() tnum { return a.cast(4) }

// withSubreg replaces the low 32 bits of a by those of b.
func (a tnum) withSubreg(b tnum) tnum {
	return a.clearSubreg().or(b.subreg())
}

func (a tnum) clearSubreg() tnum { return a.rsh(32).lsh(32) }

func (a tnum) isAligned(size uint64) bool {
	if size == 0 {
		return true
	}
	return (a.value|a.mask)&(size-1) == 0
}

// in reports whether every value of b is a value of a.
func (a tnum) in(b tnum) bool {
	if b.mask&^a.mask != 0 {
		return false
	}
	return a.value == b.value&^a.mask
}

// umin and umax are the extremes a tnum allows.
func (a tnum) umin() uint64 { return a.value }
func (a tnum) umax() uint64 { return a.value | a.mask }

// String renders the tnum like the verifier log (tnum_strn): a constant
// as a number, otherwise (value; mask).
func (a tnum) String() string {
	if a.mask == 0 {
		return unum(a.value)
	}
	// The kernel's printf, unlike C's, keeps the 0x of a zero: (0x0; 0x3).
	return fmt.Sprintf("(%#x; %#x)", a.value, a.mask)
}
