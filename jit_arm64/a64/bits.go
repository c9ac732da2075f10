package a64

// ---- Bitfield move and extract ----

const (
	opSBFM = 0x13000000
	opBFM  = 0x33000000
	opUBFM = 0x53000000
)

func bitfield(op uint32, rd, rn Reg, immr, imms uint) (uint32, error) {
	is64 := rd.Is64()
	if err := firstErr(checkZR("rd", rd, is64), checkZR("rn", rn, is64)); err != nil {
		return 0, err
	}
	limit := uint(31)
	var n uint32
	if is64 {
		limit, n = 63, 1
	}
	if immr > limit || imms > limit {
		return 0, errInval("bitfield immr=%d imms=%d out of range", immr, imms)
	}
	return op | sfBit(rd) | n<<22 | uint32(immr)<<16 | uint32(imms)<<10 | rn.Num()<<5 | rd.Num(), nil
}

// Sbfm encodes SBFM Rd, Rn, #immr, #imms (A64_SBFM).
func Sbfm(rd, rn Reg, immr, imms uint) (uint32, error) { return bitfield(opSBFM, rd, rn, immr, imms) }

// Ubfm encodes UBFM Rd, Rn, #immr, #imms (A64_UBFM).
func Ubfm(rd, rn Reg, immr, imms uint) (uint32, error) { return bitfield(opUBFM, rd, rn, immr, imms) }

// Bfm encodes BFM Rd, Rn, #immr, #imms.
func Bfm(rd, rn Reg, immr, imms uint) (uint32, error) { return bitfield(opBFM, rd, rn, immr, imms) }

func regBits(r Reg) uint {
	if r.Is64() {
		return 64
	}
	return 32
}

// LslImm encodes LSL Rd, Rn, #shift = UBFM Rd, Rn, #(-shift MOD size),
// #(size-1-shift) (A64_LSL).
func LslImm(rd, rn Reg, shift uint) (uint32, error) {
	size := regBits(rd)
	if shift >= size {
		return 0, errInval("lsl #%d out of range", shift)
	}
	return Ubfm(rd, rn, (size-shift)%size, size-1-shift)
}

// LsrImm encodes LSR Rd, Rn, #shift = UBFM Rd, Rn, #shift, #(size-1)
// (A64_LSR).
func LsrImm(rd, rn Reg, shift uint) (uint32, error) {
	size := regBits(rd)
	if shift >= size {
		return 0, errInval("lsr #%d out of range", shift)
	}
	return Ubfm(rd, rn, shift, size-1)
}

// AsrImm encodes ASR Rd, Rn, #shift = SBFM Rd, Rn, #shift, #(size-1)
// (A64_ASR).
func AsrImm(rd, rn Reg, shift uint) (uint32, error) {
	size := regBits(rd)
	if shift >= size {
		return 0, errInval("asr #%d out of range", shift)
	}
	return Sbfm(rd, rn, shift, size-1)
}

// Extr encodes EXTR Rd, Rn, Rm, #lsb: the lsb..lsb+size-1 bits of Rn:Rm.
func Extr(rd, rn, rm Reg, lsb uint) (uint32, error) {
	is64 := rd.Is64()
	if err := firstErr(checkZR("rd", rd, is64), checkZR("rn", rn, is64), checkZR("rm", rm, is64)); err != nil {
		return 0, err
	}
	if lsb >= regBits(rd) {
		return 0, errInval("extr #%d out of range", lsb)
	}
	var n uint32
	if is64 {
		n = 1
	}
	return 0x13800000 | sfBit(rd) | n<<22 | rm.Num()<<16 | uint32(lsb)<<10 | rn.Num()<<5 | rd.Num(), nil
}

// RorImm encodes ROR Rd, Rn, #shift = EXTR Rd, Rn, Rn, #shift.
func RorImm(rd, rn Reg, shift uint) (uint32, error) { return Extr(rd, rn, rn, shift) }

// sameNum returns rn in rd's width: the extend aliases name their source
// as a W register even when the destination (and the encoding) is 64-bit.
func sameNum(rd, rn Reg) Reg {
	if !rn.Valid() || rn.IsSP() {
		return rn
	}
	if rd.Is64() {
		return rn.AsX()
	}
	return rn.AsW()
}

// Uxtb zero-extends the low byte: UBFM Rd, Rn, #0, #7. rn may be given in
// either width (only its number is encoded).
func Uxtb(rd, rn Reg) (uint32, error) { return Ubfm(rd, sameNum(rd, rn), 0, 7) }

// Uxth zero-extends the low halfword: UBFM Rd, Rn, #0, #15 (A64_UXTH).
func Uxth(rd, rn Reg) (uint32, error) { return Ubfm(rd, sameNum(rd, rn), 0, 15) }

// Uxtw zero-extends the low word: UBFM Rd, Rn, #0, #31 (A64_UXTW). With W
// registers this is the JIT's "lsr wd, wn, #0".
func Uxtw(rd, rn Reg) (uint32, error) { return Ubfm(rd, sameNum(rd, rn), 0, 31) }

