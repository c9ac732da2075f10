package verifier_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

func jaInsn(off int16) insn.Insn { return insn.Insn{Code: insn.JMP | insn.JA, Off: off} }
func jeqInsn(off int16) insn.Insn {
	return insn.Insn{Code: insn.JMP | insn.JEQ | insn.K, Dst: insn.R1, Off: off}
}
func gotolInsn(off int32) insn.Insn { return insn.Insn{Code: insn.JMP32 | insn.JA, Imm: off} }
func callInsn(off int32) insn.Insn {
	return insn.Insn{Code: insn.JMP | insn.CALL, Src: insn.PseudoCall, Imm: off}
}
func helperInsn(id int32) insn.Insn { return insn.Insn{Code: insn.JMP | insn.CALL, Imm: id} }
func movInsn(dst uint8, imm int32) insn.Insn {
	return insn.Insn{Code: insn.ALU64 | insn.MOV | insn.K, Dst: dst, Imm: imm}
}
func exitInsn() insn.Insn { return insn.Insn{Code: insn.JMP | insn.EXIT} }

// funcAddr is the lddw of a function's address (BPF_PSEUDO_FUNC).
func funcAddrInsns(off int32) []insn.Insn {
	return []insn.Insn{{Code: insn.LD | insn.IMM | insn.DW, Dst: insn.R2, Src: insn.PseudoFunc, Imm: off}, {}}
}

type srcLine string

func (l srcLine) String() string { return string(l) }

// prog wraps instructions as a verified program every instruction of
// which was seen, with the given function starts.
func seenProg(insns []insn.Insn, starts ...int) *verifier.Prog {
	res := &verifier.Result{Aux: make([]verifier.InsnAux, len(insns))}
	for i := range res.Aux {
		res.Aux[i].Seen = true
	}
	if len(starts) == 0 {
		starts = []int{0}
	}
	for i, s := range starts {
		end := len(insns)
		if i+1 < len(starts) {
			end = starts[i+1]
		}
		res.Subprogs = append(res.Subprogs, verifier.Subprog{Start: s, End: end})
	}
	return verifier.NewProg(insns, res)
}

// target is where the jump-like instruction at i goes, or -1.
func jumpTarget(insns []insn.Insn, i int) int {
	in := insns[i]
	switch {
	case in.IsLdImm64() && in.Src == insn.PseudoFunc,
		in.Code == insn.JMP|insn.CALL && in.Src == insn.PseudoCall,
		in.Code == insn.JMP32|insn.JA:
		return i + 1 + int(in.Imm)
	case in.Class() == insn.JMP && in.Op() != insn.CALL && in.Op() != insn.EXIT:
		return i + 1 + int(in.Off)
	}
	return -1
}

func TestPatchKeepsJumpsOnTheirTargets(t *testing.T) {
	body := []insn.Insn{
		jeqInsn(3),          // 0: forward across the patch at 2, to 4
		jeqInsn(0),          // 1: to the patched instruction
		movInsn(insn.R0, 7), // 2: patched
		gotolInsn(-4),       // 3: backward across, to 0
		callInsn(1),         // 4: to 6, after the patch
		exitInsn(),          // 5
	}
	body = append(body, funcAddrInsns(-7)...)   // 6: backward to 0 (a function pointer)
	body = append(body, jaInsn(-7), exitInsn()) // 8: backward to 2, the patched one
	p := seenProg(body)
	seq := []insn.Insn{movInsn(insn.R0, 1), movInsn(insn.R0, 2), jaInsn(0)}
	if err := p.Patch(2, seq); err != nil {
		t.Fatal(err)
	}
	// Where each old instruction went: before the patch, in place; the
	// patched one, to the patch's first instruction; after it, 2 later.
	newIdx := func(old int) int {
		if old <= 2 {
			return old
		}
		return old + 2
	}
	for old, want := range map[int]int{0: 4, 1: 2, 3: 0, 4: 6, 6: 0, 8: 2} {
		if got := jumpTarget(p.Insns, newIdx(old)); got != newIdx(want) {
			t.Errorf("old insn %d now goes to %d, want %d (old %d)", old, got, newIdx(want), want)
		}
	}
	if p.Insns[4] != jaInsn(0) {
		t.Errorf("a jump inside the patch was changed: %v", p.Insns[4])
	}
}

