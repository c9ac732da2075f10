package sim_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// Instruction builders for programs written the way the selftests' naked
// asm writes them, offsets and all.
func mov64(dst uint8, imm int32) insn.Insn {
	return insn.Insn{Code: insn.ALU64 | insn.MOV | insn.K, Dst: dst, Imm: imm}
}
func movReg(dst, src uint8) insn.Insn {
	return insn.Insn{Code: insn.ALU64 | insn.MOV | insn.X, Dst: dst, Src: src}
}
func jneImm(dst uint8, imm int32, off int16) insn.Insn {
	return insn.Insn{Code: insn.JMP | insn.JNE | insn.K, Dst: dst, Imm: imm, Off: off}
}
func helperCall(id int32) insn.Insn { return insn.Insn{Code: insn.JMP | insn.CALL, Imm: id} }
func localCall(off int32) insn.Insn {
	return insn.Insn{Code: insn.JMP | insn.CALL, Src: insn.PseudoCall, Imm: off}
}
func exitInsn() insn.Insn { return insn.Insn{Code: insn.JMP | insn.EXIT} }

// xlatedLines is the dump the way the selftests' __xlated sees it: "N: "
// and the instruction, without bpftool's opcode column.
func xlatedLines(p *sim.Program) []string {
	opcode := regexp.MustCompile(`^\s*(\d+): \([0-9a-f]{2}\) `)
	var out []string
	for _, l := range strings.Split(strings.TrimRight(p.Xlated(), "\n"), "\n") {
		if m := opcode.FindStringSubmatch(l); m != nil {
			out = append(out, m[1]+": "+l[len(m[0]):])
		}
	}
	return out
}

// matchXlated applies __xlated's rule to a whole program: each expected
// line starts the dumped line at the same position, and there are as many.
func matchXlated(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			return false
		}
	}
	return true
}

// The tests of tools/testing/selftests/bpf/progs/verifier_dead_code.c
// (bpf-next RFC "selftests/bpf: tests for
// opt_hard_wire_dead_code_branches()", November 2024), and the example
// of the patch they test: a condition inside a function that one caller
// always calls with the same argument.
var deadCodeCases = []struct {
	name   string
	insns  []insn.Insn
	xlated []string
	retval int64 // -1: not checked (the selftest has no __retval)
	// seen is the xlated code of the kernel's own pass, which decides
	// from which successors were reached (verifier.HardWireFromSeen).
	seen []string
}{
	{
		name: "cond_always_false",
		insns: []insn.Insn{
			mov64(insn.R1, 1),
			mov64(insn.R0, 42),
			jneImm(insn.R1, 1, 1),
			mov64(insn.R0, 24),
			exitInsn(),
		},
		xlated: []string{"0: r1 = 1", "1: r0 = 42", "2: r0 = 24", "3: exit"},
		retval: 24,
		seen:   []string{"0: r1 = 1", "1: r0 = 42", "2: if r1 != 0x1 goto pc+1", "3: r0 = 24", "4: exit"},
	},
	{
		name: "cond_always_true",
		insns: []insn.Insn{
			mov64(insn.R1, 2),
			mov64(insn.R0, 42),
			jneImm(insn.R1, 1, 1),
			mov64(insn.R0, 24),
			exitInsn(),
		},
		xlated: []string{"0: r1 = 2", "1: r0 = 42", "2: exit"},
		retval: 42,
		seen:   []string{"0: r1 = 2", "1: r0 = 42", "2: exit"},
	},
	{
		name: "cond_unknown",
		insns: []insn.Insn{
			helperCall(uapi.FuncGetPrandomU32),
			movReg(insn.R1, insn.R0),
			mov64(insn.R0, 42),
			jneImm(insn.R1, 1, 1),
			mov64(insn.R0, 24),
			exitInsn(),
		},
		xlated: []string{"0: call", "1: r1 = r0", "2: r0 = 42", "3: if r1 != 0x1 goto pc+1", "4: r0 = 24", "5: exit"},
		retval: -1,
		seen:   []string{"0: call", "1: r1 = r0", "2: r0 = 42", "3: if r1 != 0x1 goto pc+1", "4: r0 = 24", "5: exit"},
	},
	{
		name: "condition on a constant argument",
		insns: []insn.Insn{
			mov64(insn.R1, 42),
			localCall(1),
			exitInsn(),
			// subprogram
			mov64(insn.R0, 1),
			jneImm(insn.R1, 42, 1),
			mov64(insn.R0, 2),
			exitInsn(),
		},
		xlated: []string{"0: r1 = 42", "1: call pc+1", "2: exit", "3: r0 = 1", "4: r0 = 2", "5: exit"},
		retval: 2,
		seen:   []string{"0: r1 = 42", "1: call pc+1", "2: exit", "3: r0 = 1", "4: if r1 != 0x2a goto pc+1", "5: r0 = 2", "6: exit"},
	},
}

func TestDeadCodeRemoval(t *testing.T) {
	for _, mode := range []verifier.HardWire{verifier.HardWireFromPredictions, verifier.HardWireFromSeen} {
		k, err := sim.NewKernel(&sim.Options{HardWire: mode})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range deadCodeCases {
			t.Run(mode.String()+"/"+c.name, func(t *testing.T) {
				p, err := k.LoadInsns(ebpf.SocketFilter, c.name, c.insns)
				if err != nil {
					t.Fatal(err)
				}
				defer p.Close()
				want := c.xlated
				if mode == verifier.HardWireFromSeen {
					want = c.seen
				}
				if got := xlatedLines(p); !matchXlated(got, want) {
					t.Errorf("xlated:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
				if c.retval < 0 {
					return
				}
				ret, err := p.Run(&sim.RunOptions{Data: make([]byte, 64)})
				if err != nil || int64(ret) != c.retval {
					t.Errorf("retval %d, %v; want %d", ret, err, c.retval)
				}
			})
		}
	}
}

// Unverified programs are run as written: no pass touches them.
func TestUnverifiedProgramsAreNotRewritten(t *testing.T) {
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := deadCodeCases[0]
	p, err := k.LoadInsnsWithOptions(ebpf.SocketFilter, c.name, c.insns, sim.ProgramOptions{Unverified: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got := p.Instructions(); len(got) != len(c.insns) {
		t.Errorf("an unverified program was rewritten:\n%s", p.Xlated())
	}
}
