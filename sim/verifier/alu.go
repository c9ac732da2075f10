package verifier

import (
	"math"
	"math/bits"

	"github.com/bpfsim/bpfsim/sim/insn"
)

// scalarALU is adjust_scalar_min_max_vals: what is known of dst op src for
// two scalars. ADD, SUB, MUL, AND, OR and XOR keep ranges whatever the
// source; shifts only by a known amount below the width; everything else
// (division, modulo) yields an unknown value. The kernel's imprecision is
// copied on purpose: a verifier that knew more would accept programs the
// kernel rejects.
func scalarALU(op uint8, alu32 bool, dst *bounds, src bounds) {
	if !safeToCompute(op, alu32, &src) {
		*dst = unknownBounds()
		return
	}
	switch op {
	case insn.ADD:
		dst.add32(&src)
		dst.add64(&src)
		dst.varOff = dst.varOff.add(src.varOff)
	case insn.SUB:
		dst.sub32(&src)
		dst.sub64(&src)
		dst.varOff = dst.varOff.sub(src.varOff)
	case insn.MUL:
		dst.varOff = dst.varOff.mul(src.varOff)
		dst.mul32(&src)
		dst.mul64(&src)
	case insn.AND:
		dst.varOff = dst.varOff.and(src.varOff)
		dst.and32(&src)
		dst.and64(&src)
	case insn.OR:
		dst.varOff = dst.varOff.or(src.varOff)
		dst.or32(&src)
		dst.or64(&src)
	case insn.XOR:
		dst.varOff = dst.varOff.xor(src.varOff)
		dst.xor32(&src)
		dst.xor64(&src)
	case insn.LSH:
		if alu32 {
			dst.lsh32(&src)
		} else {
			dst.lsh64(&src)
		}
	case insn.RSH:
		if alu32 {
			dst.rsh32(&src)
		} else {
			dst.rsh64(&src)
		}
	case insn.ARSH:
		if alu32 {
			dst.arsh32(&src)
		} else {
			dst.arsh64(&src)
		}
	}
	if alu32 {
		dst.zext32()
	}
	dst.sync()
}

// scalarNeg is BPF_NEG on a scalar: the bounds of 0 - x and the tnum of
// -x.
func scalarNeg(alu32 bool, dst *bounds) {
	src := *dst
	*dst = constBounds(0)
	dst.sub32(&src)
	dst.sub64(&src)
	dst.varOff = tnumConst(0).sub(src.varOff)
	if alu32 {
		dst.zext32()
	}
	dst.sync()
}

// scalarByteSwap is BPF_END on a scalar: the known bits move with their
// bytes when the instruction swaps (bswap, and to_be on this
// little-endian machine), which also moves the sign bit, so the ranges
// start over from the tnum; a 16- or 32-bit conversion then truncates.
func scalarByteSwap(alu64, toLE bool, width int, dst *bounds) {
	if alu64 || !toLE {
		switch width {
		case 16:
			dst.varOff = dst.varOff.bswap16()
		case 32:
			dst.varOff = dst.varOff.bswap32()
		default:
			dst.varOff = dst.varOff.bswap64()
		}
		dst.unbound64()
		dst.unbound32()
	}
	if width == 16 || width == 32 {
		dst.coerceToSize(width / 8)
		return
	}
	dst.sync()
}

// safeToCompute is is_safe_to_compute_dst_reg_range.
func safeToCompute(op uint8, alu32 bool, src *bounds) bool {
	var known bool
	width := uint64(64)
	if alu32 {
		width = 32
		known = src.is32Const() && src.s32min == src.s32max && src.u32min == src.u32max
	} else {
		known = src.isConst() && src.smin == src.smax && src.umin == src.umax
	}
	switch op {
	case insn.ADD, insn.SUB, insn.AND, insn.XOR, insn.OR, insn.MUL:
		return true
	case insn.LSH, insn.RSH, insn.ARSH:
		return known && src.umax < width
	}
	return false
}

func (d *bounds) add32(s *bounds) {
	lo, o1 := addOverflow32(d.s32min, s.s32min)
	hi, o2 := addOverflow32(d.s32max, s.s32max)
	if o1 || o2 {
		d.s32min, d.s32max = math.MinInt32, math.MaxInt32
	} else {
		d.s32min, d.s32max = lo, hi
	}
	// Unsigned: the ends wrap together or not at all, else nothing is
	// known (6.17's scalar32_min_max_add).
	ulo, c1 := bits.Add32(d.u32min, s.u32min, 0)
	uhi, c2 := bits.Add32(d.u32max, s.u32max, 0)
	if c1 == 0 && c2 != 0 {
		d.u32min, d.u32max = 0, math.MaxUint32
	} else {
		d.u32min, d.u32max = ulo, uhi
	}
}

