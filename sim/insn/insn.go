// Package insn is the BPF instruction encoding: the 8-byte struct bpf_insn,
// its opcode fields and pseudo values (include/uapi/linux/bpf.h,
// include/uapi/linux/bpf_common.h, RFC 9669), decoding from raw bytes and
// from cilium/ebpf's asm package, and a disassembler that prints programs the
// way `bpftool prog dump xlated` does (kernel/bpf/disasm.c).
//
// Constants keep the kernel's names without the BPF_ prefix, so BPF_ALU64
// is insn.ALU64 and BPF_PSEUDO_MAP_FD is insn.PseudoMapFD.
package insn

import (
	"encoding/binary"
	"fmt"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Insn is one instruction slot, struct bpf_insn. A 64-bit immediate load
// (lddw) takes two slots; the second holds the upper half in Imm.
//
// Per-instruction passes (verifier, JIT) take an *Insn: with five fields
// the struct is passed to a function in five registers and spilled field
// by field, and the first method call reads it back as one word, which
// the CPU cannot forward from the narrow stores (a stall per instruction).
// For the same reason its field accessors (Class, Op, ...) have pointer
// receivers: a value receiver makes the compiler copy all twelve bytes to
// the stack for every call.
type Insn struct {
	Code uint8
	Dst  uint8 // 0..10 in a valid program; 11 is the kernel's hidden AX
	Src  uint8
	Off  int16
	Imm  int32
}

// Size is the encoded size of one instruction slot.
const Size = 8

// Instruction classes (code & 0x07).
const (
	LD    = 0x00
	LDX   = 0x01
	ST    = 0x02
	STX   = 0x03
	ALU   = 0x04
	JMP   = 0x05
	JMP32 = 0x06
	ALU64 = 0x07
)

// Load and store sizes (code & 0x18).
const (
	W  = 0x00
	H  = 0x08
	B  = 0x10
	DW = 0x18
)

// Load and store modes (code & 0xe0).
const (
	IMM    = 0x00
	ABS    = 0x20
	IND    = 0x40
	MEM    = 0x60
	MEMSX  = 0x80
	ATOMIC = 0xc0

	// ProbeMem and ProbeMemSX are the kernel-internal modes of LDX the
	// verifier gives loads from kernel objects (BPF_PROBE_MEM,
	// BPF_PROBE_MEMSX): a fault reads zeros. They share the values of
	// ABS and IND, which LDX does not use.
	ProbeMem   = 0x20
	ProbeMemSX = 0x40
)

// Operand source (code & 0x08) for ALU and JMP classes.
const (
	K = 0x00 // immediate
	X = 0x08 // register

	// For the END operation the same bit selects the target byte order.
	ToLE = 0x00
	ToBE = 0x08
)

// ALU operations (code & 0xf0).
const (
	ADD  = 0x00
	SUB  = 0x10
	MUL  = 0x20
	DIV  = 0x30
	OR   = 0x40
	AND  = 0x50
	LSH  = 0x60
	RSH  = 0x70
	NEG  = 0x80
	MOD  = 0x90
	XOR  = 0xa0
	MOV  = 0xb0
	ARSH = 0xc0
	END  = 0xd0
)

// Jump operations (code & 0xf0).
const (
	JA   = 0x00
	JEQ  = 0x10
	JGT  = 0x20
	JGE  = 0x30
	JSET = 0x40
	JNE  = 0x50
	JSGT = 0x60
	JSGE = 0x70
	CALL = 0x80
	EXIT = 0x90
	JLT  = 0xa0
	JLE  = 0xb0
	JSLT = 0xc0
	JSLE = 0xd0
	// JCOND is may_goto (src_reg == MayGoto).
	JCOND = 0xe0
	// TailCall is BPF_TAIL_CALL, kernel-internal: the verifier's fix-ups
	// turn a call of bpf_tail_call into JMP|TailCall (0xf5).
	TailCall = 0xf0
)

// Atomic operations, carried in Imm of a STX|ATOMIC instruction.
const (
	Fetch    = 0x01
	Xchg     = 0xe0 | Fetch
	Cmpxchg  = 0xf0 | Fetch
	LoadAcq  = 0x100
	StoreRel = 0x110
)

// MayGoto is the src_reg of a JCOND instruction (may_goto).
const MayGoto = 0

// Pseudo source registers.
const (
	// On lddw (LD|IMM|DW).
	PseudoMapFD       = 1
	PseudoMapValue    = 2
	PseudoBTFID       = 3
	PseudoFunc        = 4
	PseudoMapIdx      = 5
	PseudoMapIdxValue = 6
	// On CALL.
	PseudoCall      = 1
	PseudoKfuncCall = 2
)

// Registers.
const (
	R0 = iota
	R1
	R2
	R3
	R4
	R5
	R6
	R7
	R8
	R9
	R10
	// AX is the kernel's hidden scratch register (MAX_BPF_REG), used by
	// rewrites such as constant blinding. A program from user space may not
	// name it.
	AX
)

// MaxBPFStack is the stack size of one BPF frame.
const MaxBPFStack = 512

// MaxCallFrames is how deep bpf-to-bpf calls may nest, the main program
// included.
const MaxCallFrames = 8

// Class returns code's instruction class.
func (i *Insn) Class() uint8 { return i.Code & 0x07 }

// Op returns the ALU or jump operation.
func (i *Insn) Op() uint8 { return i.Code & 0xf0 }

// Source returns K or X.
func (i *Insn) Source() uint8 { return i.Code & 0x08 }

// SizeBits returns the load/store size field.
func (i *Insn) SizeBits() uint8 { return i.Code & 0x18 }

// Mode returns the load/store mode.
func (i *Insn) Mode() uint8 { return i.Code & 0xe0 }

// IsLdImm64 reports whether i is the first slot of a 64-bit immediate load.
func (i *Insn) IsLdImm64() bool { return i.Code == LD|IMM|DW }

// SizeBytes returns the number of bytes a load or store of this size moves.
func SizeBytes(size uint8) int {
	switch size {
	case B:
		return 1
	case H:
		return 2
	case W:
		return 4
	}
	return 8
}

// Decode parses raw little-endian bytecode.
func Decode(b []byte) ([]Insn, error) {
	if len(b)%Size != 0 {
		return nil, errors.Wrapf(uapi.EINVAL, "bytecode length %d is not a multiple of %d", len(b), Size)
	}
	return appendDecoded(make([]Insn, 0, len(b)/Size), b), nil
}

// appendDecoded appends the instructions of b, whose length is a multiple
// of Size, to out.
func appendDecoded(out []Insn, b []byte) []Insn {
	for ; len(b) >= Size; b = b[Size:] {
		out = append(out, Insn{
			Code: b[0],
			Dst:  b[1] & 0x0f,
			Src:  b[1] >> 4,
			Off:  int16(binary.LittleEndian.Uint16(b[2:])),
			Imm:  int32(binary.LittleEndian.Uint32(b[4:])),
		})
	}
	return out
}

// Encode is the inverse of Decode.
func Encode(insns []Insn) []byte {
	out := make([]byte, len(insns)*Size)
	for i, in := range insns {
		s := out[i*Size:]
		s[0] = in.Code
		s[1] = in.Dst&0x0f | in.Src<<4
		binary.LittleEndian.PutUint16(s[2:], uint16(in.Off))
		binary.LittleEndian.PutUint32(s[4:], uint32(in.Imm))
	}
	return out
}

// Imm64 returns the 64-bit immediate of the lddw that starts at insns[i].
func Imm64(insns []Insn, i int) uint64 {
	return uint64(uint32(insns[i].Imm)) | uint64(uint32(insns[i+1].Imm))<<32
}

func (i Insn) String() string {
	return fmt.Sprintf("{code:%#02x dst:r%d src:r%d off:%d imm:%d}", i.Code, i.Dst, i.Src, i.Off, i.Imm)
}
