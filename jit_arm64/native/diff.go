package native

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"

	"golang.org/x/arch/arm64/arm64asm"
)

// Mismatch is one case on which two runners disagree.
type Mismatch struct {
	Index int
	Case  Case
	A, B  Result
	// What lists the differences ("x0", "data[16:24]", "clobbered",
	// "fault").
	What []string
}

func (m Mismatch) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "case %d differs in %s:\n", m.Index, strings.Join(m.What, ", "))
	fmt.Fprintf(&sb, "  a: x0=%#x clobbered=%#x fault=%q\n", m.A.X0, m.A.Clobbered, m.A.Fault)
	fmt.Fprintf(&sb, "  b: x0=%#x clobbered=%#x fault=%q\n", m.B.X0, m.B.Clobbered, m.B.Fault)
	for _, w := range m.What {
		if strings.HasPrefix(w, "data[") {
			var lo, hi int
			fmt.Sscanf(w, "data[%d:%d]", &lo, &hi)
			fmt.Fprintf(&sb, "  %s: a=% x b=% x\n", w, m.A.Data[lo:hi], m.B.Data[lo:hi])
		}
	}
	fmt.Fprintf(&sb, "  input data: % x\n", m.Case.Data)
	sb.WriteString(Disassemble(m.Case.Code))
	return sb.String()
}

// Disassemble lists code one instruction a line: offset, word, and the
// GNU syntax from golang.org/x/arch.
func Disassemble(code []byte) string {
	var sb strings.Builder
	for off := 0; off+4 <= len(code); off += 4 {
		w := binary.LittleEndian.Uint32(code[off:])
		text := "?"
		if in, err := arm64asm.Decode(code[off : off+4]); err == nil {
			text = arm64asm.GNUSyntax(in)
		}
		fmt.Fprintf(&sb, "  %4x: %08x  %s\n", off, w, text)
	}
	return sb.String()
}

// Compare returns the cases whose results differ between a and b: X0,
// Data (each differing 8-byte-aligned chunk), Clobbered, or whether the
// case faulted. The fault messages themselves are not compared: qemu
// names a signal, the emulator the faulting instruction.
func Compare(cases []Case, a, b []Result) []Mismatch {
	var out []Mismatch
	for i := range cases {
		ra, rb := a[i], b[i]
		var what []string
		switch {
		case (ra.Fault != "") != (rb.Fault != ""):
			what = append(what, "fault")
		case ra.Fault != "":
			// Both faulted: nothing else is defined.
		default:
			if ra.X0 != rb.X0 {
				what = append(what, "x0")
			}
			if ra.Clobbered != rb.Clobbered {
				what = append(what, "clobbered")
			}
			if !bytes.Equal(ra.Data, rb.Data) {
				for lo := 0; lo < len(ra.Data); lo += 8 {
					hi := min(lo+8, len(ra.Data))
					if !bytes.Equal(ra.Data[lo:hi], rb.Data[lo:hi]) {
						what = append(what, fmt.Sprintf("data[%d:%d]", lo, hi))
					}
				}
			}
		}
		if len(what) > 0 {
			out = append(out, Mismatch{Index: i, Case: cases[i], A: ra, B: rb, What: what})
		}
	}
	return out
}

// Diff runs cases natively under qemu (a) and on the emulator (b) and
// returns where they differ.
func Diff(qemu string, cases []Case, opts Options) ([]Mismatch, error) {
	a, err := RunNative(qemu, cases, opts)
	if err != nil {
		return nil, err
	}
	b, err := Emulate(cases)
	if err != nil {
		return nil, err
	}
	return Compare(cases, a, b), nil
}
