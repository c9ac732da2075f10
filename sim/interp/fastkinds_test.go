package interp

import (
	"testing"

	"github.com/bpfsim/bpfsim/sim/insn"
)

// TestCompileFastPathMatchesSlowPath compiles every opcode with a range
// of registers, offsets and immediates with the fast path and without it:
// the ops, or the refusal, must be the same.
func TestCompileFastPathMatchesSlowPath(t *testing.T) {
	none := func(int32) (*Helper, error) { return &Helper{}, nil }
	exit := insn.Insn{Code: insn.JMP | insn.EXIT}
	compile := func(fast bool, p []insn.Insn) (*Program, error) {
		useFastKinds = fast
		defer func() { useFastKinds = true }()
		return Compile(p, none)
	}
	checked := 0
	for code := 0; code < 256; code++ {
		for _, regs := range [][2]uint8{{0, 0}, {1, 2}, {10, 11}, {12, 1}, {1, 12}} {
			for _, off := range []int16{0, 1, 2, -1, 8, 16, 32, 5} {
				for _, imm := range []int32{0, 1, -1, 16, 32, 64, 0x7fffffff} {
					in := insn.Insn{Code: uint8(code), Dst: regs[0], Src: regs[1], Off: off, Imm: imm}
					p := []insn.Insn{in, exit, exit, exit}
					fast, fErr := compile(true, p)
					slow, sErr := compile(false, p)
					checked++
					if (fErr == nil) != (sErr == nil) {
						t.Fatalf("%+v: fast path %v, slow path %v", in, fErr, sErr)
					}
					if fErr != nil {
						continue
					}
					for i := range fast.ops {
						if fast.ops[i] != slow.ops[i] {
							t.Fatalf("%+v: op %d is %+v on the fast path, %+v on the slow one", in, i, fast.ops[i], slow.ops[i])
						}
					}
				}
			}
		}
	}
	t.Logf("%d instructions compared", checked)
}
