package a64

import "math/bits"

// ---- Move wide (immediate) ----

const (
	opMOVN = 0x12800000
	opMOVZ = 0x52800000
	opMOVK = 0x72800000
)

func moveWide(op uint32, rd Reg, imm16 uint32, shift uint) (uint32, error) {
	if err := checkZR("rd", rd, rd.Is64()); err != nil {
		return 0, err
	}
	if imm16 > 0xffff {
		return 0, errInval("move wide immediate %#x wider than 16 bits", imm16)
	}
	if shift%16 != 0 || shift >= regBits(rd) {
		return 0, errInval("move wide shift %d: want 0 or 16 (W), 0..48 in steps of 16 (X)", shift)
	}
	return op | sfBit(rd) | uint32(shift/16)<<21 | imm16<<5 | rd.Num(), nil
}

// Movz encodes MOVZ Rd, #imm16, LSL #shift (A64_MOVZ).
func Movz(rd Reg, imm16 uint32, shift uint) (uint32, error) {
	return moveWide(opMOVZ, rd, imm16, shift)
}

// Movn encodes MOVN Rd, #imm16, LSL #shift: Rd = ^(imm16<<shift) (A64_MOVN).
func Movn(rd Reg, imm16 uint32, shift uint) (uint32, error) {
	return moveWide(opMOVN, rd, imm16, shift)
}

// Movk encodes MOVK Rd, #imm16, LSL #shift: replace one halfword (A64_MOVK).
func Movk(rd Reg, imm16 uint32, shift uint) (uint32, error) {
	return moveWide(opMOVK, rd, imm16, shift)
}

// mustWide encodes a move-wide whose operands the caller has already
// validated (the register once, the immediates by construction).
func mustWide(op uint32, rd Reg, imm16 uint64, shift uint) uint32 {
	return op | sfBit(rd) | uint32(shift/16)<<21 | uint32(imm16&0xffff)<<5 | rd.Num()
}

// AppendMovImm32 appends the JIT's emit_a64_mov_i sequence loading the
// 32-bit value val into rd: one MOVZ or MOVN, plus a MOVK when both
// halfwords are needed. With an X register the sequence is the same but
// 64-bit (the JIT's is64 flag), so a negative val is sign-extended.
func AppendMovImm32(dst []uint32, rd Reg, val int32) ([]uint32, error) {
	if !zrOK(rd, rd.Is64()) {
		return dst, badZR("rd", rd, rd.Is64())
	}
	return appendMovImm32(dst, rd, uint32(val)), nil
}

// appendMovImm32 is AppendMovImm32 for a register already checked.
func appendMovImm32(dst []uint32, rd Reg, val uint32) []uint32 {
	hi, lo := uint64(val>>16), uint64(val&0xffff)
	if hi&0x8000 != 0 {
		if hi == 0xffff {
			return append(dst, mustWide(opMOVN, rd, ^lo, 0))
		}
		w := mustWide(opMOVN, rd, ^hi, 16)
		if lo != 0xffff {
			return append(dst, w, mustWide(opMOVK, rd, lo, 0))
		}
		return append(dst, w)
	}
	w := mustWide(opMOVZ, rd, lo, 0)
	if hi != 0 {
		return append(dst, w, mustWide(opMOVK, rd, hi, 16))
	}
	return append(dst, w)
}

// zeroHalfwords counts the halfwords of v that are 0: 4 less it is how
// many instructions a MOVZ based sequence for v needs, and for ^v a MOVN
// based one (the JIT's i64_i16_blocks). Without a loop: adding 0x7fff to
// a halfword's low 15 bits carries into its top bit unless they are all
// 0, so the top bit of t is set only in halfwords that are 0.
func zeroHalfwords(v uint64) int {
	const low15 = 0x7fff7fff7fff7fff
	t := ^((v & low15) + low15 | v | low15)
	return bits.OnesCount64(t)
}

