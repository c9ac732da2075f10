package insn

import (
	"bytes"
	"encoding/binary"

	"github.com/cilium/ebpf/asm"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// FromAsm encodes cilium/ebpf instructions, resolving jump and call labels
// and map fds the way cilium/ebpf's Marshal does before a load. in is not
// modified.
//
// Loading is on the hot path of test suites, so the common instructions
// are encoded directly; a program with anything else (cilium/ebpf's
// extended opcodes: signed division, sign-extending moves, atomics, or
// platform-specific calls) goes through Marshal.
func FromAsm(in asm.Instructions) ([]Insn, error) {
	if out, ok := fromAsmFast(in); ok {
		return out, nil
	}
	return fromAsmMarshal(in)
}

func fromAsmMarshal(in asm.Instructions) ([]Insn, error) {
	insns := make(asm.Instructions, len(in))
	copy(insns, in)
	var buf bytes.Buffer
	if err := insns.Marshal(&buf, binary.LittleEndian); err != nil {
		return nil, errors.Wrap(uapi.EINVAL, err.Error())
	}
	return Decode(buf.Bytes())
}

// HasMetadata reports whether ins carries any metadata (a symbol, a
// reference, a map, source lines...). Most instructions carry none, and
// each metadata read is a walk of a list: checking first saves it.
func HasMetadata(ins *asm.Instruction) bool { return ins.Metadata != asm.Metadata{} }

// symbolOf is ins.Symbol() without the metadata walk for the many
// instructions that carry no metadata.
func symbolOf(ins *asm.Instruction) string {
	if !HasMetadata(ins) {
		return ""
	}
	return ins.Symbol()
}

// fromAsmFast encodes in without Marshal, or reports that it cannot.
func fromAsmFast(in asm.Instructions) ([]Insn, bool) {
	n := 0
	var symbols map[string]int
	for i := range in {
		ins := &in[i]
		if sym := symbolOf(ins); sym != "" {
			if symbols == nil {
				symbols = make(map[string]int)
			}
			if _, dup := symbols[sym]; dup {
				return nil, false
			}
			symbols[sym] = n
		}
		if ins.OpCode.IsDWordLoad() {
			n += 2
		} else {
			n++
		}
	}
	out := make([]Insn, 0, n)
	var buf bytes.Buffer // for Marshal, shared by the instructions needing it
	for i := range in {
		ins := &in[i]
		off, cons := ins.Offset, ins.Constant
		// Symbols, references and maps live in the metadata; most
		// instructions have none, and reading it is a list walk per key.
		if HasMetadata(ins) {
			if ref := ins.Reference(); ref != "" {
				target, ok := symbols[ref]
				switch {
				case ins.IsFunctionReference() && cons == -1, uint8(ins.OpCode) == JMP32|JA && cons == -1:
					if !ok {
						return nil, false
					}
					cons = int64(target - len(out) - 1)
				case ins.OpCode.Class().IsJump() && off == -1:
					if !ok {
						return nil, false
					}
					off = int16(target - len(out) - 1)
				}
			}
			if ins.IsLoadFromMap() {
				if m := ins.Map(); m != nil {
					fd := m.FD()
					if fd < 0 {
						return nil, false
					}
					cons = int64(uint64(cons)&^0xffffffff | uint64(uint32(fd)))
				}
			}
		}
		if ins.IsBuiltinCall() && (cons < 0 || cons > 0xffff) {
			return nil, false // a platform-tagged call: let Marshal decide
		}
		if ins.OpCode > 0xff || uint8(ins.OpCode)&0xe7 == STX|ATOMIC {
			// cilium/ebpf's extended opcodes (signed division,
			// sign-extending moves, atomics): its own encoder knows them.
			one := *ins
			one.Offset, one.Constant = off, cons
			buf.Reset()
			if _, err := one.Marshal(&buf, binary.LittleEndian); err != nil || buf.Len()%Size != 0 {
				return nil, false
			}
			out = appendDecoded(out, buf.Bytes())
			continue
		}
		op := uint8(ins.OpCode)
		if ins.OpCode.Class().IsALU() {
			off = 0 // Marshal keeps no offset on ALU instructions
		}
		if ins.OpCode.IsDWordLoad() {
			out = append(out,
				Insn{Code: op, Dst: uint8(ins.Dst) & 0xf, Src: uint8(ins.Src) & 0xf, Off: off, Imm: int32(uint32(cons))},
				Insn{Imm: int32(uint32(uint64(cons) >> 32))})
			continue
		}
		out = append(out, Insn{Code: op, Dst: uint8(ins.Dst) & 0xf, Src: uint8(ins.Src) & 0xf, Off: off, Imm: int32(cons)})
	}
	return out, true
}
