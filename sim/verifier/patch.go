package verifier

import (
	"fmt"
	"math"

	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// The rewrite passes that follow verification change the program's length:
// they splice sequences in place of single instructions and delete dead
// ones. Everything the kernel keeps per instruction must follow: jump
// offsets, subprogram boundaries, the verifier's per-instruction findings,
// the BTF line and func info a dump prints, and bpfsim's own side tables
// (which lddw loads which map). Prog holds all of it, and Patch and Remove
// keep it in step, with the rules of bpf_patch_insn_data and
// verifier_remove_insns (kernel/bpf/verifier.c, and bpf_patch_insn_single,
// bpf_remove_insns and bpf_adj_branches in kernel/bpf/core.c).

// LineInfo is one record of a program's BTF line info (struct
// bpf_line_info): Line is the source line that starts at instruction
// Insn. Records are kept sorted by Insn, at most one per instruction.
type LineInfo struct {
	Insn int
	// Line renders the source line; for objects read by cilium/ebpf it is
	// a *btf.Line.
	Line fmt.Stringer
}

// Prog is a verified program under rewrite: the instructions and what is
// known about each of them (the parts of struct bpf_prog and struct
// bpf_verifier_env the rewrites touch).
type Prog struct {
	Insns []insn.Insn
	// Aux is the verifier's finding for each instruction.
	Aux []InsnAux
	// Orig is each instruction's index in the program as loaded
	// (bpf_insn_aux_data.orig_idx); every instruction of a patch has the
	// index of the instruction it replaced. Side tables keyed by the
	// original index, such as the map each lddw loads, follow the
	// instructions through it.
	Orig []int
	// Subprogs are the program's functions, in order.
	Subprogs []Subprog
	// FuncInfo is the BTF func info: FuncInfo[i] describes Subprogs[i]
	// (nil entries allowed); nil when the program carries none.
	FuncInfo []*btf.Func
	// Lines is the BTF line info, sorted by instruction.
	Lines []LineInfo
	// Pokes are the poke descriptors the fix-ups made for tail calls.
	Pokes []PokeDesc

	// spare holds the arrays the last rewrite replaced, for the next one
	// to write into; bufs is where they came from (pool.go).
	spare spareBufs
	bufs  *loadBufs
	// noJumps is Result.noJumps.
	noJumps bool
	// directWrite is Result.SeenDirectWrite, for the type's prologue.
	directWrite bool
}

// NewProg prepares insns, which verification accepted with res, for the
// rewrite passes. The caller adds line and func info if the program has
// them.
func NewProg(insns []insn.Insn, res *Result) *Prog {
	return AdoptProg(append([]insn.Insn(nil), insns...), &Result{
		Aux:      append([]InsnAux(nil), res.Aux...),
		Subprogs: append([]Subprog(nil), res.Subprogs...),
	})
}

// AdoptProg is NewProg without the copies: the Prog takes insns, res.Aux
// and res.Subprogs over, and the rewrites change them.
func AdoptProg(insns []insn.Insn, res *Result) *Prog {
	b := res.bufs
	if b == nil {
		b = loadBufsPool.Get().(*loadBufs)
	}
	res.bufs = nil
	p := &Prog{
		Insns:       insns,
		Aux:         res.Aux,
		Orig:        zeroed(b.orig, len(insns)),
		Subprogs:    res.Subprogs,
		spare:       b.spare,
		bufs:        b,
		noJumps:     res.noJumps,
		directWrite: res.SeenDirectWrite,
	}
	b.orig, b.spare = nil, spareBufs{}
	for i := range p.Orig {
		p.Orig[i] = i
	}
	// The kernel marks the second slot of an lddw seen together with the
	// first (do_check's sanitize_mark_insn_seen after the extra
	// insn_idx++); without that, dead code removal would cut live lddw
	// instructions in half.
	for i := 0; i+1 < len(p.Insns) && i+1 < len(p.Aux); i++ {
		if p.Insns[i].IsLdImm64() {
			p.Aux[i+1].Seen = p.Aux[i].Seen
			i++
		}
	}
	return p
}

// Patch replaces instruction off by seq (bpf_patch_insn_data). Jumps from
// outside the patch to instructions after off are lengthened, so a jump to
// off lands on the first instruction of seq; jumps inside seq are taken as
// written. The new instructions' findings are blank except Seen, which
// they inherit; the last one keeps the replaced instruction's findings, as
// the kernel's copy leaves them. A jump that can no longer reach its
// target in 16 bits (32 for gotol) fails with ERANGE and leaves p as it
// was.
func (p *Prog) Patch(off int, seq []insn.Insn) error {
	if off < 0 || off >= len(p.Insns) || len(seq) == 0 {
		return reject(uapi.EFAULT, "verifier bug: patching insn %d of %d with %d insns", off, len(p.Insns), len(seq))
	}
	if len(seq) == 1 {
		p.Insns[off] = seq[0]
		return nil
	}
	delta := len(seq) - 1
	n := len(p.Insns) + delta
	// Offsets can only overflow once the program is longer than an
	// offset reaches: check before changing anything.
	if n > math.MaxInt16 {
		if err := p.adjustBranches(off, off+1, off+len(seq), true); err != nil {
			return reject(uapi.ERANGE, "insn %d cannot be patched due to 16-bit range", p.Orig[off])
		}
	}

	p.Insns = splice(p.Insns, off, 1, seq)
	aux := make([]InsnAux, len(seq))
	for i := range aux[:delta] {
		aux[i].Seen = p.Aux[off].Seen
	}
	aux[delta] = p.Aux[off]
	p.Aux = splice(p.Aux, off, 1, aux)
	orig := make([]int, len(seq))
	for i := range orig {
		orig[i] = p.Orig[off]
	}
	p.Orig = splice(p.Orig, off, 1, orig)

	if err := p.adjustBranches(off, off+1, off+len(seq), false); err != nil {
		return err // cannot happen: probed above when it could
	}
	for i := range p.Subprogs {
		if p.Subprogs[i].Start > off {
			p.Subprogs[i].Start += delta
		}
	}
	p.setSubprogEnds()
	// bpf_adj_linfo: a line that starts at off now starts the patch.
	for i := range p.Lines {
		if p.Lines[i].Insn > off {
			p.Lines[i].Insn += delta
		}
	}
	return nil
}

// Remove deletes cnt instructions from off (verifier_remove_insns).
// Jumps across the gap are shortened; a jump into it now lands on the
// first instruction after it (the passes only remove code no live jump
// reaches, or nops, for which that is where the jump went anyway).
// Functions that lay wholly inside the gap go with their func info, and a
// line that started in the gap moves to the first instruction after it
// unless that instruction has a line of its own.
func (p *Prog) Remove(off, cnt int) error {
	if off < 0 || cnt < 0 || off+cnt > len(p.Insns) {
		return reject(uapi.EFAULT, "verifier bug: removing insns %d..%d of %d", off, off+cnt, len(p.Insns))
	}
	if cnt == 0 {
		return nil
	}
	p.Insns = splice(p.Insns, off, cnt, nil)
	p.Aux = splice(p.Aux, off, cnt, nil)
	p.Orig = splice(p.Orig, off, cnt, nil)
	// A shrinking program cannot overflow an offset.
	if err := p.adjustBranches(off, off+cnt, off, false); err != nil {
		return err
	}
	p.removeSubprogs(off, cnt)
	p.removeLines(off, cnt)
	return nil
}

// rewrite makes many changes in one pass: the instructions marked in
// remove go, and each instruction that is a key of patches is replaced by
// its sequence. The result is what Remove and Patch give applied one at a
// time, from the first instruction to the last, as the kernel's passes
// apply them; but each of those walks the whole program, which makes a
// pass over a program with many changes quadratic.
//
// As with Remove, a jump into removed code lands on the first instruction
// after it: the kernel's passes only remove code no live jump leads into,
// or nops. As with Patch, a patch's jumps that stay inside it are taken as
// written; one that leaves it is read as the kernel's patch writers write
// it, relative to the program with only this patch applied. When an offset
// overflows, the changes are applied one at a time instead, so that the
// error names the instruction the kernel names.
func (p *Prog) rewrite(remove []bool, patches map[int][]insn.Insn) error {
	n := len(p.Insns)
	gone := func(i int) bool { return remove != nil && remove[i] }
	// start[i] is where instruction i's replacement begins in the new
	// program; for a removed one, where the next one left begins.
	start := growInts(&p.spare.start, n+1)
	size := 0
	for i := 0; i < n; i++ {
		start[i] = size
		switch {
		case gone(i):
		case len(patches) > 0 && patches[i] != nil:
			size += len(patches[i])
		default:
			size++
		}
	}
	start[n] = size

	insns := reuse(p.spare.insns, size)
	aux := reuse(p.spare.aux, size)
	orig := reuse(p.spare.orig, size)
	// retarget points the jump-like instruction in, which will be at
	// newAt, to the new place of old instruction target.
	retarget := func(in *insn.Insn, newAt, target int) bool {
		if target < 0 || target > n {
			return true // not a valid jump to begin with; left alone
		}
		off := int64(start[target]) - int64(newAt) - 1
		if field, wide := branchOffset(in); wide {
			if off != int64(int32(off)) {
				return false
			}
			*field.imm = int32(off)
		} else {
			if off != int64(int16(off)) {
				return false
			}
			*field.off = int16(off)
		}
		return true
	}
	for i := 0; i < n; i++ {
		if gone(i) {
			continue
		}
		var seq []insn.Insn
		if len(patches) > 0 {
			seq = patches[i]
		}
		if seq == nil {
			in := p.Insns[i]
			if !mayBranch(in) {
				insns = append(insns, in)
				aux = append(aux, p.Aux[i])
				orig = append(orig, p.Orig[i])
				continue
			}
			if rel, ok := branchRel(in); ok && !retarget(&in, len(insns), i+1+rel) {
				return p.rewriteOneByOne(remove, patches)
			}
			insns = append(insns, in)
			aux = append(aux, p.Aux[i])
			orig = append(orig, p.Orig[i])
			continue
		}
		for q, in := range seq {
			rel, ok := branchRel(in)
			if local := q + 1 + rel; ok && (local < 0 || local >= len(seq)) {
				// Leaves the patch: in the program with just this patch,
				// it went to i+local; which old instruction is that?
				target := i + local
				if local >= len(seq) {
					target -= len(seq) - 1
				}
				if !retarget(&in, len(insns), target) {
					return p.rewriteOneByOne(remove, patches)
				}
			}
			insns = append(insns, in)
			a := InsnAux{Seen: p.Aux[i].Seen}
			if q == len(seq)-1 {
				a = p.Aux[i]
			}
			aux = append(aux, a)
			orig = append(orig, p.Orig[i])
		}
	}

	// Functions, and their func info: one whose every instruction went
	// goes; the others start where their first instruction's replacement
	// does (or, front removed, where the removed code was).
	kept := p.Subprogs[:0]
	var keptFuncs []*btf.Func
	if p.FuncInfo != nil {
		keptFuncs = p.FuncInfo[:0]
	}
	for k, sp := range p.Subprogs {
		all := sp.Start < sp.End
		for i := sp.Start; all && i < sp.End; i++ {
			all = gone(i)
		}
		if all {
			continue
		}
		sp.Start = start[sp.Start]
		kept = append(kept, sp)
		if p.FuncInfo != nil && k < len(p.FuncInfo) {
			keptFuncs = append(keptFuncs, p.FuncInfo[k])
		}
	}

	// Lines: each removed stretch of code passes its last line to the
	// instruction after it, if that has none of its own.
	var lines []LineInfo
	for k := 0; k < len(p.Lines); {
		l := p.Lines[k]
		if l.Insn < 0 || l.Insn >= n {
			k++
			continue
		}
		if !gone(l.Insn) {
			lines = append(lines, LineInfo{Insn: start[l.Insn], Line: l.Line})
			k++
			continue
		}
		end := l.Insn
		for end < n && gone(end) {
			end++
		}
		last := k
		for last < len(p.Lines) && p.Lines[last].Insn < end {
			last++
		}
		if end < n && (last == len(p.Lines) || p.Lines[last].Insn != end) {
			lines = append(lines, LineInfo{Insn: start[end], Line: p.Lines[last-1].Line})
		}
		k = last
	}

	p.spare.insns, p.spare.aux, p.spare.orig = p.Insns[:0], p.Aux[:0], p.Orig[:0]
	p.Insns, p.Aux, p.Orig, p.Lines = insns, aux, orig, lines
	p.Subprogs = kept
	if p.FuncInfo != nil {
		p.FuncInfo = keptFuncs
	}
	p.setSubprogEnds()
	return nil
}

// rewriteOneByOne is rewrite done the kernel's way, one change at a time
// from the first instruction on, for its errors.
func (p *Prog) rewriteOneByOne(remove []bool, patches map[int][]insn.Insn) error {
	n := len(p.Insns)
	shift := 0 // how far an old instruction has moved
	for i := 0; i < n; i++ {
		if remove != nil && remove[i] {
			if err := p.Remove(i+shift, 1); err != nil {
				return err
			}
			shift--
		} else if seq, ok := patches[i]; ok {
			if err := p.Patch(i+shift, seq); err != nil {
				return err
			}
			shift += len(seq) - 1
		}
	}
	return nil
}

// branchRel returns where a jump-like instruction goes, relative to the
// next instruction: jumps, bpf-to-bpf calls and function-pointer loads,
// the instructions bpf_adj_branches adjusts.
func branchRel(in insn.Insn) (int, bool) {
	field, _ := branchOffset(&in)
	switch {
	case field.imm != nil:
		return int(*field.imm), true
	case field.off != nil:
		return int(*field.off), true
	}
	return 0, false
}

// mayBranch is a quick test for the instructions branchOffset may find an
// offset in.
func mayBranch(in insn.Insn) bool {
	cls := in.Class()
	return cls == insn.JMP || cls == insn.JMP32 || in.Code == insn.LD|insn.IMM|insn.DW
}

// offsetField points at the field that holds a jump's offset.
type offsetField struct {
	off *int16
	imm *int32
}

// branchOffset finds the offset of a jump-like instruction (neither field
// set for other instructions); wide says it is the 32-bit imm.
func branchOffset(in *insn.Insn) (offsetField, bool) {
	switch {
	case in.IsLdImm64() && in.Src == insn.PseudoFunc:
		return offsetField{imm: &in.Imm}, true
	case in.Class() != insn.JMP && in.Class() != insn.JMP32, in.Op() == insn.EXIT:
		return offsetField{}, false
	case in.Op() == insn.CALL:
		if in.Src != insn.PseudoCall {
			return offsetField{}, false
		}
		return offsetField{imm: &in.Imm}, true
	case in.Code == insn.JMP32|insn.JA:
		return offsetField{imm: &in.Imm}, true
	}
	return offsetField{off: &in.Off}, false
}

// adjustBranches is bpf_adj_branches on the program after the change: the
// instructions [pos, endOld) of the old program are [pos, endNew) of this
// one. Every jump, bpf-to-bpf call and function-pointer load that crosses
// the change gets its offset corrected; with probe set nothing is written
// and only overflow is reported.
func (p *Prog) adjustBranches(pos, endOld, endNew int, probe bool) error {
	delta := endNew - endOld
	insns := p.Insns
	n := len(insns)
	if probe {
		// Probing runs before the change: walk the old program with the
		// indexes it will have.
		n += delta
	}
	for i, j := 0, 0; i < n; i, j = i+1, j+1 {
		if probe && i == pos {
			// The patch itself is not adjusted; skip to what follows it.
			i, j = endNew, endOld
			if i >= n {
				break
			}
		}
		field, wide := branchOffset(&insns[j])
		var off int64
		switch {
		case field.imm != nil:
			off = int64(*field.imm)
		case field.off != nil:
			off = int64(*field.off)
		default:
			continue
		}
		target := int64(i) + off + 1
		switch {
		case i < pos && target >= int64(endOld):
			off += int64(delta)
		case i >= endNew && target < int64(endNew):
			off -= int64(delta)
		default:
			continue
		}
		if wide && off != int64(int32(off)) || !wide && off != int64(int16(off)) {
			return reject(uapi.ERANGE, "insn %d cannot be patched due to 16-bit range", i)
		}
		switch {
		case probe:
		case wide:
			*field.imm = int32(off)
		default:
			*field.off = int16(off)
		}
	}
	return nil
}

// removeSubprogs is adjust_subprog_starts_after_remove: functions wholly
// inside the removed range disappear with their func info; one whose
// first instructions were removed starts at off; later ones move up.
func (p *Prog) removeSubprogs(off, cnt int) {
	end := off + cnt
	kept := p.Subprogs[:0]
	var keptFuncs []*btf.Func
	if p.FuncInfo != nil {
		keptFuncs = p.FuncInfo[:0]
	}
	for i, sp := range p.Subprogs {
		if sp.Start >= off && sp.End <= end && sp.Start < sp.End {
			continue
		}
		switch {
		case sp.Start >= end:
			sp.Start -= cnt
		case sp.Start > off:
			sp.Start = off
		}
		kept = append(kept, sp)
		if p.FuncInfo != nil && i < len(p.FuncInfo) {
			keptFuncs = append(keptFuncs, p.FuncInfo[i])
		}
	}
	p.Subprogs = kept
	if p.FuncInfo != nil {
		p.FuncInfo = keptFuncs
	}
	p.setSubprogEnds()
}

// setSubprogEnds recomputes where each function ends: where the next one
// starts, the last at the end of the program (the kernel's fake "exit"
// subprogram).
func (p *Prog) setSubprogEnds() {
	for i := range p.Subprogs {
		if i+1 < len(p.Subprogs) {
			p.Subprogs[i].End = p.Subprogs[i+1].Start
		} else {
			p.Subprogs[i].End = len(p.Insns)
		}
	}
}

// removeLines is bpf_adj_linfo_after_remove.
func (p *Prog) removeLines(off, cnt int) {
	lines := p.Lines
	first := 0
	for first < len(lines) && lines[first].Insn < off {
		first++
	}
	last := first // one past the lines that started in the gap
	for last < len(lines) && lines[last].Insn < off+cnt {
		last++
	}
	// The first instruction after the gap inherits the last removed line
	// when it has none of its own, so that it is still annotated.
	if last > first && off < len(p.Insns) && (last == len(lines) || lines[last].Insn != off+cnt) {
		last--
		lines[last].Insn = off + cnt
	}
	lines = append(lines[:first], lines[last:]...)
	for i := first; i < len(lines); i++ {
		lines[i].Insn -= cnt
	}
	p.Lines = lines
}

// splice replaces s[off:off+n] by with, in place when s has the room.
func splice[T any](s []T, off, n int, with []T) []T {
	grow := len(with) - n
	switch {
	case grow > 0:
		s = append(s, make([]T, grow)...)
		copy(s[off+len(with):], s[off+n:len(s)-grow])
	case grow < 0:
		copy(s[off+len(with):], s[off+n:])
		clear(s[len(s)+grow:])
		s = s[:len(s)+grow]
	}
	copy(s[off:], with)
	return s
}

// reuse returns s emptied, or a new slice if it cannot hold n elements.
func reuse[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, 0, roomFor(n))
	}
	return s[:0]
}

func growInts(b *[]int, n int) []int {
	if cap(*b) < n {
		*b = make([]int, n, roomFor(n))
	}
	*b = (*b)[:n]
	return *b
}
