package a64_test

// The instruction forms under test. Each form turns generic operands
// (register numbers, a width, an immediate, a selector) into a call of the
// encoder and the text a GNU-syntax disassembler must print for the word.
// The text is built here from the operands and the alias rules of the Arm
// Architecture Reference Manual (which alias a disassembler prefers), never
// from the encoder's output, so a wrong bit in the encoder shows up as a
// text mismatch. The table tests feed every form the edge operands; the
// fuzz test feeds it random ones.

import (
	"fmt"
	"math/bits"
	"strings"

	"github.com/bpfsim/bpfsim/jit_arm64/a64"
)

// params are the generic operands; forms map them into their valid ranges.
type params struct {
	r    [4]int // register numbers 0..31
	is64 bool
	imm  int64
	sel  int // form-specific: shift type, access size, order, condition...
}

// goUnknown marks forms golang.org/x/arch/arm64/arm64asm cannot decode
// (LSE atomics, SB): those are checked by GNU objdump and by the field
// decoder of decode_test.go.
const goUnknown = "<unknown to arm64asm>"

// expect is what a form produced for one set of operands.
type expect struct {
	word uint32
	err  error
	gnu  string // GNU objdump text; "<T>" stands for a PC-relative target
	// goText is arm64asm's text when it differs from objdump's (named
	// hints and system registers, b.nv), or goUnknown.
	goText string
	// rel is the PC-relative offset in bytes for "<T>"; for ADRP it is
	// relative to the page of the PC (page is set).
	rel  int64
	page bool
}

type form struct {
	name  string
	edges []int64 // immediates the table test tries (in the form's own units)
	sels  int     // selector values the table test tries: 0..sels-1
	gen   func(p params) expect
}

// ---- operand helpers ----

func zrReg(n int, is64 bool) a64.Reg {
	if is64 {
		return a64.X(n)
	}
	return a64.W(n)
}

func spReg(n int, is64 bool) a64.Reg {
	if n&31 == 31 {
		if is64 {
			return a64.SP
		}
		return a64.WSP
	}
	return zrReg(n, is64)
}

func zrName(n int, is64 bool) string {
	n &= 31
	switch {
	case n == 31 && is64:
		return "xzr"
	case n == 31:
		return "wzr"
	case is64:
		return fmt.Sprintf("x%d", n)
	}
	return fmt.Sprintf("w%d", n)
}

func spName(n int, is64 bool) string {
	if n&31 == 31 {
		if is64 {
			return "sp"
		}
		return "wsp"
	}
	return zrName(n, is64)
}

// mod is the non-negative remainder.
func mod(v, n int64) int64 {
	v %= n
	if v < 0 {
		v += n
	}
	return v
}

// srange maps v into lo..hi.
func srange(v, lo, hi int64) int64 { return lo + mod(v-lo, hi-lo+1) }

func width(is64 bool) int64 {
	if is64 {
		return 64
	}
	return 32
}

func mask(is64 bool) uint64 {
	if is64 {
		return ^uint64(0)
	}
	return 0xffffffff
}

func w(word uint32, err error) expect { return expect{word: word, err: err} }

func (e expect) text(format string, args ...any) expect {
	e.gnu = fmt.Sprintf(format, args...)
	return e
}

func (e expect) goSays(s string) expect {
	e.goText = s
	return e
}

func shiftSuffix(sh a64.Shift, amount int64) string {
	if sh == a64.LSL && amount == 0 {
		return ""
	}
	return fmt.Sprintf(", %v #%d", sh, amount)
}

// singleHalfword reports whether v has at most one non-zero halfword
// (16-bit aligned), i.e. one MOVZ makes it.
func singleHalfword(v uint64) bool {
	n := 0
	for s := 0; s < 64; s += 16 {
		if (v>>s)&0xffff != 0 {
			n++
		}
	}
	return n <= 1
}

// bitmaskValues lists, per width, every value a logical immediate can take,
// computed with the manual's DecodeBitMasks over all N:immr:imms (see
// decodeBitMasks in decode_test.go).
var bitmaskValues = func() map[bool][]uint64 {
	out := map[bool][]uint64{}
	for _, is64 := range []bool{false, true} {
		seen := map[uint64]bool{}
		for n := 0; n < 2; n++ {
			for immr := 0; immr < 64; immr++ {
				for imms := 0; imms < 64; imms++ {
					if v, ok := decodeBitMasks(n, imms, immr, is64); ok && !seen[v] {
						seen[v] = true
						out[is64] = append(out[is64], v)
					}
				}
			}
		}
	}
	return out
}()

// bitmaskFields maps each logical-immediate value to an N, immr, imms
// that encode it (unique when the element is the whole register, the only
// case moveWidePreferred looks at).
var bitmaskFields = func() map[bool]map[uint64][3]int {
	out := map[bool]map[uint64][3]int{false: {}, true: {}}
	for _, is64 := range []bool{false, true} {
		for n := 0; n < 2; n++ {
			for immr := 0; immr < 64; immr++ {
				for imms := 0; imms < 64; imms++ {
					if v, ok := decodeBitMasks(n, imms, immr, is64); ok {
						if _, dup := out[is64][v]; !dup {
							out[is64][v] = [3]int{n, immr, imms}
						}
					}
				}
			}
		}
	}
	return out
}()

// moveWidePreferred is the manual's MoveWidePreferred(sf, immN, imms,
// immr): whether a MOVZ or MOVN is the preferred disassembly of an ORR
// (immediate) from the zero register.
func moveWidePreferred(is64 bool, n, immr, imms int) bool {
	wd := int(width(is64))
	if is64 && n != 1 {
		return false
	}
	if !is64 && (n != 0 || imms&0x20 != 0) {
		return false
	}
	if imms < 16 {
		return (-immr)&15 <= 15-imms
	}
	if imms >= wd-15 {
		return immr%16 <= imms-(wd-15)
	}
	return false
}

