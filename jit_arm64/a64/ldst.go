package a64

// Size is the access size of a load or store.
type Size uint8

// Access sizes; the value is the size field (log2 of the byte count).
const (
	Size8 Size = iota
	Size16
	Size32
	Size64
)

// Bytes is the access width in bytes.
func (s Size) Bytes() int { return 1 << s }

// ldstKind is the opc field of the load/store register forms.
type ldstKind uint32

const (
	kindStore  ldstKind = 0 // STR*
	kindLoad   ldstKind = 1 // LDR*: zero-extending
	kindLoadSX ldstKind = 2 // LDRS* into an X register
	kindLoadSW ldstKind = 3 // LDRS* into a W register
)

// transferReg validates the data register of a single load or store and
// returns the opc field. Plain 8/16/32-bit accesses use a W register and
// 64-bit ones an X register, as the assembler spells them. A sign-extending
// load picks its target width from rt: LDRSB/LDRSH to W or X, LDRSW to X
// only (the JIT's A64_LDRS*I sign-extend to 64 bits).
func transferReg(size Size, kind ldstKind, rt Reg) (uint32, error) {
	if size > Size64 {
		return 0, errInval("bad access size %d", size)
	}
	if kind == kindLoadSX {
		if size == Size64 {
			return 0, errInval("no sign-extending 64-bit load")
		}
		if err := checkZR("rt", rt, rt.Is64()); err != nil {
			return 0, err
		}
		if !rt.Is64() {
			if size == Size32 {
				return 0, errInval("ldrsw needs an X register, got %v", rt)
			}
			return uint32(kindLoadSW), nil
		}
		return uint32(kindLoadSX), nil
	}
	return uint32(kind), checkZR("rt", rt, size == Size64)
}

// LoadReg encodes LDR{B,H,,} Rt, [Xn, Xm]: register offset, unscaled,
// zero-extending (A64_LDRB/LDRH/LDR32/LDR64).
func LoadReg(size Size, rt, rn, rm Reg) (uint32, error) { return ldstReg(size, kindLoad, rt, rn, rm) }

// StoreReg encodes STR{B,H,,} Rt, [Xn, Xm] (A64_STRB/STRH/STR32/STR64).
func StoreReg(size Size, rt, rn, rm Reg) (uint32, error) { return ldstReg(size, kindStore, rt, rn, rm) }

// LoadSignedReg encodes LDRS{B,H,W} Rt, [Xn, Xm] (A64_LDRSB/LDRSH/LDRSW).
func LoadSignedReg(size Size, rt, rn, rm Reg) (uint32, error) {
	return ldstReg(size, kindLoadSX, rt, rn, rm)
}

func ldstReg(size Size, kind ldstKind, rt, rn, rm Reg) (uint32, error) {
	opc, err := transferReg(size, kind, rt)
	if err = firstErr(err, checkBase(rn), checkZR("rm", rm, true)); err != nil {
		return 0, err
	}
	// option 011 (LSL, i.e. a 64-bit index), S=0 (no scaling).
	return 0x38206800 | uint32(size)<<30 | opc<<22 | rm.Num()<<16 | rn.Num()<<5 | rt.Num(), nil
}

// IsLSIOffset reports whether off fits the unsigned scaled 12-bit offset of
// a size-byte access (the JIT's is_lsi_offset).
func IsLSIOffset(off int64, size Size) bool {
	return off >= 0 && off <= 0xfff<<size && off&(int64(1)<<size-1) == 0
}

// LoadImm encodes LDR{B,H,,} Rt, [Xn, #off] with an unsigned offset
// (multiple of the size, up to 4095 elements) (A64_LDRBI..A64_LDR64I).
func LoadImm(size Size, rt, rn Reg, off int64) (uint32, error) {
	return ldstImm(size, kindLoad, rt, rn, off)
}

// StoreImm encodes STR{B,H,,} Rt, [Xn, #off] (A64_STRBI..A64_STR64I).
func StoreImm(size Size, rt, rn Reg, off int64) (uint32, error) {
	return ldstImm(size, kindStore, rt, rn, off)
}

// LoadSignedImm encodes LDRS{B,H,W} Rt, [Xn, #off] (A64_LDRSBI/LDRSHI/LDRSWI).
func LoadSignedImm(size Size, rt, rn Reg, off int64) (uint32, error) {
	return ldstImm(size, kindLoadSX, rt, rn, off)
}

func ldstImm(size Size, kind ldstKind, rt, rn Reg, off int64) (uint32, error) {
	opc, err := transferReg(size, kind, rt)
	if err = firstErr(err, checkBase(rn)); err != nil {
		return 0, err
	}
	if !IsLSIOffset(off, size) {
		return 0, errInval("offset %d is not an unsigned multiple of %d up to %d", off, size.Bytes(), 0xfff<<size)
	}
	return 0x39000000 | uint32(size)<<30 | opc<<22 | uint32(off>>size)<<10 | rn.Num()<<5 | rt.Num(), nil
}

