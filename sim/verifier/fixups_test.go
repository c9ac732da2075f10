package verifier_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	pkgerrors "github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// dump renders instructions as bpftool does, without the index column's
// padding, one per line.
func dump(insns []insn.Insn) string {
	var lines []string
	for i := 0; i < len(insns); i++ {
		lines = append(lines, fmt.Sprintf("%d: %s", i, insn.Format(insns, i, nil)))
		if insns[i].IsLdImm64() {
			i++
		}
	}
	return strings.Join(lines, "\n")
}

func fixup(t *testing.T, p *verifier.Prog, cfg verifier.FixupConfig) {
	t.Helper()
	if err := verifier.Fixup(p, &cfg); err != nil {
		t.Fatal(err)
	}
}

func TestHardWireDeadCodeBranches(t *testing.T) {
	// 0: if r1 == 0x0 goto pc+2; 1: r0 = 1; 2: exit; 3: r0 = 2; 4: exit
	prog := []insn.Insn{jeqInsn(2), movInsn(insn.R0, 1), exitInsn(), movInsn(insn.R0, 2), exitInsn()}
	const (
		both      = "0: (15) if r1 == 0x0 goto pc+2\n1: (b7) r0 = 1\n2: (95) exit\n3: (b7) r0 = 2\n4: (95) exit"
		jumpOnly  = "0: (b7) r0 = 2\n1: (95) exit"
		fallsOnly = "0: (b7) r0 = 1\n1: (95) exit"
	)
	for _, c := range []struct {
		name                  string
		mode                  verifier.HardWire
		trueTaken, falseTaken bool
		unseen                []int
		want                  string
	}{
		{"predicted both ways", verifier.HardWireFromPredictions, true, true, nil, both},
		{"predicted taken", verifier.HardWireFromPredictions, true, false, nil,
			// The fall-through, still seen, stays behind the goto.
			"0: (05) goto pc+2\n1: (b7) r0 = 1\n2: (95) exit\n3: (b7) r0 = 2\n4: (95) exit"},
		{"predicted not taken", verifier.HardWireFromPredictions, false, true, nil,
			"0: (b7) r0 = 1\n1: (95) exit\n2: (b7) r0 = 2\n3: (95) exit"},
		{"predicted neither way", verifier.HardWireFromPredictions, false, false, nil, both},
		{"predicted taken, fall-through dead", verifier.HardWireFromPredictions, true, false, []int{1, 2}, jumpOnly},
		{"seen both ways", verifier.HardWireFromSeen, true, false, nil, both},
		{"fall-through never seen", verifier.HardWireFromSeen, true, true, []int{1, 2}, jumpOnly},
		{"target never seen", verifier.HardWireFromSeen, true, true, []int{3, 4}, fallsOnly},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := seenProg(prog)
			p.Aux[0].TrueTaken, p.Aux[0].FalseTaken = c.trueTaken, c.falseTaken
			for _, i := range c.unseen {
				p.Aux[i].Seen = false
			}
			fixup(t, p, verifier.FixupConfig{HardWire: c.mode})
			if got := dump(p.Insns); got != c.want {
				t.Errorf("got\n%s\nwant\n%s", got, c.want)
			}
		})
	}
}

func TestRemoveNops(t *testing.T) {
	mayGoto := func(off int16) insn.Insn { return insn.Insn{Code: insn.JMP | insn.JCOND, Off: off} }
	for _, c := range []struct {
		name  string
		insns []insn.Insn
		want  string
	}{
		{"goto +0", []insn.Insn{jaInsn(0), movInsn(insn.R0, 0), exitInsn()}, "0: (b7) r0 = 0\n1: (95) exit"},
		{"may_goto +0", []insn.Insn{mayGoto(0), movInsn(insn.R0, 0), exitInsn()}, "0: (b7) r0 = 0\n1: (95) exit"},
		// Removing the second makes the first a may_goto +0 too.
		{"may_goto +1; may_goto +0", []insn.Insn{movInsn(insn.R0, 0), mayGoto(1), mayGoto(0), exitInsn()}, "0: (b7) r0 = 0\n1: (95) exit"},
		// The scan steps back only for may_goto: a goto that becomes a
		// nop behind the one removed stays.
		{"goto +1; goto +0", []insn.Insn{movInsn(insn.R0, 0), jaInsn(1), jaInsn(0), exitInsn()}, "0: (b7) r0 = 0\n1: (05) goto pc+0\n2: (95) exit"},
		{"gotol +0 is not a nop to the kernel", []insn.Insn{gotolInsn(0), exitInsn()}, "0: (06) gotol pc+0\n1: (95) exit"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := seenProg(c.insns)
			fixup(t, p, verifier.FixupConfig{})
			if got := dump(p.Insns); got != c.want {
				t.Errorf("got\n%s\nwant\n%s", got, c.want)
			}
		})
	}
}