// ---- the forms ----

var forms = buildForms()

func buildForms() []form {
	var fs []form
	add := func(f form) { fs = append(fs, f) }
	regEdges := []int64{0}

	// Add/subtract (immediate). sel&1: shifted by 12.
	for _, op := range []struct {
		name string
		enc  func(rd, rn a64.Reg, imm int64) (uint32, error)
		sub  bool
		s    bool
	}{{"add", a64.AddImm, false, false}, {"sub", a64.SubImm, true, false},
		{"adds", a64.AddsImm, false, true}, {"subs", a64.SubsImm, true, true}} {
		op := op
		add(form{name: op.name + "-imm", edges: []int64{0, 1, 0x7ff, 0xfff}, sels: 2, gen: func(p params) expect {
			imm := mod(p.imm, 0x1000)
			if p.sel&1 == 1 && imm != 0 {
				imm <<= 12
			}
			var rd a64.Reg
			var rdName string
			if op.s {
				rd, rdName = zrReg(p.r[0], p.is64), zrName(p.r[0], p.is64)
			} else {
				rd, rdName = spReg(p.r[0], p.is64), spName(p.r[0], p.is64)
			}
			rn, rnName := spReg(p.r[1], p.is64), spName(p.r[1], p.is64)
			e := w(op.enc(rd, rn, imm))
			immText := fmt.Sprintf("#%#x", imm)
			if imm > 0xfff {
				immText = fmt.Sprintf("#%#x, lsl #12", imm>>12)
			}
			switch {
			case !op.s && !op.sub && imm == 0 && (p.r[0]&31 == 31 || p.r[1]&31 == 31):
				return e.text("mov %s, %s", rdName, rnName)
			case op.s && p.r[0]&31 == 31:
				return e.text("%s %s, %s", map[bool]string{false: "cmn", true: "cmp"}[op.sub], rnName, immText)
			}
			return e.text("%s %s, %s, %s", op.name, rdName, rnName, immText)
		}})
	}
	add(form{name: "cmp-imm", edges: []int64{0, 33, 0xfff}, gen: func(p params) expect {
		imm := mod(p.imm, 0x1000)
		return w(a64.CmpImm(spReg(p.r[1], p.is64), imm)).text("cmp %s, #%#x", spName(p.r[1], p.is64), imm)
	}})
	add(form{name: "mov-sp", edges: regEdges, gen: func(p params) expect {
		rd, rn := spReg(p.r[0], p.is64), spReg(p.r[1], p.is64)
		e := w(a64.Mov(rd, rn))
		if p.r[0]&31 == 31 || p.r[1]&31 == 31 {
			return e.text("mov %s, %s", spName(p.r[0], p.is64), spName(p.r[1], p.is64))
		}
		return e.text("add %s, %s, #0x0", spName(p.r[0], p.is64), spName(p.r[1], p.is64))
	}})

	// Add/subtract (shifted register). sel: shift type (LSL, LSR, ASR).
	for _, op := range []struct {
		name string
		enc  func(rd, rn, rm a64.Reg, sh a64.Shift, amount uint) (uint32, error)
	}{{"add", a64.AddShifted}, {"sub", a64.SubShifted}} {
		op := op
		add(form{name: op.name + "-shifted", edges: []int64{0, 1, 31, 63}, sels: 3, gen: func(p params) expect {
			sh := a64.Shift(p.sel % 3)
			amount := mod(p.imm, width(p.is64))
			d, n, m := zrName(p.r[0], p.is64), zrName(p.r[1], p.is64), zrName(p.r[2], p.is64)
			e := w(op.enc(zrReg(p.r[0], p.is64), zrReg(p.r[1], p.is64), zrReg(p.r[2], p.is64), sh, uint(amount)))
			if op.name == "sub" && p.r[1]&31 == 31 {
				return e.text("neg %s, %s%s", d, m, shiftSuffix(sh, amount))
			}
			return e.text("%s %s, %s, %s%s", op.name, d, n, m, shiftSuffix(sh, amount))
		}})
	}
	for _, op := range []struct {
		name string
		enc  func(rd, rn, rm a64.Reg) (uint32, error)
	}{{"add", a64.Add}, {"sub", a64.Sub}, {"adds", a64.Adds}, {"subs", a64.Subs}} {
		op := op
		add(form{name: op.name + "-reg", edges: regEdges, gen: func(p params) expect {
			d, n, m := zrName(p.r[0], p.is64), zrName(p.r[1], p.is64), zrName(p.r[2], p.is64)
			e := w(op.enc(zrReg(p.r[0], p.is64), zrReg(p.r[1], p.is64), zrReg(p.r[2], p.is64)))
			rd31, rn31 := p.r[0]&31 == 31, p.r[1]&31 == 31
			switch {
			case op.name == "sub" && rn31:
				return e.text("neg %s, %s", d, m)
			case op.name == "subs" && rd31:
				return e.text("cmp %s, %s", n, m)
			case op.name == "subs" && rn31:
				return e.text("negs %s, %s", d, m)
			case op.name == "adds" && rd31:
				return e.text("cmn %s, %s", n, m)
			}
			return e.text("%s %s, %s, %s", op.name, d, n, m)
		}})
	}
	add(form{name: "neg", edges: regEdges, gen: func(p params) expect {
		return w(a64.Neg(zrReg(p.r[0], p.is64), zrReg(p.r[2], p.is64))).
			text("neg %s, %s", zrName(p.r[0], p.is64), zrName(p.r[2], p.is64))
	}})
	add(form{name: "cmp", edges: regEdges, gen: func(p params) expect {
		return w(a64.Cmp(zrReg(p.r[1], p.is64), zrReg(p.r[2], p.is64))).
			text("cmp %s, %s", zrName(p.r[1], p.is64), zrName(p.r[2], p.is64))
	}})
	add(form{name: "cmn", edges: regEdges, gen: func(p params) expect {
		return w(a64.Cmn(zrReg(p.r[1], p.is64), zrReg(p.r[2], p.is64))).
			text("cmn %s, %s", zrName(p.r[1], p.is64), zrName(p.r[2], p.is64))
	}})

	// Logical (shifted register). sel: operation (8) x shift (4).
	add(form{name: "logic-shifted", edges: []int64{0, 1, 31, 63}, sels: 32, gen: func(p params) expect {
		op, sh := a64.LogicOp(p.sel%8), a64.Shift(p.sel/8%4)
		amount := mod(p.imm, width(p.is64))
		d, n, m := zrName(p.r[0], p.is64), zrName(p.r[1], p.is64), zrName(p.r[2], p.is64)
		e := w(a64.LogicShifted(op, zrReg(p.r[0], p.is64), zrReg(p.r[1], p.is64), zrReg(p.r[2], p.is64), sh, uint(amount)))
		suffix := shiftSuffix(sh, amount)
		switch {
		case op == a64.ORR && p.r[1]&31 == 31 && suffix == "":
			return e.text("mov %s, %s", d, m)
		case op == a64.ORN && p.r[1]&31 == 31:
			return e.text("mvn %s, %s%s", d, m, suffix)
		case op == a64.ANDS && p.r[0]&31 == 31:
			return e.text("tst %s, %s%s", n, m, suffix)
		}
		return e.text("%v %s, %s, %s%s", op, d, n, m, suffix)
	}})
	for _, op := range []struct {
		name string
		enc  func(rd, rn, rm a64.Reg) (uint32, error)
	}{{"and", a64.And}, {"orr", a64.Orr}, {"eor", a64.Eor}, {"ands", a64.Ands}, {"bic", a64.Bic}, {"orn", a64.Orn}} {
		op := op
		add(form{name: op.name + "-reg", edges: regEdges, gen: func(p params) expect {
			d, n, m := zrName(p.r[0], p.is64), zrName(p.r[1], p.is64), zrName(p.r[2], p.is64)
			e := w(op.enc(zrReg(p.r[0], p.is64), zrReg(p.r[1], p.is64), zrReg(p.r[2], p.is64)))
			switch {
			case op.name == "orr" && p.r[1]&31 == 31:
				return e.text("mov %s, %s", d, m)
			case op.name == "orn" && p.r[1]&31 == 31:
				return e.text("mvn %s, %s", d, m)
			case op.name == "ands" && p.r[0]&31 == 31:
				return e.text("tst %s, %s", n, m)
			}
			return e.text("%s %s, %s, %s", op.name, d, n, m)
		}})
	}
	add(form{name: "tst", edges: regEdges, gen: func(p params) expect {
		return w(a64.Tst(zrReg(p.r[1], p.is64), zrReg(p.r[2], p.is64))).
			text("tst %s, %s", zrName(p.r[1], p.is64), zrName(p.r[2], p.is64))
	}})
	add(form{name: "mvn", edges: regEdges, gen: func(p params) expect {
		return w(a64.Mvn(zrReg(p.r[0], p.is64), zrReg(p.r[2], p.is64))).
			text("mvn %s, %s", zrName(p.r[0], p.is64), zrName(p.r[2], p.is64))
	}})
	add(form{name: "mov-reg", edges: regEdges, gen: func(p params) expect {
		return w(a64.MovReg(zrReg(p.r[0], p.is64), zrReg(p.r[2], p.is64))).
			text("mov %s, %s", zrName(p.r[0], p.is64), zrName(p.r[2], p.is64))
	}})

	// Logical (immediate): imm indexes the list of all bitmask values.
	// sel: operation.
	add(form{name: "logic-imm", edges: []int64{0, 1, 2, 100, 1000, 2000, 2600, -1}, sels: 4, gen: func(p params) expect {
		vals := bitmaskValues[p.is64]
		v := vals[mod(p.imm, int64(len(vals)))]
		op := a64.LogicOp(p.sel % 4)
		var rd a64.Reg
		var d string
		if op == a64.ANDS {
			rd, d = zrReg(p.r[0], p.is64), zrName(p.r[0], p.is64)
		} else {
			rd, d = spReg(p.r[0], p.is64), spName(p.r[0], p.is64)
		}
		n := zrName(p.r[1], p.is64)
		e := w(a64.LogicImm(op, rd, zrReg(p.r[1], p.is64), v))
		switch {
		case op == a64.ANDS && p.r[0]&31 == 31:
			return e.text("tst %s, #%#x", n, v)
		case op == a64.ORR && p.r[1]&31 == 31:
			// MOV (bitmask immediate), unless a MOVZ/MOVN would be the
			// preferred form. The two disassemblers disagree on when:
			// objdump asks whether one MOVZ or MOVN makes the value
			// (never, for SP as destination), arm64asm applies the
			// manual's MoveWidePreferred, which is stricter about
			// halfword boundaries.
			orr := fmt.Sprintf("orr %s, %s, #%#x", d, n, v)
			mov := fmt.Sprintf("mov %s, #%#x", d, v)
			e = e.text("%s", orr)
			if p.r[0]&31 == 31 || (!singleHalfword(v) && !singleHalfword(^v&mask(p.is64))) {
				e = e.text("%s", mov)
			}
			f := bitmaskFields[p.is64][v]
			if !moveWidePreferred(p.is64, f[0], f[1], f[2]) {
				return e.goSays(mov)
			}
			return e.goSays(orr)
		}
		return e.text("%v %s, %s, #%#x", op, d, n, v)
	}})
	add(form{name: "tst-imm", edges: []int64{0, 1, 7, 1234}, gen: func(p params) expect {
		vals := bitmaskValues[p.is64]
		v := vals[mod(p.imm, int64(len(vals)))]
		return w(a64.TstImm(zrReg(p.r[1], p.is64), v)).text("tst %s, #%#x", zrName(p.r[1], p.is64), v)
	}})

	// Bitfield moves with every alias. imm packs immr (low 6 bits) and
	// imms (next 6); sel: SBFM, BFM, UBFM.
	add(form{name: "bitfield", edges: []int64{0, 7, 15, 31, 63, 31 << 6, 7 << 6, 15 << 6, 63 << 6, 3 | 2<<6, 2 | 3<<6, 1 | 0<<6, 32 | 31<<6, 60 | 2<<6},
		sels: 3, gen: func(p params) expect {
			wd := width(p.is64)
			immr, imms := mod(p.imm, wd), mod(p.imm>>6, wd)
			d, n := zrName(p.r[0], p.is64), zrName(p.r[1], p.is64)
			rd, rn := zrReg(p.r[0], p.is64), zrReg(p.r[1], p.is64)
			switch p.sel % 3 {
			case 0:
				e := w(a64.Sbfm(rd, rn, uint(immr), uint(imms)))
				return e.text("%s", sbfmText(p.is64, d, p.r[1], immr, imms))
			case 1:
				e := w(a64.Bfm(rd, rn, uint(immr), uint(imms)))
				e = e.text("%s", bfmText(p.is64, d, n, p.r[1], immr, imms))
				if imms < immr && p.r[1]&31 == 31 {
					// arm64asm predates BFC (ARMv8.2) and prints the BFM.
					e = e.goSays(fmt.Sprintf("bfm %s, %s, #%#x, #%d", d, n, immr, imms))
				}
				return e
			}
			e := w(a64.Ubfm(rd, rn, uint(immr), uint(imms)))
			return e.text("%s", ubfmText(p.is64, d, n, immr, imms))
		}})
	add(form{name: "shift-imm", edges: []int64{0, 1, 3, 31, 32, 63}, sels: 4, gen: func(p params) expect {
		sh := mod(p.imm, width(p.is64))
		d, n := zrName(p.r[0], p.is64), zrName(p.r[1], p.is64)
		rd, rn := zrReg(p.r[0], p.is64), zrReg(p.r[1], p.is64)
		switch p.sel % 4 {
		case 0:
			e := w(a64.LslImm(rd, rn, uint(sh)))
			if sh == 0 { // UBFM #0, #size-1 is LSR #0
				return e.text("lsr %s, %s, #0", d, n)
			}
			return e.text("lsl %s, %s, #%d", d, n, sh)
		case 1:
			return w(a64.LsrImm(rd, rn, uint(sh))).text("lsr %s, %s, #%d", d, n, sh)
		case 2:
			return w(a64.AsrImm(rd, rn, uint(sh))).text("asr %s, %s, #%d", d, n, sh)
		}
		return w(a64.RorImm(rd, rn, uint(sh))).text("ror %s, %s, #%d", d, n, sh)
	}})
	add(form{name: "extr", edges: []int64{0, 1, 31, 63}, gen: func(p params) expect {
		lsb := mod(p.imm, width(p.is64))
		d, n, m := zrName(p.r[0], p.is64), zrName(p.r[1], p.is64), zrName(p.r[2], p.is64)
		e := w(a64.Extr(zrReg(p.r[0], p.is64), zrReg(p.r[1], p.is64), zrReg(p.r[2], p.is64), uint(lsb)))
		if p.r[1]&31 == p.r[2]&31 {
			return e.text("ror %s, %s, #%d", d, n, lsb)
		}
		return e.text("extr %s, %s, %s, #%d", d, n, m, lsb)
	}})
	// Extends. sel: uxtb, uxth, uxtw, sxtb, sxth, sxtw.
	add(form{name: "extend", edges: regEdges, sels: 6, gen: func(p params) expect {
		rd, d := zrReg(p.r[0], p.is64), zrName(p.r[0], p.is64)
		rn := a64.W(p.r[1])
		wn, xn := zrName(p.r[1], false), zrName(p.r[1], true)
		switch p.sel % 6 {
		case 0:
			e := w(a64.Uxtb(rd, rn))
			if p.is64 {
				return e.text("ubfx %s, %s, #0, #8", d, xn)
			}
			return e.text("uxtb %s, %s", d, wn)
		case 1:
			e := w(a64.Uxth(rd, rn))
			if p.is64 {
				return e.text("ubfx %s, %s, #0, #16", d, xn)
			}
			return e.text("uxth %s, %s", d, wn)
		case 2:
			e := w(a64.Uxtw(rd, rn))
			if p.is64 {
				return e.text("ubfx %s, %s, #0, #32", d, xn)
			}
			return e.text("lsr %s, %s, #0", d, wn)
		case 3:
			return w(a64.Sxtb(rd, rn)).text("sxtb %s, %s", d, wn)
		case 4:
			return w(a64.Sxth(rd, rn)).text("sxth %s, %s", d, wn)
		}
		e := w(a64.Sxtw(rd, rn))
		if p.is64 {
			return e.text("sxtw %s, %s", d, wn)
		}
		return e.text("asr %s, %s, #0", d, wn)
	}})

	// Data processing, 1 and 2 sources. sel picks the operation.
	add(form{name: "data1", edges: regEdges, sels: 5, gen: func(p params) expect {
		d, n := zrName(p.r[0], p.is64), zrName(p.r[1], p.is64)
		rd, rn := zrReg(p.r[0], p.is64), zrReg(p.r[1], p.is64)
		switch p.sel % 5 {
		case 0:
			return w(a64.Rev16(rd, rn)).text("rev16 %s, %s", d, n)
		case 1:
			if p.is64 {
				return w(a64.Rev32(rd, rn)).text("rev32 %s, %s", d, n)
			}
			return w(a64.Rev32(rd, rn)).text("rev %s, %s", d, n)
		case 2:
			xd, xn := zrName(p.r[0], true), zrName(p.r[1], true)
			return w(a64.Rev64(a64.X(p.r[0]), a64.X(p.r[1]))).text("rev %s, %s", xd, xn)
		case 3:
			return w(a64.Rbit(rd, rn)).text("rbit %s, %s", d, n)
		}
		return w(a64.Clz(rd, rn)).text("clz %s, %s", d, n)
	}})
	add(form{name: "data2", edges: regEdges, sels: 6, gen: func(p params) expect {
		d, n, m := zrName(p.r[0], p.is64), zrName(p.r[1], p.is64), zrName(p.r[2], p.is64)
		rd, rn, rm := zrReg(p.r[0], p.is64), zrReg(p.r[1], p.is64), zrReg(p.r[2], p.is64)
		encs := []func(rd, rn, rm a64.Reg) (uint32, error){a64.Udiv, a64.Sdiv, a64.Lslv, a64.Lsrv, a64.Asrv, a64.Rorv}
		names := []string{"udiv", "sdiv", "lsl", "lsr", "asr", "ror"}
		i := p.sel % 6
		return w(encs[i](rd, rn, rm)).text("%s %s, %s, %s", names[i], d, n, m)
	}})
	add(form{name: "data3", edges: regEdges, sels: 3, gen: func(p params) expect {
		d, n, m, a := zrName(p.r[0], p.is64), zrName(p.r[1], p.is64), zrName(p.r[2], p.is64), zrName(p.r[3], p.is64)
		rd, rn, rm, ra := zrReg(p.r[0], p.is64), zrReg(p.r[1], p.is64), zrReg(p.r[2], p.is64), zrReg(p.r[3], p.is64)
		switch p.sel % 3 {
		case 0:
			e := w(a64.Madd(rd, rn, rm, ra))
			if p.r[3]&31 == 31 {
				return e.text("mul %s, %s, %s", d, n, m)
			}
			return e.text("madd %s, %s, %s, %s", d, n, m, a)
		case 1:
			e := w(a64.Msub(rd, rn, rm, ra))
			if p.r[3]&31 == 31 {
				return e.text("mneg %s, %s, %s", d, n, m)
			}
			return e.text("msub %s, %s, %s, %s", d, n, m, a)
		}
		return w(a64.Mul(rd, rn, rm)).text("mul %s, %s, %s", d, n, m)
	}})

	// Move wide. imm: imm16 (low 16 bits) and hw (next 2). sel: MOVN,
	// MOVZ, MOVK.
	add(form{name: "movewide", edges: []int64{0, 1, 0x1234, 0xffff, 1 << 16, 0xffff | 1<<16, 0x8000 | 2<<16, 3 << 16, 0xfffe | 3<<16},
		sels: 3, gen: func(p params) expect {
			imm16 := uint64(mod(p.imm, 0x10000))
			hw := mod(p.imm>>16, width(p.is64)/16)
			shift := uint(hw * 16)
			d := zrName(p.r[0], p.is64)
			rd := zrReg(p.r[0], p.is64)
			lsl := ""
			if hw != 0 {
				lsl = fmt.Sprintf(", lsl #%d", shift)
			}
			switch p.sel % 3 {
			case 0:
				e := w(a64.Movn(rd, uint32(imm16), shift))
				if (imm16 == 0 && hw != 0) || (!p.is64 && imm16 == 0xffff) {
					return e.text("movn %s, #%#x%s", d, imm16, lsl)
				}
				return e.text("mov %s, #%#x", d, ^(imm16<<shift)&mask(p.is64))
			case 1:
				e := w(a64.Movz(rd, uint32(imm16), shift))
				if imm16 == 0 && hw != 0 {
					return e.text("movz %s, #0x0%s", d, lsl)
				}
				return e.text("mov %s, #%#x", d, imm16<<shift)
			}
			return w(a64.Movk(rd, uint32(imm16), shift)).text("movk %s, #%#x%s", d, imm16, lsl)
		}})

	// Loads and stores. sel: access size (4) x kind (load, store,
	// sign-extending load).
	ldstName := func(kind, size int, unscaled bool) string {
		base := [...]string{"ldr", "str", "ldrs"}[kind]
		if unscaled {
			base = [...]string{"ldur", "stur", "ldurs"}[kind]
		}
		switch size {
		case 0:
			return base + "b"
		case 1:
			return base + "h"
		case 2:
			if kind == 2 {
				return base + "w"
			}
		}
		return base
	}
	// ldstRt picks the data register: sign-extending loads go to X
	// (LDRSW always) or, with !is64, to W; others follow the size.
	ldstRt := func(kind, size, n int, is64 bool) (a64.Reg, string) {
		x := size == 3
		if kind == 2 {
			x = is64 || size == 2
		}
		return zrReg(n, x), zrName(n, x)
	}
	ldstSel := func(sel int) (kind, size int) {
		kind, size = sel%3, sel/3%4
		if kind == 2 && size == 3 {
			size = 2
		}
		return kind, size
	}
	add(form{name: "ldst-reg", edges: regEdges, sels: 12, gen: func(p params) expect {
		kind, size := ldstSel(p.sel)
		rt, t := ldstRt(kind, size, p.r[0], p.is64)
		rn, rm := spReg(p.r[1], true), zrReg(p.r[2], true)
		enc := []func(a64.Size, a64.Reg, a64.Reg, a64.Reg) (uint32, error){a64.LoadReg, a64.StoreReg, a64.LoadSignedReg}[kind]
		return w(enc(a64.Size(size), rt, rn, rm)).text("%s %s, [%s, %s]", ldstName(kind, size, false), t, spName(p.r[1], true), zrName(p.r[2], true))
	}})
	add(form{name: "ldst-imm", edges: []int64{0, 1, 2, 0x7ff, 0xfff}, sels: 12, gen: func(p params) expect {
		kind, size := ldstSel(p.sel)
		rt, t := ldstRt(kind, size, p.r[0], p.is64)
		off := mod(p.imm, 0x1000) << size
		enc := []func(a64.Size, a64.Reg, a64.Reg, int64) (uint32, error){a64.LoadImm, a64.StoreImm, a64.LoadSignedImm}[kind]
		return w(enc(a64.Size(size), rt, spReg(p.r[1], true), off)).text("%s %s, %s", ldstName(kind, size, false), t, memText(spName(p.r[1], true), off))
	}})
	add(form{name: "ldst-unscaled", edges: []int64{-256, -1, 0, 1, 255}, sels: 12, gen: func(p params) expect {
		kind, size := ldstSel(p.sel)
		rt, t := ldstRt(kind, size, p.r[0], p.is64)
		off := srange(p.imm, -256, 255)
		enc := []func(a64.Size, a64.Reg, a64.Reg, int64) (uint32, error){a64.LoadUnscaled, a64.StoreUnscaled, a64.LoadSignedUnscaled}[kind]
		return w(enc(a64.Size(size), rt, spReg(p.r[1], true), off)).text("%s %s, %s", ldstName(kind, size, true), t, memText(spName(p.r[1], true), off))
	}})
	add(form{name: "ldr-literal", edges: []int64{-1 << 18, -1, 0, 2, 1<<18 - 1}, gen: func(p params) expect {
		off := srange(p.imm, -1<<18, 1<<18-1)
		e := w(a64.LoadLiteral(zrReg(p.r[0], p.is64), int32(off))).text("ldr %s, <T>", zrName(p.r[0], p.is64))
		e.rel = off * 4
		return e
	}})
	// Pairs. sel: mode (post, offset, pre) x load/store.
	add(form{name: "ldst-pair", edges: []int64{-64, -2, 0, 1, 63}, sels: 6, gen: func(p params) expect {
		mode := a64.PairMode(p.sel%3 + 1)
		load := p.sel/3%2 == 1
		scale := int64(4)
		if p.is64 {
			scale = 8
		}
		off := srange(p.imm, -64, 63) * scale
		t1, t2, n := p.r[0]&31, p.r[3]&31, p.r[1]&31
		// Keep clear of the CONSTRAINED UNPREDICTABLE combinations the
		// encoder rejects (TestEncodeRejects covers them).
		if mode != a64.SignedOffset && n != 31 && (n == t1 || n == t2) {
			n = 31
		}
		if load && t1 == t2 {
			t2 = (t1 + 1) % 32
			if mode != a64.SignedOffset && n != 31 && n == t2 {
				n = 31
			}
		}
		enc, name := a64.StorePair, "stp"
		if load {
			enc, name = a64.LoadPair, "ldp"
		}
		e := w(enc(zrReg(t1, p.is64), zrReg(t2, p.is64), spReg(n, true), off, mode))
		regs := fmt.Sprintf("%s %s, %s, ", name, zrName(t1, p.is64), zrName(t2, p.is64))
		base := spName(n, true)
		switch mode {
		case a64.PostIndex:
			return e.text("%s[%s], #%d", regs, base, off)
		case a64.PreIndex:
			return e.text("%s[%s, #%d]!", regs, base, off)
		}
		return e.text("%s%s", regs, memText(base, off))
	}})

	// Exclusives and acquire/release. sel picks the instruction.
	add(form{name: "exclusive", edges: regEdges, sels: 4, gen: func(p params) expect {
		t, n := zrName(p.r[0], p.is64), spName(p.r[1], true)
		rt, rn := zrReg(p.r[0], p.is64), spReg(p.r[1], true)
		switch p.sel % 4 {
		case 0:
			return w(a64.Ldxr(rt, rn)).text("ldxr %s, [%s]", t, n)
		case 1:
			return w(a64.Ldaxr(rt, rn)).text("ldaxr %s, [%s]", t, n)
		}
		// The status register must differ from the data and base ones.
		s := p.r[2] & 31
		for s == p.r[0]&31 || (s == p.r[1]&31 && s != 31) {
			s = (s + 1) % 32
		}
		if p.sel%4 == 2 {
			return w(a64.Stxr(a64.W(s), rt, rn)).text("stxr %s, %s, [%s]", zrName(s, false), t, n)
		}
		return w(a64.Stlxr(a64.W(s), rt, rn)).text("stlxr %s, %s, [%s]", zrName(s, false), t, n)
	}})
	add(form{name: "acquire-release", edges: regEdges, sels: 8, gen: func(p params) expect {
		size := p.sel % 4
		rt, t := zrReg(p.r[0], size == 3), zrName(p.r[0], size == 3)
		suffix := [...]string{"b", "h", "", ""}[size]
		if p.sel/4%2 == 0 {
			return w(a64.Ldar(a64.Size(size), rt, spReg(p.r[1], true))).text("ldar%s %s, [%s]", suffix, t, spName(p.r[1], true))
		}
		return w(a64.Stlr(a64.Size(size), rt, spReg(p.r[1], true))).text("stlr%s %s, [%s]", suffix, t, spName(p.r[1], true))
	}})

	// LSE atomics. sel: operation (5) x order (4).
	add(form{name: "lse-ldop", edges: regEdges, sels: 20, gen: func(p params) expect {
		ops := []a64.AtomicOp{a64.AtomicAdd, a64.AtomicClr, a64.AtomicEor, a64.AtomicSet, a64.AtomicSwp}
		names := []string{"add", "clr", "eor", "set", "swp"}
		i, order := p.sel%5, a64.Order(p.sel/5%4)
		s, t, n := zrName(p.r[2], p.is64), zrName(p.r[0], p.is64), spName(p.r[1], true)
		e := w(a64.AtomicLoadOp(ops[i], order, zrReg(p.r[2], p.is64), zrReg(p.r[0], p.is64), spReg(p.r[1], true))).goSays(goUnknown)
		switch {
		case i == 4:
			return e.text("swp%s %s, %s, [%s]", order.Suffix(), s, t, n)
		case p.r[0]&31 == 31 && order&a64.OrderAcquire == 0:
			// ST<op>: the alias for a discarded result without acquire.
			return e.text("st%s%s %s, [%s]", names[i], order.Suffix(), s, n)
		}
		return e.text("ld%s%s %s, %s, [%s]", names[i], order.Suffix(), s, t, n)
	}})
	add(form{name: "lse-stop", edges: regEdges, sels: 8, gen: func(p params) expect {
		ops := []a64.AtomicOp{a64.AtomicAdd, a64.AtomicClr, a64.AtomicEor, a64.AtomicSet}
		names := []string{"add", "clr", "eor", "set"}
		i, order := p.sel%4, a64.Order(p.sel/4%2)
		s, n := zrName(p.r[2], p.is64), spName(p.r[1], true)
		return w(a64.AtomicStoreOp(ops[i], order, zrReg(p.r[2], p.is64), spReg(p.r[1], true))).goSays(goUnknown).
			text("st%s%s %s, [%s]", names[i], order.Suffix(), s, n)
	}})
	add(form{name: "cas", edges: regEdges, sels: 4, gen: func(p params) expect {
		order := a64.Order(p.sel % 4)
		s, t, n := zrName(p.r[2], p.is64), zrName(p.r[0], p.is64), spName(p.r[1], true)
		return w(a64.Cas(order, zrReg(p.r[2], p.is64), zrReg(p.r[0], p.is64), spReg(p.r[1], true))).goSays(goUnknown).
			text("cas%s %s, %s, [%s]", order.Suffix(), s, t, n)
	}})

	// Branches. Offsets in instructions.
	add(form{name: "b", edges: []int64{-1 << 25, -1, 0, 1, 1<<25 - 1}, sels: 2, gen: func(p params) expect {
		off := srange(p.imm, -1<<25, 1<<25-1)
		enc, name := a64.B, "b"
		if p.sel%2 == 1 {
			enc, name = a64.Bl, "bl"
		}
		e := w(enc(int32(off))).text("%s <T>", name)
		e.rel = off * 4
		return e
	}})
	add(form{name: "b.cond", edges: []int64{-1 << 18, -3, 0, 3, 1<<18 - 1}, sels: 16, gen: func(p params) expect {
		off := srange(p.imm, -1<<18, 1<<18-1)
		c := a64.Cond(p.sel % 16)
		e := w(a64.BCond(c, int32(off))).text("b.%v <T>", c)
		if c == a64.CondNV {
			// arm64asm names condition 15 "al" too.
			e = e.goSays("b.al <T>")
		}
		e.rel = off * 4
		return e
	}})
	add(form{name: "cbz", edges: []int64{-1 << 18, -3, 0, 4, 1<<18 - 1}, sels: 2, gen: func(p params) expect {
		off := srange(p.imm, -1<<18, 1<<18-1)
		enc, name := a64.Cbz, "cbz"
		if p.sel%2 == 1 {
			enc, name = a64.Cbnz, "cbnz"
		}
		e := w(enc(zrReg(p.r[0], p.is64), int32(off))).text("%s %s, <T>", name, zrName(p.r[0], p.is64))
		e.rel = off * 4
		return e
	}})
	add(form{name: "branch-reg", edges: regEdges, sels: 3, gen: func(p params) expect {
		n := zrName(p.r[1], true)
		rn := zrReg(p.r[1], true)
		switch p.sel % 3 {
		case 0:
			return w(a64.Br(rn)).text("br %s", n)
		case 1:
			return w(a64.Blr(rn)).text("blr %s", n)
		}
		e := w(a64.Ret(rn))
		if p.r[1]&31 == 30 {
			return e.text("ret")
		}
		return e.text("ret %s", n)
	}})
	add(form{name: "adr", edges: []int64{-1 << 20, -1, 0, 12, 1<<20 - 1}, sels: 2, gen: func(p params) expect {
		off := srange(p.imm, -1<<20, 1<<20-1)
		d := zrName(p.r[0], true)
		if p.sel%2 == 0 {
			e := w(a64.Adr(zrReg(p.r[0], true), off)).text("adr %s, <T>", d)
			e.rel = off
			return e
		}
		e := w(a64.Adrp(zrReg(p.r[0], true), off)).text("adrp %s, <T>", d)
		e.rel, e.page = off*4096, true
		return e
	}})

	// System.
	// Hints: the JIT's, the classic named ones, and unallocated numbers
	// (objdump names many more, e.g. csdb and the other PAC hints, that
	// the JIT does not emit).
	hints := []int64{0, 1, 2, 3, 4, 5, 25, 29, 34, 36, 38, 0x60, 0x7f}
	add(form{name: "hint", edges: []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, gen: func(p params) expect {
		n := hints[mod(p.imm, int64(len(hints)))]
		e := w(a64.Hint(uint32(n)))
		named := map[int64]string{0: "nop", 1: "yield", 2: "wfe", 3: "wfi", 4: "sev", 5: "sevl",
			25: "paciasp", 29: "autiasp", 34: "bti c", 36: "bti j", 38: "bti jc"}
		goNamed := map[int64]bool{0: true, 1: true, 2: true, 3: true, 4: true, 5: true}
		name, ok := named[n]
		if !ok {
			return e.text("hint #%#x", n)
		}
		if !goNamed[n] {
			e = e.goSays(fmt.Sprintf("hint #%#x", n))
		}
		return e.text("%s", name)
	}})
	add(form{name: "brk", edges: []int64{0, 1, 0x100, 0x800, 0xffff}, gen: func(p params) expect {
		n := mod(p.imm, 0x10000)
		return w(a64.Brk(uint32(n))).text("brk #%#x", n)
	}})
	add(form{name: "barrier", edges: []int64{1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15}, sels: 2, gen: func(p params) expect {
		opts := []int64{1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15}
		o := a64.BarrierOption(opts[mod(p.imm, int64(len(opts)))])
		if o == 0 || o&3 == 0 {
			o = a64.BarrierSY
		}
		if p.sel%2 == 0 {
			return w(a64.Dmb(o)).text("dmb %v", o)
		}
		return w(a64.Dsb(o)).text("dsb %v", o)
	}})
	add(form{name: "fixed-words", edges: []int64{0, 1, 2, 3, 4, 5, 6, 7, 8}, gen: func(p params) expect {
		words := []struct {
			word uint32
			gnu  string
			goT  string
		}{{a64.NOP, "nop", ""}, {a64.PACIASP, "paciasp", "hint #0x19"}, {a64.AUTIASP, "autiasp", "hint #0x1d"},
			{a64.BTIC, "bti c", "hint #0x22"}, {a64.BTIJ, "bti j", "hint #0x24"}, {a64.BTIJC, "bti jc", "hint #0x26"},
			{a64.ISB, "isb", ""}, {a64.SB, "sb", goUnknown}, {a64.BreakFault, "brk #0x100", ""}}
		x := words[mod(p.imm, int64(len(words)))]
		return expect{word: x.word, gnu: x.gnu, goText: x.goT}
	}})
	add(form{name: "mrs", edges: []int64{0, 1, 2}, gen: func(p params) expect {
		regs := []struct {
			sr   a64.SysReg
			name string
			goT  string
		}{{a64.SysRegSP_EL0, "sp_el0", "s3_0_c4_c1_0"}, {a64.SysRegTPIDR_EL1, "tpidr_el1", "s3_0_c13_c0_4"},
			{a64.SysRegTPIDR_EL2, "tpidr_el2", "s3_4_c13_c0_2"}}
		r := regs[mod(p.imm, int64(len(regs)))]
		t := zrName(p.r[0], true)
		return w(a64.Mrs(zrReg(p.r[0], true), r.sr)).text("mrs %s, %s", t, r.name).goSays(fmt.Sprintf("mrs %s, %s", t, r.goT))
	}})
	return fs
}

