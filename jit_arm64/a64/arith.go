package a64

import "math/bits"

// Shift is the shift applied to the second register of a shifted-register
// instruction.
type Shift uint8

// Shift types, in their encoding order. ROR is valid only for the logical
// instructions.
const (
	LSL Shift = iota
	LSR
	ASR
	ROR
)

func (s Shift) String() string {
	switch s {
	case LSL:
		return "lsl"
	case LSR:
		return "lsr"
	case ASR:
		return "asr"
	case ROR:
		return "ror"
	}
	return "shift?"
}

// ---- Add/subtract (immediate) ----

const (
	opAddImm  = 0x11000000
	opAddsImm = 0x31000000
	opSubImm  = 0x51000000
	opSubsImm = 0x71000000
)

// IsAddSubImm reports whether imm fits an add/subtract immediate: a 12-bit
// value, or a 12-bit value shifted left by 12 (the JIT's is_addsub_imm).
func IsAddSubImm(imm int64) bool {
	return imm >= 0 && (imm&^0xfff == 0 || imm&^0xfff000 == 0)
}

// addSubImm encodes ADD/ADDS/SUB/SUBS (immediate). The flag-setting forms
// take the zero register as destination (CMP/CMN), the others the stack
// pointer; the first source is always SP-capable.
func addSubImm(op uint32, setFlags bool, rd, rn Reg, imm int64) (uint32, error) {
	is64 := rd.Is64()
	var err error
	if setFlags {
		err = checkZR("rd", rd, is64)
	} else {
		err = checkSP("rd", rd, is64)
	}
	if err = firstErr(err, checkSP("rn", rn, is64)); err != nil {
		return 0, err
	}
	if !IsAddSubImm(imm) {
		return 0, errInval("add/sub immediate %#x is neither imm12 nor imm12<<12", imm)
	}
	var sh uint32
	if imm > 0xfff {
		sh, imm = 1, imm>>12
	}
	return op | sfBit(rd) | sh<<22 | uint32(imm)<<10 | rn.Num()<<5 | rd.Num(), nil
}

// AddImm encodes ADD Rd, Rn, #imm (A64_ADD_I). imm is 0..4095 or a
// multiple of 4096 up to 0xfff000.
func AddImm(rd, rn Reg, imm int64) (uint32, error) { return addSubImm(opAddImm, false, rd, rn, imm) }

// SubImm encodes SUB Rd, Rn, #imm (A64_SUB_I).
func SubImm(rd, rn Reg, imm int64) (uint32, error) { return addSubImm(opSubImm, false, rd, rn, imm) }

// AddsImm encodes ADDS Rd, Rn, #imm (A64_ADDS_I).
func AddsImm(rd, rn Reg, imm int64) (uint32, error) {
	return addSubImm(opAddsImm, true, rd, rn, imm)
}

// SubsImm encodes SUBS Rd, Rn, #imm (A64_SUBS_I).
func SubsImm(rd, rn Reg, imm int64) (uint32, error) {
	return addSubImm(opSubsImm, true, rd, rn, imm)
}

// CmpImm encodes CMP Rn, #imm = SUBS ZR, Rn, #imm (A64_CMP_I).
func CmpImm(rn Reg, imm int64) (uint32, error) { return SubsImm(zrOf(rn), rn, imm) }

// CmnImm encodes CMN Rn, #imm = ADDS ZR, Rn, #imm (A64_CMN_I).
func CmnImm(rn Reg, imm int64) (uint32, error) { return AddsImm(zrOf(rn), rn, imm) }

// Mov encodes the kernel's A64_MOV: ADD Rd, Rn, #0. Unlike the ORR alias it
// accepts SP on either side (mov x29, sp / mov x25, sp in the prologue).
func Mov(rd, rn Reg) (uint32, error) { return AddImm(rd, rn, 0) }