func TestPatchKeepsSideTablesInStep(t *testing.T) {
	insns := []insn.Insn{movInsn(insn.R1, 0), callInsn(2), movInsn(insn.R0, 0), exitInsn(), movInsn(insn.R0, 5), exitInsn()}
	p := seenProg(insns, 0, 4)
	p.Aux[2] = verifier.InsnAux{Seen: true, CtxAccess: true, CtxFieldSize: 4}
	p.Lines = []verifier.LineInfo{{Insn: 0, Line: srcLine("a")}, {Insn: 2, Line: srcLine("b")}, {Insn: 3, Line: srcLine("c")}}
	fn := &btf.Func{Name: "sub"}
	p.FuncInfo = []*btf.Func{nil, fn}
	if err := p.Patch(2, []insn.Insn{movInsn(insn.R2, 1), movInsn(insn.R0, 0)}); err != nil {
		t.Fatal(err)
	}
	if got := p.Subprogs; len(got) != 2 || got[0] != (verifier.Subprog{Start: 0, End: 5}) || got[1].Start != 5 || got[1].End != 7 {
		t.Errorf("subprogs %+v", got)
	}
	if !p.Aux[2].Seen || p.Aux[2].CtxAccess || !p.Aux[3].CtxAccess {
		t.Errorf("aux: new insn %+v, last of patch %+v; want the first blank but seen, the last the old one's", p.Aux[2], p.Aux[3])
	}
	if fmt.Sprint(p.Orig) != "[0 1 2 2 3 4 5]" {
		t.Errorf("orig %v", p.Orig)
	}
	if got := fmt.Sprint(p.Lines); got != "[{0 a} {2 b} {4 c}]" {
		t.Errorf("lines %s: the patched insn's line starts the patch, later ones move", got)
	}
	if p.FuncInfo[1] != fn {
		t.Error("func info lost")
	}
}

func TestPatchRefusesOffsetsPastSixteenBits(t *testing.T) {
	// A jump from the start to the end of a program as long as an offset
	// reaches; growing the middle overflows it.
	insns := make([]insn.Insn, math.MaxInt16+2)
	insns[0] = jaInsn(math.MaxInt16)
	for i := 1; i < len(insns)-1; i++ {
		insns[i] = movInsn(insn.R0, 0)
	}
	insns[len(insns)-1] = exitInsn()
	p := seenProg(insns)
	err := p.Patch(5, []insn.Insn{movInsn(insn.R0, 1), movInsn(insn.R0, 2)})
	var verr *verifier.Error
	if !errors.As(err, &verr) || verr.Errno != uapi.ERANGE || verr.Msg != "insn 5 cannot be patched due to 16-bit range" {
		t.Fatalf("got %v, want ERANGE \"insn 5 cannot be patched due to 16-bit range\"", err)
	}
	if len(p.Insns) != len(insns) || p.Insns[0] != insns[0] || p.Insns[5] != insns[5] {
		t.Error("a failed patch changed the program")
	}
	// gotol reaches further.
	insns[0] = gotolInsn(math.MaxInt16)
	p = seenProg(insns)
	if err := p.Patch(5, []insn.Insn{movInsn(insn.R0, 1), movInsn(insn.R0, 2)}); err != nil {
		t.Fatal(err)
	}
	if jumpTarget(p.Insns, 0) != len(p.Insns)-1 {
		t.Error("gotol lost its target")
	}
}

func TestRemove(t *testing.T) {
	// main: 0..3, calls sub at 6; dead: 4..5 (a function never called);
	// sub: 6..7.
	insns := []insn.Insn{
		jeqInsn(1),                      // 0: to 2
		jaInsn(0),                       // 1: removed as a nop
		callInsn(3),                     // 2: to 6
		exitInsn(),                      // 3
		movInsn(insn.R0, 1), exitInsn(), // 4, 5: dead function
		movInsn(insn.R0, 2), exitInsn(), // 6, 7
	}
	p := seenProg(insns, 0, 4, 6)
	p.FuncInfo = []*btf.Func{{Name: "main"}, {Name: "dead"}, {Name: "sub"}}
	p.Lines = []verifier.LineInfo{{Insn: 0, Line: srcLine("if")}, {Insn: 1, Line: srcLine("nop")}, {Insn: 4, Line: srcLine("dead")}, {Insn: 6, Line: srcLine("sub")}}
	if err := p.Remove(4, 2); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove(1, 1); err != nil {
		t.Fatal(err)
	}
	if jumpTarget(p.Insns, 0) != 1 || jumpTarget(p.Insns, 1) != 3 {
		t.Errorf("jumps: %v", p.Insns)
	}
	if fmt.Sprint(p.Subprogs) != "[{0 3 0} {3 5 0}]" || len(p.FuncInfo) != 2 || p.FuncInfo[1].Name != "sub" {
		t.Errorf("subprogs %v, func info %v", p.Subprogs, p.FuncInfo)
	}
	// The nop's line moves to the call after it, which had none; the
	// dead function's goes, since the next instruction has its own.
	if got := fmt.Sprint(p.Lines); got != "[{0 if} {1 nop} {3 sub}]" {
		t.Errorf("lines %s", got)
	}
	if fmt.Sprint(p.Orig) != "[0 2 3 6 7]" {
		t.Errorf("orig %v", p.Orig)
	}
}