func memText(base string, off int64) string {
	if off == 0 {
		return "[" + base + "]"
	}
	return fmt.Sprintf("[%s, #%d]", base, off)
}

// bfxPreferred is the manual's BFXPreferred: whether UBFX/SBFX is the
// preferred disassembly of a UBFM/SBFM.
func bfxPreferred(is64, unsigned bool, imms, immr int64) bool {
	if imms < immr || imms == width(is64)-1 {
		return false
	}
	if immr == 0 {
		if !is64 && (imms == 7 || imms == 15) {
			return false
		}
		if is64 && !unsigned && (imms == 7 || imms == 15 || imms == 31) {
			return false
		}
	}
	return true
}

func ubfmText(is64 bool, d, n string, immr, imms int64) string {
	wd := width(is64)
	switch {
	case imms == wd-1:
		return fmt.Sprintf("lsr %s, %s, #%d", d, n, immr)
	case imms+1 == immr:
		return fmt.Sprintf("lsl %s, %s, #%d", d, n, wd-1-imms)
	case imms < immr:
		return fmt.Sprintf("ubfiz %s, %s, #%d, #%d", d, n, wd-immr, imms+1)
	case bfxPreferred(is64, true, imms, immr):
		return fmt.Sprintf("ubfx %s, %s, #%d, #%d", d, n, immr, imms-immr+1)
	case immr == 0 && imms == 7:
		return fmt.Sprintf("uxtb %s, %s", d, n)
	case immr == 0 && imms == 15:
		return fmt.Sprintf("uxth %s, %s", d, n)
	}
	panic("unreachable UBFM alias")
}