// zrOf is the zero register of r's width.
func zrOf(r Reg) Reg {
	if r.Is64() {
		return XZR
	}
	return WZR
}

// ---- Add/subtract (shifted register) ----

const (
	opAddReg  = 0x0b000000
	opAddsReg = 0x2b000000
	opSubReg  = 0x4b000000
	opSubsReg = 0x6b000000
)

func addSubShifted(op uint32, rd, rn, rm Reg, sh Shift, amount uint) (uint32, error) {
	is64 := rd.Is64()
	if err := firstErr(checkZR("rd", rd, is64), checkZR("rn", rn, is64), checkZR("rm", rm, is64)); err != nil {
		return 0, err
	}
	if sh > ASR {
		return 0, errInval("add/sub shifted register: %v not allowed", sh)
	}
	if err := checkShiftAmount(is64, amount); err != nil {
		return 0, err
	}
	return op | sfBit(rd) | uint32(sh)<<22 | rm.Num()<<16 | uint32(amount)<<10 | rn.Num()<<5 | rd.Num(), nil
}

func checkShiftAmount(is64 bool, amount uint) error {
	if (is64 && amount > 63) || (!is64 && amount > 31) {
		return errInval("shift amount %d out of range", amount)
	}
	return nil
}

// Add encodes ADD Rd, Rn, Rm (A64_ADD).
func Add(rd, rn, rm Reg) (uint32, error) { return addSubShifted(opAddReg, rd, rn, rm, LSL, 0) }

// Sub encodes SUB Rd, Rn, Rm (A64_SUB).
func Sub(rd, rn, rm Reg) (uint32, error) { return addSubShifted(opSubReg, rd, rn, rm, LSL, 0) }

// Adds encodes ADDS Rd, Rn, Rm.
func Adds(rd, rn, rm Reg) (uint32, error) { return addSubShifted(opAddsReg, rd, rn, rm, LSL, 0) }

// Subs encodes SUBS Rd, Rn, Rm (A64_SUBS).
func Subs(rd, rn, rm Reg) (uint32, error) { return addSubShifted(opSubsReg, rd, rn, rm, LSL, 0) }

// AddShifted encodes ADD Rd, Rn, Rm, <shift> #amount (LSL, LSR or ASR).
func AddShifted(rd, rn, rm Reg, sh Shift, amount uint) (uint32, error) {
	return addSubShifted(opAddReg, rd, rn, rm, sh, amount)
}

// SubShifted encodes SUB Rd, Rn, Rm, <shift> #amount.
func SubShifted(rd, rn, rm Reg, sh Shift, amount uint) (uint32, error) {
	return addSubShifted(opSubReg, rd, rn, rm, sh, amount)
}

// Neg encodes NEG Rd, Rm = SUB Rd, ZR, Rm (A64_NEG).
func Neg(rd, rm Reg) (uint32, error) { return Sub(rd, zrOf(rd), rm) }

// Cmp encodes CMP Rn, Rm = SUBS ZR, Rn, Rm (A64_CMP).
func Cmp(rn, rm Reg) (uint32, error) { return Subs(zrOf(rn), rn, rm) }

// Cmn encodes CMN Rn, Rm = ADDS ZR, Rn, Rm.
func Cmn(rn, rm Reg) (uint32, error) { return Adds(zrOf(rn), rn, rm) }

// ---- Logical (shifted register) ----

// LogicOp selects a logical instruction. The N bit (inverting Rm) is part
// of the value: BIC, ORN, EON and BICS are AND, ORR, EOR and ANDS with N=1.
type LogicOp uint8

// Logical operations in encoding order (opc, then N).
const (
	AND LogicOp = iota
	ORR
	EOR
	ANDS
	BIC
	ORN
	EON
	BICS
)

func (op LogicOp) String() string {
	return [...]string{"and", "orr", "eor", "ands", "bic", "orn", "eon", "bics"}[op&7]
}