func alu(cls, op uint8, dst, src uint8, off int16) insn.Insn {
	return insn.Insn{Code: cls | op | insn.X, Dst: dst, Src: src, Off: off}
}

// The guards as Linux 6.18 emits them (bpftool prog dump xlated on this
// project's machine, r1 op= r0), with bpfsim's disassembly of the signed
// forms.
var divModGuards = []struct {
	in   insn.Insn
	want string
}{
	{alu(insn.ALU64, insn.DIV, insn.R1, insn.R0, 0),
		"0: (55) if r0 != 0x0 goto pc+2\n1: (ac) w1 ^= w1\n2: (05) goto pc+1\n3: (3f) r1 /= r0"},
	{alu(insn.ALU64, insn.MOD, insn.R1, insn.R0, 0),
		"0: (15) if r0 == 0x0 goto pc+1\n1: (9f) r1 %= r0"},
	{alu(insn.ALU, insn.DIV, insn.R1, insn.R0, 0),
		"0: (56) if w0 != 0x0 goto pc+2\n1: (ac) w1 ^= w1\n2: (05) goto pc+1\n3: (3c) w1 /= w0"},
	{alu(insn.ALU, insn.MOD, insn.R1, insn.R0, 0),
		"0: (16) if w0 == 0x0 goto pc+2\n1: (9c) w1 %= w0\n2: (05) goto pc+1\n3: (bc) w1 = w1"},
	{alu(insn.ALU64, insn.DIV, insn.R1, insn.R0, 1),
		"0: (bf) r11 = r0\n1: (07) r11 += 1\n2: (25) if r11 > 0x1 goto pc+4\n3: (15) if r11 == 0x0 goto pc+1\n" +
			"4: (b7) r1 = 0\n5: (87) r1 = -r1\n6: (05) goto pc+1\n7: (3f) r1 s/= r0"},
	{alu(insn.ALU64, insn.MOD, insn.R1, insn.R0, 1),
		"0: (bf) r11 = r0\n1: (07) r11 += 1\n2: (25) if r11 > 0x1 goto pc+3\n3: (15) if r11 == 0x1 goto pc+3\n" +
			"4: (b4) w1 = 0\n5: (05) goto pc+1\n6: (9f) r1 s%= r0"},
	{alu(insn.ALU, insn.DIV, insn.R1, insn.R0, 1),
		"0: (bf) r11 = r0\n1: (04) w11 += 1\n2: (26) if w11 > 0x1 goto pc+4\n3: (16) if w11 == 0x0 goto pc+1\n" +
			"4: (b4) w1 = 0\n5: (84) w1 = -w1\n6: (05) goto pc+1\n7: (3c) w1 s/= w0"},
	{alu(insn.ALU, insn.MOD, insn.R1, insn.R0, 1),
		"0: (bf) r11 = r0\n1: (04) w11 += 1\n2: (26) if w11 > 0x1 goto pc+3\n3: (16) if w11 == 0x1 goto pc+4\n" +
			"4: (b4) w1 = 0\n5: (05) goto pc+1\n6: (9c) w1 s%= w0\n7: (05) goto pc+1\n8: (bc) w1 = w1"},
	{insn.Insn{Code: insn.ALU64 | insn.DIV | insn.K, Dst: insn.R1, Off: 1, Imm: -1}, "0: (87) r1 = -r1"},
	{insn.Insn{Code: insn.ALU64 | insn.MOD | insn.K, Dst: insn.R1, Off: 1, Imm: -1}, "0: (b4) w1 = 0"},
	{insn.Insn{Code: insn.ALU | insn.DIV | insn.K, Dst: insn.R1, Off: 1, Imm: -1}, "0: (84) w1 = -w1"},
	{insn.Insn{Code: insn.ALU | insn.MOD | insn.K, Dst: insn.R1, Off: 1, Imm: -1}, "0: (b4) w1 = 0"},
	{insn.Insn{Code: insn.ALU64 | insn.DIV | insn.K, Dst: insn.R1, Imm: 3}, "0: (37) r1 /= 3"},
}

