package verifier

import (
	"strings"
	"testing"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// typeSwitch is a body that answers by the type of the dynptr in R1: 10
// for xdp, 20 for local, and needs the call for skb.
var typeSwitch = []insn.Insn{
	{Code: insn.LDX | insn.MEM | insn.W, Dst: insn.R5, Src: insn.R1, Off: uapi.DynptrOffSize},
	{Code: insn.ALU | insn.RSH | insn.K, Dst: insn.R5, Imm: uapi.DynptrTypeShift},
	{Code: insn.ALU | insn.AND | insn.K, Dst: insn.R5, Imm: uapi.DynptrTypeMask},
	{Code: insn.JMP32 | insn.JEQ | insn.K, Dst: insn.R5, Imm: uapi.DynptrTypeXDP, Off: 3},
	{Code: insn.JMP32 | insn.JEQ | insn.K, Dst: insn.R5, Imm: uapi.DynptrTypeSKB, Off: 4},
	{Code: insn.ALU64 | insn.MOV | insn.K, Dst: insn.R0, Imm: 20},
	{Code: insn.JMP | insn.EXIT},
	{Code: insn.ALU64 | insn.MOV | insn.K, Dst: insn.R0, Imm: 10},
	{Code: insn.JMP | insn.EXIT},
	InlineBail,
}

func dynptrFacts(types ...uint8) *KfuncFacts {
	var f *KfuncFacts
	for _, t := range types {
		g := KfuncFacts{}
		for i := range g.Args {
			g.Args[i] = tnumUnknown
		}
		g.Dynptr[0] = true
		g.DynptrWord[0] = tnum{value: uint64(t) << uapi.DynptrTypeShift, mask: 0xffffffff &^ (uint64(uapi.DynptrTypeMask) << uapi.DynptrTypeShift)}
		if f == nil {
			f = &g
			continue
		}
		f.DynptrWord[0] = f.DynptrWord[0].union(g.DynptrWord[0])
	}
	return f
}

// A body is cut down to the case the facts leave: the other cases and the
// tests that chose between them go, and the exit becomes the end of the
// inlined code; a case that needs the call keeps it; facts that do not
// decide keep every case.
func TestInlinedBodyKeepsOnlyTheCaseTheVerifierKnows(t *testing.T) {
	for _, c := range []struct {
		name  string
		facts *KfuncFacts
		ok    bool
		want  string // the constants moved into R0, in order
	}{
		{"xdp", dynptrFacts(uapi.DynptrTypeXDP), true, "10"},
		{"local", dynptrFacts(uapi.DynptrTypeLocal), true, "20"},
		{"ring buffer", dynptrFacts(uapi.DynptrTypeRingbuf), true, "20"},
		{"skb needs the call", dynptrFacts(uapi.DynptrTypeSKB), false, ""},
		{"xdp or local: both kept", dynptrFacts(uapi.DynptrTypeXDP, uapi.DynptrTypeLocal), true, "20 10"},
		{"xdp or skb: the call stays", dynptrFacts(uapi.DynptrTypeXDP, uapi.DynptrTypeSKB), false, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := CheckInlineBody("switch", typeSwitch); err != nil {
				t.Fatal(err)
			}
			out, ok := specializeBody(typeSwitch, c.facts)
			if ok != c.ok {
				t.Fatalf("inlined: %v, want %v\n%s", ok, c.ok, insn.Dump(out, nil))
			}
			if !ok {
				return
			}
			var consts []string
			for i, in := range out {
				switch {
				case in.Code == insn.ALU64|insn.MOV|insn.K && in.Dst == insn.R0:
					consts = append(consts, sprintf("%d", in.Imm))
				case in.Code == insn.JMP|insn.EXIT, in.Code == insn.JMP|insn.CALL:
					t.Errorf("insn %d is left: %s", i, insn.Format(out, i, nil))
				case in.Class() == insn.JMP || in.Class() == insn.JMP32:
					if t2 := i + 1 + int(in.Off); t2 < 0 || t2 > len(out) {
						t.Errorf("insn %d jumps out of the inlined code", i)
					}
				}
			}
			if got := strings.Join(consts, " "); got != c.want {
				t.Errorf("R0 gets %q, want %q\n%s", got, c.want, insn.Dump(out, nil))
			}
			if c.want == "10" || c.want == "20" {
				for _, in := range out {
					if in.Class() == insn.JMP32 {
						t.Errorf("a type test is left\n%s", insn.Dump(out, nil))
					}
				}
			}
		})
	}
}

// What a body may not do is refused when the kfunc is registered.
func TestInlineBodiesAreChecked(t *testing.T) {
	exit := insn.Insn{Code: insn.JMP | insn.EXIT}
	for _, c := range []struct {
		name string
		body []insn.Insn
		msg  string
	}{
		{"no exit at the end", []insn.Insn{{Code: insn.ALU64 | insn.MOV | insn.K}}, "must end with an exit"},
		{"a callee-saved register", []insn.Insn{{Code: insn.ALU64 | insn.MOV | insn.K, Dst: insn.R6}, exit}, "R0-R5"},
		{"the stack", []insn.Insn{{Code: insn.LDX | insn.MEM | insn.W, Src: insn.R10, Off: -4}, exit}, "R0-R5"},
		{"a store", []insn.Insn{{Code: insn.STX | insn.MEM | insn.W, Dst: insn.R1, Src: insn.R2}, exit}, "stores"},
		{"a helper call", []insn.Insn{{Code: insn.JMP | insn.CALL, Imm: 1}, exit}, "calls"},
		{"a backward jump", []insn.Insn{{Code: insn.ALU64 | insn.MOV | insn.K}, {Code: insn.JMP | insn.JA, Off: -2}, exit}, "jumps back"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := CheckInlineBody("k", c.body)
			if err == nil || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want %q", err, c.msg)
			}
		})
	}
}