// LogicShifted encodes <op> Rd, Rn, Rm, <shift> #amount (the kernel's
// aarch64_insn_gen_logical_shifted_reg).
func LogicShifted(op LogicOp, rd, rn, rm Reg, sh Shift, amount uint) (uint32, error) {
	is64 := rd.Is64()
	if err := firstErr(checkZR("rd", rd, is64), checkZR("rn", rn, is64), checkZR("rm", rm, is64)); err != nil {
		return 0, err
	}
	if op > BICS || sh > ROR {
		return 0, errInval("logical shifted register: bad operation %d or shift %d", op, sh)
	}
	if err := checkShiftAmount(is64, amount); err != nil {
		return 0, err
	}
	opc, n := uint32(op&3), uint32(op>>2)
	return 0x0a000000 | sfBit(rd) | opc<<29 | uint32(sh)<<22 | n<<21 | rm.Num()<<16 |
		uint32(amount)<<10 | rn.Num()<<5 | rd.Num(), nil
}

// And encodes AND Rd, Rn, Rm (A64_AND).
func And(rd, rn, rm Reg) (uint32, error) { return LogicShifted(AND, rd, rn, rm, LSL, 0) }

// Orr encodes ORR Rd, Rn, Rm (A64_ORR).
func Orr(rd, rn, rm Reg) (uint32, error) { return LogicShifted(ORR, rd, rn, rm, LSL, 0) }

// Eor encodes EOR Rd, Rn, Rm (A64_EOR).
func Eor(rd, rn, rm Reg) (uint32, error) { return LogicShifted(EOR, rd, rn, rm, LSL, 0) }

// Ands encodes ANDS Rd, Rn, Rm (A64_ANDS).
func Ands(rd, rn, rm Reg) (uint32, error) { return LogicShifted(ANDS, rd, rn, rm, LSL, 0) }

// Bic encodes BIC Rd, Rn, Rm.
func Bic(rd, rn, rm Reg) (uint32, error) { return LogicShifted(BIC, rd, rn, rm, LSL, 0) }

// Orn encodes ORN Rd, Rn, Rm.
func Orn(rd, rn, rm Reg) (uint32, error) { return LogicShifted(ORN, rd, rn, rm, LSL, 0) }

// Tst encodes TST Rn, Rm = ANDS ZR, Rn, Rm (A64_TST).
func Tst(rn, rm Reg) (uint32, error) { return Ands(zrOf(rn), rn, rm) }

// Mvn encodes MVN Rd, Rm = ORN Rd, ZR, Rm (A64_MVN).
func Mvn(rd, rm Reg) (uint32, error) { return Orn(rd, zrOf(rd), rm) }

// MovReg encodes MOV Rd, Rm = ORR Rd, ZR, Rm: the register move that
// cannot involve SP (see Mov for the kernel's ADD #0 form).
func MovReg(rd, rm Reg) (uint32, error) { return Orr(rd, zrOf(rd), rm) }

// ---- Logical (immediate) ----

