package verifier

import (
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// How strictly states_equal compares (enum exact_level).
type exactLevel uint8

const (
	notExact    exactLevel = iota // imprecise scalars match any scalar
	rangeWithin                   // every scalar's range must be covered
	exact                         // identical (the infinite loop check)
)

// bucket is the list of explored states a state at idx whose running
// frame was called at callsite (-1: the main program) is kept in
// (explored_state): the kernel hashes by both into as many lists as the
// program has instructions, so that a function's checkpoints for each
// call site are apart, and states that collide share a list (and count
// in max_states_per_insn).
func (e *env) bucket(idx, callsite int) int {
	return int(uint32(int32(idx)^int32(callsite)) % uint32(len(e.insns)))
}

// isStateVisited is is_state_visited: at a prune point, the current state
// is compared with the checkpoints already taken there. A checkpoint
// whose exploration finished and which covers the current state proves
// it safe (pruning); one still being explored and exactly equal means a
// loop that makes no progress. Otherwise the current state may become a
// new checkpoint.
func (e *env) isStateVisited(idx int) (bool, error) {
	cur := e.cur
	// A long history since the last checkpoint makes backtracking slow:
	// take one.
	force := e.cfg.TestStateFreq || e.force[idx] || cur.histEnd-cur.histStart > 40
	add := force || (e.jmpsProcessed-e.prevJmps >= 2 && e.insnProcessed-e.prevInsnProcessed >= 8)
	isMayGoto := e.insns[idx].Code == insn.JMP|insn.JCOND
	isIterNext := e.force[idx] && e.isIterNextInsn(idx)
	b := e.bucket(idx, cur.cur().callsite)
	list := e.explored[b]
	// Evictions shift the list in place: store it back however the loop
	// ends.
	defer func() { e.explored[b] = list }()
	n := 0
	// loop says the hit closes a cycle of the exploration: the pruned
	// state becomes a backedge of its loop (scc.go). As in the kernel, a
	// callback's hit keeps what an earlier checkpoint of the list left.
	loop := false
	// Newest first, as the kernel's lists hold them.
	for i := len(list) - 1; i >= 0; i-- {
		sl := &list[i]
		n++ // every state of the bucket counts (states_cnt)
		if sl.st.insnIdx != idx {
			continue
		}
		hit := false
		if sl.st.branches > 0 {
			// An ancestor of the current state: a loop.
			if isIterNext {
				// An iterator's loop converges when an active path
				// returns to its _next in a state an earlier visit
				// covers; never an infinite loop.
				if e.statesEqual(sl.st, cur, idx, rangeWithin) && e.iterActiveAt(cur) {
					loop, hit = true, true
				} else if !force && e.jmpsProcessed-e.prevJmps < 20 && e.insnProcessed-e.prevInsnProcessed < 100 {
					add = false
				}
			} else if e.callsCallback[idx] {
				// A callback's visits converge when one returns to
				// the call in a state an earlier visit covers: not
				// an infinite loop otherwise, however alike.
				if e.statesEqual(sl.st, cur, idx, rangeWithin) {
					hit = true
				} else if !force && e.jmpsProcessed-e.prevJmps < 20 && e.insnProcessed-e.prevInsnProcessed < 100 {
					add = false
				}
			} else if isMayGoto && sl.st.mayGotoDepth != cur.mayGotoDepth && e.statesEqual(sl.st, cur, idx, rangeWithin) {
				loop, hit = true, true
			} else if sl.st.mayGotoDepth == cur.mayGotoDepth && sl.st.callbackUnrollDepth == cur.callbackUnrollDepth &&
				!iterActiveDepthsDiffer(sl.st, cur) && e.statesEqual(sl.st, cur, idx, exact) {
				// The kernel follows the message with both states.
				return false, e.fail(uapi.EINVAL, sprintf("infinite loop detected at insn %d", idx),
					"cur state:"+cur.frameLine(cur.cur(), cur.cur().format(e)), "old state:"+sl.st.frameLine(sl.st.cur(), sl.st.cur().format(e)))
			} else if !force && e.jmpsProcessed-e.prevJmps < 20 && e.insnProcessed-e.prevInsnProcessed < 100 {
				// Inside a loop, checkpoints every iteration rarely
				// help: take them less often.
				add = false
			}
		} else {
			// Range by range while the loop the checkpoint lies in
			// still has paths to explore, whose precision marks it
			// lacks (incomplete_read_marks).
			loop = e.incompleteReadMarks(sl.st)
			level := notExact
			if loop {
				level = rangeWithin
			}
			hit = e.statesEqual(sl.st, cur, idx, level)
		}
		if hit {
			sl.hit++
			e.propagateLiveness(sl.st)
			if e.jmpPoint[idx] {
				e.pushHistory(0, nil)
			}
			if err := e.propagatePrecision(sl.st, idx); err != nil {
				return true, err
			}
			if loop {
				// The current state stays, a backedge to sl.st, until
				// its loop's exploration ends.
				e.addSccBackedge(sl.st, cur, idx)
			}
			return true, nil
		}
		// A checkpoint that keeps missing is dropped, as the kernel does,
		// so that loops do not build long lists.
		if add {
			sl.miss++
		}
		limit := 3
		if force && sl.st.branches > 0 {
			limit = 64
		}
		if sl.miss > sl.hit*limit+limit {
			st := sl.st
			list = append(list[:i], list[i+1:]...)
			st.inFreeList = true
			e.maybeFreeState(st)
		}
	}
	if n > e.maxStatesPerInsn {
		e.maxStatesPerInsn = n
	}
	if !add {
		return false, nil
	}
	e.totalStates++
	e.addStates(1)
	e.prevJmps, e.prevInsnProcessed = e.jmpsProcessed, e.insnProcessed
	// A new checkpoint starts with nothing precise: the paths below it
	// will say what they need.
	markAllImprecise(cur)
	// Linux 6.18 keeps scalar ids no other register shares in the
	// checkpoint (the log shows them); later kernels clear them here
	// (clear_singular_ids).
	cp := cur.cloneInto(e.newState())
	cp.insnIdx = idx
	list = append(list, stateList{st: cp})
	e.maybeEnterScc(cp)
	// The current state continues as a child of the checkpoint, which
	// counts it as its one running branch, with a fresh history.
	cur.parent = cp
	cur.branches = 1
	cur.firstInsnIdx = idx
	cur.histStart = cur.histEnd
	cur.dfsDepth = cp.dfsDepth + 1
	cur.written = frameMasks{}
	e.curHist = -1
	return false, nil
}

// statesEqual is states_equal: does old (a checkpoint) cover cur?
// Registers dead at idx do not matter.
func (e *env) statesEqual(old, cur *vstate, idx int, level exactLevel) bool {
	if old.curframe != cur.curframe {
		return false
	}
	e.idmapOld, e.idmapCur = e.idmapOld[:0], e.idmapCur[:0]
	if !e.refsafe(old, cur) {
		return false
	}
	for i := 0; i <= old.curframe; i++ {
		of, cf := old.frames[i], cur.frames[i]
		if of.callsite != cf.callsite {
			return false
		}
		if !e.funcStatesEqual(of, cf, e.liveAt(old, i, idx), old.read[i], level) {
			return false
		}
	}
	return true
}

// liveAt is the registers of frame fr of st that some path from idx may
// read: at idx for the running frame, at the call for the callers
// (frame_insn_idx): the callee-saved registers read after it, and the
// arguments, which a callback's caller keeps for the next visit.
func (e *env) liveAt(st *vstate, fr, idx int) uint16 {
	if fr == st.curframe {
		return e.live[idx]
	}
	return e.live[st.frames[fr+1].callsite]
}

func (e *env) funcStatesEqual(old, cur *funcState, live uint16, read uint64, level exactLevel) bool {
	// A frame that scheduled more callback visits than the current one
	// does not cover it: the current one still has visits to go.
	if old.callbackDepth > cur.callbackDepth {
		return false
	}
	for r := range old.regs {
		// Dead registers are not compared, however exactly
		// (func_states_equal since Linux 6.15).
		if live&(1<<r) == 0 {
			continue
		}
		if !e.regsafe(&old.regs[r], &cur.regs[r], level) {
			return false
		}
	}
	return e.stacksafe(old, cur, read, level)
}

// regsafe is regsafe: every value cur's register may hold, old's allows,
// with pointer ids mapped consistently.
func (e *env) regsafe(old, cur *regState, level exactLevel) bool {
	if level == exact {
		return e.regsExact(old, cur)
	}
	if old.typ == notInit && (level == notExact || cur.typ == notInit) {
		return true
	}
	if old.typ != cur.typ || old.maybeNull != cur.maybeNull || old.rdonly != cur.rdonly || old.ringbuf != cur.ringbuf {
		return false
	}
	switch old.typ {
	case scalarValue:
		if !old.precise && level == notExact {
			return true
		}
		// A linked old register wants the same kind of link, 32- or
		// 64-bit add or none, and the same constant.
		if old.id != 0 && (old.id&addConstFlag != cur.id&addConstFlag || old.id&addConstFlag != 0 && old.off != cur.off) {
			return false
		}
		if !e.checkScalarIDs(old.id, cur.id) {
			return false
		}
		return old.bounds.contains(&cur.bounds)
	case ptrToMapValue, ptrToMapKey, ptrToMem:
		return old.off == cur.off && old.mapIdx == cur.mapIdx && old.mapUID == cur.mapUID && old.memSize == cur.memSize &&
			old.bounds.contains(&cur.bounds) && e.checkIDs(old.id, cur.id) && e.checkIDs(old.refObjID, cur.refObjID)
	case ptrToPacket, ptrToPacketMeta:
		if old.rng < 0 || cur.rng < 0 {
			if old.rng != cur.rng {
				return false
			}
		} else if old.rng > cur.rng {
			return false
		}
		return old.off == cur.off && e.checkIDs(old.id, cur.id) && old.bounds.contains(&cur.bounds)
	case ptrToStack:
		return e.regsExact(old, cur) && old.frameno == cur.frameno
	}
	return e.regsExact(old, cur)
}

func (e *env) regsExact(old, cur *regState) bool {
	return old.typ == cur.typ && old.maybeNull == cur.maybeNull && old.rdonly == cur.rdonly &&
		old.ringbuf == cur.ringbuf && old.off == cur.off && old.bounds == cur.bounds && old.rng == cur.rng &&
		old.mapIdx == cur.mapIdx && old.memSize == cur.memSize && old.frameno == cur.frameno &&
		old.subprog == cur.subprog && old.dynptrType == cur.dynptrType && old.mapUID == cur.mapUID &&
		old.btfIdx == cur.btfIdx && old.trusted == cur.trusted && old.rcu == cur.rcu && old.untrusted == cur.untrusted &&
		e.checkIDs(old.id, cur.id) && e.checkIDs(old.refObjID, cur.refObjID)
}

// checkIDs is check_ids: ids must correspond one to one between the two
// states.
func (e *env) checkIDs(old, cur uint32) bool {
	if (old == 0) != (cur == 0) {
		return false
	}
	if old == 0 {
		return true
	}
	for i, o := range e.idmapOld {
		if o == old {
			return e.idmapCur[i] == cur
		}
		if e.idmapCur[i] == cur {
			return false
		}
	}
	e.idmapOld = append(e.idmapOld, old)
	e.idmapCur = append(e.idmapCur, cur)
	return true
}

// checkScalarIDs is check_scalar_ids: an old scalar without an id links
// nothing; a new one without an id gets a fresh one.
func (e *env) checkScalarIDs(old, cur uint32) bool {
	if old == 0 {
		return true
	}
	if cur == 0 {
		cur = tmpIDTag | uint32(len(e.idmapCur)+1)
	}
	if !e.checkIDs(old, cur) {
		return false
	}
	// old = r2 + const maps to cur only if r2's id maps to cur's base
	// too: a link to another register is not the same link.
	return old&addConstFlag == 0 || e.checkIDs(old&^addConstFlag, cur&^addConstFlag)
}

// tmpIDTag marks the ids checkScalarIDs makes up for unlinked current
// registers: no real id and neither add-const flag has this bit.
const tmpIDTag = 1 << 29

// stacksafe is stacksafe for a privileged loader: never-written and
// unknown bytes of the old state match anything.
// read are the slots the old state's future read (liveness.go).
func (e *env) stacksafe(old, cur *funcState, read uint64, level exactLevel) bool {
	isExact := level == exact
	for spi := range old.stack {
		os := &old.stack[spi]
		// Slots the old state's future never read do not matter.
		if level == notExact && (slotIrrelevant(os) || read&(1<<uint(spi&63)) == 0) {
			continue
		}
		if spi >= len(cur.stack) {
			return false
		}
		cs := &cur.stack[spi]
		// Compared range by range (a loop's checkpoint) or exactly, the
		// bytes must be of the same kinds (in 6.18: later kernels ask
		// it of the exact comparison only).
		if level != notExact && os.types != cs.types {
			return false
		}
		if !isExact {
			if oreg, creg := scalarRegForStack(os), scalarRegForStack(cs); oreg != nil && creg != nil {
				if !e.regsafe(oreg, creg, level) {
					return false
				}
				continue
			}
		}
		for i, ot := range os.types {
			ct := cs.types[i]
			if !isExact && (ot == stackInvalid || ot == stackMisc) {
				continue
			}
			if ot == stackMisc && ct == stackZero {
				continue
			}
			if ot != ct {
				return false
			}
		}
		if os.isSpilled() && !e.regsafe(&os.spilled, &cs.spilled, level) {
			return false
		}
		if os.isDynptr() {
			o, c := &os.spilled, &cs.spilled
			if o.dynptrType != c.dynptrType || o.firstSlot != c.firstSlot || !e.checkIDs(o.refObjID, c.refObjID) {
				return false
			}
		}
		if os.isIter() {
			// The depth is not compared: it would keep the loop from
			// converging (it serves the infinite loop check only).
			o, c := &os.spilled, &cs.spilled
			if o.iterType != c.iterType || o.iterState != c.iterState || !e.checkIDs(o.refObjID, c.refObjID) {
				return false
			}
		}
	}
	if isExact && len(cur.stack) != len(old.stack) {
		for spi := len(old.stack); spi < len(cur.stack); spi++ {
			if cur.stack[spi].types != ([regSize]uint8{}) {
				return false
			}
		}
	}
	return true
}

// slotIrrelevant reports a slot whose bytes are all never-written or
// unknown: it constrains nothing.
func slotIrrelevant(s *stackSlot) bool {
	for _, t := range s.types {
		if t != stackInvalid && t != stackMisc {
			return false
		}
	}
	return true
}

var (
	zeroScalar    = regState{typ: scalarValue, bounds: constBounds(0)}
	unboundScalar = regState{typ: scalarValue, bounds: unknownBounds()}
)

// scalarRegForStack is scalar_reg_for_stack: a spilled 64-bit scalar, eight
// zero bytes seen as the constant 0, or eight unknown bytes (never
// written ones too, for a privileged loader: is_stack_all_misc) seen as
// an unknown scalar.
func scalarRegForStack(s *stackSlot) *regState {
	if s.isSpilledScalar() && s.types[0] == stackSpill { // is_spilled_scalar_reg64
		return &s.spilled
	}
	zeros, misc := 0, 0
	for _, t := range s.types {
		switch t {
		case stackZero:
			zeros++
		case stackMisc, stackInvalid:
			misc++
		}
	}
	switch {
	case zeros == regSize:
		return &zeroScalar
	case misc == regSize:
		return &unboundScalar
	}
	return nil
}
