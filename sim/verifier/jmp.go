package verifier

import (
	"math/bits"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// checkJump handles the JMP and JMP32 classes. next is the instruction
// to continue at (-1: the following one); exit reports that the path
// ended at the program's exit.
func (e *env) checkJump(in *insn.Insn) (next int, exit bool, err error) {
	idx := e.insnIdx
	e.jmpsProcessed++
	cls := in.Class()
	switch in.Op() {
	case insn.CALL:
		if in.Source() != insn.K || (in.Src != insn.PseudoKfuncCall && in.Off != 0) ||
			(in.Src != 0 && in.Src != insn.PseudoCall && in.Src != insn.PseudoKfuncCall) ||
			in.Dst != 0 || cls == insn.JMP32 {
			return 0, false, e.errorf(uapi.EINVAL, "BPF_CALL uses reserved fields")
		}
		if err := e.checkCallUnderLock(in); err != nil {
			return 0, false, err
		}
		switch in.Src {
		case insn.PseudoCall:
			next, err = e.checkFuncCall(*in, idx)
			return next, false, err
		case insn.PseudoKfuncCall:
			return -1, false, e.checkKfuncCall(*in, idx) // kfunc.go
		}
		if err := e.checkHelperCall(*in, idx); err != nil {
			return 0, false, err
		}
		if in.Imm == uapi.FuncTailCall && e.cur.curframe > 0 {
			next, err = e.tailCallExit(idx)
			return next, false, err
		}
		return -1, false, nil
	case insn.JA:
		if in.Source() != insn.K || in.Src != 0 || in.Dst != 0 ||
			(cls == insn.JMP && in.Imm != 0) || (cls == insn.JMP32 && in.Off != 0) {
			return 0, false, e.errorf(uapi.EINVAL, "BPF_JA uses reserved fields")
		}
		if cls == insn.JMP {
			return idx + int(in.Off) + 1, false, nil
		}
		return idx + int(in.Imm) + 1, false, nil
	case insn.EXIT:
		if in.Source() != insn.K || in.Imm != 0 || in.Src != 0 || in.Dst != 0 || cls == insn.JMP32 {
			return 0, false, e.errorf(uapi.EINVAL, "BPF_EXIT uses reserved fields")
		}
		if err := e.checkResourceLeak("BPF_EXIT instruction in main prog", e.cur.curframe == 0); err != nil {
			return 0, false, err
		}
		if e.cur.curframe > 0 {
			next, err = e.prepareFuncExit()
			return next, false, err
		}
		if e.cur.cur().inAsyncCallbackFn {
			return 0, true, e.checkAsyncReturn()
		}
		if e.cur.cur().subprog != 0 {
			return 0, true, e.checkSubprogReturn() // a global function
		}
		return 0, true, e.checkReturnCode()
	}
	return e.checkCondJmp(in, idx)
}

// checkCondJmp is check_cond_jmp_op: a branch the verifier can decide is
// followed one way only; otherwise the jump is queued with what the
// condition teaches on that side, and the fall-through continues with
// the opposite.
func (e *env) checkCondJmp(in *insn.Insn, idx int) (int, bool, error) {
	op := in.Op()
	aux := &e.aux[idx]
	if op == insn.JA || op > insn.JCOND {
		return 0, false, e.errorf(uapi.EINVAL, "invalid BPF_JMP/JMP32 opcode %x", op)
	}
	if op == insn.JCOND {
		if in.Code != insn.JMP|insn.JCOND || in.Src != insn.MayGoto || in.Dst != 0 || in.Imm != 0 || in.Off == 0 {
			return 0, false, e.errorf(uapi.EINVAL, "invalid may_goto imm %d", in.Imm)
		}
		aux.TrueTaken, aux.FalseTaken = true, true
		q, err := e.pushStack(idx+1, idx)
		if err != nil {
			return 0, false, err
		}
		q.mayGotoDepth++
		return idx + int(in.Off) + 1, false, nil
	}
	if err := e.checkRegRead(in.Dst); err != nil {
		return 0, false, err
	}
	regs := e.regs()
	dst := &regs[in.Dst]
	var src *regState
	if in.Source() == insn.X {
		if in.Imm != 0 {
			return 0, false, e.errorf(uapi.EINVAL, "BPF_JMP/JMP32 uses reserved fields")
		}
		if err := e.checkRegRead(in.Src); err != nil {
			return 0, false, err
		}
		src = &regs[in.Src]
	} else {
		if in.Src != 0 {
			return 0, false, e.errorf(uapi.EINVAL, "BPF_JMP/JMP32 uses reserved fields")
		}
		e.fakeReg[0] = regState{typ: scalarValue, bounds: constBounds(uint64(int64(in.Imm)))}
		src = &e.fakeReg[0]
	}
	var flags uint32
	if in.Source() == insn.X && src.typ == ptrToStack {
		flags |= histSrcStack
	}
	if dst.typ == ptrToStack {
		flags |= histDstStack
	}
	if flags != 0 {
		e.pushHistory(flags, nil)
	}
	is32 := in.Class() == insn.JMP32
	target := idx + int(in.Off) + 1
	pred := branchTaken(dst, src, op, is32)
	if pred >= 0 {
		// The outcome depends on these values: they must be precise.
		if dst.typ == scalarValue {
			if err := e.markPrecise(in.Dst); err != nil {
				return 0, false, err
			}
		}
		if in.Source() == insn.X && src.typ == scalarValue {
			if err := e.markPrecise(in.Src); err != nil {
				return 0, false, err
			}
		}
	}
	switch pred {
	case 1:
		aux.TrueTaken = true
		e.printInsnState(idx)
		return target, false, nil
	case 0:
		aux.FalseTaken = true
		e.printInsnState(idx)
		return -1, false, nil
	}
	aux.TrueTaken, aux.FalseTaken = true, true

	var linked linkedRegs
	if in.Source() == insn.X && src.typ == scalarValue && src.id != 0 {
		e.collectLinked(e.cur, src.id, &linked)
	}
	if dst.typ == scalarValue && dst.id != 0 && !(in.Source() == insn.X && src.id&^addConstFlag == dst.id&^addConstFlag) {
		e.collectLinked(e.cur, dst.id, &linked)
	}
	if linked.n > 1 {
		e.pushHistory(0, &linked)
	}
	other, err := e.pushStack(target, idx)
	if err != nil {
		return 0, false, err
	}
	oregs := &other.cur().regs
	if in.Source() == insn.X {
		e.regSetMinMax(&oregs[in.Dst], &oregs[in.Src], dst, src, op, is32)
	} else {
		e.fakeReg[1] = e.fakeReg[0]
		e.regSetMinMax(&oregs[in.Dst], &e.fakeReg[0], dst, &e.fakeReg[1], op, is32)
	}
	if in.Source() == insn.X && src.typ == scalarValue && src.id != 0 {
		syncLinkedRegs(e.cur, src, &linked)
		syncLinkedRegs(other, &oregs[in.Src], &linked)
	}
	if dst.typ == scalarValue && dst.id != 0 {
		syncLinkedRegs(e.cur, dst, &linked)
		syncLinkedRegs(other, &oregs[in.Dst], &linked)
	}
	// Comparing two pointers for equality: a non-null one proves the
	// other non-null on the equal side.
	if !is32 && in.Source() == insn.X && src.isPointer() && dst.isPointer() {
		var eq *[11]regState
		switch op {
		case insn.JEQ:
			eq = oregs
		case insn.JNE:
			eq = regs
		}
		if eq != nil {
			if regNotNull(dst) && src.maybeNull {
				e.markPtrNotNull(&eq[in.Src])
			}
			if regNotNull(src) && dst.maybeNull {
				e.markPtrNotNull(&eq[in.Dst])
			}
		}
	}
	if !is32 && in.Source() == insn.K && in.Imm == 0 && (op == insn.JEQ || op == insn.JNE) && dst.maybeNull {
		id, ref := dst.id, dst.refObjID
		e.markPtrOrNullRegs(e.cur, id, ref, op == insn.JNE)
		e.markPtrOrNullRegs(other, id, ref, op == insn.JEQ)
	} else if in.Source() == insn.X {
		tryMatchPktPointers(*in, dst, &regs[in.Src], e.cur, other)
	}
	e.printInsnState(idx)
	return -1, false, nil
}

// regNotNull is reg_not_null for the pointer types bpfsim tracks.
func regNotNull(r *regState) bool {
	if r.maybeNull || r.smin <= -maxVarOff || r.smax >= maxVarOff {
		return false
	}
	return r.typ == ptrToMapValue || r.typ == ptrToMapKey || r.typ == ptrToMem || r.typ == constPtrToMap ||
		r.isTrustedReg()
}

// branchTaken is is_branch_taken: 1 if the jump is always taken, 0 if
// never, -1 if it depends.
func branchTaken(r1, r2 *regState, op uint8, is32 bool) int {
	if isAnyPkt(r1) && isAnyPkt(r2) && !is32 {
		return pktBranchTaken(r1, r2, op)
	}
	if r1.isPointer() || r2.isPointer() {
		if is32 {
			return -1
		}
		if !regIsConst(r2, is32) {
			op = flipOpcode(op)
			r1, r2 = r2, r1
		}
		if !regIsConst(r2, is32) || !regNotNull(r1) || regConstValue(r2, is32) != 0 {
			return -1
		}
		switch op {
		case insn.JEQ:
			return 0
		case insn.JNE:
			return 1
		}
		return -1
	}
	return scalarBranchTaken(r1, r2, op, is32)
}

func isAnyPkt(r *regState) bool { return r.isPkt() || r.typ == ptrToPacketEnd }

func regIsConst(r *regState, is32 bool) bool {
	if r.typ != scalarValue {
		return false
	}
	if is32 {
		return r.is32Const()
	}
	return r.isConst()
}

func regConstValue(r *regState, is32 bool) uint64 {
	if is32 {
		return uint64(uint32(r.varOff.value))
	}
	return r.varOff.value
}

func scalarBranchTaken(r1, r2 *regState, op uint8, is32 bool) int {
	t1, t2 := r1.varOff, r2.varOff
	umin1, umax1, smin1, smax1 := r1.umin, r1.umax, r1.smin, r1.smax
	umin2, umax2, smin2, smax2 := r2.umin, r2.umax, r2.smin, r2.smax
	if is32 {
		t1, t2 = t1.subreg(), t2.subreg()
		umin1, umax1, smin1, smax1 = uint64(r1.u32min), uint64(r1.u32max), int64(r1.s32min), int64(r1.s32max)
		umin2, umax2, smin2, smax2 = uint64(r2.u32min), uint64(r2.u32max), int64(r2.s32min), int64(r2.s32max)
	}
	disjoint := func() bool {
		if !tnumOverlap(t1, t2) || umin1 > umax2 || umax1 < umin2 || smin1 > smax2 || smax1 < smin2 {
			return true
		}
		if !is32 && (r1.u32min > r2.u32max || r1.u32max < r2.u32min || r1.s32min > r2.s32max || r1.s32max < r2.s32min) {
			return true
		}
		return false
	}
	switch op {
	case insn.JEQ:
		if t1.isConst() && t2.isConst() {
			return b2i(t1.value == t2.value)
		}
		if disjoint() {
			return 0
		}
	case insn.JNE:
		if t1.isConst() && t2.isConst() {
			return b2i(t1.value != t2.value)
		}
		if disjoint() {
			return 1
		}
	case insn.JSET:
		if !regIsConst(r2, is32) {
			r1, r2 = r2, r1
			t1, t2 = t2, t1
		}
		if !regIsConst(r2, is32) {
			return -1
		}
		if (^t1.mask&t1.value)&t2.value != 0 {
			return 1
		}
		if (t1.mask|t1.value)&t2.value == 0 {
			return 0
		}
	case insn.JGT:
		if umin1 > umax2 {
			return 1
		} else if umax1 <= umin2 {
			return 0
		}
	case insn.JSGT:
		if smin1 > smax2 {
			return 1
		} else if smax1 <= smin2 {
			return 0
		}
	case insn.JLT:
		if umax1 < umin2 {
			return 1
		} else if umin1 >= umax2 {
			return 0
		}
	case insn.JSLT:
		if smax1 < smin2 {
			return 1
		} else if smin1 >= smax2 {
			return 0
		}
	case insn.JGE:
		if umin1 >= umax2 {
			return 1
		} else if umax1 < umin2 {
			return 0
		}
	case insn.JSGE:
		if smin1 >= smax2 {
			return 1
		} else if smax1 < smin2 {
			return 0
		}
	case insn.JLE:
		if umax1 <= umin2 {
			return 1
		} else if umin1 > umax2 {
			return 0
		}
	case insn.JSLE:
		if smax1 <= smin2 {
			return 1
		} else if smin1 > smax2 {
			return 0
		}
	}
	return -1
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func tnumOverlap(a, b tnum) bool {
	mu := ^a.mask & ^b.mask
	return a.value&mu == b.value&mu
}

// Packet ranges known to reach the end (BEYOND_PKT_END, AT_PKT_END).
const (
	beyondPktEnd = -1
	atPktEnd     = -2
)

func pktBranchTaken(dst, src *regState, op uint8) int {
	var pkt *regState
	switch {
	case src.typ == ptrToPacketEnd:
		pkt = dst
	case dst.typ == ptrToPacketEnd:
		pkt = src
		op = flipOpcode(op)
	default:
		return -1
	}
	if pkt.rng >= 0 {
		return -1
	}
	switch op {
	case insn.JLE, insn.JGT:
		if pkt.rng == beyondPktEnd {
			return b2i(op == insn.JGT)
		}
	case insn.JLT, insn.JGE:
		if pkt.rng == beyondPktEnd || pkt.rng == atPktEnd {
			return b2i(op == insn.JGE)
		}
	}
	return -1
}

func flipOpcode(op uint8) uint8 {
	switch op {
	case insn.JGE:
		return insn.JLE
	case insn.JGT:
		return insn.JLT
	case insn.JLE:
		return insn.JGE
	case insn.JLT:
		return insn.JGT
	case insn.JSGE:
		return insn.JSLE
	case insn.JSGT:
		return insn.JSLT
	case insn.JSLE:
		return insn.JSGE
	case insn.JSLT:
		return insn.JSGT
	}
	return op
}

// jsetReverse stands for "not JSET" (the kernel's BPF_JSET | BPF_X).
const jsetReverse = insn.JSET | insn.X

func revOpcode(op uint8) uint8 {
	switch op {
	case insn.JEQ:
		return insn.JNE
	case insn.JNE:
		return insn.JEQ
	case insn.JSET:
		return jsetReverse
	case jsetReverse:
		return insn.JSET
	case insn.JGE:
		return insn.JLT
	case insn.JGT:
		return insn.JLE
	case insn.JLE:
		return insn.JGT
	case insn.JLT:
		return insn.JGE
	case insn.JSGE:
		return insn.JSLT
	case insn.JSGT:
		return insn.JSLE
	case insn.JSLE:
		return insn.JSGT
	case insn.JSLT:
		return insn.JSGE
	}
	return 0
}

// regSetMinMax is reg_set_min_max: what the condition teaches on each
// side, for two scalars.
func (e *env) regSetMinMax(t1, t2, f1, f2 *regState, op uint8, is32 bool) {
	if f1.typ != scalarValue || f2.typ != scalarValue {
		return
	}
	refineCondOp(f1, f2, revOpcode(op), is32)
	f1.sync()
	f2.sync()
	refineCondOp(t1, t2, op, is32)
	t1.sync()
	t2.sync()
	for _, r := range []*regState{t1, t2, f1, f2} {
		if !r.valid() {
			// An impossible path; the kernel logs an invariant violation
			// and forgets the ranges.
			r.unbound()
		}
	}
}

// refineCondOp is regs_refine_cond_op.
func refineCondOp(r1, r2 *regState, op uint8, is32 bool) {
	switch op {
	case insn.JGE, insn.JGT, insn.JSGE, insn.JSGT:
		op = flipOpcode(op)
		r1, r2 = r2, r1
	}
	switch op {
	case insn.JEQ:
		if is32 {
			r1.u32min, r1.u32max = max(r1.u32min, r2.u32min), min(r1.u32max, r2.u32max)
			r1.s32min, r1.s32max = max(r1.s32min, r2.s32min), min(r1.s32max, r2.s32max)
			r2.u32min, r2.u32max, r2.s32min, r2.s32max = r1.u32min, r1.u32max, r1.s32min, r1.s32max
			t := r1.varOff.subreg().intersect(r2.varOff.subreg())
			r1.varOff = r1.varOff.withSubreg(t)
			r2.varOff = r2.varOff.withSubreg(t)
		} else {
			r1.umin, r1.umax = max(r1.umin, r2.umin), min(r1.umax, r2.umax)
			r1.smin, r1.smax = max(r1.smin, r2.smin), min(r1.smax, r2.smax)
			r2.umin, r2.umax, r2.smin, r2.smax = r1.umin, r1.umax, r1.smin, r1.smax
			r1.varOff = r1.varOff.intersect(r2.varOff)
			r2.varOff = r1.varOff
		}
	case insn.JNE:
		if !regIsConst(r2, is32) {
			r1, r2 = r2, r1
		}
		if !regIsConst(r2, is32) {
			return
		}
		val := regConstValue(r2, is32)
		if is32 {
			if r1.u32min == uint32(val) {
				r1.u32min++
			}
			if r1.u32max == uint32(val) {
				r1.u32max--
			}
			if r1.s32min == int32(val) {
				r1.s32min++
			}
			if r1.s32max == int32(val) {
				r1.s32max--
			}
		} else {
			if r1.umin == val {
				r1.umin++
			}
			if r1.umax == val {
				r1.umax--
			}
			if r1.smin == int64(val) {
				r1.smin++
			}
			if r1.smax == int64(val) {
				r1.smax--
			}
		}
	case insn.JSET:
		if !regIsConst(r2, is32) {
			r1, r2 = r2, r1
		}
		if !regIsConst(r2, is32) {
			return
		}
		val := regConstValue(r2, is32)
		if val == 0 || bits.OnesCount64(val) != 1 {
			return
		}
		if is32 {
			r1.varOff = r1.varOff.withSubreg(r1.varOff.subreg().or(tnumConst(val)))
		} else {
			r1.varOff = r1.varOff.or(tnumConst(val))
		}
	case jsetReverse:
		if !regIsConst(r2, is32) {
			r1, r2 = r2, r1
		}
		if !regIsConst(r2, is32) {
			return
		}
		val := regConstValue(r2, is32)
		r1.unbound()
		if is32 {
			r1.varOff = r1.varOff.withSubreg(r1.varOff.subreg().and(tnumConst(^val)))
		} else {
			r1.varOff = r1.varOff.and(tnumConst(^val))
		}
	case insn.JLE:
		if is32 {
			r1.u32max = min(r1.u32max, r2.u32max)
			r2.u32min = max(r1.u32min, r2.u32min)
		} else {
			r1.umax = min(r1.umax, r2.umax)
			r2.umin = max(r1.umin, r2.umin)
		}
	case insn.JLT:
		if is32 {
			r1.u32max = min(r1.u32max, r2.u32max-1)
			r2.u32min = max(r1.u32min+1, r2.u32min)
		} else {
			r1.umax = min(r1.umax, r2.umax-1)
			r2.umin = max(r1.umin+1, r2.umin)
		}
	case insn.JSLE:
		if is32 {
			r1.s32max = min(r1.s32max, r2.s32max)
			r2.s32min = max(r1.s32min, r2.s32min)
		} else {
			r1.smax = min(r1.smax, r2.smax)
			r2.smin = max(r1.smin, r2.smin)
		}
	case insn.JSLT:
		if is32 {
			r1.s32max = min(r1.s32max, r2.s32max-1)
			r2.s32min = max(r1.s32min+1, r2.s32min)
		} else {
			r1.smax = min(r1.smax, r2.smax-1)
			r2.smin = max(r1.smin+1, r2.smin)
		}
	}
}

// syncLinkedRegs is sync_linked_regs: every scalar of linked (those
// sharing known's id, possibly with a constant added, that the jump
// collected) learns its new bounds.
func syncLinkedRegs(st *vstate, known *regState, linked *linkedRegs) {
	id := known.id &^ addConstFlag
	for _, l := range linked.list() {
		if int(l.frame) > st.curframe {
			continue
		}
		f := st.frames[l.frame]
		var r *regState
		if l.isReg {
			r = &f.regs[l.regOrSp]
		} else if int(l.regOrSp) < len(f.stack) {
			r = &f.stack[l.regOrSp].spilled
		} else {
			continue
		}
		if r == known || r.typ != scalarValue || r.id&^addConstFlag != id {
			continue
		}
		// A link made by a 32-bit add and one made by a 64-bit add do
		// not differ by a constant: nothing carries over.
		if (r.id^known.id)&addConstFlag == addConstFlag {
			continue
		}
		if (r.id&addConstFlag == 0 && known.id&addConstFlag == 0) || r.off == known.off {
			*r = *known
			continue
		}
		// r = known + (r's constant - known's), keeping r's own link.
		off, id := r.off, r.id
		delta := constBounds(uint64(int64(off) - int64(known.off)))
		*r = *known
		r.off, r.id = off, id
		r.add32(&delta)
		r.add64(&delta)
		r.varOff = r.varOff.add(delta.varOff)
		if (r.id|known.id)&addConst32 != 0 {
			r.zext32()
		}
		r.sync()
	}
}

// markPtrNotNull is mark_ptr_not_null_reg. A value of a map of maps is
// an inner map: the pointer becomes a CONST_PTR_TO_MAP whose map is the
// inner map template, which the accesses and helper calls through it are
// checked against (mapinmap.go).
func (e *env) markPtrNotNull(r *regState) {
	r.maybeNull = false
	if r.typ == ptrToMapValue {
		if meta := innerMeta(e.mapOf(r)); meta != nil {
			r.typ = constPtrToMap
			r.mapIdx = e.mapIndex(meta)
			// Each lookup's inner map is its own, for timers: the
			// lookup's id is its uid.
			if _, ok := meta.Timer(); ok {
				r.mapUID = r.id
			}
		}
	}
}

// markPtrOrNullRegs is mark_ptr_or_null_regs: after "if p == NULL", every
// copy of p is NULL on one side and a valid pointer on the other. A NULL
// result of an acquiring helper acquired nothing: on that side its
// reference (ref, the id of p's object) is released.
func (e *env) markPtrOrNullRegs(st *vstate, id, ref uint32, isNull bool) {
	if isNull && ref != 0 && ref == id {
		releaseReferenceNomark(st, ref)
	}
	st.forEachReg(func(r *regState) {
		if !r.maybeNull || r.id != id {
			return
		}
		if isNull {
			*r = regState{typ: scalarValue, bounds: constBounds(0)}
			return
		}
		e.markPtrNotNull(r)
		if _, lock := e.spinLockOf(r); !lock {
			// A pointer that may reach a spin lock keeps its id: the
			// lock and unlock must name the same value.
			r.id = 0
		}
	})
}

// tryMatchPktPointers is try_match_pkt_pointers: a comparison of a packet
// pointer with data_end proves the bytes below it accessible on one side.
func tryMatchPktPointers(in insn.Insn, dst, src *regState, this, other *vstate) bool {
	if in.Class() == insn.JMP32 {
		return false
	}
	pktVsEnd := (dst.typ == ptrToPacket && src.typ == ptrToPacketEnd) ||
		(dst.typ == ptrToPacketMeta && isInitPkt(src, ptrToPacket))
	endVsPkt := (dst.typ == ptrToPacketEnd && src.typ == ptrToPacket) ||
		(isInitPkt(dst, ptrToPacket) && src.typ == ptrToPacketMeta)
	dstno, srcno := in.Dst, in.Src
	switch in.Op() {
	case insn.JGT:
		if pktVsEnd {
			findGoodPktPointers(this, dst, false)
			markPktEnd(other, dstno, true)
		} else if endVsPkt {
			findGoodPktPointers(other, src, true)
			markPktEnd(this, srcno, false)
		} else {
			return false
		}
	case insn.JLT:
		if pktVsEnd {
			findGoodPktPointers(other, dst, true)
			markPktEnd(this, dstno, false)
		} else if endVsPkt {
			findGoodPktPointers(this, src, false)
			markPktEnd(other, srcno, true)
		} else {
			return false
		}
	case insn.JGE:
		if pktVsEnd {
			findGoodPktPointers(this, dst, true)
			markPktEnd(other, dstno, false)
		} else if endVsPkt {
			findGoodPktPointers(other, src, false)
			markPktEnd(this, srcno, true)
		} else {
			return false
		}
	case insn.JLE:
		if pktVsEnd {
			findGoodPktPointers(other, dst, false)
			markPktEnd(this, dstno, true)
		} else if endVsPkt {
			findGoodPktPointers(this, src, true)
			markPktEnd(other, srcno, false)
		} else {
			return false
		}
	default:
		return false
	}
	return true
}

func isInitPkt(r *regState, t regType) bool {
	return r.typ == t && r.off == 0 && r.isConst() && r.varOff.value == 0
}

// findGoodPktPointers is find_good_pkt_pointers: pointers with the same
// id as dst may access up to its offset.
func findGoodPktPointers(st *vstate, dst *regState, rightOpen bool) {
	if dst.off < 0 || (dst.off == 0 && rightOpen) {
		return
	}
	if dst.umax > maxPacketOff || dst.umax+uint64(dst.off) > maxPacketOff {
		return
	}
	rng := dst.off
	if rightOpen {
		rng++
	}
	typ, id := dst.typ, dst.id
	st.forEachReg(func(r *regState) {
		if r.typ == typ && r.id == id && r.rng < rng {
			r.rng = rng
		}
	})
}

func markPktEnd(st *vstate, regno uint8, rangeOpen bool) {
	r := &st.cur().regs[regno]
	if r.typ != ptrToPacket {
		return
	}
	if rangeOpen {
		r.rng = beyondPktEnd
	} else {
		r.rng = atPktEnd
	}
}