func sbfmText(is64 bool, d string, rn int, immr, imms int64) string {
	wd := width(is64)
	n := zrName(rn, is64)
	switch {
	case imms == wd-1:
		return fmt.Sprintf("asr %s, %s, #%d", d, n, immr)
	case imms < immr:
		return fmt.Sprintf("sbfiz %s, %s, #%d, #%d", d, n, wd-immr, imms+1)
	case bfxPreferred(is64, false, imms, immr):
		return fmt.Sprintf("sbfx %s, %s, #%d, #%d", d, n, immr, imms-immr+1)
	case immr == 0 && imms == 7:
		return fmt.Sprintf("sxtb %s, %s", d, zrName(rn, false))
	case immr == 0 && imms == 15:
		return fmt.Sprintf("sxth %s, %s", d, zrName(rn, false))
	case immr == 0 && imms == 31:
		return fmt.Sprintf("sxtw %s, %s", d, zrName(rn, false))
	}
	panic("unreachable SBFM alias")
}

func bfmText(is64 bool, d, n string, rn int, immr, imms int64) string {
	wd := width(is64)
	switch {
	case imms < immr && rn&31 == 31:
		return fmt.Sprintf("bfc %s, #%d, #%d", d, wd-immr, imms+1)
	case imms < immr:
		return fmt.Sprintf("bfi %s, %s, #%d, #%d", d, n, wd-immr, imms+1)
	}
	return fmt.Sprintf("bfxil %s, %s, #%d, #%d", d, n, immr, imms-immr+1)
}

// normalize makes two renderings of one instruction comparable: one space
// between mnemonic and operands, none after commas (arm64asm prints
// "[x1,x2]", objdump "[x1, x2]"), and objdump's trailing "// ..." comment
// dropped.
func normalize(s string) string {
	if i := strings.Index(s, "//"); i >= 0 {
		s = s[:i]
	}
	s = strings.Join(strings.Fields(s), " ")
	return strings.ReplaceAll(s, ", ", ",")
}

// ones is a helper for tests that build bit patterns.
func ones(n int) uint64 {
	if n >= 64 {
		return ^uint64(0)
	}
	return uint64(1)<<n - 1
}

var _ = bits.OnesCount64
