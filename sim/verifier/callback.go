package verifier

import (
	"errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Callbacks (kernel/bpf/verifier.c: push_callback_call,
// set_loop_callback_state, the callback path of prepare_func_exit).
// bpf_loop calls a function of the program an unknown number of times,
// so the verifier explores the callback as if called again and again: at
// the helper's call it schedules a visit of the callback, in a new frame,
// and goes on after the call as if the helper had returned; a visit that
// ends returns to the call instruction itself, which schedules the next
// visit. The call is a forced checkpoint, so once a visit ends in a state
// an earlier one covers, is_state_visited prunes it and the iteration
// stops. The callback's R0 must be 0 or 1.
//
// What the kernel then does with the call (optimize_bpf_loop), bpfsim
// does too: a call whose flags are known to be 0 and that always calls
// the same function becomes a loop of plain calls to it.

// checkLoopCall is check_helper_call's part for bpf_loop, before the
// caller-saved registers are reset: R1 bounds the visits of the
// callback; while the caller's pending visits are fewer, another is
// scheduled.
func (e *env) checkLoopCall(idx, subprog int) error {
	if err := e.updateLoopInlineState(idx, subprog); err != nil {
		return err
	}
	// The iteration's end depends on R1's value.
	if err := e.markPrecise(insn.R1); err != nil {
		return err
	}
	caller := e.cur.cur()
	if caller.callbackDepth < e.regs()[insn.R1].umax {
		return e.pushCallbackCall(idx, subprog, setLoopCallbackState)
	}
	caller.callbackDepth = 0
	if e.log.level >= 2 {
		e.log.printf("frame%d bpf_loop iteration limit reached", e.cur.curframe)
	}
	return nil
}

// updateLoopInlineState is update_loop_inline_state: a call can be
// inlined while every visit saw flags 0 and the same callback.
func (e *env) updateLoopInlineState(idx, subprog int) error {
	zero, err := e.loopFlagIsZero()
	if err != nil {
		return err
	}
	s := &e.aux[idx].Loop
	if !s.Initialized {
		*s = LoopInline{Initialized: true, Fit: zero, Callback: subprog}
		return nil
	}
	s.Fit = s.Fit && zero && s.Callback == subprog
	return nil
}

// loopFlagIsZero is loop_flag_is_zero: R4 is the constant 0, which the
// inlining then relies on.
func (e *env) loopFlagIsZero() (bool, error) {
	r4 := &e.regs()[insn.R4]
	if r4.typ != scalarValue || !r4.isConst() || r4.constant() != 0 {
		return false, nil
	}
	return true, e.markPrecise(insn.R4)
}

// calleeStateFn is set_callee_state_fn: it fills the registers a
// callback starts with from its caller's at the call.
type calleeStateFn func(e *env, caller, callee *funcState, idx int) error

// setLoopCallbackState is set_loop_callback_state: R1 is the index (any
// number), R2 the caller's R3 (callback_ctx).
func setLoopCallbackState(_ *env, caller, callee *funcState, _ int) error {
	callee.regs[insn.R1].markUnknown()
	callee.regs[insn.R2] = caller.regs[insn.R3]
	return nil
}

// setUserRingbufCallbackState is set_user_ringbuf_callback_state: R1 is
// a dynptr over the record, taken as local (the kernel's dynptr, which the
// callback may read through but not remake), R2 the caller's R3
// (callback_ctx).
func setUserRingbufCallbackState(e *env, caller, callee *funcState, _ int) error {
	r1 := &callee.regs[insn.R1]
	r1.markPtr(constPtrToDynptr)
	r1.dynptrType, r1.firstSlot = uapi.DynptrTypeLocal, true
	e.idGen++
	r1.id = e.idGen
	callee.regs[insn.R2] = caller.regs[insn.R3]
	return nil
}

// setMapElemCallbackState is set_map_elem_callback_state with the
// arrays' and hashes' map_set_for_each_callback_args: R1 is the map, R2
// a key and R3 a value of it, R4 the caller's R3 (callback_ctx). Whether
// the map type can be walked is decided by the map first recorded at the
// call, as in the kernel; the pointers' map is the caller's R1.
func setMapElemCallbackState(e *env, caller, callee *funcState, idx int) error {
	if m := e.aux[idx].MapPtr; m == nil || !mapCanBeWalked(m) {
		return e.errorf(uapi.ENOTSUPP, "callback function not allowed for map")
	}
	r1 := caller.regs[insn.R1]
	callee.regs[insn.R1] = r1
	for _, r := range []struct {
		regno uint8
		typ   regType
	}{{insn.R2, ptrToMapKey}, {insn.R3, ptrToMapValue}} {
		reg := &callee.regs[r.regno]
		reg.markPtr(r.typ)
		reg.mapIdx = r1.mapIdx
	}
	callee.regs[insn.R4] = caller.regs[insn.R3]
	return nil
}

// mapCanBeWalked reports the map types whose ops have
// map_for_each_callback: the ones whose simulation can walk them.
func mapCanBeWalked(m *maps.Map) bool {
	_, ok := m.Ops.(maps.ForEacher)
	return ok
}

// pushCallbackCall is push_callback_call: a visit of the callback is
// scheduled, in a new frame whose registers set fills, and the caller
// goes on after the call.
func (e *env) pushCallbackCall(idx, subprog int, set calleeStateFn) error {
	if subprog < 0 || subprog >= len(e.subprogs) {
		return e.errorf(uapi.EFAULT, "verifier bug: callback of insn %d is no function", idx)
	}
	if err := e.checkFuncArgs(subprog); errors.Is(err, uapi.EFAULT) {
		return err
	}
	st, err := e.pushStack(e.subprogs[subprog].Start, idx)
	if err != nil {
		return err
	}
	if st.curframe+1 >= maxCallFrames {
		return e.errorf(uapi.E2BIG, "the call stack of %d frames is too deep", st.curframe+2)
	}
	caller := st.cur()
	callee := &funcState{callsite: idx, frameno: uint8(st.curframe + 1), subprog: subprog,
		inCallbackFn: true, retMin: 0, retMax: 1}
	for i := range callee.regs {
		callee.regs[i].markNotInit()
	}
	callee.regs[insn.R10].markPtr(ptrToStack)
	callee.regs[insn.R10].frameno = callee.frameno
	if err := set(e, caller, callee, idx); err != nil {
		return err
	}
	st.frames = append(st.frames[:st.curframe+1], callee)
	st.curframe++
	st.callbackUnrollDepth++
	caller.callbackDepth++
	e.cur.cur().callbackDepth = 0
	e.scratchAll() // init_func_state marks the whole state scratched
	return nil
}

// callbackExit is prepare_func_exit for a callback's frame: R0 must be a
// scalar within the callback's return range, and the path goes back to
// the helper's call, with the caller as it was before it.
func (e *env) callbackExit() (int, error) {
	st := e.cur
	callee := st.cur()
	r0 := &callee.regs[insn.R0]
	if r0.typ != scalarValue {
		return 0, e.errorf(uapi.EACCES, "R0 not a scalar value")
	}
	if err := e.markPrecise(insn.R0); err != nil {
		return 0, err
	}
	if err := e.checkScalarRange("At callback return", &st.cur().regs[insn.R0], callee.retMin, callee.retMax); err != nil {
		return 0, err
	}
	caller := st.frames[st.curframe-1]
	if e.log.level > 0 {
		e.log.printf("returning from callee:\n%s\nto caller at %d:\n%s", st.frameLine(callee, callee.format(e)), callee.callsite, st.frameLine(caller, caller.format(e)))
	}
	st.frames[st.curframe] = nil
	st.frames = st.frames[:st.curframe]
	st.curframe--
	// Scalars that differ from the previous visit's and are not precise
	// become unknown, so that a counter the callback bumps does not make
	// every visit new (widen_imprecise_scalars, as for iterators).
	if prev := e.findPrevEntry(st, callee.callsite); prev != nil {
		e.widenImpreciseScalars(prev, st)
	}
	return callee.callsite, nil
}

// findPrevEntry is find_prev_entry: the most recent checkpoint at idx on
// the current path (still being explored, with the same call sites and
// above the current state).
func (e *env) findPrevEntry(cur *vstate, idx int) *vstate {
	list := e.explored[e.bucket(idx, cur.cur().callsite)]
	for i := len(list) - 1; i >= 0; i-- {
		st := list[i].st
		if st.insnIdx == idx && st.branches > 0 && sameCallsites(st, cur) && st.dfsDepth < cur.dfsDepth {
			return st
		}
	}
	return nil
}

func sameCallsites(a, b *vstate) bool {
	if a.curframe != b.curframe {
		return false
	}
	for fr := a.curframe; fr >= 0; fr-- {
		if a.frames[fr].callsite != b.frames[fr].callsite {
			return false
		}
	}
	return true
}

// widenImpreciseScalars is widen_imprecise_scalars: each scalar register
// and spilled scalar of cur that old holds too, neither precise nor the
// same as old's, becomes unknown.
func (e *env) widenImpreciseScalars(old, cur *vstate) {
	e.idmapOld, e.idmapCur = e.idmapOld[:0], e.idmapCur[:0]
	for fr := old.curframe; fr >= 0; fr-- {
		fo, fc := old.frames[fr], cur.frames[fr]
		for i := range fo.regs {
			e.maybeWidenReg(&fo.regs[i], &fc.regs[i])
		}
		n := min(len(fo.stack), len(fc.stack))
		for i := 0; i < n; i++ {
			if fo.stack[i].isSpilled() && fc.stack[i].isSpilled() {
				e.maybeWidenReg(&fo.stack[i].spilled, &fc.stack[i].spilled)
			}
		}
	}
}

// maybeWidenReg is maybe_widen_reg.
func (e *env) maybeWidenReg(old, cur *regState) {
	if old.typ != scalarValue || cur.typ != scalarValue {
		return
	}
	if old.precise || cur.precise || e.regsExact(old, cur) {
		return
	}
	cur.markUnknown()
}
