package verifier

import (
	"fmt"
	"math/bits"
	"strings"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Precision tracking, as the kernel does it (mark_chain_precision and
// backtrack_insn). A checkpoint's scalars start imprecise: pruning treats
// them as "any number". When verification depends on a scalar's value (a
// branch it decided, pointer arithmetic, a helper's size argument), the
// verifier walks the current path backwards through the instruction
// history to find which registers and stack slots that value came from,
// and marks them precise in every checkpoint on the way. Only precise
// scalars must then match for a later state to be pruned.

// History entry flags (INSN_F_*).
const (
	histStackAccess = 1 << 9
	histDstStack    = 1 << 10
	histSrcStack    = 1 << 11
	histFrameMask   = 0x7
	histSpiShift    = 3
	histSpiMask     = 0x3f
)

// histEntry is struct bpf_insn_hist_entry: where the path came from when
// it did not come from the previous instruction, and what an instruction
// touched on the stack.
type histEntry struct {
	idx, prevIdx int32
	flags        uint32
	linked       linkedRegs
}

// linkedRegs are the registers and slots of a jump's history entry, at
// most six as the kernel packs them into a u64 (struct linked_regs);
// kept in place, they leave the history free of pointers.
type linkedRegs struct {
	n    uint8
	regs [6]linkedReg
}

func (l *linkedRegs) list() []linkedReg { return l.regs[:l.n] }

// add appends r, or reports that six are there already.
func (l *linkedRegs) add(r linkedReg) bool {
	if int(l.n) == len(l.regs) {
		return false
	}
	l.regs[l.n] = r
	l.n++
	return true
}

// linkedReg is a register or spilled slot sharing a scalar id at a
// conditional jump: precision for one is precision for all.
type linkedReg struct {
	frame   uint8
	isReg   bool
	regOrSp uint8
}

func stackAccessFlags(frame uint8, spi int) uint32 {
	return histStackAccess | uint32(spi)<<histSpiShift | uint32(frame)
}

// pushHistory is push_insn_history: one entry per instruction, flags
// merged if the instruction records twice.
func (e *env) pushHistory(flags uint32, linked *linkedRegs) {
	if e.cfg.DisablePruning {
		return
	}
	st := e.cur
	if e.curHist >= st.histStart && e.curHist == st.histEnd-1 && int(e.hist[e.curHist].idx) == e.insnIdx {
		h := &e.hist[e.curHist]
		h.flags |= flags
		if linked != nil {
			h.linked = *linked
		}
		return
	}
	h := histEntry{idx: int32(e.insnIdx), prevIdx: int32(st.lastInsnIdx), flags: flags}
	if linked != nil {
		h.linked = *linked
	}
	e.hist = append(e.hist[:st.histEnd], h)
	st.histEnd++
	e.curHist = st.histEnd - 1
}

// backtrack is struct backtrack_state: the registers and stack slots, per
// frame, whose precision is being traced.
type backtrack struct {
	frame int
	regs  [maxCallFrames]uint16
	stack [maxCallFrames]uint64
}

func (b *backtrack) empty() bool {
	for i := 0; i <= b.frame; i++ {
		if b.regs[i] != 0 || b.stack[i] != 0 {
			return false
		}
	}
	return true
}

func (b *backtrack) isReg(r uint8) bool { return b.regs[b.frame]&(1<<r) != 0 }
func (b *backtrack) setReg(r uint8)     { b.regs[b.frame] |= 1 << r }
func (b *backtrack) clearReg(r uint8)   { b.regs[b.frame] &^= 1 << r }
func (b *backtrack) isSlot(fr, spi int) bool {
	return b.stack[fr]&(1<<uint(spi)) != 0
}

// errBacktrack means the history cannot explain a value: every scalar
// becomes precise (the kernel's -ENOTSUPP fallback).
type errBacktrack struct{}

func (errBacktrack) Error() string { return "backtracking not supported" }

const argRegs = 0x3e // R1-R5

// backtrackInsn is backtrack_insn: undo insn idx's effect on the set of
// values being traced.
func (e *env) backtrackInsn(idx, subseq int, h *histEntry, bt *backtrack) error {
	in := &e.insns[idx] // by pointer: see insn.Insn
	if in.Code == 0 {
		return nil // the second slot of an lddw
	}
	if e.log.level >= 2 {
		e.log.printf("mark_precise: frame%d: regs=%s stack=%s before %d: %s", bt.frame,
			fmtRegMask(bt.regs[bt.frame]), fmtStackMask(bt.stack[bt.frame]), idx, insn.Format(e.insns, idx, e.logSymbols()))
	}
	linked := h != nil && h.linked.n > 0
	if linked {
		syncLinked(bt, h)
	}
	err := e.backtrackOne(in, idx, subseq, h, bt)
	if linked {
		syncLinked(bt, h)
	}
	return err
}

func (e *env) backtrackOne(in *insn.Insn, idx, subseq int, h *histEntry, bt *backtrack) error {
	dreg, sreg := in.Dst, in.Src
	switch cls := in.Class(); cls {
	case insn.ALU, insn.ALU64:
		if !bt.isReg(dreg) {
			return nil
		}
		switch op := in.Op(); {
		case op == insn.END || op == insn.NEG:
		case op == insn.MOV:
			bt.clearReg(dreg)
			if in.Source() == insn.X && sreg != insn.R10 {
				bt.setReg(sreg)
			}
		case in.Source() == insn.X && sreg != insn.R10:
			bt.setReg(sreg)
		}
	case insn.LDX, insn.STX, insn.ST:
		// An atomic fetch is traced to its slot like a load, as kernels
		// after 6.18 trace it (is_atomic_fetch_insn). 6.18 keeps the
		// fetched register tracked past the instruction instead, which
		// can leave the slot imprecise and prune a path that differs:
		// bpfsim keeps the sound rule (TestMapsMatchKernel caught a
		// program whose instrumented copy then ran differently).
		fetch := cls == insn.STX && in.Mode() == insn.ATOMIC && in.Imm&insn.Fetch != 0
		if cls == insn.LDX || fetch || (cls == insn.STX && in.Mode() == insn.ATOMIC && in.Imm == insn.LoadAcq) {
			load := dreg
			if fetch {
				load = sreg
				if in.Imm == insn.Cmpxchg {
					load = insn.R0
				}
			}
			if !bt.isReg(load) {
				return nil
			}
			bt.clearReg(load)
			if h == nil || h.flags&histStackAccess == 0 {
				return nil
			}
			fr, spi := int(h.flags&histFrameMask), int(h.flags>>histSpiShift&histSpiMask)
			bt.stack[fr] |= 1 << uint(spi)
			return nil
		}
		if bt.isReg(dreg) {
			return errBacktrack{}
		}
		if h == nil || h.flags&histStackAccess == 0 {
			return nil
		}
		fr, spi := int(h.flags&histFrameMask), int(h.flags>>histSpiShift&histSpiMask)
		if !bt.isSlot(fr, spi) {
			return nil
		}
		bt.stack[fr] &^= 1 << uint(spi)
		if cls == insn.STX {
			bt.setReg(sreg)
		}
	case insn.JMP, insn.JMP32:
		switch {
		case in.Code == insn.JMP|insn.CALL && in.Src == insn.PseudoCall && e.isGlobal(e.findSubprog(idx+int(in.Imm)+1)):
			// A global function was not entered: it set R0, and
			// R1-R5 were clobbered.
			if bt.regs[bt.frame]&argRegs != 0 {
				return errBacktrack{}
			}
			bt.clearReg(insn.R0)
		case in.Code == insn.JMP|insn.CALL && in.Src == insn.PseudoCall:
			// Back into the caller: the callee's arguments were the
			// caller's R1-R5.
			if bt.regs[bt.frame]&^argRegs != 0 || bt.stack[bt.frame] != 0 {
				return errBacktrack{}
			}
			if bt.frame == 0 {
				return errBacktrack{}
			}
			for r := uint8(insn.R1); r <= insn.R5; r++ {
				if bt.isReg(r) {
					bt.clearReg(r)
					bt.regs[bt.frame-1] |= 1 << r
				}
			}
			bt.frame--
		case in.Op() == insn.CALL && e.callsCallback[idx] && idx != subseq-1:
			// From a callback's first instruction back to the helper
			// call that scheduled it: R1-R5 were set by the helper,
			// not passed from the caller.
			if bt.regs[bt.frame]&^argRegs != 0 || bt.stack[bt.frame] != 0 || bt.frame == 0 {
				return errBacktrack{}
			}
			bt.regs[bt.frame] &^= argRegs
			bt.frame--
		case in.Op() == insn.CALL:
			bt.clearReg(insn.R0)
			if bt.regs[bt.frame]&argRegs != 0 {
				return errBacktrack{}
			}
			if in.Src == 0 && in.Imm == uapi.FuncTailCall && subseq != idx+1 {
				// A tail call that left its subprogram: back into it.
				if bt.frame+1 >= maxCallFrames {
					return errBacktrack{}
				}
				bt.frame++
				bt.regs[bt.frame], bt.stack[bt.frame] = 0, 0
			}
		case in.Op() == insn.EXIT:
			// Into the callee, from the instruction after its call, or
			// from the helper call a callback returns to: a callback's
			// R1-R5 are not the helper's arguments.
			if subseq >= 0 && e.callsCallback[subseq] {
				bt.regs[bt.frame] &^= argRegs
			}
			fromCall := subseq-1 >= 0 && e.insns[subseq-1].Code == insn.JMP|insn.CALL && e.insns[subseq-1].Src == insn.PseudoCall
			r0 := fromCall && bt.isReg(insn.R0)
			if fromCall && bt.regs[bt.frame]&argRegs != 0 {
				return errBacktrack{}
			}
			bt.clearReg(insn.R0)
			if bt.frame+1 >= maxCallFrames {
				return errBacktrack{}
			}
			bt.frame++
			bt.regs[bt.frame], bt.stack[bt.frame] = 0, 0
			if r0 {
				bt.setReg(insn.R0)
			}
		case in.Op() == insn.JA || in.Op() == insn.JCOND:
		case in.Source() == insn.X:
			if !bt.isReg(dreg) && !bt.isReg(sreg) {
				return nil
			}
			if h == nil || h.flags&histSrcStack == 0 {
				bt.setReg(sreg)
			}
			if h == nil || h.flags&histDstStack == 0 {
				bt.setReg(dreg)
			}
		}
	case insn.LD:
		switch in.Mode() {
		case insn.IMM:
			bt.clearReg(dreg)
		case insn.ABS, insn.IND:
			if bt.isReg(dreg) {
				return errBacktrack{}
			}
		}
	}
	return nil
}

func syncLinked(bt *backtrack, h *histEntry) {
	if h == nil || h.linked.n == 0 {
		return
	}
	some := false
	for _, l := range h.linked.list() {
		if (l.isReg && bt.regs[l.frame]&(1<<l.regOrSp) != 0) || (!l.isReg && bt.stack[l.frame]&(1<<l.regOrSp) != 0) {
			some = true
			break
		}
	}
	if !some {
		return
	}
	for _, l := range h.linked.list() {
		if l.isReg {
			bt.regs[l.frame] |= 1 << l.regOrSp
		} else {
			bt.stack[l.frame] |= 1 << l.regOrSp
		}
	}
}

// markPrecise is mark_chain_precision for a register of the current
// frame.
func (e *env) markPrecise(regno uint8) error {
	if e.regs()[regno].typ != scalarValue {
		return nil
	}
	bt := &e.bt
	*bt = backtrack{frame: e.cur.curframe}
	bt.setReg(regno)
	return e.markPreciseBatch()
}

// markSlotPrecise traces a spilled scalar of frame fr.
func (e *env) markSlotPrecise(fr, spi int) error {
	bt := &e.bt
	*bt = backtrack{frame: e.cur.curframe}
	bt.stack[fr] |= 1 << uint(spi)
	return e.markPreciseBatch()
}

// markPreciseBatch is __mark_chain_precision with e.bt already set, from
// the current state.
func (e *env) markPreciseBatch() error {
	return e.markPreciseFrom(e.cur, e.insnIdx, nil)
}

// markPreciseFrom is __mark_chain_precision from start, a state at
// instruction last: the current one, or a backedge (scc.go). changed, if
// not nil, is set when a checkpoint's scalar becomes precise.
func (e *env) markPreciseFrom(start *vstate, last int, changed *bool) error {
	bt := &e.bt
	if bt.empty() || e.cfg.DisablePruning {
		// Precision only serves pruning.
		return nil
	}
	st := start
	first, subseq := st.firstInsnIdx, -1
	histEnd := st.histEnd
	skipFirst := true
	for {
		if e.log.level >= 2 {
			e.log.printf("mark_precise: frame%d: last_idx %d first_idx %d subseq_idx %d ", bt.frame, last, first, subseq)
		}
		if last < 0 {
			// The main program's entry: arguments are the context.
			e.markAllPrecise(start)
			return nil
		}
		for i := last; ; {
			if skipFirst {
				skipFirst = false
			} else {
				var h *histEntry
				if histEnd > st.histStart && int(e.hist[histEnd-1].idx) == i {
					h = &e.hist[histEnd-1]
				}
				if err := e.backtrackInsn(i, subseq, h, bt); err != nil {
					e.markAllPrecise(start)
					*bt = backtrack{}
					return nil
				}
			}
			if bt.empty() {
				return nil
			}
			subseq = i
			prev, ok := e.prevInsnIdx(st, i, &histEnd)
			if !ok {
				break
			}
			if prev < 0 || prev >= len(e.insns) {
				return e.errorf(uapi.EFAULT, "BUG backtracking idx %d", prev)
			}
			i = prev
		}
		st = st.parent
		if st == nil {
			break
		}
		if bt.frame > st.curframe {
			break // cannot happen on a consistent history: mark all
		}
		for fr := bt.frame; fr >= 0; fr-- {
			f := st.frames[fr]
			for r := uint8(0); r < insn.R10; r++ {
				if bt.regs[fr]&(1<<r) == 0 {
					continue
				}
				reg := &f.regs[r]
				if reg.typ != scalarValue || reg.precise {
					bt.regs[fr] &^= 1 << r
				} else {
					reg.precise = true
					if changed != nil {
						*changed = true
					}
				}
			}
			for m := bt.stack[fr]; m != 0; m &= m - 1 {
				spi := bits.TrailingZeros64(m)
				if spi >= len(f.stack) || !f.stack[spi].isSpilledScalar() {
					bt.stack[fr] &^= 1 << uint(spi)
					continue
				}
				reg := &f.stack[spi].spilled
				if reg.precise {
					bt.stack[fr] &^= 1 << uint(spi)
				} else {
					reg.precise = true
					if changed != nil {
						*changed = true
					}
				}
			}
			if e.log.level >= 2 {
				e.log.printf("mark_precise: frame%d: parent state regs=%s stack=%s: %s%s", fr,
					fmtRegMask(bt.regs[fr]), fmtStackMask(bt.stack[fr]), st.frameLine(f, f.format(e)), "")
			}
		}
		if bt.empty() {
			return nil
		}
		subseq = first
		last, first = st.lastInsnIdx, st.firstInsnIdx
		histEnd = st.histEnd
	}
	if !bt.empty() {
		e.markAllPrecise(start)
		*bt = backtrack{}
	}
	return nil
}

// prevInsnIdx is get_prev_insn_idx: the instruction the path executed
// before i.
func (e *env) prevInsnIdx(st *vstate, i int, histEnd *int) (int, bool) {
	end := *histEnd
	cnt := end - st.histStart
	if i == st.firstInsnIdx {
		if cnt == 0 || (cnt == 1 && int(e.hist[st.histStart].idx) == i) {
			return 0, false
		}
	}
	if cnt > 0 && int(e.hist[end-1].idx) == i {
		*histEnd = end - 1
		return int(e.hist[end-1].prevIdx), true
	}
	return i - 1, true
}

// markAllPrecise is mark_all_scalars_precise: the fallback when
// backtracking cannot tell.
func (e *env) markAllPrecise(st *vstate) {
	if e.log.level >= 2 {
		e.log.printf("mark_precise: frame%d: falling back to forcing all scalars precise", st.curframe)
	}
	for st = st.parent; st != nil; st = st.parent {
		st.forEachReg(func(r *regState) {
			if r.typ == scalarValue {
				r.precise = true
			}
		})
	}
}

// markAllImprecise is mark_all_scalars_imprecise, for a new checkpoint.
func markAllImprecise(st *vstate) {
	st.forEachReg(func(r *regState) {
		if r.typ == scalarValue {
			r.precise = false
		}
	})
}

// propagatePrecision is propagate_precision: the current state was pruned
// against old, so what old needed precise, the current path's checkpoints
// need too.
func (e *env) propagatePrecision(old *vstate, idx int) error {
	return e.propagatePrecisionFrom(old, e.cur, idx, nil)
}

// propagatePrecisionFrom is propagate_precision for st, a state at idx
// that old covered (the current state, or a backedge's).
func (e *env) propagatePrecisionFrom(old, st *vstate, idx int, changed *bool) error {
	bt := &e.bt
	*bt = backtrack{frame: old.curframe}
	for fr := old.curframe; fr >= 0; fr-- {
		f := old.frames[fr]
		live := e.liveAt(old, fr, idx)
		var names []string
		for r := uint8(0); r < insn.R10; r++ {
			reg := &f.regs[r]
			if reg.typ == scalarValue && reg.precise && live&(1<<r) != 0 {
				bt.regs[fr] |= 1 << r
				names = append(names, sprintf("r%d", r))
			}
		}
		for spi := range f.stack {
			s := &f.stack[spi]
			if s.isSpilled() && s.spilled.typ == scalarValue && s.spilled.precise {
				bt.stack[fr] |= 1 << uint(spi)
				names = append(names, sprintf("fp%d", -(spi+1)*regSize))
			}
		}
		if len(names) > 0 && e.log.level >= 2 {
			e.log.printf("frame %d: propagating %s", fr, strings.Join(names, ","))
		}
	}
	return e.markPreciseFrom(st, idx, changed)
}

// collectLinked is collect_linked_regs: every scalar with the given id,
// in the registers live at each frame's instruction (Linux 6.16 leaves
// dead ones out) and in spilled slots, from the current frame out (at
// most 6, as the kernel).
func (e *env) collectLinked(st *vstate, id uint32, out *linkedRegs) {
	id &^= addConstFlag
	for fr := st.curframe; fr >= 0; fr-- {
		f := st.frames[fr]
		idx := e.insnIdx
		if fr < st.curframe {
			idx = st.frames[fr+1].callsite
		}
		live := e.live[idx]
		for r := insn.R0; r < insn.R10; r++ {
			reg := &f.regs[r]
			if live&(1<<r) != 0 && reg.typ == scalarValue && reg.id&^addConstFlag == id {
				if !out.add(linkedReg{frame: uint8(fr), isReg: true, regOrSp: uint8(r)}) {
					reg.id = 0
				}
			}
		}
		for spi := range f.stack {
			s := &f.stack[spi]
			if s.isSpilled() && s.spilled.typ == scalarValue && s.spilled.id&^addConstFlag == id {
				if !out.add(linkedReg{frame: uint8(fr), regOrSp: uint8(spi)}) {
					s.spilled.id = 0
				}
			}
		}
	}
}

// fmtRegMask is fmt_reg_mask: "r1,r6".
func fmtRegMask(m uint16) string {
	var b strings.Builder
	for r := 0; r < 16; r++ {
		if m&(1<<r) != 0 {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "r%d", r)
		}
	}
	return b.String()
}

// fmtStackMask is fmt_stack_mask: the slots' offsets, "-8,-24".
func fmtStackMask(m uint64) string {
	var b strings.Builder
	for spi := 0; spi < 64; spi++ {
		if m&(1<<spi) != 0 {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%d", -(spi+1)*regSize)
		}
	}
	return b.String()
}