// Sxtb sign-extends the low byte: SBFM Rd, Rn, #0, #7 (A64_SXTB).
func Sxtb(rd, rn Reg) (uint32, error) { return Sbfm(rd, sameNum(rd, rn), 0, 7) }

// Sxth sign-extends the low halfword: SBFM Rd, Rn, #0, #15 (A64_SXTH).
func Sxth(rd, rn Reg) (uint32, error) { return Sbfm(rd, sameNum(rd, rn), 0, 15) }

// Sxtw sign-extends the low word: SBFM Rd, Rn, #0, #31 (A64_SXTW).
func Sxtw(rd, rn Reg) (uint32, error) { return Sbfm(rd, sameNum(rd, rn), 0, 31) }

// ---- Data processing (1 and 2 source) ----

func data1(opcode uint32, rd, rn Reg) (uint32, error) {
	is64 := rd.Is64()
	if err := firstErr(checkZR("rd", rd, is64), checkZR("rn", rn, is64)); err != nil {
		return 0, err
	}
	return 0x5ac00000 | sfBit(rd) | opcode<<10 | rn.Num()<<5 | rd.Num(), nil
}

// Rev16 encodes REV16 Rd, Rn: swap the bytes of each halfword (A64_REV16).
func Rev16(rd, rn Reg) (uint32, error) { return data1(1, rd, rn) }

// Rev32 swaps the bytes of each word (A64_REV32): REV Wd, Wn for W
// registers, REV32 Xd, Xn for X registers.
func Rev32(rd, rn Reg) (uint32, error) { return data1(2, rd, rn) }

// Rev64 encodes REV Xd, Xn: swap all eight bytes (A64_REV64).
func Rev64(rd, rn Reg) (uint32, error) {
	if !rd.Is64() {
		return 0, errInval("rev64 needs X registers, got %v", rd)
	}
	return data1(3, rd, rn)
}

// Rbit encodes RBIT Rd, Rn.
func Rbit(rd, rn Reg) (uint32, error) { return data1(0, rd, rn) }

// Clz encodes CLZ Rd, Rn.
func Clz(rd, rn Reg) (uint32, error) { return data1(4, rd, rn) }

func data2(opcode uint32, rd, rn, rm Reg) (uint32, error) {
	is64 := rd.Is64()
	if err := firstErr(checkZR("rd", rd, is64), checkZR("rn", rn, is64), checkZR("rm", rm, is64)); err != nil {
		return 0, err
	}
	return 0x1ac00000 | sfBit(rd) | rm.Num()<<16 | opcode<<10 | rn.Num()<<5 | rd.Num(), nil
}

// Udiv encodes UDIV Rd, Rn, Rm (A64_UDIV).
func Udiv(rd, rn, rm Reg) (uint32, error) { return data2(0x02, rd, rn, rm) }

// Sdiv encodes SDIV Rd, Rn, Rm (A64_SDIV).
func Sdiv(rd, rn, rm Reg) (uint32, error) { return data2(0x03, rd, rn, rm) }

// Lslv encodes LSL Rd, Rn, Rm (A64_LSLV).
func Lslv(rd, rn, rm Reg) (uint32, error) { return data2(0x08, rd, rn, rm) }

// Lsrv encodes LSR Rd, Rn, Rm (A64_LSRV).
func Lsrv(rd, rn, rm Reg) (uint32, error) { return data2(0x09, rd, rn, rm) }

// Asrv encodes ASR Rd, Rn, Rm (A64_ASRV).
func Asrv(rd, rn, rm Reg) (uint32, error) { return data2(0x0a, rd, rn, rm) }

// Rorv encodes ROR Rd, Rn, Rm.
func Rorv(rd, rn, rm Reg) (uint32, error) { return data2(0x0b, rd, rn, rm) }

// ---- Data processing (3 source) ----

func data3(o0 uint32, rd, rn, rm, ra Reg) (uint32, error) {
	is64 := rd.Is64()
	if err := firstErr(checkZR("rd", rd, is64), checkZR("rn", rn, is64), checkZR("rm", rm, is64),
		checkZR("ra", ra, is64)); err != nil {
		return 0, err
	}
	return 0x1b000000 | sfBit(rd) | rm.Num()<<16 | o0<<15 | ra.Num()<<10 | rn.Num()<<5 | rd.Num(), nil
}

// Madd encodes MADD Rd, Rn, Rm, Ra: Rd = Ra + Rn*Rm. The operands are in
// assembler order; the kernel's A64_MADD(sf, Rd, Ra, Rn, Rm) lists Ra
// second.
func Madd(rd, rn, rm, ra Reg) (uint32, error) { return data3(0, rd, rn, rm, ra) }

// Msub encodes MSUB Rd, Rn, Rm, Ra: Rd = Ra - Rn*Rm (A64_MSUB; the JIT's
// modulo is udiv/sdiv followed by msub).
func Msub(rd, rn, rm, ra Reg) (uint32, error) { return data3(1, rd, rn, rm, ra) }

// Mul encodes MUL Rd, Rn, Rm = MADD Rd, Rn, Rm, ZR (A64_MUL).
func Mul(rd, rn, rm Reg) (uint32, error) { return Madd(rd, rn, rm, zrOf(rd)) }