func (d *bounds) add64(s *bounds) {
	lo, o1 := addOverflow64(d.smin, s.smin)
	hi, o2 := addOverflow64(d.smax, s.smax)
	if o1 || o2 {
		d.smin, d.smax = math.MinInt64, math.MaxInt64
	} else {
		d.smin, d.smax = lo, hi
	}
	ulo, c1 := bits.Add64(d.umin, s.umin, 0)
	uhi, c2 := bits.Add64(d.umax, s.umax, 0)
	if c1 == 0 && c2 != 0 {
		d.umin, d.umax = 0, math.MaxUint64
	} else {
		d.umin, d.umax = ulo, uhi
	}
}

func (d *bounds) sub32(s *bounds) {
	lo, o1 := subOverflow32(d.s32min, s.s32max)
	hi, o2 := subOverflow32(d.s32max, s.s32min)
	if o1 || o2 {
		d.s32min, d.s32max = math.MinInt32, math.MaxInt32
	} else {
		d.s32min, d.s32max = lo, hi
	}
	// Unsigned: the ends wrap together or not at all, else nothing is
	// known (6.17's scalar32_min_max_sub).
	if d.u32min < s.u32max && d.u32max >= s.u32min {
		d.u32min, d.u32max = 0, math.MaxUint32
	} else {
		d.u32min, d.u32max = d.u32min-s.u32max, d.u32max-s.u32min
	}
}

func (d *bounds) sub64(s *bounds) {
	lo, o1 := subOverflow64(d.smin, s.smax)
	hi, o2 := subOverflow64(d.smax, s.smin)
	if o1 || o2 {
		d.smin, d.smax = math.MinInt64, math.MaxInt64
	} else {
		d.smin, d.smax = lo, hi
	}
	if d.umin < s.umax && d.umax >= s.umin {
		d.umin, d.umax = 0, math.MaxUint64
	} else {
		d.umin, d.umax = d.umin-s.umax, d.umax-s.umin
	}
}

// mul32 and mul64 are scalar32_min_max_mul and scalar_min_max_mul as of
// 6.17: the unsigned range is the product of the ends unless that
// overflows; the signed range spans the four products of the ends unless
// one overflows.
func (d *bounds) mul32(s *bounds) {
	lo, hi := uint64(d.u32min)*uint64(s.u32min), uint64(d.u32max)*uint64(s.u32max)
	if lo > math.MaxUint32 || hi > math.MaxUint32 {
		d.u32min, d.u32max = 0, math.MaxUint32
	} else {
		d.u32min, d.u32max = uint32(lo), uint32(hi)
	}
	smin, smax := int64(math.MaxInt64), int64(math.MinInt64)
	for _, p := range [4]int64{
		int64(d.s32min) * int64(s.s32min), int64(d.s32min) * int64(s.s32max),
		int64(d.s32max) * int64(s.s32min), int64(d.s32max) * int64(s.s32max),
	} {
		if p < math.MinInt32 || p > math.MaxInt32 {
			d.s32min, d.s32max = math.MinInt32, math.MaxInt32
			return
		}
		smin, smax = min(smin, p), max(smax, p)
	}
	d.s32min, d.s32max = int32(smin), int32(smax)
}

func (d *bounds) mul64(s *bounds) {
	hiMax, lo := bits.Mul64(d.umax, s.umax)
	hiMin, loMin := bits.Mul64(d.umin, s.umin)
	if hiMax != 0 || hiMin != 0 {
		d.umin, d.umax = 0, math.MaxUint64
	} else {
		d.umin, d.umax = loMin, lo
	}
	smin, smax := int64(math.MaxInt64), int64(math.MinInt64)
	for _, f := range [4][2]int64{{d.smin, s.smin}, {d.smin, s.smax}, {d.smax, s.smin}, {d.smax, s.smax}} {
		p, ok := mulSigned64(f[0], f[1])
		if !ok {
			d.smin, d.smax = math.MinInt64, math.MaxInt64
			return
		}
		smin, smax = min(smin, p), max(smax, p)
	}
	d.smin, d.smax = smin, smax
}

// mulSigned64 returns a*b and whether it fits in 64 bits
// (check_mul_overflow on s64).
func mulSigned64(a, b int64) (int64, bool) {
	if a == 0 || b == 0 {
		return 0, true
	}
	p := a * b
	if p/b != a || (a == -1 && b == math.MinInt64) || (b == -1 && a == math.MinInt64) {
		return 0, false
	}
	return p, true
}