func TestRemoveDropsLinesOfARemovedTail(t *testing.T) {
	p := seenProg([]insn.Insn{movInsn(insn.R0, 0), exitInsn(), movInsn(insn.R0, 1), exitInsn()})
	p.Lines = []verifier.LineInfo{{Insn: 0, Line: srcLine("a")}, {Insn: 2, Line: srcLine("b")}}
	if err := p.Remove(2, 2); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(p.Lines); got != "[{0 a}]" {
		t.Errorf("lines %s", got)
	}
}

// Random programs, random patches and removals: every jump that did not
// point into removed code still reaches the instruction it reached.
func TestPatchAndRemoveRandomly(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 2000; round++ {
		n := 2 + rnd.IntN(40)
		insns := make([]insn.Insn, n)
		for i := range insns {
			// Unique immediates name the instructions.
			insns[i] = movInsn(insn.R0, int32(1000+i))
			if rnd.IntN(3) == 0 {
				off := rnd.IntN(n) - i - 1
				switch rnd.IntN(3) {
				case 0:
					insns[i] = jeqInsn(int16(off))
				case 1:
					insns[i] = gotolInsn(int32(off))
				default:
					insns[i] = callInsn(int32(off))
				}
				insns[i].Dst = uint8(i % 10)
			}
		}
		p := seenProg(insns)
		// name[i] is the original index of the instruction now at i; an
		// inserted one has -2-o, o being the instruction whose patch it
		// belongs to. This is the test's own account of the changes.
		name := make([]int, n)
		for i := range name {
			name[i] = i
		}
		want := map[int]int{} // original jump -> original target
		for i := range insns {
			if t := jumpTarget(insns, i); t >= 0 {
				want[i] = t
			}
		}
		gone := map[int]bool{}
		for step := 0; step < 5 && len(p.Insns) > 1; step++ {
			off := rnd.IntN(len(p.Insns))
			// The passes patch only instructions that are not jumps: a
			// jump moved within its patch would need its own offset
			// changed, which is the patch writer's business.
			if rnd.IntN(2) == 0 && jumpTarget(p.Insns, off) < 0 {
				k := 1 + rnd.IntN(4)
				seq := make([]insn.Insn, k)
				for j := range seq {
					seq[j] = movInsn(insn.R1, -1)
				}
				// The patched instruction survives as the last of the
				// sequence, like a guarded division.
				seq[k-1] = p.Insns[off]
				if err := p.Patch(off, seq); err != nil {
					t.Fatal(err)
				}
				owner := name[off]
				if owner < 0 {
					owner = -2 - owner
				}
				ins := make([]int, k)
				for j := range ins {
					ins[j] = -2 - owner
				}
				ins[k-1] = name[off]
				name = append(name[:off], append(ins, name[off+1:]...)...)
				continue
			}
			cnt := 1 + rnd.IntN(min(3, len(p.Insns)-off))
			// The passes remove only code no remaining jump leads into.
			targeted := false
			for i := range p.Insns {
				if t := jumpTarget(p.Insns, i); (i < off || i >= off+cnt) && t >= off && t < off+cnt {
					targeted = true
				}
			}
			if targeted {
				continue
			}
			for _, o := range name[off : off+cnt] {
				if o >= 0 {
					gone[o] = true
				}
			}
			if err := p.Remove(off, cnt); err != nil {
				t.Fatal(err)
			}
			name = append(name[:off], name[off+cnt:]...)
		}
		where := map[int]int{}
		for i, o := range name {
			if o >= 0 {
				where[o] = i
			} else {
				o = -2 - o
			}
			if p.Orig[i] != o {
				t.Fatalf("round %d: insn %d has orig %d, want %d", round, i, p.Orig[i], o)
			}
		}
		for from, to := range want {
			if gone[from] || gone[to] {
				continue
			}
			// A jump to a patched instruction lands on the first
			// instruction of its patch.
			at := where[to]
			for at > 0 && name[at-1] == -2-to {
				at--
			}
			if got := jumpTarget(p.Insns, where[from]); got != at {
				t.Fatalf("round %d: insn %d (now %d) goes to %d, want %d (insn %d)", round, from, where[from], got, at, to)
			}
		}
	}
}

