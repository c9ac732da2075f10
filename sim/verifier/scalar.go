package verifier

import (
	"fmt"
	"math"
	"strings"
)

// bounds is what the verifier knows of a number: a tnum and signed and
// unsigned ranges, both for the whole 64 bits and for the low 32
// (struct bpf_reg_state's var_off, smin/smax/umin/umax and their 32-bit
// twins). Operations keep them consistent through sync (reg_bounds_sync).
type bounds struct {
	varOff         tnum
	smin, smax     int64
	umin, umax     uint64
	s32min, s32max int32
	u32min, u32max uint32
}

func unknownBounds() bounds {
	b := bounds{varOff: tnumUnknown}
	b.unbound()
	return b
}

func constBounds(v uint64) bounds {
	return bounds{
		varOff: tnumConst(v),
		smin:   int64(v), smax: int64(v),
		umin: v, umax: v,
		s32min: int32(v), s32max: int32(v),
		u32min: uint32(v), u32max: uint32(v),
	}
}

func (b *bounds) isConst() bool { return b.varOff.isConst() }

// constant returns the value of a constant.
func (b *bounds) constant() uint64 { return b.varOff.value }

// is32Const reports whether the low 32 bits are known.
func (b *bounds) is32Const() bool { return b.varOff.subreg().isConst() }

// unbound is __mark_reg_unbounded (the tnum is kept).
func (b *bounds) unbound() {
	b.unbound64()
	b.unbound32()
}

func (b *bounds) unbound64() {
	b.smin, b.smax = math.MinInt64, math.MaxInt64
	b.umin, b.umax = 0, math.MaxUint64
}

func (b *bounds) unbound32() {
	b.s32min, b.s32max = math.MinInt32, math.MaxInt32
	b.u32min, b.u32max = 0, math.MaxUint32
}

// known32 is __mark_reg32_known: the low half becomes v.
func (b *bounds) known32(v uint32) {
	b.varOff = b.varOff.withSubreg(tnumConst(uint64(v)))
	b.s32min, b.s32max = int32(v), int32(v)
	b.u32min, b.u32max = v, v
}

// sync is reg_bounds_sync: tighten each view of the number from the
// others until they agree.
func (b *bounds) sync() {
	b.updateBounds()
	b.deduce()
	b.deduce()
	b.deduce()
	b.boundOffset()
	b.updateBounds()
}

// updateBounds is __update_reg_bounds: ranges cannot exceed what the known
// bits allow.
func (b *bounds) updateBounds() {
	b.update32()
	b.update64()
}

func (b *bounds) update32() {
	v, m := uint32(b.varOff.value), uint32(b.varOff.mask)
	b.s32min = max(b.s32min, int32(v|m&(1<<31)))
	b.s32max = min(b.s32max, int32(v|m&^(1<<31)))
	b.u32min = max(b.u32min, v)
	b.u32max = min(b.u32max, v|m)
}

func (b *bounds) update64() {
	v, m := b.varOff.value, b.varOff.mask
	b.smin = max(b.smin, int64(v|m&(1<<63)))
	b.smax = min(b.smax, int64(v|m&^(1<<63)))
	b.umin = max(b.umin, v)
	b.umax = min(b.umax, v|m)
}

// deduce is __reg_deduce_bounds: each range bounds the others where the
// arithmetic allows.
func (b *bounds) deduce() {
	b.deduce32()
	b.deduce64()
	b.deduceMixed()
}