// EncodeBitmask returns the N:immr:imms fields for imm as a logical
// immediate of the given width, or ok=false when imm is not a bitmask
// immediate. It follows the kernel's rules (aarch64_encode_immediate): zero,
// all ones, and for 32 bits any value with bits above bit 31 are
// unencodable; otherwise imm must be a power-of-two-sized element (2..64
// bits) replicated across the register, each element a rotated run of
// ones.
func EncodeBitmask(imm uint64, is64 bool) (n, immr, imms uint32, ok bool) {
	esz := uint(64)
	mask := ^uint64(0)
	if !is64 {
		esz, mask = 32, 0xffffffff
	}
	if imm == 0 || imm == mask || imm&^mask != 0 {
		return 0, 0, 0, false
	}
	// Find the smallest element size whose replication gives imm.
	for half := esz / 2; half >= 2; half /= 2 {
		emask := uint64(1)<<half - 1
		if imm&emask != (imm>>half)&emask {
			break
		}
		esz, mask = half, emask
	}
	elem := imm & mask
	ones := uint(bits.OnesCount64(elem))
	// Rotate the element right until its run of ones starts at bit 0:
	// the rotation that does so is the one the instruction undoes.
	var ror uint
	if isRun(elem) {
		ror = uint(bits.TrailingZeros64(elem))
	} else {
		// A run that wraps around the element: the zeros form the run
		// instead; the ones start just above them.
		inv := ^elem & mask
		if !isRun(inv) {
			return 0, 0, 0, false
		}
		ror = uint(64 - bits.LeadingZeros64(inv))
	}
	immr = uint32((esz - ror) % esz)
	// imms: a prefix pattern that gives the element size (1..10 → 0b11110x
	// for 2 bits, ..., 0b0xxxxx for 32) followed by ones-1.
	imms = uint32(((^(esz*2 - 1)) | (ones - 1)) & 0x3f)
	if esz == 64 {
		n = 1
		imms = uint32(ones - 1)
	}
	return n, immr, imms, true
}

// isRun reports whether v (non-zero) is one contiguous run of ones.
func isRun(v uint64) bool {
	if v == 0 {
		return false
	}
	v >>= uint(bits.TrailingZeros64(v))
	return v&(v+1) == 0
}

// IsBitmaskImm reports whether imm is encodable as a logical immediate of
// the given width.
func IsBitmaskImm(imm uint64, is64 bool) bool {
	_, _, _, ok := EncodeBitmask(imm, is64)
	return ok
}

// LogicImm encodes AND/ORR/EOR/ANDS Rd, Rn, #imm (the kernel's
// aarch64_insn_gen_logical_immediate). For W registers imm must fit in 32
// bits: the JIT passes (u64)(u32)imm for 32-bit operations. The
// non-flag-setting forms may write SP; ANDS writes the zero register.
func LogicImm(op LogicOp, rd, rn Reg, imm uint64) (uint32, error) {
	is64 := rd.Is64()
	if op > ANDS {
		return 0, errInval("logical immediate: %v has no immediate form", op)
	}
	var err error
	if op == ANDS {
		err = checkZR("rd", rd, is64)
	} else {
		err = checkSP("rd", rd, is64)
	}
	if err = firstErr(err, checkZR("rn", rn, is64)); err != nil {
		return 0, err
	}
	n, immr, imms, ok := EncodeBitmask(imm, is64)
	if !ok {
		return 0, errInval("%#x is not a %d-bit bitmask immediate", imm, map[bool]int{false: 32, true: 64}[is64])
	}
	return 0x12000000 | sfBit(rd) | uint32(op)<<29 | n<<22 | immr<<16 | imms<<10 | rn.Num()<<5 | rd.Num(), nil
}

// AndImm encodes AND Rd, Rn, #imm (A64_AND_I).
func AndImm(rd, rn Reg, imm uint64) (uint32, error) { return LogicImm(AND, rd, rn, imm) }

// OrrImm encodes ORR Rd, Rn, #imm (A64_ORR_I).
func OrrImm(rd, rn Reg, imm uint64) (uint32, error) { return LogicImm(ORR, rd, rn, imm) }

// EorImm encodes EOR Rd, Rn, #imm (A64_EOR_I).
func EorImm(rd, rn Reg, imm uint64) (uint32, error) { return LogicImm(EOR, rd, rn, imm) }

// AndsImm encodes ANDS Rd, Rn, #imm (A64_ANDS_I).
func AndsImm(rd, rn Reg, imm uint64) (uint32, error) { return LogicImm(ANDS, rd, rn, imm) }

// TstImm encodes TST Rn, #imm = ANDS ZR, Rn, #imm (A64_TST_I).
func TstImm(rn Reg, imm uint64) (uint32, error) { return AndsImm(zrOf(rn), rn, imm) }
