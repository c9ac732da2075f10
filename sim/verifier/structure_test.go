package verifier_test

import (
	"errors"
	"testing"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

var (
	exit = insn.Insn{Code: insn.JMP | insn.EXIT}
	mov0 = insn.Insn{Code: insn.ALU64 | insn.MOV | insn.K}
	lddw = insn.Insn{Code: insn.LD | insn.IMM | insn.DW}
	ja   = func(off int16) insn.Insn { return insn.Insn{Code: insn.JMP | insn.JA, Off: off} }
	call = func(rel int32) insn.Insn {
		return insn.Insn{Code: insn.JMP | insn.CALL, Src: insn.PseudoCall, Imm: rel}
	}
	jeq   = func(off int16) insn.Insn { return insn.Insn{Code: insn.JMP | insn.JEQ | insn.K, Off: off} }
	gotol = func(imm int32) insn.Insn { return insn.Insn{Code: insn.JMP32 | insn.JA, Imm: imm} }
)

func TestStructuralChecksRejectWhatTheKernelRejects(t *testing.T) {
	for _, c := range []struct {
		name  string
		p     []insn.Insn
		errno uapi.Errno
		msg   string
	}{
		{"empty", nil, uapi.E2BIG, "program has 0 instructions; it must have 1 to 1000000"},
		{"no exit", []insn.Insn{mov0}, uapi.EINVAL, "last insn is not an exit or jmp"},
		{"ends in a conditional jump", []insn.Insn{mov0, jeq(-2)}, uapi.EINVAL, "last insn is not an exit or jmp"},
		{"jump past the end", []insn.Insn{ja(1), exit}, uapi.EINVAL, "jump out of range from insn 0 to 2"},
		{"jump before the start", []insn.Insn{ja(-2), exit}, uapi.EINVAL, "jump out of range from insn 0 to -1"},
		{"gotol out of range", []insn.Insn{gotol(5), exit}, uapi.EINVAL, "jump out of range from insn 0 to 6"},
		{"jump into lddw", []insn.Insn{ja(1), lddw, {}, exit}, uapi.EINVAL, "jump into the middle of ldimm64 insn 1"},
		// The kernel checks function ends before lddw shapes.
		{"lddw without second half", []insn.Insn{exit, lddw}, uapi.EINVAL, "last insn is not an exit or jmp"},
		{"lddw with a bad second half", []insn.Insn{lddw, {Code: 1}, exit}, uapi.EINVAL, "invalid bpf_ld_imm64 insn"},
		{"lddw with an unknown pseudo source", []insn.Insn{{Code: lddw.Code, Src: 7}, {}, exit}, uapi.EINVAL, "unrecognized bpf_ld_imm64 insn"},
		{"jump across functions", []insn.Insn{call(1), ja(1), exit, exit}, uapi.EINVAL, "jump out of range from insn 1 to 3"},
		{"function falls off its end", []insn.Insn{call(1), exit, exit, mov0}, uapi.EINVAL, "last insn is not an exit or jmp"},
		{"call to nowhere", []insn.Insn{call(5), exit}, uapi.EINVAL, "call to invalid destination"},
		{"register 11", []insn.Insn{{Code: mov0.Code, Dst: insn.AX}, exit}, uapi.EINVAL, "R11 is invalid"},
		{"source register 12", []insn.Insn{{Code: insn.ALU64 | insn.MOV | insn.X, Src: 12}, exit}, uapi.EINVAL, "R12 is invalid"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := verifier.CheckStructure(c.p)
			if err == nil {
				err = verifier.CheckRegisters(c.p)
			}
			var ve *verifier.Error
			if !errors.As(err, &ve) || !errors.Is(err, c.errno) || ve.Msg != c.msg {
				t.Errorf("got %v, want %v %q", err, c.errno, c.msg)
			}
		})
	}
}

func TestSubprogramsAreFoundFromCalls(t *testing.T) {
	p := []insn.Insn{call(2), mov0, exit, call(1), exit, mov0, exit}
	subs, err := verifier.CheckStructure(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []verifier.Subprog{{Start: 0, End: 3}, {Start: 3, End: 5}, {Start: 5, End: 7}}
	if len(subs) != len(want) {
		t.Fatalf("got %v, want %v", subs, want)
	}
	for i := range want {
		if subs[i] != want[i] {
			t.Errorf("got %v, want %v", subs, want)
		}
	}
}
