package verifier

import (
	"fmt"
	"sync"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Open-coded iterators (kernel/bpf/verifier.c: process_iter_arg,
// mark_stack_slots_iter, unmark_stack_slots_iter, is_iter_reg_valid_init
// and _uninit, process_iter_next_call, iter_active_depths_differ). An
// iterator is a struct bpf_iter_<type> on the program's stack, made by
// bpf_iter_<type>_new, advanced by _next and ended by _destroy. Its slots
// are STACK_ITER, the main (upper) one holding the reference _new
// acquired, which _destroy releases: a path that leaves an iterator alive
// leaks it.
//
// The loop over _next is verified without knowing how often it runs:
// each _next call forks the path. The current path takes the iterator as
// drained (R0 = NULL) and goes on past the loop; a queued path takes it
// as active (R0 a valid pointer), one level deeper, with the scalars that
// changed since the last visit of this call widened to unknown. The call
// is a forced checkpoint, and an active path that comes back to it in a
// state an earlier visit covers is pruned there: the loop has converged.

// Iterator states (enum bpf_iter_state).
const (
	iterStateInvalid uint8 = iota
	iterStateActive
	iterStateDrained
)

// iterTypes interns the iterator types (the <type> of struct
// bpf_iter_<type>) for regState.iterType, which keeps a small index to
// stay free of pointers. Iterator types are few: the kernel's and those
// a user's kfuncs declare.
var iterTypes struct {
	sync.RWMutex
	names []string
	index map[string]uint8
}

// internIterType returns the index of iterator type name, adding it.
func internIterType(name string) (uint8, bool) {
	iterTypes.Lock()
	defer iterTypes.Unlock()
	if t, ok := iterTypes.index[name]; ok {
		return t, true
	}
	if len(iterTypes.names) == 255 {
		return 0, false
	}
	if iterTypes.index == nil {
		iterTypes.index = map[string]uint8{}
	}
	iterTypes.names = append(iterTypes.names, name)
	t := uint8(len(iterTypes.names))
	iterTypes.index[name] = t
	return t, true
}

// iterTypeName is iter_type_str: "num" for struct bpf_iter_num.
func iterTypeName(t uint8) string {
	iterTypes.RLock()
	defer iterTypes.RUnlock()
	if t == 0 || int(t) > len(iterTypes.names) {
		return "<invalid>"
	}
	return iterTypes.names[t-1]
}

// iterStateName is iter_state_str.
func iterStateName(s uint8) string {
	switch s {
	case iterStateActive:
		return "active"
	case iterStateDrained:
		return "drained"
	}
	return "<unknown>"
}

func (s *stackSlot) isIter() bool { return s.types[0] == stackIter }

// formatIter prints an iterator's main slot as print_verifier_state does:
// "iter_num(ref_id=1,state=active,depth=0)".
func formatIter(r *regState) string {
	return fmt.Sprintf("iter_%s(ref_id=%d,state=%s,depth=%d)", iterTypeName(r.iterType), r.refObjID, iterStateName(r.iterState), r.iterDepth)
}

// iterGetSpi is iter_get_spi.
func (e *env) iterGetSpi(reg *regState, nrSlots int) (int, error) {
	return e.stackSlotObjGetSpi(reg, "iter", nrSlots)
}

// iterRegValidUninit is is_iter_reg_valid_uninit: no slot the new
// iterator would take holds part of another (slots not yet allocated are
// fine: the writes will allocate them).
func (e *env) iterRegValidUninit(reg *regState, nrSlots int) bool {
	spi, err := e.iterGetSpi(reg, nrSlots)
	if err == uapi.ERANGE {
		return true
	}
	if err != nil {
		return false
	}
	f := e.stackFrame(reg)
	for i := 0; i < nrSlots; i++ {
		for _, t := range f.stack[spi-i].types {
			if t == stackIter {
				return false
			}
		}
	}
	return true
}

// iterRegValidInit is is_iter_reg_valid_init: reg points to a whole
// iterator of type t, its reference in the main slot only.
func (e *env) iterRegValidInit(reg *regState, t uint8, nrSlots int) (int, bool) {
	spi, err := e.iterGetSpi(reg, nrSlots)
	if err != nil {
		return 0, false
	}
	f := e.stackFrame(reg)
	for i := 0; i < nrSlots; i++ {
		s := &f.stack[spi-i]
		if (i == 0) != (s.spilled.refObjID != 0) || s.spilled.iterType != t {
			return 0, false
		}
		for _, b := range s.types {
			if b != stackIter {
				return 0, false
			}
		}
	}
	return spi, true
}

// iterMeta is what process_iter_arg leaves for the rest of the call
// (struct bpf_kfunc_call_arg_meta's iter and ref_obj_id).
type iterMeta struct {
	spi     int
	frameno uint8
	ref     uint32
}

// processIterArg is process_iter_arg for argument regno of kf.
func (e *env) processIterArg(kf *KfuncProto, regno uint8, idx int, im *iterMeta) error {
	reg := &e.regs()[regno]
	if reg.typ != ptrToStack {
		return e.errorf(uapi.EINVAL, "arg#%d expected pointer to an iterator on stack", regno-1)
	}
	name := iterTypeName(kf.IterType)
	if kf.Flags&KfIterNew != 0 {
		if !e.iterRegValidUninit(reg, kf.IterSlots) {
			return e.errorf(uapi.EINVAL, "expected uninitialized iter_%s as arg #%d", name, regno-1)
		}
		for i := 0; i < kf.IterSlots*regSize; i += regSize {
			if err := e.checkMemAccess(regno, i, regSize, accessWrite, -1, false, false); err != nil {
				return err
			}
		}
		return e.markStackSlotsIter(&e.regs()[regno], kf, idx)
	}
	spi, ok := e.iterRegValidInit(reg, kf.IterType, kf.IterSlots)
	if !ok {
		return e.errorf(uapi.EINVAL, "expected an initialized iter_%s as arg #%d", name, regno-1)
	}
	f := e.stackFrame(reg)
	// mark_iter_read: the slots are read (and the log shows them).
	e.markStackRead(int(f.frameno), (uint64(1)<<uint(kf.IterSlots)-1)<<uint(spi-kf.IterSlots+1))
	for i := 0; i < kf.IterSlots; i++ {
		e.scratchSlot(spi - i)
	}
	*im = iterMeta{spi: spi, frameno: f.frameno, ref: f.stack[spi].spilled.refObjID}
	if kf.Flags&KfIterDestroy != 0 {
		e.unmarkStackSlotsIter(f, spi, kf.IterSlots)
	}
	return nil
}

// markStackSlotsIter is mark_stack_slots_iter: the slots become a new
// active iterator holding a new reference.
func (e *env) markStackSlotsIter(reg *regState, kf *KfuncProto, idx int) error {
	spi, err := e.iterGetSpi(reg, kf.IterSlots)
	if err != nil {
		return err
	}
	f := e.stackFrame(reg)
	id := e.acquireReference(idx)
	for i := 0; i < kf.IterSlots; i++ {
		s := &f.stack[spi-i]
		// A stack pointer, as the kernel has no register type for it.
		s.spilled = regState{typ: ptrToStack, iterType: kf.IterType, iterState: iterStateActive, rcu: kf.Flags&KfRCUProtected != 0}
		if i == 0 {
			s.spilled.refObjID = id
		}
		for j := range s.types {
			s.types[j] = stackIter
		}
		e.markStackWritten(int(f.frameno), spi-i)
		e.scratchSlot(spi - i)
	}
	return nil
}

// unmarkStackSlotsIter is unmark_stack_slots_iter: the iterator's
// reference is released and its slots are never-written stack again.
func (e *env) unmarkStackSlotsIter(f *funcState, spi, nrSlots int) {
	e.releaseReference(f.stack[spi].spilled.refObjID)
	for i := 0; i < nrSlots; i++ {
		s := &f.stack[spi-i]
		s.spilled = regState{}
		s.types = [regSize]uint8{}
		e.markStackWritten(int(f.frameno), spi-i)
		e.scratchSlot(spi - i)
	}
}

// processIterNextCall is process_iter_next_call: R0 was set as the
// kfunc's maybe-NULL pointer. An active iterator forks a queued path on
// which it stays active, one level deeper, and R0 is valid; on the
// current path it is drained and R0 is NULL.
func (e *env) processIterNextCall(idx int, im *iterMeta) error {
	cur := e.cur
	it := &cur.frames[im.frameno].stack[im.spi].spilled
	if it.iterState != iterStateActive && it.iterState != iterStateDrained {
		return e.errorf(uapi.EFAULT, "verifier internal error: unexpected iterator state %d (%s)", it.iterState, iterStateName(it.iterState))
	}
	if it.iterState == iterStateActive {
		// The call is a forced checkpoint: the current state's parent
		// is the checkpoint just taken here.
		if cur.parent == nil || cur.parent.insnIdx != idx || !sameCallsites(cur.parent, cur) {
			return e.errorf(uapi.EFAULT, "bug: bad parent state for iter next call")
		}
		// Skipping that checkpoint: the previous visit's.
		prev := e.findPrevEntry(cur.parent, idx)
		queued, err := e.pushStack(idx+1, idx)
		if err != nil {
			return err
		}
		qit := &queued.frames[im.frameno].stack[im.spi].spilled
		qit.iterState = iterStateActive
		qit.iterDepth++
		if prev != nil {
			e.widenImpreciseScalars(prev, queued)
		}
		e.markPtrNotNull(&queued.cur().regs[insn.R0])
	}
	it.iterState = iterStateDrained
	e.regs()[insn.R0].markKnown(0)
	return nil
}

// iterActiveDepthsDiffer is iter_active_depths_differ: an active
// iterator of old at another depth in cur means the loop made progress,
// however alike the states are otherwise.
func iterActiveDepthsDiffer(old, cur *vstate) bool {
	for fr := old.curframe; fr >= 0; fr-- {
		fo, fc := old.frames[fr], cur.frames[fr]
		for i := range fo.stack {
			if !fo.stack[i].isIter() || fo.stack[i].spilled.iterState != iterStateActive {
				continue
			}
			if i >= len(fc.stack) || fc.stack[i].spilled.iterDepth != fo.stack[i].spilled.iterDepth {
				return true
			}
		}
	}
	return false
}

// isIterNextInsn is is_iter_next_insn: a call of some iterator's _next.
func (e *env) isIterNextInsn(idx int) bool {
	in := &e.insns[idx]
	if in.Code != insn.JMP|insn.CALL || in.Src != insn.PseudoKfuncCall || e.cfg.Kfunc == nil {
		return false
	}
	kf, err := e.cfg.Kfunc(in.Imm, in.Off)
	return err == nil && kf.Flags&KfIterNext != 0
}

// iterActiveAt reports whether, at the _next call idx, the iterator its
// R1 points to is active in cur (what is_state_visited asks once it
// knows a checkpoint covers cur).
func (e *env) iterActiveAt(cur *vstate) bool {
	r1 := &cur.cur().regs[insn.R1]
	if r1.typ != ptrToStack || !r1.varOff.isConst() {
		return false
	}
	off := int(r1.off) + int(int64(r1.varOff.value))
	spi := (-off - 1) / regSize
	f := cur.frames[r1.frameno]
	if spi < 0 || spi >= len(f.stack) {
		return false
	}
	return f.stack[spi].spilled.iterState == iterStateActive
}