func TestDivModGuardsAreTheKernels(t *testing.T) {
	for _, c := range divModGuards {
		t.Run(insn.Format([]insn.Insn{c.in}, 0, nil), func(t *testing.T) {
			p := seenProg([]insn.Insn{c.in, exitInsn()})
			fixup(t, p, verifier.FixupConfig{})
			if got := dump(p.Insns[:len(p.Insns)-1]); got != c.want {
				t.Errorf("got\n%s\nwant\n%s", got, c.want)
			}
		})
	}
}

// A guarded division computes what BPF defines for every divisor,
// including those a CPU traps on; the interpreter computes the same from
// the bare instruction.
func TestDivModGuardsComputeTheDefinedResults(t *testing.T) {
	space := mem.New()
	base, err := space.Vmalloc(interp.StackSize, mem.PermRW, "bpf_stack")
	if err != nil {
		t.Fatal(err)
	}
	stack, err := space.Bytes(base, interp.StackSize)
	if err != nil {
		t.Fatal(err)
	}
	m, err := interp.NewMachine(0, space.NewTLB(), base, stack)
	if err != nil {
		t.Fatal(err)
	}
	run := func(insns []insn.Insn, a, b uint64) uint64 {
		// r1 = a, r2 = b; the operation; r0 = r1.
		prog := append([]insn.Insn{}, insns...)
		prog = append(prog, insn.Insn{Code: insn.ALU64 | insn.MOV | insn.X, Dst: insn.R0, Src: insn.R1}, exitInsn())
		code, err := interp.Compile(prog, func(int32) (*interp.Helper, error) { return nil, errors.New("no helpers") })
		if err != nil {
			t.Fatal(err)
		}
		r0, err := m.Run(code, a, b)
		if err != nil {
			t.Fatal(err)
		}
		return r0
	}
	values := []uint64{0, 1, 7, math.MaxUint64, math.MaxUint64 - 6, 1 << 63, math.MaxInt64, 0xffffffff, 0x80000000, 0xffffffff80000000, 0x1234567880000000}
	for _, cls := range []uint8{insn.ALU, insn.ALU64} {
		for _, op := range []uint8{insn.DIV, insn.MOD} {
			for _, signed := range []int16{0, 1} {
				bare := alu(cls, op, insn.R1, insn.R2, signed)
				p := seenProg([]insn.Insn{bare, exitInsn()})
				fixup(t, p, verifier.FixupConfig{})
				guarded := p.Insns[:len(p.Insns)-1]
				for _, a := range values {
					for _, b := range values {
						if want, got := run([]insn.Insn{bare}, a, b), run(guarded, a, b); got != want {
							t.Errorf("%s with r1=%#x r2=%#x: guarded %#x, bare %#x", insn.Format([]insn.Insn{bare}, 0, nil), a, b, got, want)
						}
					}
				}
			}
		}
	}
}

// calls is a kernel text for the tests: each function's imm is its
// position in a list, from 1000.
type calls struct{ names []string }

func (c *calls) imm(name string) int32 {
	for i, n := range c.names {
		if n == name {
			return int32(1000 + i)
		}
	}
	c.names = append(c.names, name)
	return int32(1000 + len(c.names) - 1)
}

func (c *calls) Helper(id int32) (int32, bool, error) {
	if id == uapi.FuncGetSmpProcessorID {
		return 0, true, nil
	}
	return c.imm(uapi.HelperName(id)), false, nil
}

func (c *calls) MapOp(m *maps.Map, helper int32) (int32, error) {
	return c.imm(m.Type.Name + "_" + uapi.HelperName(helper)), nil
}

func (c *calls) Func(name string) (int32, error) { return c.imm(name), nil }

// genMap is a map type whose lookups inline as seq.
type genMap struct {
	maps.Ops
	seq []insn.Insn
	err error
}

func (g *genMap) GenLookup(call func(string) (insn.Insn, error)) ([]insn.Insn, error) {
	if g.err != nil {
		return nil, g.err
	}
	c, err := call("genmap_find")
	return append([]insn.Insn{c}, g.seq...), err
}