func (b *bounds) deduce32() {
	// 64-bit ranges whose upper halves agree bound the low halves.
	if b.umin>>32 == b.umax>>32 {
		b.u32min = max(b.u32min, uint32(b.umin))
		b.u32max = min(b.u32max, uint32(b.umax))
		if int32(b.umin) <= int32(b.umax) {
			b.s32min = max(b.s32min, int32(b.umin))
			b.s32max = min(b.s32max, int32(b.umax))
		}
	}
	if b.smin>>32 == b.smax>>32 {
		if uint32(b.smin) <= uint32(b.smax) {
			b.u32min = max(b.u32min, uint32(b.smin))
			b.u32max = min(b.u32max, uint32(b.smax))
		}
		if int32(b.smin) <= int32(b.smax) {
			b.s32min = max(b.s32min, int32(b.smin))
			b.s32max = min(b.s32max, int32(b.smax))
		}
	}
	// Upper halves one apart, crossing from negative to positive in the
	// low half: still a signed 32-bit range.
	if uint32(b.umin>>32)+1 == uint32(b.umax>>32) && int32(b.umin) < 0 && int32(b.umax) >= 0 {
		b.s32min = max(b.s32min, int32(b.umin))
		b.s32max = min(b.s32max, int32(b.umax))
	}
	if uint32(b.smin>>32)+1 == uint32(b.smax>>32) && int32(b.smin) < 0 && int32(b.smax) >= 0 {
		b.s32min = max(b.s32min, int32(b.smin))
		b.s32max = min(b.s32max, int32(b.smax))
	}
	// Signed and unsigned 32-bit ranges bound each other.
	if int32(b.u32min) <= int32(b.u32max) {
		b.s32min = max(b.s32min, int32(b.u32min))
		b.s32max = min(b.s32max, int32(b.u32max))
	}
	if uint32(b.s32min) <= uint32(b.s32max) {
		b.u32min = max(uint32(b.s32min), b.u32min)
		b.u32max = min(uint32(b.s32max), b.u32max)
	} else {
		if b.u32max < uint32(b.s32min) {
			b.s32min = int32(b.u32min)
			b.u32max = min(b.u32max, uint32(b.s32max))
		} else if uint32(b.s32max) < b.u32min {
			b.s32max = int32(b.u32max)
			b.u32min = max(b.u32min, uint32(b.s32min))
		}
	}
}

func (b *bounds) deduce64() {
	if int64(b.umin) <= int64(b.umax) {
		b.smin = max(b.smin, int64(b.umin))
		b.smax = min(b.smax, int64(b.umax))
	}
	if uint64(b.smin) <= uint64(b.smax) {
		b.umin = max(uint64(b.smin), b.umin)
		b.umax = min(uint64(b.smax), b.umax)
	} else {
		if b.umax < uint64(b.smin) {
			b.smin = int64(b.umin)
			b.umax = min(b.umax, uint64(b.smax))
		} else if uint64(b.smax) < b.umin {
			b.smax = int64(b.umax)
			b.umin = max(b.umin, uint64(b.smin))
		}
	}
}

// deduceMixed is __reg_deduce_mixed_bounds: the 32-bit ranges narrow the
// low halves of the 64-bit ones.
func (b *bounds) deduceMixed() {
	const hi = ^uint64(math.MaxUint32)
	b.umin = max(b.umin, b.umin&hi|uint64(b.u32min))
	b.umax = min(b.umax, b.umax&hi|uint64(b.u32max))
	b.smin = max(b.smin, int64(uint64(b.smin)&hi|uint64(b.u32min)))
	b.smax = min(b.smax, int64(uint64(b.smax)&hi|uint64(b.u32max)))
	if uint32(b.s32min) <= uint32(b.s32max) {
		b.umin = max(b.umin, b.umin&hi|uint64(uint32(b.s32min)))
		b.umax = min(b.umax, b.umax&hi|uint64(uint32(b.s32max)))
		b.smin = max(b.smin, int64(uint64(b.smin)&hi|uint64(uint32(b.s32min))))
		b.smax = min(b.smax, int64(uint64(b.smax)&hi|uint64(uint32(b.s32max))))
	}
	if b.s32min >= 0 && b.smin >= math.MinInt32 && b.smax <= math.MaxInt32 {
		b.smin, b.smax = int64(b.s32min), int64(b.s32max)
		b.umin, b.umax = uint64(b.s32min), uint64(b.s32max)
		b.varOff = b.varOff.intersect(tnumRange(uint64(b.smin), uint64(b.smax)))
	}
}

