package emu

import (
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"testing"

	"golang.org/x/arch/arm64/arm64asm"

	"github.com/bpfsim/bpfsim/jit_arm64/a64"
)

// mnemonics lists, per decoded operation, the arm64asm mnemonics (aliases
// included) a word of that operation may disassemble to.
var mnemonics = map[opKind][]string{
	opAddImm: {"ADD", "ADDS", "MOV", "CMN"},
	opSubImm: {"SUB", "SUBS", "CMP"},
	opAddReg: {"ADD", "ADDS", "CMN"},
	opSubReg: {"SUB", "SUBS", "CMP", "NEG", "NEGS"},
	opLogImm: {"AND", "ORR", "EOR", "ANDS", "TST", "MOV"},
	opLogReg: {"AND", "BIC", "ORR", "ORN", "EOR", "EON", "ANDS", "BICS", "TST", "MOV", "MVN"},
	opMovz:   {"MOVZ", "MOV"},
	opMovn:   {"MOVN", "MOV"},
	opMovk:   {"MOVK"},
	opSbfm:   {"SBFM", "ASR", "SBFIZ", "SBFX", "SXTB", "SXTH", "SXTW"},
	opBfm:    {"BFM", "BFI", "BFXIL", "BFC"},
	opUbfm:   {"UBFM", "LSL", "LSR", "UBFIZ", "UBFX", "UXTB", "UXTH"},
	opExtr:   {"EXTR", "ROR"},
	opUdiv:   {"UDIV"},
	opSdiv:   {"SDIV"},
	opLslv:   {"LSLV", "LSL"},
	opLsrv:   {"LSRV", "LSR"},
	opAsrv:   {"ASRV", "ASR"},
	opRorv:   {"RORV", "ROR"},
	opRbit:   {"RBIT"},
	opRev16:  {"REV16"},
	opRev32:  {"REV32", "REV"},
	opRev64:  {"REV", "REV64"},
	opClz:    {"CLZ"},
	opMadd:   {"MADD", "MUL"},
	opMsub:   {"MSUB", "MNEG"},
	opB:      {"B"},
	opBL:     {"BL"},
	opBCond:  {"B"},
	opCbz:    {"CBZ"},
	opCbnz:   {"CBNZ"},
	opBr:     {"BR"},
	opBlr:    {"BLR"},
	opRet:    {"RET"},
	opNop:    {"NOP", "HINT", "YIELD", "WFE", "WFI", "SEV", "SEVL", "DMB", "DSB", "ISB", "SB", "ESB", "PSB", "CSDB", "BTI", "PACIASP", "AUTIASP", "PACIBSP", "AUTIBSP", "PACIAZ", "AUTIAZ", "PACIBZ", "AUTIBZ", "PACIA1716", "PACIB1716", "AUTIA1716", "AUTIB1716", "XPACLRI"},
	opBrk:    {"BRK"},
	opMrs:    {"MRS"},
	opAdr:    {"ADR"},
	opAdrp:   {"ADRP"},
	opLoad:   {"LDR", "LDRB", "LDRH", "LDRSB", "LDRSH", "LDRSW", "LDUR", "LDURB", "LDURH", "LDURSB", "LDURSH", "LDURSW"},
	opStore:  {"STR", "STRB", "STRH", "STUR", "STURB", "STURH"},
	opLdrLit: {"LDR"},
	opLdp:    {"LDP", "LDPSW"},
	opStp:    {"STP"},
	opLdxr:   {"LDXR", "LDAXR"},
	opStxr:   {"STXR", "STLXR"},
	opLdar:   {"LDAR", "LDARB", "LDARH"},
	opStlr:   {"STLR", "STLRB", "STLRH"},
	opCas:    {"CAS", "CASA", "CASL", "CASAL"},
	opLSE:    {"LDADD", "LDADDA", "LDADDL", "LDADDAL", "LDCLR", "LDCLRA", "LDCLRL", "LDCLRAL", "LDEOR", "LDEORA", "LDEORL", "LDEORAL", "LDSET", "LDSETA", "LDSETL", "LDSETAL", "SWP", "SWPA", "SWPL", "SWPAL", "STADD", "STADDL", "STCLR", "STCLRL", "STEOR", "STEORL", "STSET", "STSETL"},
}