// signed32FromUnsigned sets the signed 32-bit range from the unsigned one
// when that does not cross the sign boundary.
func (d *bounds) signed32FromUnsigned() {
	if int32(d.u32min) <= int32(d.u32max) {
		d.s32min, d.s32max = int32(d.u32min), int32(d.u32max)
	} else {
		d.s32min, d.s32max = math.MinInt32, math.MaxInt32
	}
}

func (d *bounds) signed64FromUnsigned() {
	if int64(d.umin) <= int64(d.umax) {
		d.smin, d.smax = int64(d.umin), int64(d.umax)
	} else {
		d.smin, d.smax = math.MinInt64, math.MaxInt64
	}
}

// and32 and the other bitwise operations run after the tnum has been
// updated, as in the kernel.
func (d *bounds) and32(s *bounds) {
	v := d.varOff.subreg()
	if s.is32Const() && d.is32Const() {
		d.known32(uint32(v.value))
		return
	}
	d.u32min = uint32(v.value)
	d.u32max = min(d.u32max, s.u32max)
	d.signed32FromUnsigned()
}

func (d *bounds) and64(s *bounds) {
	if s.isConst() && d.isConst() {
		*d = constBounds(d.varOff.value)
		return
	}
	d.umin = d.varOff.value
	d.umax = min(d.umax, s.umax)
	d.signed64FromUnsigned()
	d.updateBounds()
}

func (d *bounds) or32(s *bounds) {
	v := d.varOff.subreg()
	if s.is32Const() && d.is32Const() {
		d.known32(uint32(v.value))
		return
	}
	d.u32min = max(d.u32min, s.u32min)
	d.u32max = uint32(v.value | v.mask)
	d.signed32FromUnsigned()
}

func (d *bounds) or64(s *bounds) {
	if s.isConst() && d.isConst() {
		*d = constBounds(d.varOff.value)
		return
	}
	d.umin = max(d.umin, s.umin)
	d.umax = d.varOff.value | d.varOff.mask
	d.signed64FromUnsigned()
	d.updateBounds()
}

func (d *bounds) xor32(s *bounds) {
	v := d.varOff.subreg()
	if s.is32Const() && d.is32Const() {
		d.known32(uint32(v.value))
		return
	}
	d.u32min = uint32(v.value)
	d.u32max = uint32(v.value | v.mask)
	d.signed32FromUnsigned()
}

func (d *bounds) xor64(s *bounds) {
	if s.isConst() && d.isConst() {
		*d = constBounds(d.varOff.value)
		return
	}
	d.umin = d.varOff.value
	d.umax = d.varOff.value | d.varOff.mask
	d.signed64FromUnsigned()
	d.updateBounds()
}

// lsh32Ranges is __scalar32_min_max_lsh.
func (d *bounds) lsh32Ranges(umin, umax uint64) {
	d.s32min, d.s32max = math.MinInt32, math.MaxInt32
	if umax > 31 || uint64(d.u32max) > 1<<(31-umax) {
		d.u32min, d.u32max = 0, math.MaxUint32
	} else {
		d.u32min <<= umin
		d.u32max <<= umax
	}
}

func (d *bounds) lsh32(s *bounds) {
	umin, umax := uint64(s.u32min), uint64(s.u32max)
	sub := d.varOff.subreg()
	d.lsh32Ranges(umin, umax)
	d.varOff = sub.lsh(uint8(umin)).subreg()
	d.unbound64()
	d.update32()
}

func (d *bounds) lsh64(s *bounds) {
	umin, umax := s.umin, s.umax
	// <<32 keeps the sign of the low half: a compiler's sign extension
	// idiom (<<32 s>>32).
	if umin == 32 && umax == 32 {
		d.smax = int64(d.s32max) << 32
		d.smin = int64(d.s32min) << 32
	} else {
		d.smin, d.smax = math.MinInt64, math.MaxInt64
	}
	if d.umax > 1<<(63-umax) {
		d.umin, d.umax = 0, math.MaxUint64
	} else {
		d.umin <<= umin
		d.umax <<= umax
	}
	d.lsh32Ranges(umin, umax)
	d.varOff = d.varOff.lsh(uint8(umin))
	d.updateBounds()
}

func (d *bounds) rsh32(s *bounds) {
	sub := d.varOff.subreg()
	umin, umax := s.u32min, s.u32max
	d.s32min, d.s32max = math.MinInt32, math.MaxInt32
	d.varOff = sub.rsh(uint8(umin))
	d.u32min >>= umax
	d.u32max >>= umin
	d.unbound64()
	d.update32()
}

func (d *bounds) rsh64(s *bounds) {
	umin, umax := s.umin, s.umax
	d.smin, d.smax = math.MinInt64, math.MaxInt64
	d.varOff = d.varOff.rsh(uint8(umin))
	d.umin >>= umax
	d.umax >>= umin
	d.unbound32()
	d.updateBounds()
}