// randomProg is a program of n instructions with random jumps, bpf-to-bpf
// calls and function pointers, random functions, findings, line and func
// info.
func randomProg(rnd *rand.Rand, n int) *verifier.Prog {
	insns := make([]insn.Insn, 0, n)
	for len(insns) < n {
		i := len(insns)
		switch rnd.IntN(8) {
		case 0:
			insns = append(insns, jeqInsn(int16(rnd.IntN(n)-i-1)))
		case 1:
			insns = append(insns, gotolInsn(int32(rnd.IntN(n)-i-1)))
		case 2:
			insns = append(insns, callInsn(int32(rnd.IntN(n)-i-1)))
		case 3:
			if i+2 <= n {
				insns = append(insns, funcAddrInsns(int32(rnd.IntN(n)-i-1))...)
				continue
			}
			fallthrough
		default:
			insns = append(insns, movInsn(insn.R0, int32(rnd.IntN(100))))
		}
	}
	starts := []int{0}
	for s := 1; s < n; s++ {
		if rnd.IntN(8) == 0 && !insns[s-1].IsLdImm64() {
			starts = append(starts, s)
		}
	}
	p := seenProg(insns, starts...)
	for i := range p.Aux {
		p.Aux[i].TrueTaken = rnd.IntN(2) == 0
		p.Aux[i].CtxFieldSize = rnd.IntN(9)
	}
	p.FuncInfo = make([]*btf.Func, len(p.Subprogs))
	for i := range p.FuncInfo {
		p.FuncInfo[i] = &btf.Func{Name: fmt.Sprint("f", i)}
	}
	for i := 0; i < n; i++ {
		if rnd.IntN(3) == 0 {
			p.Lines = append(p.Lines, verifier.LineInfo{Insn: i, Line: srcLine(fmt.Sprint("line ", i))})
		}
	}
	return p
}

func cloneProg(p *verifier.Prog) *verifier.Prog {
	return &verifier.Prog{
		Insns:    append([]insn.Insn(nil), p.Insns...),
		Aux:      append([]verifier.InsnAux(nil), p.Aux...),
		Orig:     append([]int(nil), p.Orig...),
		Subprogs: append([]verifier.Subprog(nil), p.Subprogs...),
		FuncInfo: append([]*btf.Func(nil), p.FuncInfo...),
		Lines:    append([]verifier.LineInfo(nil), p.Lines...),
	}
}

func sameProg(a, b *verifier.Prog) string {
	for _, c := range []struct {
		what string
		a, b any
	}{
		{"insns", a.Insns, b.Insns}, {"aux", a.Aux, b.Aux}, {"orig", a.Orig, b.Orig},
		{"subprogs", a.Subprogs, b.Subprogs}, {"func info", a.FuncInfo, b.FuncInfo}, {"lines", a.Lines, b.Lines},
	} {
		if x, y := fmt.Sprint(c.a), fmt.Sprint(c.b); x != y {
			return fmt.Sprintf("%s differ:\n%s\n%s", c.what, x, y)
		}
	}
	return ""
}

