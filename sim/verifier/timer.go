package verifier

import (
	"errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// bpf_timer (kernel/bpf/verifier.c: process_timer_func, the timer case of
// push_callback_call, set_timer_callback_state, check_return_code's async
// case). The timer helpers take a pointer to the value's struct
// bpf_timer, at its constant offset; bpf_timer_init's map must be the
// timer's own; and bpf_timer_set_callback's function runs later, on its
// own, so the verifier checks it as a separate program starting in frame
// 0 with the map, a key and the value in R1 to R3, and it must return 0.

// processTimerFunc is process_timer_func: the argument in regno points at
// the value's timer.
func (e *env) processTimerFunc(regno uint8, meta *callMeta) error {
	m, err := e.checkFieldArg(regno, "bpf_timer", (*maps.Map).Timer)
	if err != nil {
		return err
	}
	if meta.mapPtr != nil {
		return e.errorf(uapi.EFAULT, "verifier bug. Two map pointers in a timer helper")
	}
	meta.mapPtr, meta.timerUID = m, e.regs()[regno].mapUID
	return nil
}

// checkTimerMapArg is ARG_CONST_MAP_PTR's test in a timer helper: the map
// must be the one the timer is in, the same inner map of a map of maps
// (map_uid), not only one of the same template.
func (e *env) checkTimerMapArg(reg *regState, meta *callMeta) error {
	if meta.mapPtr != nil && (meta.mapPtr != e.mapOf(reg) || meta.timerUID != reg.mapUID) {
		return e.errorf(uapi.EINVAL, "timer pointer in R1 map_uid=%d doesn't match map pointer in R2 map_uid=%d", meta.timerUID, reg.mapUID)
	}
	return nil
}

// pushAsyncCallback is the timer case of push_callback_call with
// push_async_cb: the callback is explored later from a state of its own,
// not a copy of the caller's, and the caller goes on after the call.
func (e *env) pushAsyncCallback(idx, subprog int, m *maps.Map) error {
	if subprog < 0 || subprog >= len(e.subprogs) {
		return e.errorf(uapi.EFAULT, "verifier bug: callback of insn %d is no function", idx)
	}
	if err := e.checkFuncArgs(subprog); errors.Is(err, uapi.EFAULT) {
		return err
	}
	st := e.newState()
	frames := st.frames[:0]
	*st = vstate{frames: frames, branches: 1, insnIdx: e.subprogs[subprog].Start}
	callee := &funcState{callsite: -1, subprog: subprog, inAsyncCallbackFn: true}
	for i := range callee.regs {
		callee.regs[i].markNotInit()
	}
	callee.regs[insn.R10].markPtr(ptrToStack)
	// set_timer_callback_state: the map, a key and the value.
	mapIdx := e.mapIndex(m)
	for _, r := range []struct {
		regno uint8
		typ   regType
	}{{insn.R1, constPtrToMap}, {insn.R2, ptrToMapKey}, {insn.R3, ptrToMapValue}} {
		reg := &callee.regs[r.regno]
		reg.markPtr(r.typ)
		reg.mapIdx = mapIdx
	}
	st.frames = append(st.frames, callee)
	e.pending = append(e.pending, pendingState{st: st, insnIdx: st.insnIdx, prevIdx: idx, logPos: e.log.pos()})
	if len(e.pending) > jmpSeqLimit {
		return e.errorf(uapi.EFAULT, "The sequence of %d jumps is too complex.", len(e.pending))
	}
	return nil
}

// checkAsyncReturn is check_return_code for an async callback's exit: R0
// must be the scalar 0.
func (e *env) checkAsyncReturn() error {
	if err := e.checkRegRead(insn.R0); err != nil {
		return err
	}
	const exitCtx = "At async callback return"
	if r0 := &e.regs()[insn.R0]; r0.typ != scalarValue {
		return e.errorf(uapi.EINVAL, "%s the register R0 is not a known value (%s)", exitCtx, r0.typeName())
	}
	if err := e.markPrecise(insn.R0); err != nil {
		return err
	}
	return e.checkScalarRange(exitCtx, &e.regs()[insn.R0], 0, 0)
}
