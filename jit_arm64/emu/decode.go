package emu

import "math/bits"

// opKind is the operation of a decoded instruction.
type opKind uint8

const (
	opUnknown opKind = iota
	opAddImm
	opSubImm
	opAddReg
	opSubReg
	opLogImm // lop: and, orr, eor, ands
	opLogReg // lop and inv (bic, orn, eon, bics)
	opMovz
	opMovn
	opMovk
	opSbfm
	opBfm
	opUbfm
	opExtr
	opUdiv
	opSdiv
	opLslv
	opLsrv
	opAsrv
	opRorv
	opRbit
	opRev16
	opRev32 // REV32 for X, REV for W
	opRev64
	opClz
	opMadd
	opMsub
	opB
	opBL
	opBCond
	opCbz
	opCbnz
	opBr
	opBlr
	opRet
	opNop
	opBrk
	opMrs
	opAdr
	opAdrp
	opLoad
	opStore
	opLdrLit
	opLdp
	opStp
	opLdxr
	opStxr
	opLdar
	opStlr
	opCas
	opLSE
)

// Logical operations (opc of the logical forms).
const (
	lopAnd  = 0
	lopOrr  = 1
	lopEor  = 2
	lopAnds = 3
)

// Addressing modes of single loads and stores.
const (
	amOffset = iota // [Xn, #imm]
	amPre           // [Xn, #imm]!
	amPost          // [Xn], #imm
	amReg           // [Xn, Xm{, extend #shift}]
)

// Register indices in CPU.R: 0..30 are X0..X30, RegZR reads as zero,
// regDiscard swallows writes to the zero register, RegSP is the stack
// pointer. Decoding maps each 5-bit field to the index its role means, so
// execution never asks whether 31 is ZR or SP.
const (
	RegZR      = 31
	regDiscard = 32
	RegSP      = 33
	numRegs    = 34
)

// inst is one decoded instruction.
type inst struct {
	op       opKind
	sf       bool // 64-bit operation
	setFlags bool
	lop      uint8 // logical op, LSE op, or load extension kind
	inv      bool  // invert the second operand (logical register forms)
	shType   uint8 // shift type of shifted-register operands, or extend option
	amount   uint8 // shift amount, bitfield immr, or extr lsb
	size     uint8 // log2 of the access size
	mode     uint8 // addressing mode
	rd, rn   uint8 // indices into CPU.R
	rm, ra   uint8
	imm      int64  // immediate, offset or branch displacement in bytes
	wmask    uint64 // bitfield masks (ARM DecodeBitMasks)
	tmask    uint64
	word     uint32
}

// Load extension kinds (lop of opLoad).
const (
	extZero = iota // LDR, LDRB, LDRH: zero-extend
	extSX          // LDRS* into an X register
	extSW          // LDRS* into a W register
)

func zr(f uint32) uint8 { // field where 31 is the zero register, read side
	return uint8(f & 31)
}

func zrDst(f uint32) uint8 { // field where 31 is the zero register, write side
	if f&31 == 31 {
		return regDiscard
	}
	return uint8(f & 31)
}

func spReg(f uint32) uint8 { // field where 31 is the stack pointer
	if f&31 == 31 {
		return RegSP
	}
	return uint8(f & 31)
}

func sext(v uint64, width uint) int64 { return int64(v<<(64-width)) >> (64 - width) }

// decodeBitMasks is the architecture's DecodeBitMasks: the wmask and tmask
// of a logical immediate or bitfield instruction, ok=false for a reserved
// encoding.
func decodeBitMasks(n, imms, immr uint32, immediate bool, datasize uint) (wmask, tmask uint64, ok bool) {
	lenBits := 31 - bits.LeadingZeros32((n<<6)|(^imms&0x3f))
	if lenBits < 1 {
		return 0, 0, false
	}
	esize := uint(1) << lenBits
	if esize > datasize {
		return 0, 0, false
	}
	levels := uint32(esize - 1)
	if immediate && imms&levels == levels {
		return 0, 0, false
	}
	s := uint(imms & levels)
	r := uint(immr & levels)
	d := (s - r) & uint(levels)
	emask := uint64(1)<<esize - 1
	if esize == 64 {
		emask = ^uint64(0)
	}
	welem := uint64(1)<<(s+1) - 1
	if s+1 == 64 {
		welem = ^uint64(0)
	}
	telem := uint64(1)<<(d+1) - 1
	if d+1 == 64 {
		telem = ^uint64(0)
	}
	// ROR(welem, r) within esize bits.
	if r != 0 {
		welem = (welem>>r | welem<<(esize-r)) & emask
	}
	for e := esize; e < 64; e *= 2 {
		welem |= welem << e
		telem |= telem << e
	}
	return welem, telem, true
}