func TestHelperCallFixups(t *testing.T) {
	inline := &maps.Map{Type: &maps.Type{Name: "inline"}}
	inline.Ops = &genMap{seq: []insn.Insn{movInsn(insn.R0, 0)}}
	declined := &maps.Map{Type: &maps.Type{Name: "declined"}}
	declined.Ops = &genMap{err: pkgerrors.WithMessage(uapi.EOPNOTSUPP, "not for this one")}
	plain := &maps.Map{Type: &maps.Type{Name: "plain"}}
	long := &maps.Map{Type: &maps.Type{Name: "long"}}
	long.Ops = &genMap{seq: make([]insn.Insn, 31)}
	for _, c := range []struct {
		name     string
		call     insn.Insn
		mapPtr   *maps.Map
		poisoned bool
		want     string
		errno    uapi.Errno
	}{
		{"a helper becomes a direct call", helperInsn(uapi.FuncKtimeGetNs), nil, false, "0: (85) call unknown#1000", 0},
		{"a helper the JIT inlines stays", helperInsn(uapi.FuncGetSmpProcessorID), nil, false, "0: (85) call bpf_get_smp_processor_id#8", 0},
		{"a lookup the map type generates", helperInsn(uapi.FuncMapLookupElem), inline, false,
			"0: (85) call unknown#1001\n1: (b7) r0 = 0", 0},
		{"a map type that declines", helperInsn(uapi.FuncMapLookupElem), declined, false, "0: (85) call unknown#1001", 0},
		{"a map type with no generator", helperInsn(uapi.FuncMapLookupElem), plain, false, "0: (85) call unknown#1001", 0},
		{"updates go to the map type's function", helperInsn(uapi.FuncMapUpdateElem), inline, false, "0: (85) call unknown#1001", 0},
		{"different maps at one call: the helper", helperInsn(uapi.FuncMapLookupElem), inline, true, "0: (85) call unknown#1000", 0},
		{"a sequence too long for the kernel's buffer", helperInsn(uapi.FuncMapLookupElem), long, false, "", uapi.EINVAL},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := seenProg([]insn.Insn{c.call, exitInsn()})
			p.Aux[0].MapPtr, p.Aux[0].MapPoisoned = c.mapPtr, c.poisoned
			err := verifier.Fixup(p, &verifier.FixupConfig{Calls: &calls{}})
			if c.errno != 0 {
				var verr *verifier.Error
				if !errors.As(err, &verr) || verr.Errno != c.errno {
					t.Fatalf("got %v, want %v", err, c.errno)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := dump(p.Insns[:len(p.Insns)-1]); got != c.want {
				t.Errorf("got\n%s\nwant\n%s", got, c.want)
			}
		})
	}
}

