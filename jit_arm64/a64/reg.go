// Package a64 encodes the A64 (AArch64) instructions that the Linux arm64
// BPF JIT emits: the forms behind the A64_* macros of
// arch/arm64/net/bpf_jit.h, which the kernel builds with the generators of
// arch/arm64/lib/insn.c (aarch64_insn_gen_*), plus the JIT's constant
// materialisation sequences of arch/arm64/net/bpf_jit_comp.c
// (emit_a64_mov_i, emit_a64_mov_i64, emit_addr_mov_i64) and its immediate
// range checks (is_addsub_imm, is_lsi_offset, the bitmask-immediate rules
// of aarch64_insn_gen_logical_immediate).
//
// Every encoder is one function returning the 32-bit instruction word, or
// an error wrapping uapi.EINVAL when an operand cannot be encoded: an
// immediate out of range, a logical immediate that is no bitmask pattern,
// a register of the wrong width, or SP where the field means the zero
// register (or the other way round). The kernel's generators return
// AARCH64_BREAK_FAULT in those cases and the JIT turns that into -EINVAL;
// returning an error keeps a bad word from ever reaching an image.
//
// Registers are typed (Reg): X0..X30, XZR and SP are the 64-bit views,
// W0..W30, WZR and WSP the 32-bit ones. The width of the operands chooses
// the sf bit (the kernel's A64_VARIANT(sf)), so an encoder needs no
// separate is64 flag; mixing widths where the instruction does not is an
// error. Register 31 is the zero register or the stack pointer depending on
// the field, and the two names keep that distinction visible.
//
// Branch offsets are given in instructions (32-bit words), as the kernel's
// A64_B/A64_B_/A64_CBZ macros take them; ADR takes a byte offset.
package a64

import (
	"fmt"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Reg is an A64 general-purpose register view. The zero value is not a
// register (every encoder rejects it), so a forgotten operand is an error
// instead of silently meaning W0.
type Reg uint8

const (
	regValid Reg = 0x80 // set on every real register
	reg64    Reg = 0x40 // X view (64-bit); W view otherwise
	regSP    Reg = 0x20 // number 31 meaning the stack pointer, not the zero register
	regNum   Reg = 0x1f
)

// The 64-bit views.
const (
	X0 Reg = regValid | reg64 | iota
	X1
	X2
	X3
	X4
	X5
	X6
	X7
	X8
	X9
	X10
	X11
	X12
	X13
	X14
	X15
	X16
	X17
	X18
	X19
	X20
	X21
	X22
	X23
	X24
	X25
	X26
	X27
	X28
	X29
	X30
	XZR
)

// The 32-bit views.
const (
	W0 Reg = regValid | iota
	W1
	W2
	W3
	W4
	W5
	W6
	W7
	W8
	W9
	W10
	W11
	W12
	W13
	W14
	W15
	W16
	W17
	W18
	W19
	W20
	W21
	W22
	W23
	W24
	W25
	W26
	W27
	W28
	W29
	W30
	WZR
)

// Stack pointer views and the AAPCS64 names the JIT uses.
const (
	SP  Reg = regValid | reg64 | regSP | 31
	WSP Reg = regValid | regSP | 31
	FP      = X29 // frame pointer (A64_FP)
	LR      = X30 // link register (A64_LR)
)

// X returns the 64-bit register numbered n (0..30, 31 = XZR).
func X(n int) Reg { return regValid | reg64 | Reg(n)&regNum }

// W returns the 32-bit register numbered n (0..30, 31 = WZR).
func W(n int) Reg { return regValid | Reg(n)&regNum }

// Valid reports whether r names a register.
func (r Reg) Valid() bool { return r&regValid != 0 }

// Num is the 5-bit field value of r.
func (r Reg) Num() uint32 { return uint32(r & regNum) }

// Is64 reports whether r is an X view (or SP).
func (r Reg) Is64() bool { return r&reg64 != 0 }

// IsSP reports whether r is SP or WSP.
func (r Reg) IsSP() bool { return r&regSP != 0 }

// IsZR reports whether r is XZR or WZR.
func (r Reg) IsZR() bool { return r.Valid() && !r.IsSP() && r.Num() == 31 }

// AsX returns the 64-bit view of the same register.
func (r Reg) AsX() Reg { return r | reg64 }

// AsW returns the 32-bit view of the same register.
func (r Reg) AsW() Reg { return r &^ reg64 }

// String spells r the way GNU assembler syntax does.
func (r Reg) String() string {
	switch {
	case !r.Valid():
		return fmt.Sprintf("Reg(%#x)", uint8(r))
	case r == SP:
		return "sp"
	case r == WSP:
		return "wsp"
	case r == XZR:
		return "xzr"
	case r == WZR:
		return "wzr"
	case r.Is64():
		return fmt.Sprintf("x%d", r.Num())
	default:
		return fmt.Sprintf("w%d", r.Num())
	}
}

// errInval builds the error every encoder returns for an unencodable
// operand: the kernel's generators yield AARCH64_BREAK_FAULT and the JIT
// fails the program with -EINVAL.
func errInval(format string, args ...any) error {
	return errors.Wrapf(uapi.EINVAL, "a64: "+format, args...)
}

// sfBit is the sf field (bit 31) for a register width.
func sfBit(r Reg) uint32 {
	if r.Is64() {
		return 1 << 31
	}
	return 0
}

// checkZR validates a register for a field where number 31 means the zero
// register: SP is not allowed, and its width must be want64.
func checkZR(what string, r Reg, want64 bool) error {
	if zrOK(r, want64) {
		return nil
	}
	return badZR(what, r, want64)
}

// zrOK is checkZR's test, small enough to inline into hot encoders.
func zrOK(r Reg, want64 bool) bool {
	return r&(regValid|regSP) == regValid && r.Is64() == want64
}

// badZR is checkZR's error for a register it refused.
func badZR(what string, r Reg, want64 bool) error {
	if !r.Valid() {
		return errInval("%s: not a register", what)
	}
	if r.IsSP() {
		return errInval("%s: %v not allowed (this field encodes the zero register as 31)", what, r)
	}
	if r.Is64() != want64 {
		return errInval("%s: %v has the wrong width (want %s)", what, r, widthName(want64))
	}
	return nil
}

// checkSP validates a register for a field where number 31 means the stack
// pointer: the zero register is not allowed.
func checkSP(what string, r Reg, want64 bool) error {
	if !r.Valid() {
		return errInval("%s: not a register", what)
	}
	if r.IsZR() {
		return errInval("%s: %v not allowed (this field encodes the stack pointer as 31)", what, r)
	}
	if r.Is64() != want64 {
		return errInval("%s: %v has the wrong width (want %s)", what, r, widthName(want64))
	}
	return nil
}

// checkBase validates the base register of a memory access: an X register
// or SP.
func checkBase(r Reg) error { return checkSP("base", r, true) }

func widthName(is64 bool) string {
	if is64 {
		return "64-bit X register"
	}
	return "32-bit W register"
}

// firstErr returns the first non-nil error.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