// decode turns a word into an inst; an unknown or unsupported word gives
// op == opUnknown.
func decode(w uint32) inst {
	in := inst{word: w, sf: w>>31 == 1}
	rd, rn, rm := w&31, (w>>5)&31, (w>>16)&31
	switch {
	case w&0x1f800000 == 0x11000000: // add/sub immediate
		in.op = opAddImm
		if w>>30&1 == 1 {
			in.op = opSubImm
		}
		in.setFlags = w>>29&1 == 1
		in.imm = int64((w >> 10) & 0xfff)
		if w>>22&1 == 1 {
			in.imm <<= 12
		}
		in.rn = spReg(rn)
		in.rd = spReg(rd)
		if in.setFlags {
			in.rd = zrDst(rd)
		}
	case w&0x1f800000 == 0x12000000: // logical immediate
		n := (w >> 22) & 1
		if !in.sf && n == 1 {
			return inst{word: w}
		}
		ds := uint(32)
		if in.sf {
			ds = 64
		}
		wm, _, ok := decodeBitMasks(n, (w>>10)&0x3f, (w>>16)&0x3f, true, ds)
		if !ok {
			return inst{word: w}
		}
		in.op, in.lop = opLogImm, uint8((w>>29)&3)
		in.imm = int64(wm)
		if !in.sf {
			in.imm = int64(wm & 0xffffffff)
		}
		in.rn = zr(rn)
		in.rd = spReg(rd)
		if in.lop == lopAnds {
			in.rd, in.setFlags = zrDst(rd), true
		}
	case w&0x1f800000 == 0x12800000: // move wide
		hw := (w >> 21) & 3
		if !in.sf && hw > 1 {
			return inst{word: w}
		}
		in.amount = uint8(hw * 16)
		in.imm = int64((w >> 5) & 0xffff)
		in.rd = zrDst(rd)
		switch (w >> 29) & 3 {
		case 0:
			in.op = opMovn
		case 2:
			in.op = opMovz
		case 3:
			in.op = opMovk
		default:
			return inst{word: w}
		}
	case w&0x1f800000 == 0x13000000: // bitfield
		n := (w >> 22) & 1
		if n != w>>31 {
			return inst{word: w}
		}
		ds := uint(32)
		if in.sf {
			ds = 64
		}
		immr, imms := (w>>16)&0x3f, (w>>10)&0x3f
		if !in.sf && (immr > 31 || imms > 31) {
			return inst{word: w}
		}
		wm, tm, ok := decodeBitMasks(n, imms, immr, false, ds)
		if !ok {
			return inst{word: w}
		}
		switch (w >> 29) & 3 {
		case 0:
			in.op = opSbfm
		case 1:
			in.op = opBfm
		case 2:
			in.op = opUbfm
		default:
			return inst{word: w}
		}
		in.wmask, in.tmask = wm, tm
		in.amount = uint8(immr)
		in.imm = int64(imms)
		in.rd, in.rn = zrDst(rd), zr(rn)
	case w&0x7fa00000 == 0x13800000 && w>>22&1 == w>>31: // extr
		lsb := (w >> 10) & 0x3f
		if !in.sf && lsb > 31 {
			return inst{word: w}
		}
		in.op, in.amount = opExtr, uint8(lsb)
		in.rd, in.rn, in.rm = zrDst(rd), zr(rn), zr(rm)
	case w&0x1f000000 == 0x0a000000: // logical shifted register
		amt := (w >> 10) & 0x3f
		if !in.sf && amt > 31 {
			return inst{word: w}
		}
		in.op, in.lop = opLogReg, uint8((w>>29)&3)
		in.inv = w>>21&1 == 1
		in.shType, in.amount = uint8((w>>22)&3), uint8(amt)
		in.rd, in.rn, in.rm = zrDst(rd), zr(rn), zr(rm)
		in.setFlags = in.lop == lopAnds
	case w&0x1f200000 == 0x0b000000: // add/sub shifted register
		amt := (w >> 10) & 0x3f
		sh := (w >> 22) & 3
		if sh == 3 || (!in.sf && amt > 31) {
			return inst{word: w}
		}
		in.op = opAddReg
		if w>>30&1 == 1 {
			in.op = opSubReg
		}
		in.setFlags = w>>29&1 == 1
		in.shType, in.amount = uint8(sh), uint8(amt)
		in.rd, in.rn, in.rm = zrDst(rd), zr(rn), zr(rm)
	case w&0x7fe00000 == 0x1ac00000: // data processing, 2 sources
		in.rd, in.rn, in.rm = zrDst(rd), zr(rn), zr(rm)
		switch (w >> 10) & 0x3f {
		case 2:
			in.op = opUdiv
		case 3:
			in.op = opSdiv
		case 8:
			in.op = opLslv
		case 9:
			in.op = opLsrv
		case 10:
			in.op = opAsrv
		case 11:
			in.op = opRorv
		default:
			return inst{word: w}
		}
	case w&0x7fff0000 == 0x5ac00000: // data processing, 1 source
		in.rd, in.rn = zrDst(rd), zr(rn)
		switch opc := (w >> 10) & 0x3f; {
		case opc == 0:
			in.op = opRbit
		case opc == 1:
			in.op = opRev16
		case opc == 2:
			in.op = opRev32
		case opc == 3 && in.sf:
			in.op = opRev64
		case opc == 4:
			in.op = opClz
		default:
			return inst{word: w}
		}
	case w&0x7fe00000 == 0x1b000000: // madd/msub
		in.op = opMadd
		if w>>15&1 == 1 {
			in.op = opMsub
		}
		in.rd, in.rn, in.rm, in.ra = zrDst(rd), zr(rn), zr(rm), zr((w>>10)&31)
	case w&0x7c000000 == 0x14000000: // b, bl
		in.op = opB
		if w>>31 == 1 {
			in.op = opBL
		}
		in.imm = sext(uint64(w&0x3ffffff), 26) * 4
	case w&0xff000010 == 0x54000000: // b.cond
		in.op, in.lop = opBCond, uint8(w&15)
		in.imm = sext(uint64((w>>5)&0x7ffff), 19) * 4
	case w&0x7e000000 == 0x34000000: // cbz, cbnz
		in.op = opCbz
		if w>>24&1 == 1 {
			in.op = opCbnz
		}
		in.rn = zr(rd)
		in.imm = sext(uint64((w>>5)&0x7ffff), 19) * 4
	case w&0xfffffc1f == 0xd61f0000:
		in.op, in.rn = opBr, zr(rn)
	case w&0xfffffc1f == 0xd63f0000:
		in.op, in.rn = opBlr, zr(rn)
	case w&0xfffffc1f == 0xd65f0000:
		in.op, in.rn = opRet, zr(rn)
	case w&0xfffff01f == 0xd503201f: // hints: nop, bti, paciasp, autiasp
		in.op = opNop
	case w&0xfffff0ff == 0xd50330bf, w&0xfffff0ff == 0xd503309f, // dmb, dsb
		w&0xfffff0ff == 0xd50330df, w == 0xd50330ff: // isb, sb
		in.op = opNop
	case w&0xffe0001f == 0xd4200000:
		in.op, in.imm = opBrk, int64((w>>5)&0xffff)
	case w&0xfff00000 == 0xd5300000:
		in.op, in.rd, in.imm = opMrs, zrDst(rd), int64(w&0xfffe0)
	case w&0x1f000000 == 0x10000000: // adr, adrp
		imm := sext(uint64((w>>5)&0x7ffff)<<2|uint64((w>>29)&3), 21)
		in.op, in.rd, in.imm = opAdr, zrDst(rd), imm
		if w>>31 == 1 {
			in.op, in.imm = opAdrp, imm<<12
		}
	case w&0xbf000000 == 0x18000000: // ldr literal
		in.op, in.rd = opLdrLit, zrDst(rd)
		in.sf = w>>30&1 == 1
		in.imm = sext(uint64((w>>5)&0x7ffff), 19) * 4
	case w&0x3f000000 == 0x39000000, w&0x3f200000 == 0x38000000, w&0x3f200c00 == 0x38200800:
		return decodeLdSt(w)
	case w&0x3e000000 == 0x28000000: // ldp/stp
		return decodePair(w)
	case w&0x3f000000 == 0x08000000: // exclusive, acquire/release, cas
		return decodeExclusive(w)
	case w&0x3f200c00 == 0x38200000: // LSE atomics
		size := w >> 30
		o3, opc := (w>>15)&1, (w>>12)&7
		if size < 2 || (o3 == 1 && opc != 0) || (o3 == 0 && opc > 3) {
			return inst{word: w}
		}
		in.op, in.size = opLSE, uint8(size)
		in.lop = uint8(opc)
		if o3 == 1 {
			in.lop = 8 // swp
		}
		in.sf = size == 3
		in.rm, in.rd, in.rn = zr(rm), zrDst(rd), spReg(rn)
	default:
		return inst{word: w}
	}
	return in
}