// boundOffset is __reg_bound_offset: known bits from the ranges.
func (b *bounds) boundOffset() {
	v64 := b.varOff.intersect(tnumRange(b.umin, b.umax))
	v32 := v64.subreg().intersect(tnumRange(uint64(b.u32min), uint64(b.u32max)))
	b.varOff = v64.clearSubreg().or(v32)
}

// valid is reg_bounds_sanity_check's range test: an empty range means the
// path cannot happen.
func (b *bounds) valid() bool {
	return b.smin <= b.smax && b.umin <= b.umax && b.s32min <= b.s32max && b.u32min <= b.u32max
}

// assign32Into64 is __reg_assign_32_into_64.
func (b *bounds) assign32Into64() {
	b.umin, b.umax = uint64(b.u32min), uint64(b.u32max)
	if b.s32min >= 0 && b.s32max >= 0 {
		b.smin, b.smax = int64(b.s32min), int64(b.s32max)
	} else {
		b.smin, b.smax = 0, math.MaxUint32
	}
}

// zext32 is zext_32_to_64 after a 32-bit operation: the upper half is
// zero and the 64-bit view follows the 32-bit one. Callers sync.
func (b *bounds) zext32() {
	b.varOff = b.varOff.subreg()
	b.assign32Into64()
}

// contains reports whether every value b allows, a allows too: the range
// check of state pruning (range_within and tnum_in in regsafe).
func (a *bounds) contains(b *bounds) bool {
	return a.smin <= b.smin && b.smax <= a.smax && a.umin <= b.umin && b.umax <= a.umax &&
		a.s32min <= b.s32min && b.s32max <= a.s32max && a.u32min <= b.u32min && b.u32max <= a.u32max &&
		a.varOff.in(b.varOff)
}

// ranges is print_scalar_ranges: the non-trivial bounds, equal values
// of the same kind merged ("smin=umin=0").
func (b *bounds) ranges() string {
	type mm struct {
		name string
		val  uint64
		omit bool
	}
	s32 := func(v int32) uint64 {
		if v >= math.MinInt16 && v <= math.MaxInt16 {
			return uint64(int64(v))
		}
		return uint64(uint32(v))
	}
	list := []mm{
		{"smin", uint64(b.smin), b.smin == math.MinInt64},
		{"smax", uint64(b.smax), b.smax == math.MaxInt64},
		{"umin", b.umin, b.umin == 0},
		{"umax", b.umax, b.umax == math.MaxUint64},
		{"smin32", s32(b.s32min), b.s32min == math.MinInt32},
		{"smax32", s32(b.s32max), b.s32max == math.MaxInt32},
		{"umin32", uint64(b.u32min), b.u32min == 0},
		{"umax32", uint64(b.u32max), b.u32max == math.MaxUint32},
	}
	var out strings.Builder
	sep := ""
	for i := range list {
		m1 := &list[i]
		if m1.omit {
			continue
		}
		neg1 := m1.name[0] == 's' && int64(m1.val) < 0
		fmt.Fprintf(&out, "%s%s=", sep, m1.name)
		sep = ","
		for j := i + 2; j < len(list); j += 2 {
			m2 := &list[j]
			if m2.omit || m2.val != m1.val {
				continue
			}
			if neg2 := m2.name[0] == 's' && int64(m2.val) < 0; neg2 != neg1 {
				continue
			}
			m2.omit = true
			fmt.Fprintf(&out, "%s=", m2.name)
		}
		if m1.name[0] == 's' {
			out.WriteString(snum(int64(m1.val)))
		} else {
			out.WriteString(unum(m1.val))
		}
	}
	return out.String()
}