func (d *bounds) arsh32(s *bounds) {
	n := s.u32min
	d.s32min >>= n
	d.s32max >>= n
	d.varOff = d.varOff.subreg().arsh(uint8(n), 32)
	d.u32min, d.u32max = 0, math.MaxUint32
	d.unbound64()
	d.update32()
}

func (d *bounds) arsh64(s *bounds) {
	n := s.umin
	d.smin >>= n
	d.smax >>= n
	d.varOff = d.varOff.arsh(uint8(n), 64)
	d.umin, d.umax = 0, math.MaxUint64
	d.unbound32()
	d.updateBounds()
}

func addOverflow64(a, b int64) (int64, bool) {
	s := a + b
	return s, (a >= 0) == (b >= 0) && (s >= 0) != (a >= 0)
}

func subOverflow64(a, b int64) (int64, bool) {
	s := a - b
	return s, (a >= 0) != (b >= 0) && (s >= 0) != (a >= 0)
}

func addOverflow32(a, b int32) (int32, bool) {
	s := a + b
	return s, (a >= 0) == (b >= 0) && (s >= 0) != (a >= 0)
}

func subOverflow32(a, b int32) (int32, bool) {
	s := a - b
	return s, (a >= 0) != (b >= 0) && (s >= 0) != (a >= 0)
}

// coerceToSize is coerce_reg_to_size: the value truncated to its low size
// bytes (a narrow load, a 32-bit move).
func (b *bounds) coerceToSize(size int) {
	b.varOff = b.varOff.cast(uint8(size))
	mask := uint64(1)<<(uint(size)*8) - 1
	if b.umin&^mask == b.umax&^mask {
		b.umin &= mask
		b.umax &= mask
	} else {
		b.umin, b.umax = 0, mask
	}
	b.smin, b.smax = int64(b.umin), int64(b.umax)
	if size < 4 {
		b.unbound32()
	}
	b.sync()
}

// signExtend returns v's low size bytes sign-extended to 64 bits.
func signExtend(v uint64, size int) int64 {
	shift := 64 - 8*uint(size)
	return int64(v<<shift) >> shift
}

// coerceToSizeSX is coerce_reg_to_size_sx: the value sign-extended from
// its low size bytes (movsx, ldsx).
func (b *bounds) coerceToSizeSX(size int) {
	if b.isConst() {
		v := uint64(signExtend(b.varOff.value, size))
		*b = constBounds(v)
		return
	}
	n := 8 * uint(size)
	if uint64(b.smax)>>n<<n == uint64(b.smin)>>n<<n {
		hi, lo := signExtend(uint64(b.smax), size), signExtend(uint64(b.smin), size)
		smax, smin := max(hi, lo), min(hi, lo)
		if (smax >= 0) == (smin >= 0) {
			b.smin, b.smax = smin, smax
			b.s32min, b.s32max = int32(smin), int32(smax)
			b.umin, b.umax = uint64(smin), uint64(smax)
			b.u32min, b.u32max = uint32(smin), uint32(smax)
			b.varOff = tnumRange(uint64(smin), uint64(smax))
			return
		}
	}
	lim := int64(1)<<(n-1) - 1
	b.smin, b.smax = -lim-1, lim
	b.s32min, b.s32max = int32(-lim-1), int32(lim)
	b.umin, b.u32min = 0, 0
	b.umax, b.u32max = math.MaxUint64, math.MaxUint32
	b.varOff = tnumUnknown
}

// coerceSubregToSizeSX is coerce_subreg_to_size_sx: the 32-bit movsx.
func (b *bounds) coerceSubregToSizeSX(size int) {
	if b.isConst() {
		v := uint32(signExtend(b.varOff.value, size))
		b.varOff = tnumConst(uint64(v))
		b.s32min, b.s32max = int32(v), int32(v)
		b.u32min, b.u32max = v, v
		return
	}
	n := 8 * uint(size)
	if uint32(b.s32max)>>n<<n == uint32(b.s32min)>>n<<n {
		hi, lo := int32(signExtend(uint64(b.s32max), size)), int32(signExtend(uint64(b.s32min), size))
		smax, smin := max(hi, lo), min(hi, lo)
		if (smin >= 0) == (smax >= 0) {
			b.s32min, b.s32max = smin, smax
			b.u32min, b.u32max = uint32(smin), uint32(smax)
			b.varOff = tnumRange(uint64(int64(smin)), uint64(int64(smax))).subreg()
			return
		}
	}
	lim := int32(1)<<(n-1) - 1
	b.s32min, b.s32max = -lim-1, lim
	b.u32min, b.u32max = 0, math.MaxUint32
	b.varOff = tnumUnknown.subreg()
}