func decodeLdSt(w uint32) inst {
	in := inst{word: w}
	size, opc := w>>30, (w>>22)&3
	in.size = uint8(size)
	in.rn = spReg((w >> 5) & 31)
	switch {
	case opc == 0:
		in.op, in.rm = opStore, zr(w&31) // rm holds the data register
	case opc == 1:
		in.op, in.lop = opLoad, extZero
	case size == 3: // prfm and friends
		return inst{word: w}
	case opc == 2:
		in.op, in.lop = opLoad, extSX
	default:
		if size == 2 {
			return inst{word: w}
		}
		in.op, in.lop = opLoad, extSW
	}
	in.rd = zrDst(w & 31)
	switch {
	case w&0x3f000000 == 0x39000000:
		in.mode, in.imm = amOffset, int64((w>>10)&0xfff)<<size
	case w&0x3f200c00 == 0x38200800:
		opt := (w >> 13) & 7
		if opt&2 == 0 {
			return inst{word: w}
		}
		in.mode, in.shType = amReg, uint8(opt)
		in.ra = zr((w >> 16) & 31) // offset register
		if w>>12&1 == 1 {
			in.amount = uint8(size)
		}
	default:
		in.imm = sext(uint64((w>>12)&0x1ff), 9)
		switch (w >> 10) & 3 {
		case 0:
			in.mode = amOffset
		case 1:
			in.mode = amPost
		case 3:
			in.mode = amPre
		default: // unprivileged forms
			return inst{word: w}
		}
		if in.mode != amOffset && in.rn != RegSP && in.op == opLoad && in.rn == uint8(w&31) {
			return inst{word: w} // writeback base is the target: unpredictable
		}
	}
	return in
}