// Patches are not scanned again: the division inside a guard is not
// guarded twice, and jumps around patched instructions keep their
// targets.
func TestMiscFixupsPatchEachInstructionOnce(t *testing.T) {
	p := seenProg([]insn.Insn{
		jeqInsn(2), // to the exit
		alu(insn.ALU64, insn.DIV, insn.R1, insn.R2, 0),
		alu(insn.ALU64, insn.MOD, insn.R1, insn.R2, 0),
		exitInsn(),
	})
	fixup(t, p, verifier.FixupConfig{})
	want := "0: (15) if r1 == 0x0 goto pc+6\n1: (55) if r2 != 0x0 goto pc+2\n2: (ac) w1 ^= w1\n3: (05) goto pc+1\n4: (3f) r1 /= r2\n" +
		"5: (15) if r2 == 0x0 goto pc+1\n6: (9f) r1 %= r2\n7: (95) exit"
	if got := dump(p.Insns); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// A guard that pushes a jump's target beyond 16 bits fails the load with
// the kernel's error, naming the instruction being patched.
func TestFixupsRefuseOffsetsPastSixteenBits(t *testing.T) {
	insns := make([]insn.Insn, math.MaxInt16+2)
	insns[0] = jaInsn(math.MaxInt16)
	for i := 1; i < len(insns)-1; i++ {
		insns[i] = movInsn(insn.R0, 0)
	}
	insns[7] = alu(insn.ALU64, insn.DIV, insn.R1, insn.R2, 0)
	insns[len(insns)-1] = exitInsn()
	err := verifier.Fixup(seenProg(insns), &verifier.FixupConfig{})
	var verr *verifier.Error
	if !errors.As(err, &verr) || verr.Errno != uapi.ERANGE || verr.Msg != "insn 7 cannot be patched due to 16-bit range" {
		t.Fatalf("got %v, want ERANGE \"insn 7 cannot be patched due to 16-bit range\"", err)
	}
}

// TestDeadCodeAndNopsInOneRewrite checks that removing dead code and the
// `goto +0` left behind in one rewrite gives the kernel's two passes'
// program, on programs with random dead instructions and jumps.
func TestDeadCodeAndNopsInOneRewrite(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	for n := 0; n < 2000; n++ {
		size := 2 + rnd.IntN(40)
		insns := make([]insn.Insn, size)
		for i := range insns {
			switch rnd.IntN(4) {
			case 0:
				insns[i] = insn.Insn{Code: insn.JMP | insn.JA, Off: int16(rnd.IntN(size - i))}
			case 1:
				insns[i] = insn.Insn{Code: insn.JMP | insn.JEQ | insn.K, Dst: 1, Off: int16(rnd.IntN(size - i))}
			default:
				insns[i] = insn.Insn{Code: insn.ALU64 | insn.MOV | insn.K, Imm: int32(i)}
			}
		}
		insns[size-1] = insn.Insn{Code: insn.JMP | insn.EXIT}
		seen := make([]bool, size)
		for i := range seen {
			seen[i] = i == 0 || rnd.IntN(3) > 0
		}
		mk := func() *verifier.Prog {
			p := seenProg(append([]insn.Insn(nil), insns...))
			for i := range p.Aux {
				p.Aux[i].Seen = seen[i]
			}
			return p
		}
		a, b := mk(), mk()
		if err := verifier.RemoveDeadCodeThenNops(a); err != nil {
			t.Fatal(err)
		}
		if _, err := verifier.RemoveDeadCodeAndNops(b); err != nil {
			t.Fatal(err)
		}
		if dump(a.Insns) != dump(b.Insns) {
			t.Fatalf("program %d:\n%s\ntwo passes:\n%s\none rewrite:\n%s", n, dump(insns), dump(a.Insns), dump(b.Insns))
		}
	}
}

// TestFixupInOneRewriteMatchesPassByPass checks Fixup's single rewrite
// against the kernel's passes one after the other, on random programs
// with dead code, jumps over it, division guards, helper calls and map
// lookups inlined as sequences that jump past their own end.
func TestFixupInOneRewriteMatchesPassByPass(t *testing.T) {
	inline := &maps.Map{Type: &maps.Type{Name: "inline"}}
	inline.Ops = &genMap{seq: []insn.Insn{
		{Code: insn.JMP | insn.JEQ | insn.K, Dst: insn.R0, Off: 1}, // to the patch's end
		movInsn(insn.R0, 1),
	}}
	rnd := rand.New(rand.NewPCG(5, 6))
	for n := 0; n < 2000; n++ {
		size := 2 + rnd.IntN(40)
		insns := make([]insn.Insn, size)
		lookups := map[int]bool{}
		for i := range insns {
			switch rnd.IntN(7) {
			case 0:
				insns[i] = insn.Insn{Code: insn.JMP | insn.JA, Off: int16(rnd.IntN(size - i))}
			case 1:
				insns[i] = insn.Insn{Code: insn.JMP | insn.JEQ | insn.K, Dst: 1, Off: int16(rnd.IntN(size - i))}
			case 2:
				insns[i] = insn.Insn{Code: insn.ALU64 | insn.DIV | insn.X, Dst: 1, Src: 2}
			case 3:
				insns[i] = helperInsn(uapi.FuncKtimeGetNs)
			case 4:
				insns[i] = helperInsn(uapi.FuncMapLookupElem)
				lookups[i] = true
			default:
				insns[i] = insn.Insn{Code: insn.ALU64 | insn.MOV | insn.K, Imm: int32(i)}
			}
		}
		insns[size-1] = exitInsn()
		delete(lookups, size-1)
		seen := make([]bool, size)
		for i := range seen {
			seen[i] = i == 0 || rnd.IntN(3) > 0
		}
		mk := func() *verifier.Prog {
			p := seenProg(append([]insn.Insn(nil), insns...))
			for i := range p.Aux {
				p.Aux[i].Seen = seen[i]
				if lookups[i] {
					p.Aux[i].MapPtr = inline
				}
			}
			return p
		}
		a, b := mk(), mk()
		errA := verifier.FixupPassByPass(a, &verifier.FixupConfig{Calls: &calls{}})
		errB := verifier.Fixup(b, &verifier.FixupConfig{Calls: &calls{}})
		if errA != nil || errB != nil {
			t.Fatalf("program %d: pass by pass: %v; one rewrite: %v", n, errA, errB)
		}
		if dump(a.Insns) != dump(b.Insns) {
			t.Fatalf("program %d:\n%s\npass by pass:\n%s\none rewrite:\n%s", n, dump(insns), dump(a.Insns), dump(b.Insns))
		}
		if fmt.Sprint(a.Orig, a.Subprogs) != fmt.Sprint(b.Orig, b.Subprogs) {
			t.Fatalf("program %d: pass by pass: orig %v subprogs %v; one rewrite: orig %v subprogs %v", n, a.Orig, a.Subprogs, b.Orig, b.Subprogs)
		}
	}
}
