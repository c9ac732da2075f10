package a64_test

// Test-side decoders written from the Arm Architecture Reference Manual,
// independent of the encoder: DecodeBitMasks for logical immediates, the
// field layout of the LSE atomics and CAS (which golang.org/x/arch's
// arm64asm does not decode), and a move-wide interpreter that runs the
// constant-loading sequences.

import "fmt"

// decodeBitMasks is the manual's DecodeBitMasks(N, imms, immr, immediate)
// for the "wmask" of a logical immediate: the element size comes from the
// highest set bit of N:NOT(imms), the element is imms+1 ones rotated right
// by immr, replicated over the register. ok is false for the reserved
// encodings (and N=1 with a 32-bit register).
func decodeBitMasks(n, imms, immr int, is64 bool) (uint64, bool) {
	if !is64 && n == 1 {
		return 0, false
	}
	combined := n<<6 | (^imms & 0x3f)
	length := -1
	for i := 6; i >= 0; i-- {
		if combined&(1<<i) != 0 {
			length = i
			break
		}
	}
	if length < 1 {
		return 0, false
	}
	esize := 1 << length
	levels := esize - 1
	s, r := imms&levels, immr&levels
	if s == levels { // all ones is reserved
		return 0, false
	}
	if !is64 && immr > 31 {
		return 0, false
	}
	welem := ones(s + 1)
	// ROR(welem, r) within esize bits.
	elem := welem
	if r != 0 {
		elem = (welem>>r | welem<<(esize-r)) & ones(esize)
	}
	regSize := 32
	if is64 {
		regSize = 64
	}
	var v uint64
	for i := 0; i < regSize; i += esize {
		v |= elem << i
	}
	return v, true
}

// decodeAtomic renders an LSE atomic memory operation or CAS word in GNU
// syntax from its fields, or ok=false when the word is neither.
//
//	LD<op>/SWP: size 111000 A R 1 Rs o3 opc 00 Rn Rt
//	CAS:        size 0010001 L 1 Rs o0 11111 Rn Rt
func decodeAtomic(word uint32) (string, bool) {
	size := word >> 30
	rs, rn, rt := int(word>>16&31), int(word>>5&31), int(word&31)
	is64 := size == 3
	if size < 2 {
		return "", false // the byte and halfword forms are not used
	}
	base := spName(rn, true)
	switch {
	case word&0x3f200c00 == 0x38200000:
		a, r := word>>23&1, word>>22&1
		o3, opc := word>>15&1, word>>12&7
		order := [...]string{"", "l", "a", "al"}[a<<1|r]
		if o3 == 1 {
			if opc != 0 {
				return "", false
			}
			return fmt.Sprintf("swp%s %s, %s, [%s]", order, zrName(rs, is64), zrName(rt, is64), base), true
		}
		if opc > 3 {
			return "", false // smax/smin/umax/umin: not used
		}
		op := [...]string{"add", "clr", "eor", "set"}[opc]
		if rt == 31 && a == 0 {
			return fmt.Sprintf("st%s%s %s, [%s]", op, order, zrName(rs, is64), base), true
		}
		return fmt.Sprintf("ld%s%s %s, %s, [%s]", op, order, zrName(rs, is64), zrName(rt, is64), base), true
	case word&0x3fa07c00 == 0x08a07c00:
		l, o0 := word>>22&1, word>>15&1
		order := [...]string{"", "l", "a", "al"}[l<<1|o0]
		return fmt.Sprintf("cas%s %s, %s, [%s]", order, zrName(rs, is64), zrName(rt, is64), base), true
	}
	return "", false
}

// runMoveWide executes a MOVZ/MOVN/MOVK sequence on a zeroed register and
// returns the 64-bit result (a write to a W register zeroes the upper
// half). It fails on any other instruction or on a change of register.
func runMoveWide(words []uint32) (uint64, int, error) {
	var x uint64
	reg := -1
	for _, word := range words {
		sf, opc, hw := word>>31, word>>29&3, word>>21&3
		imm := uint64(word >> 5 & 0xffff)
		rd := int(word & 31)
		if word&0x1f800000 != 0x12800000 || opc == 1 || (sf == 0 && hw > 1) {
			return 0, 0, fmt.Errorf("%08x is not a move wide", word)
		}
		if reg >= 0 && rd != reg {
			return 0, 0, fmt.Errorf("sequence switches register from x%d to x%d", reg, rd)
		}
		reg = rd
		shift := 16 * hw
		switch opc {
		case 0: // MOVN
			x = ^(imm << shift)
		case 2: // MOVZ
			x = imm << shift
		case 3: // MOVK
			x = x&^(0xffff<<shift) | imm<<shift
		}
		if sf == 0 {
			x &= 0xffffffff
		}
	}
	return x, reg, nil
}