func decodePair(w uint32) inst {
	in := inst{word: w}
	opc, mode, l := w>>30, (w>>23)&3, (w>>22)&1
	if mode == 0 || opc == 3 || (opc == 1 && l == 0) {
		return inst{word: w}
	}
	in.op = opStp
	if l == 1 {
		in.op = opLdp
	}
	in.mode = uint8(mode) // 1 post, 2 offset, 3 pre (PairMode)
	in.size = 2
	if opc == 2 {
		in.size, in.sf = 3, true
	}
	if opc == 1 {
		in.lop = extSX // ldpsw
	}
	in.imm = sext(uint64((w>>15)&0x7f), 7) << in.size
	in.rn = spReg((w >> 5) & 31)
	if l == 1 {
		in.rd, in.ra = zrDst(w&31), zrDst((w>>10)&31)
	} else {
		in.rd, in.ra = zr(w&31), zr((w>>10)&31)
	}
	return in
}

func decodeExclusive(w uint32) inst {
	in := inst{word: w}
	size := w >> 30
	o2, l, o1, o0 := (w>>23)&1, (w>>22)&1, (w>>21)&1, (w>>15)&1
	rs, rt2, rn, rt := (w>>16)&31, (w>>10)&31, (w>>5)&31, w&31
	in.size, in.sf = uint8(size), size == 3
	in.rn = spReg(rn)
	switch {
	case o2 == 0 && o1 == 0 && l == 1 && rs == 31 && rt2 == 31:
		if size < 2 {
			return inst{word: w}
		}
		in.op, in.rd = opLdxr, zrDst(rt)
	case o2 == 0 && o1 == 0 && l == 0 && rt2 == 31:
		if size < 2 || rs == rt || (rs == rn && rn != 31) {
			return inst{word: w}
		}
		in.op, in.rd, in.rm = opStxr, zrDst(rs), zr(rt)
	case o2 == 1 && o1 == 0 && o0 == 1 && rs == 31 && rt2 == 31:
		if l == 1 {
			in.op, in.rd = opLdar, zrDst(rt)
		} else {
			in.op, in.rm = opStlr, zr(rt)
		}
	case o2 == 1 && o1 == 1 && rt2 == 31:
		if size < 2 {
			return inst{word: w}
		}
		in.op, in.ra, in.rd, in.rm = opCas, zr(rs), zrDst(rs), zr(rt)
	default:
		return inst{word: w}
	}
	return in
}