// The passes change a program in one rewrite; the result must be the
// kernel's, which patches one instruction at a time, from the first.
func TestRewriteIsPatchOneByOne(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	for round := 0; round < 2000; round++ {
		p := randomProg(rnd, 2+rnd.IntN(40))
		patches := map[int][]insn.Insn{}
		for i := 0; i < len(p.Insns); i++ {
			if p.Insns[i].IsLdImm64() {
				i++
				continue
			}
			if _, jump := jumpTargetOK(p.Insns, i); jump || rnd.IntN(3) != 0 {
				continue
			}
			// A sequence with a jump inside it, ending in the original.
			k := 1 + rnd.IntN(5)
			seq := make([]insn.Insn, k)
			for j := range seq {
				seq[j] = movInsn(insn.R1, int32(j))
			}
			if k >= 3 {
				seq[0] = jeqInsn(int16(rnd.IntN(k - 1)))
			}
			seq[k-1] = p.Insns[i]
			patches[i] = seq
		}
		want := cloneProg(p)
		shift := 0
		for i := 0; i < len(p.Insns); i++ {
			if seq, ok := patches[i]; ok {
				if err := want.Patch(i+shift, seq); err != nil {
					t.Fatal(err)
				}
				shift += len(seq) - 1
			}
		}
		got := cloneProg(p)
		if err := got.Rewrite(nil, patches); err != nil {
			t.Fatal(err)
		}
		if d := sameProg(got, want); d != "" {
			t.Fatalf("round %d: %s", round, d)
		}
	}
}

// Likewise for removals, which the kernel makes one run of dead code at a
// time.
func TestRewriteIsRemoveRunByRun(t *testing.T) {
	rnd := rand.New(rand.NewPCG(5, 6))
	for round := 0; round < 2000; round++ {
		p := randomProg(rnd, 2+rnd.IntN(40))
		n := len(p.Insns)
		remove := make([]bool, n)
		for i := 0; i < n; i++ {
			if rnd.IntN(3) == 0 {
				remove[i] = true
				if p.Insns[i].IsLdImm64() {
					remove[i+1] = true
					i++
				}
			}
		}
		// Dead code: no instruction left jumps into it.
		for changed := true; changed; {
			changed = false
			for i := range p.Insns {
				if to, ok := jumpTargetOK(p.Insns, i); ok && !remove[i] && to >= 0 && to < n && remove[to] {
					remove[to], changed = false, true
					if p.Insns[to].IsLdImm64() {
						remove[to+1] = false
					}
					if to > 0 && p.Insns[to-1].IsLdImm64() {
						remove[to-1] = false
					}
				}
			}
		}
		want := cloneProg(p)
		for i, shift := 0, 0; i < n; {
			if !remove[i] {
				i++
				continue
			}
			j := i
			for j < n && remove[j] {
				j++
			}
			if err := want.Remove(i-shift, j-i); err != nil {
				t.Fatal(err)
			}
			shift += j - i
			i = j
		}
		got := cloneProg(p)
		if err := got.Rewrite(remove, nil); err != nil {
			t.Fatal(err)
		}
		if d := sameProg(got, want); d != "" {
			t.Fatalf("round %d: %s", round, d)
		}
	}
}

// jumpTargetOK is jumpTarget that also says whether in is jump-like.
func jumpTargetOK(insns []insn.Insn, i int) (int, bool) {
	in := insns[i]
	switch {
	case in.IsLdImm64() && in.Src == insn.PseudoFunc,
		in.Code == insn.JMP|insn.CALL && in.Src == insn.PseudoCall,
		in.Code == insn.JMP32|insn.JA,
		in.Class() == insn.JMP && in.Op() != insn.CALL && in.Op() != insn.EXIT:
		return jumpTarget(insns, i), true
	}
	return 0, false
}

// Nops go in one rewrite, jumps into them included; the kernel removes
// them one at a time.
func TestRewriteRemovesNopsAsOneByOne(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 8))
	for round := 0; round < 2000; round++ {
		p := randomProg(rnd, 2+rnd.IntN(40))
		nops := make([]bool, len(p.Insns))
		for i := 0; i < len(p.Insns); i++ {
			if p.Insns[i].IsLdImm64() {
				i++
				continue
			}
			if rnd.IntN(3) == 0 {
				p.Insns[i], nops[i] = jaInsn(0), true
			}
		}
		want := cloneProg(p)
		for i := 0; i < len(want.Insns); i++ {
			if want.Insns[i] == jaInsn(0) {
				if err := want.Remove(i, 1); err != nil {
					t.Fatal(err)
				}
				i--
			}
		}
		got := cloneProg(p)
		if err := got.Rewrite(nops, nil); err != nil {
			t.Fatal(err)
		}
		if d := sameProg(got, want); d != "" {
			t.Fatalf("round %d: %s", round, d)
		}
	}
}
