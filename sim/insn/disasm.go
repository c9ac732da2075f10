package insn

import (
	"fmt"
	"strings"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Symbols lets the caller name what an instruction refers to, the way
// bpftool resolves helper addresses and map pointers in xlated code. Either
// function may be nil or return "" to get the kernel's default rendering.
type Symbols struct {
	// Call names the target of the helper or kfunc call at index i
	// (printed before '#').
	Call func(i int, in Insn) string
	// Imm64 renders the value the lddw at index i loads, e.g. "map[id:3]".
	Imm64 func(i int, in Insn, imm uint64) string
}

var aluOps = [16]string{
	ADD >> 4: "+=", SUB >> 4: "-=", MUL >> 4: "*=", DIV >> 4: "/=",
	OR >> 4: "|=", AND >> 4: "&=", LSH >> 4: "<<=", RSH >> 4: ">>=",
	NEG >> 4: "neg", MOD >> 4: "%=", XOR >> 4: "^=", MOV >> 4: "=",
	ARSH >> 4: "s>>=", END >> 4: "endian",
}

var atomicOps = [16]string{ADD >> 4: "add", AND >> 4: "and", OR >> 4: "or", XOR >> 4: "xor"}

var jmpOps = [16]string{
	JA >> 4: "jmp", JEQ >> 4: "==", JGT >> 4: ">", JLT >> 4: "<",
	JGE >> 4: ">=", JLE >> 4: "<=", JSET >> 4: "&", JNE >> 4: "!=",
	JSGT >> 4: "s>", JSLT >> 4: "s<", JSGE >> 4: "s>=", JSLE >> 4: "s<=",
	CALL >> 4: "call", EXIT >> 4: "exit",
}

func memType(size uint8, signed bool) string {
	if signed {
		return map[uint8]string{W: "s32", H: "s16", B: "s8", DW: "s64"}[size]
	}
	return map[uint8]string{W: "u32", H: "u16", B: "u8", DW: "u64"}[size]
}

func regPrefix(class uint8) byte {
	if class == ALU || class == JMP32 {
		return 'w'
	}
	return 'r'
}

// Format renders insns[i] in bpftool's xlated syntax without the index,
// e.g. "(b7) r0 = 1". A 64-bit immediate load reads insns[i+1] too.
func Format(insns []Insn, i int, sym *Symbols) string {
	in := insns[i]
	cl := in.Class()
	c := in.Code
	switch cl {
	case ALU, ALU64:
		r := regPrefix(cl)
		switch {
		case in.Op() == END && cl == ALU64:
			return fmt.Sprintf("(%02x) r%d = bswap%d r%d", c, in.Dst, in.Imm, in.Dst)
		case in.Op() == END:
			order := "le"
			if in.Source() == ToBE {
				order = "be"
			}
			return fmt.Sprintf("(%02x) r%d = %s%d r%d", c, in.Dst, order, in.Imm, in.Dst)
		case in.Op() == NEG:
			return fmt.Sprintf("(%02x) %c%d = -%c%d", c, r, in.Dst, r, in.Dst)
		case c == ALU64|MOV|X && in.Off == 1:
			return fmt.Sprintf("(%02x) r%d = addr_space_cast(r%d, %d, %d)", c, in.Dst, in.Src, uint32(in.Imm)>>16, uint16(in.Imm))
		case c == ALU64|MOV|X && in.Off == -1:
			return fmt.Sprintf("(%02x) r%d = &(void __percpu *)(r%d)", c, in.Dst, in.Src)
		}
		op := aluOps[in.Op()>>4]
		if op == "" {
			break
		}
		if (in.Op() == DIV || in.Op() == MOD) && in.Off == 1 {
			op = map[uint8]string{DIV: "s/=", MOD: "s%="}[in.Op()]
		}
		if in.Source() == X {
			cast := ""
			if in.Op() == MOV {
				cast = map[int16]string{8: "(s8)", 16: "(s16)", 32: "(s32)"}[in.Off]
			}
			return fmt.Sprintf("(%02x) %c%d %s %s%c%d", c, r, in.Dst, op, cast, r, in.Src)
		}
		return fmt.Sprintf("(%02x) %c%d %s %d", c, r, in.Dst, op, in.Imm)

	case STX:
		t := memType(in.SizeBits(), false)
		if in.Mode() == MEM {
			return fmt.Sprintf("(%02x) *(%s *)(r%d %+d) = r%d", c, t, in.Dst, in.Off, in.Src)
		}
		if in.Mode() != ATOMIC {
			break
		}
		bits := ""
		if in.SizeBits() == DW {
			bits = "64"
		}
		switch in.Imm {
		case ADD, AND, OR, XOR:
			return fmt.Sprintf("(%02x) lock *(%s *)(r%d %+d) %s r%d", c, t, in.Dst, in.Off, aluOps[in.Imm>>4], in.Src)
		case ADD | Fetch, AND | Fetch, OR | Fetch, XOR | Fetch:
			return fmt.Sprintf("(%02x) r%d = atomic%s_fetch_%s((%s *)(r%d %+d), r%d)", c, in.Src, bits, atomicOps[(in.Imm&0xf0)>>4], t, in.Dst, in.Off, in.Src)
		case Cmpxchg:
			return fmt.Sprintf("(%02x) r0 = atomic%s_cmpxchg((%s *)(r%d %+d), r0, r%d)", c, bits, t, in.Dst, in.Off, in.Src)
		case Xchg:
			return fmt.Sprintf("(%02x) r%d = atomic%s_xchg((%s *)(r%d %+d), r%d)", c, in.Src, bits, t, in.Dst, in.Off, in.Src)
		case LoadAcq:
			return fmt.Sprintf("(%02x) r%d = load_acquire((%s *)(r%d %+d))", c, in.Dst, t, in.Src, in.Off)
		case StoreRel:
			return fmt.Sprintf("(%02x) store_release((%s *)(r%d %+d), r%d)", c, t, in.Dst, in.Off, in.Src)
		}

	case ST:
		if in.Mode() == MEM {
			return fmt.Sprintf("(%02x) *(%s *)(r%d %+d) = %d", c, memType(in.SizeBits(), false), in.Dst, in.Off, in.Imm)
		}
		if in.Mode() == 0xc0 {
			return fmt.Sprintf("(%02x) nospec", c)
		}

	case LDX:
		// bpf_insn_prepare_dump shows probe loads as the loads they
		// were.
		switch in.Mode() {
		case ProbeMem:
			c = LDX | MEM | in.SizeBits()
			in.Code = c
		case ProbeMemSX:
			c = LDX | MEMSX | in.SizeBits()
			in.Code = c
		}
		if in.Mode() == MEM || in.Mode() == MEMSX {
			return fmt.Sprintf("(%02x) r%d = *(%s *)(r%d %+d)", c, in.Dst, memType(in.SizeBits(), in.Mode() == MEMSX), in.Src, in.Off)
		}

	case LD:
		switch {
		case in.Mode() == ABS:
			return fmt.Sprintf("(%02x) r0 = *(%s *)skb[%d]", c, memType(in.SizeBits(), false), in.Imm)
		case in.Mode() == IND:
			return fmt.Sprintf("(%02x) r0 = *(%s *)skb[r%d + %d]", c, memType(in.SizeBits(), false), in.Src, in.Imm)
		case in.IsLdImm64() && i+1 < len(insns):
			imm := Imm64(insns, i)
			text := ""
			if sym != nil && sym.Imm64 != nil {
				text = sym.Imm64(i, in, imm)
			}
			if text == "" {
				text = fmt.Sprintf("%#x", imm)
				if imm == 0 {
					text = "0x0"
				}
			}
			return fmt.Sprintf("(%02x) r%d = %s", c, in.Dst, text)
		}

	case JMP, JMP32:
		r := regPrefix(cl)
		switch {
		case in.Op() == CALL && in.Src == PseudoCall:
			return fmt.Sprintf("(%02x) call pc%+d", c, in.Imm)
		case in.Op() == CALL:
			name := ""
			if sym != nil && sym.Call != nil {
				name = sym.Call(i, in)
			}
			if name == "" {
				switch {
				case in.Src == 0 && uapi.HelperName(in.Imm) != "":
					name = uapi.HelperName(in.Imm)
				case in.Src == PseudoKfuncCall:
					name = "kernel-function"
				default:
					name = "unknown"
				}
			}
			return fmt.Sprintf("(%02x) call %s#%d", c, name, in.Imm)
		case c == JMP|JA:
			return fmt.Sprintf("(%02x) goto pc%+d", c, in.Off)
		case c == JMP|JA|X:
			return fmt.Sprintf("(%02x) gotox r%d", c, in.Dst)
		case c == JMP|JCOND && in.Src == MayGoto:
			return fmt.Sprintf("(%02x) may_goto pc%+d", c, in.Off)
		case c == JMP32|JA:
			return fmt.Sprintf("(%02x) gotol pc%+d", c, in.Imm)
		case c == JMP|EXIT:
			return fmt.Sprintf("(%02x) exit", c)
		case jmpOps[in.Op()>>4] == "" || in.Op() == CALL || in.Op() == EXIT || in.Op() == JA:
			// Not a conditional jump: fall through to the invalid form.
		case in.Source() == X:
			return fmt.Sprintf("(%02x) if %c%d %s %c%d goto pc%+d", c, r, in.Dst, jmpOps[in.Op()>>4], r, in.Src, in.Off)
		default:
			return fmt.Sprintf("(%02x) if %c%d %s %#x goto pc%+d", c, r, in.Dst, jmpOps[in.Op()>>4], uint32(in.Imm), in.Off)
		}
	}
	return fmt.Sprintf("(%02x) invalid", c)
}

// Dump renders a whole program the way `bpftool prog dump xlated` does: one
// line per instruction, "%4d: " index first; the second slot of an lddw is
// not printed.
func Dump(insns []Insn, sym *Symbols) string {
	var b strings.Builder
	for i := 0; i < len(insns); i++ {
		fmt.Fprintf(&b, "%4d: %s\n", i, Format(insns, i, sym))
		if insns[i].IsLdImm64() {
			i++
		}
	}
	return b.String()
}