// LoadUnscaled encodes LDUR{B,H,,} Rt, [Xn, #off], off in -256..255.
func LoadUnscaled(size Size, rt, rn Reg, off int64) (uint32, error) {
	return ldstUnscaled(size, kindLoad, rt, rn, off)
}

// StoreUnscaled encodes STUR{B,H,,} Rt, [Xn, #off], off in -256..255.
func StoreUnscaled(size Size, rt, rn Reg, off int64) (uint32, error) {
	return ldstUnscaled(size, kindStore, rt, rn, off)
}

// LoadSignedUnscaled encodes LDURS{B,H,W} Rt, [Xn, #off].
func LoadSignedUnscaled(size Size, rt, rn Reg, off int64) (uint32, error) {
	return ldstUnscaled(size, kindLoadSX, rt, rn, off)
}

func ldstUnscaled(size Size, kind ldstKind, rt, rn Reg, off int64) (uint32, error) {
	opc, err := transferReg(size, kind, rt)
	if err = firstErr(err, checkBase(rn)); err != nil {
		return 0, err
	}
	if off < -256 || off > 255 {
		return 0, errInval("unscaled offset %d outside -256..255", off)
	}
	return 0x38000000 | uint32(size)<<30 | opc<<22 | uint32(off&0x1ff)<<12 | rn.Num()<<5 | rt.Num(), nil
}

// LoadLiteral encodes LDR Rt, <pc+4*imm19>: a PC-relative load of a W or X
// register (A64_LDR32LIT/A64_LDR64LIT; the PLT's "ldr x10, #8"). off is in
// instructions, as for branches.
func LoadLiteral(rt Reg, off int32) (uint32, error) {
	if err := checkZR("rt", rt, rt.Is64()); err != nil {
		return 0, err
	}
	if err := checkBranchRange("ldr literal", int64(off), 19); err != nil {
		return 0, err
	}
	op := uint32(0x18000000)
	if rt.Is64() {
		op = 0x58000000
	}
	return op | (uint32(off)&0x7ffff)<<5 | rt.Num(), nil
}

// PairMode is the addressing mode of LDP/STP.
type PairMode uint8

// Pair addressing modes, with their encoding (bits 23..24).
const (
	PostIndex    PairMode = 1 // [Xn], #off: access at Xn, then Xn += off
	SignedOffset PairMode = 2 // [Xn, #off]
	PreIndex     PairMode = 3 // [Xn, #off]!: Xn += off, then access
)

// LoadPair encodes LDP Rt, Rt2, ... (A64_POP is LoadPair(rt, rt2, SP, 16,
// PostIndex)). off is in bytes, a multiple of the register size in
// -64..63 elements.
func LoadPair(rt, rt2, rn Reg, off int64, mode PairMode) (uint32, error) {
	return ldstPair(true, rt, rt2, rn, off, mode)
}

// StorePair encodes STP Rt, Rt2, ... (A64_PUSH is StorePair(rt, rt2, SP,
// -16, PreIndex)).
func StorePair(rt, rt2, rn Reg, off int64, mode PairMode) (uint32, error) {
	return ldstPair(false, rt, rt2, rn, off, mode)
}

func ldstPair(load bool, rt, rt2, rn Reg, off int64, mode PairMode) (uint32, error) {
	is64 := rt.Is64()
	if err := firstErr(checkZR("rt", rt, is64), checkZR("rt2", rt2, is64), checkBase(rn)); err != nil {
		return 0, err
	}
	if mode < PostIndex || mode > PreIndex {
		return 0, errInval("bad pair addressing mode %d", mode)
	}
	scale := uint(2)
	opc := uint32(0)
	if is64 {
		scale, opc = 3, 2
	}
	if off&(int64(1)<<scale-1) != 0 || off>>scale < -64 || off>>scale > 63 {
		return 0, errInval("pair offset %d is not a multiple of %d in %d..%d", off, 1<<scale, -64<<scale, 63<<scale)
	}
	// The architecture leaves these CONSTRAINED UNPREDICTABLE, so no
	// caller can mean them: a writeback base that is also a data register
	// (SP is exempt: number 31 is then a different register, as in the
	// JIT's "ldp xzr, x26, [sp], #16"), and a load of one register twice.
	if mode != SignedOffset && rn.Num() != 31 && (rn.Num() == rt.Num() || rn.Num() == rt2.Num()) {
		return 0, errInval("pair with writeback: base %v is also a data register", rn)
	}
	if load && rt.Num() == rt2.Num() {
		return 0, errInval("ldp loads %v twice", rt)
	}
	var l uint32
	if load {
		l = 1
	}
	return 0x28000000 | opc<<30 | uint32(mode)<<23 | l<<22 | uint32(off>>scale&0x7f)<<15 |
		rt2.Num()<<10 | rn.Num()<<5 | rt.Num(), nil
}
