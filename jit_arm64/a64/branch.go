package a64

// Cond is an A64 condition code.
type Cond uint8

// Condition codes; the comments give the JIT's use after a CMP.
const (
	CondEQ Cond = iota // ==
	CondNE             // !=
	CondCS             // unsigned >= (HS)
	CondCC             // unsigned < (LO)
	CondMI
	CondPL
	CondVS
	CondVC
	CondHI // unsigned >
	CondLS // unsigned <=
	CondGE // signed >=
	CondLT // signed <
	CondGT // signed >
	CondLE // signed <=
	CondAL
	CondNV
)

func (c Cond) String() string {
	return [...]string{"eq", "ne", "cs", "cc", "mi", "pl", "vs", "vc",
		"hi", "ls", "ge", "lt", "gt", "le", "al", "nv"}[c&15]
}

// Invert is the opposite condition: conditions come in pairs that differ
// in the low bit (AL and NV both mean always).
func (c Cond) Invert() Cond { return c ^ 1 }

// checkBranchRange reports whether off (in instructions) fits a signed
// field of the given width (the JIT's check_imm19/check_imm26).
func checkBranchRange(what string, off int64, width uint) error {
	lim := int64(1) << (width - 1)
	if off < -lim || off >= lim {
		return errInval("%s offset %d instructions outside ±%d", what, off, lim)
	}
	return nil
}

// B encodes B <pc+4*off> (A64_B). off is in instructions, ±2^25 (±128 MiB).
func B(off int32) (uint32, error) { return branchImm(0x14000000, off) }

// Bl encodes BL <pc+4*off> (A64_BL).
func Bl(off int32) (uint32, error) { return branchImm(0x94000000, off) }

func branchImm(op uint32, off int32) (uint32, error) {
	if err := checkBranchRange("b/bl", int64(off), 26); err != nil {
		return 0, err
	}
	return op | uint32(off)&0x3ffffff, nil
}

// BCond encodes B.<cond> <pc+4*off> (A64_B_). off is in instructions,
// ±2^18 (±1 MiB).
func BCond(c Cond, off int32) (uint32, error) {
	if c > CondNV {
		return 0, errInval("bad condition %d", c)
	}
	if err := checkBranchRange("b.cond", int64(off), 19); err != nil {
		return 0, err
	}
	return 0x54000000 | (uint32(off)&0x7ffff)<<5 | uint32(c), nil
}

// Cbz encodes CBZ Rt, <pc+4*off> (A64_CBZ).
func Cbz(rt Reg, off int32) (uint32, error) { return compareBranch(0x34000000, rt, off) }

// Cbnz encodes CBNZ Rt, <pc+4*off> (A64_CBNZ).
func Cbnz(rt Reg, off int32) (uint32, error) { return compareBranch(0x35000000, rt, off) }

func compareBranch(op uint32, rt Reg, off int32) (uint32, error) {
	if err := checkZR("rt", rt, rt.Is64()); err != nil {
		return 0, err
	}
	if err := checkBranchRange("cbz/cbnz", int64(off), 19); err != nil {
		return 0, err
	}
	return op | sfBit(rt) | (uint32(off)&0x7ffff)<<5 | rt.Num(), nil
}

func branchReg(op uint32, rn Reg) (uint32, error) {
	if err := checkZR("rn", rn, true); err != nil {
		return 0, err
	}
	return op | rn.Num()<<5, nil
}

// Br encodes BR Xn (A64_BR; the tail call's jump).
func Br(rn Reg) (uint32, error) { return branchReg(0xd61f0000, rn) }

// Blr encodes BLR Xn (A64_BLR; far helper calls).
func Blr(rn Reg) (uint32, error) { return branchReg(0xd63f0000, rn) }

// Ret encodes RET Xn (A64_RET; RET X30 is the plain "ret").
func Ret(rn Reg) (uint32, error) { return branchReg(0xd65f0000, rn) }

// Adr encodes ADR Xd, <pc+off>: off in bytes, ±1 MiB (A64_ADR).
func Adr(rd Reg, off int64) (uint32, error) {
	if err := checkZR("rd", rd, true); err != nil {
		return 0, err
	}
	if off < -1<<20 || off >= 1<<20 {
		return 0, errInval("adr offset %d outside ±1 MiB", off)
	}
	return pcRelAddr(0x10000000, rd, off), nil
}

// Adrp encodes ADRP Xd, <page(pc)+pages*4096>: pages in ±2^20.
func Adrp(rd Reg, pages int64) (uint32, error) {
	if err := checkZR("rd", rd, true); err != nil {
		return 0, err
	}
	if pages < -1<<20 || pages >= 1<<20 {
		return 0, errInval("adrp page offset %d outside ±2^20", pages)
	}
	return pcRelAddr(0x90000000, rd, pages), nil
}

func pcRelAddr(op uint32, rd Reg, imm int64) uint32 {
	u := uint32(imm) & 0x1fffff
	return op | (u&3)<<29 | (u>>2)<<5 | rd.Num()
}