// TestDecodeAgreesWithArm64asm decodes random words, biased towards the
// instruction classes the emulator knows, and requires every word it
// accepts to be an allocated encoding that arm64asm disassembles to a
// mnemonic of the same operation: a decoder mask that is too wide (taking
// SIMD loads for integer ones, say) fails here. LSE atomics and CAS are
// ARMv8.1 and arm64asm may not know them; those are skipped when it
// reports an error.
func TestDecodeAgreesWithArm64asm(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	// Class prefixes: the top byte fixes most of the class bits.
	tops := []uint32{0x11, 0x12, 0x13, 0x0a, 0x0b, 0x1a, 0x1b, 0x5a, 0x14, 0x54, 0x34, 0x35, 0xd6, 0xd5, 0xd4,
		0x10, 0x18, 0x38, 0x39, 0x28, 0x29, 0x08, 0x88, 0xc8, 0xb8, 0xf8, 0x3c, 0x2c, 0x0c, 0x4c, 0x9a, 0xda}
	// Words the encoder produces for the classes with fixed opcode fields,
	// which random words rarely hit.
	var fixed []uint32
	for n := 0; n < 31; n++ {
		for _, enc := range []func() (uint32, error){
			func() (uint32, error) { return a64.Br(a64.X(n)) },
			func() (uint32, error) { return a64.Blr(a64.X(n)) },
			func() (uint32, error) { return a64.Ret(a64.X(n)) },
			func() (uint32, error) { return a64.Rev16(a64.X(n), a64.X(30-n)) },
			func() (uint32, error) { return a64.Rev16(a64.W(n), a64.W(30-n)) },
			func() (uint32, error) { return a64.Rev32(a64.X(n), a64.X(30-n)) },
			func() (uint32, error) { return a64.Rev64(a64.X(n), a64.X(30-n)) },
			func() (uint32, error) { return a64.Rbit(a64.W(n), a64.W(30-n)) },
			func() (uint32, error) { return a64.Clz(a64.X(n), a64.X(30-n)) },
			func() (uint32, error) { return a64.Brk(uint32(n * 1000)) },
			func() (uint32, error) { return a64.Hint(uint32(n)) },
		} {
			w, err := enc()
			if err != nil {
				t.Fatal(err)
			}
			fixed = append(fixed, w)
		}
	}
	accepted := map[opKind]int{}
	const random = 1 << 20
	for i := 0; i < random+len(fixed); i++ {
		w := rng.Uint32()
		if i >= random {
			w = fixed[i-random]
			if decode(w).op == opUnknown {
				t.Errorf("%#08x from the encoder does not decode", w)
			}
		} else if i%4 != 0 {
			// Keep the class byte, with sf/size/opc variants in the top bits.
			w = w&0x00ffffff | (tops[rng.IntN(len(tops))]|rng.Uint32()&0xc0)<<24
		}
		in := decode(w)
		if in.op == opUnknown {
			continue
		}
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], w)
		dis, err := arm64asm.Decode(b[:])
		if err != nil {
			if in.op == opLSE || in.op == opCas || in.op == opNop || in.op == opMrs {
				continue // newer than arm64asm, or a system register it does not name
			}
			t.Errorf("%#08x: decoded as op %d, arm64asm: %v", w, in.op, err)
			continue
		}
		accepted[in.op]++
		name := strings.SplitN(dis.Op.String(), ".", 2)[0]
		ok := false
		for _, m := range mnemonics[in.op] {
			if name == m {
				ok = true
			}
		}
		if !ok {
			t.Errorf("%#08x: decoded as op %d, arm64asm says %v", w, in.op, dis)
		}
	}
	// LSE, CAS and MRS may all have been skipped above.
	for op := opAddImm; op < opCas; op++ {
		if accepted[op] == 0 && op != opMrs {
			t.Errorf("op %d never checked against arm64asm", op)
		}
	}
}