// AppendMovImm64 appends the JIT's emit_a64_mov_i64 sequence loading val
// into the X register rd. Values that fit in 32 bits use the 32-bit
// sequence on the W view (the upper half is zeroed by the write).
// Otherwise it starts from MOVN when fewer halfwords differ from 0xffff
// than from 0, from MOVZ else, at the highest halfword that differs, and
// adds a MOVK for each lower halfword that differs from the fill: 1 to 4
// instructions.
func AppendMovImm64(dst []uint32, rd Reg, val uint64) ([]uint32, error) {
	if !zrOK(rd, true) {
		return dst, badZR("rd", rd, true)
	}
	if val>>32 == 0 {
		return appendMovImm32(dst, rd.AsW(), uint32(val)), nil
	}
	// fewer halfwords differ from 0xffff than from 0
	inverse := zeroHalfwords(^val) > zeroHalfwords(val)
	top := val
	fill := uint64(0)
	op := uint32(opMOVZ)
	if inverse {
		top, fill, op = ^val, 0xffff, opMOVN
	}
	// Start at the halfword holding the highest set bit of the value (or
	// of its inverse). All ones is the one value with top == 0: it takes
	// the MOVN path (no halfword differs from 0xffff) and becomes
	// "movn xd, #0", as in the kernel, where fls64(0)-1 rounds to 0.
	shift := 0
	if top != 0 {
		shift = (63 - bits.LeadingZeros64(top)) &^ 15
	}
	dst = append(dst, mustWide(op, rd, top>>uint(shift), uint(shift)))
	for shift -= 16; shift >= 0; shift -= 16 {
		if h := (val >> uint(shift)) & 0xffff; h != fill {
			dst = append(dst, mustWide(opMOVK, rd, h, uint(shift)))
		}
	}
	return dst, nil
}

// AppendMovAddr appends the JIT's fixed-length emit_addr_mov_i64 sequence
// for a kernel address: MOVN for the low halfword, then MOVK for bits
// 16..47. It assumes bits 48..63 are all ones (true for vmalloc and kernel
// text addresses) and returns an error otherwise, since the sequence would
// load a different value. Its length never varies, which keeps JIT passes
// the same size.
func AppendMovAddr(dst []uint32, rd Reg, addr uint64) ([]uint32, error) {
	if err := checkZR("rd", rd, true); err != nil {
		return dst, err
	}
	if addr>>48 != 0xffff {
		return dst, errInval("address %#x: the movn/movk/movk sequence needs bits 48..63 set", addr)
	}
	dst = append(dst, mustWide(opMOVN, rd, ^addr&0xffff, 0))
	for shift := uint(16); shift <= 32; shift += 16 {
		dst = append(dst, mustWide(opMOVK, rd, (addr>>shift)&0xffff, shift))
	}
	return dst, nil
}

// MovImm64 is AppendMovImm64 into a new slice.
func MovImm64(rd Reg, val uint64) ([]uint32, error) { return AppendMovImm64(nil, rd, val) }

// MovImm32 is AppendMovImm32 into a new slice.
func MovImm32(rd Reg, val int32) ([]uint32, error) { return AppendMovImm32(nil, rd, val) }

// AppendAddImm appends the JIT's emit_a64_add_i: rd = rn + imm for a 32-bit
// signed imm. One ADD when imm is an add/sub immediate, one SUB of -imm when
// that is, else the imm is loaded into tmp (AppendMovImm32 in rd's width)
// and added as a register.
func AppendAddImm(dst []uint32, rd, rn, tmp Reg, imm int32) ([]uint32, error) {
	if IsAddSubImm(int64(imm)) {
		w, err := AddImm(rd, rn, int64(imm))
		if err != nil {
			return dst, err
		}
		return append(dst, w), nil
	}
	// The kernel negates as u32, so INT32_MIN (0x80000000) stays
	// unencodable and takes the register path.
	if neg := int64(-uint32(imm)); neg <= 0xffffffff && IsAddSubImm(neg) {
		w, err := SubImm(rd, rn, neg)
		if err != nil {
			return dst, err
		}
		return append(dst, w), nil
	}
	if tmp.Is64() != rd.Is64() || tmp.Num() == rn.Num() && tmp.Num() != 31 {
		return dst, errInval("add immediate: scratch %v must match %v's width and differ from %v", tmp, rd, rn)
	}
	add, err := Add(rd, rn, tmp)
	if err != nil {
		return dst, err
	}
	out, err := AppendMovImm32(dst, tmp, imm)
	if err != nil {
		return dst, err
	}
	return append(out, add), nil
}
