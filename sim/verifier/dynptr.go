package verifier

import (
	"fmt"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Dynamic pointers on the stack (kernel/bpf/verifier.c: dynptr_get_spi,
// is_dynptr_reg_valid_uninit and _init, mark_stack_slots_dynptr,
// destroy_if_dynptr_stack_slot, unmark_stack_slots_dynptr,
// process_dynptr_func). A struct bpf_dynptr is 16 bytes of the program's
// stack that only helpers may touch: the verifier marks both slots
// STACK_DYNPTR and keeps the dynptr's type in the slots' spilled
// registers, the upper one (lower address) being the first slot. A ring
// buffer dynptr holds a reference the program must give back with
// bpf_ringbuf_submit_dynptr or _discard_dynptr; a local one may be
// overwritten at will, which destroys it and invalidates the slices
// bpf_dynptr_data returned from it.

// dynptrNrSlots is BPF_DYNPTR_NR_SLOTS.
const dynptrNrSlots = uapi.DynptrSize / regSize

// DynptrArg is what a dynptr argument takes (ARG_PTR_TO_DYNPTR and its
// flags).
type DynptrArg struct {
	// Type is the dynptr type the helper wants (DYNPTR_TYPE_*), 0 for
	// any.
	Type uint8
	// Uninit (MEM_UNINIT): the helper makes a new dynptr in the slots.
	Uninit bool
	// Release (OBJ_RELEASE): the helper gives the dynptr's reference
	// back.
	Release bool
	// Rdonly (MEM_RDONLY): the helper does not change the dynptr itself,
	// so a CONST_PTR_TO_DYNPTR (a global function's argument) will do.
	Rdonly bool
}

// dynptrGetSpi is dynptr_get_spi: the slot of the dynptr a stack pointer
// points to, the upper of its two. A dynptr that is not yet on the
// allocated stack is errRange.
func (e *env) dynptrGetSpi(reg *regState) (int, error) {
	return e.stackSlotObjGetSpi(reg, "dynptr", dynptrNrSlots)
}

// stackSlotObjGetSpi is stack_slot_obj_get_spi: the upper slot of the
// nrSlots-slot object (of kind, for the messages) reg points to, which
// must be at a constant, 8-aligned offset; one not yet on the allocated
// stack is uapi.ERANGE.
func (e *env) stackSlotObjGetSpi(reg *regState, kind string, nrSlots int) (int, error) {
	if !reg.varOff.isConst() {
		e.log.always(kind + " has to be at a constant offset")
		return 0, uapi.EINVAL
	}
	off := int(reg.off) + int(int64(reg.varOff.value))
	if off%regSize != 0 {
		e.log.always(fmt.Sprintf("cannot pass in %s at an offset=%d", kind, off))
		return 0, uapi.EINVAL
	}
	spi := (-off - 1) / regSize
	if spi+1 < nrSlots {
		e.log.always(fmt.Sprintf("cannot pass in %s at an offset=%d", kind, off))
		return 0, uapi.EINVAL
	}
	f := e.stackFrame(reg)
	if spi-nrSlots+1 < 0 || spi >= len(f.stack) {
		return 0, uapi.ERANGE
	}
	return spi, nil
}

// isDynptrSlot reports whether a stack slot holds part of a dynptr.
func (s *stackSlot) isDynptr() bool { return s.types[0] == stackDynptr }

// dynptrRegValidInit is is_dynptr_reg_valid_init.
func (e *env) dynptrRegValidInit(reg *regState) (int, bool) {
	spi, err := e.dynptrGetSpi(reg)
	if err != nil {
		return 0, false
	}
	f := e.stackFrame(reg)
	if !f.stack[spi].spilled.firstSlot {
		return 0, false
	}
	for i := 0; i < regSize; i++ {
		if f.stack[spi].types[i] != stackDynptr || f.stack[spi-1].types[i] != stackDynptr {
			return 0, false
		}
	}
	return spi, true
}

// processDynptrFunc is process_dynptr_func for argument regno: a stack
// pointer to a dynptr, or a CONST_PTR_TO_DYNPTR.
func (e *env) processDynptrFunc(regno uint8, idx int, arg DynptrArg, cloneRefObjID uint32) error {
	reg := &e.regs()[regno]
	if reg.typ != ptrToStack && reg.typ != constPtrToDynptr {
		return e.errorf(uapi.EINVAL, "arg#%d expected pointer to stack or const struct bpf_dynptr", regno-1)
	}
	if arg.Uninit {
		if reg.typ == constPtrToDynptr {
			return e.errorf(uapi.EINVAL, "Dynptr has to be an uninitialized dynptr")
		}
		if _, err := e.dynptrGetSpi(reg); err != nil && err != uapi.ERANGE {
			return e.errorf(uapi.EINVAL, "Dynptr has to be an uninitialized dynptr")
		}
		// The helper writes the 16 bytes, 8 at a time.
		for i := 0; i < uapi.DynptrSize; i += regSize {
			if err := e.checkMemAccess(regno, i, regSize, accessWrite, -1, false, false); err != nil {
				return err
			}
		}
		return e.markStackSlotsDynptr(&e.regs()[regno], arg.Type, idx, cloneRefObjID)
	}
	if reg.typ == constPtrToDynptr {
		if !arg.Rdonly {
			return e.errorf(uapi.EINVAL, "cannot pass pointer to const bpf_dynptr, the helper mutates it")
		}
		if arg.Type != 0 && reg.dynptrType != arg.Type {
			return e.errorf(uapi.EINVAL, "Expected a dynptr of type %s as arg #%d", dynptrArgTypeName(arg.Type), regno-1)
		}
		return nil
	}
	spi, ok := e.dynptrRegValidInit(reg)
	if !ok {
		return e.errorf(uapi.EINVAL, "Expected an initialized dynptr as arg #%d", regno-1)
	}
	f := e.stackFrame(reg)
	if arg.Type != 0 && f.stack[spi].spilled.dynptrType != arg.Type {
		return e.errorf(uapi.EINVAL, "Expected a dynptr of type %s as arg #%d", dynptrArgTypeName(arg.Type), regno-1)
	}
	// mark_dynptr_read: both slots are read (and the log shows them).
	e.markStackRead(int(f.frameno), 3<<uint(spi-1))
	e.scratchSlot(spi)
	e.scratchSlot(spi - 1)
	return nil
}

// dynptrArgTypeName is how process_dynptr_func names the type it wanted
// (the skb and xdp names end in a space, as the kernel's do).
func dynptrArgTypeName(t uint8) string {
	switch t {
	case uapi.DynptrTypeLocal:
		return "local"
	case uapi.DynptrTypeRingbuf:
		return "ringbuf"
	case uapi.DynptrTypeSKB:
		return "skb "
	case uapi.DynptrTypeXDP:
		return "xdp "
	}
	return "<unknown>"
}

// markStackSlotsDynptr is mark_stack_slots_dynptr: the two slots reg
// points to become a new dynptr of type t; a ring buffer one acquires a
// reference (a clone shares its original's).
func (e *env) markStackSlotsDynptr(reg *regState, t uint8, idx int, cloneRefObjID uint32) error {
	spi, err := e.dynptrGetSpi(reg)
	if err != nil {
		return err
	}
	f := e.stackFrame(reg)
	// Either slot may belong to another dynptr: destroy both.
	if err := e.destroyIfDynptrStackSlot(f, spi); err != nil {
		return err
	}
	if err := e.destroyIfDynptrStackSlot(f, spi-1); err != nil {
		return err
	}
	e.idGen++
	id := e.idGen
	for i, s := range []*stackSlot{&f.stack[spi], &f.stack[spi-1]} {
		for j := range s.types {
			s.types[j] = stackDynptr
		}
		s.spilled = regState{typ: constPtrToDynptr, id: id, dynptrType: t, firstSlot: i == 0}
	}
	if t == uapi.DynptrTypeRingbuf {
		ref := cloneRefObjID
		if ref == 0 {
			ref = e.acquireReference(idx)
		}
		f.stack[spi].spilled.refObjID = ref
		f.stack[spi-1].spilled.refObjID = ref
	}
	e.markStackWritten(int(f.frameno), spi)
	e.markStackWritten(int(f.frameno), spi-1)
	e.scratchSlot(spi)
	e.scratchSlot(spi - 1)
	return nil
}

// destroyIfDynptrStackSlot is destroy_if_dynptr_stack_slot: a write to
// either slot of an unreferenced dynptr ends it and the slices taken
// from it; a referenced one may not be overwritten.
func (e *env) destroyIfDynptrStackSlot(f *funcState, spi int) error {
	if spi < 0 || spi >= len(f.stack) || !f.stack[spi].isDynptr() {
		return nil
	}
	if !f.stack[spi].spilled.firstSlot {
		spi++
	}
	if f.stack[spi].spilled.dynptrType == uapi.DynptrTypeRingbuf {
		return e.errorf(uapi.EINVAL, "cannot overwrite referenced dynptr")
	}
	e.scratchSlot(spi)
	e.scratchSlot(spi - 1)
	id := f.stack[spi].spilled.id
	e.cur.forEachReg(func(r *regState) {
		// Only bpf_dynptr_data's slices: the kernel matches the type
		// exactly, and bpf_dynptr_slice's carry flags.
		if r.typ == ptrToMem && !r.rdonly && !r.ringbuf && r.dynptrType == 0 && r.dynptrID == id {
			r.markUnknown() // mark_reg_invalid for a privileged loader
		}
	})
	e.invalidateDynptr(f, spi)
	return nil
}

// invalidateDynptr is invalidate_dynptr: the two slots are never-written
// stack again.
func (e *env) invalidateDynptr(f *funcState, spi int) {
	for _, s := range []*stackSlot{&f.stack[spi], &f.stack[spi-1]} {
		s.types = [regSize]uint8{}
		s.spilled = regState{}
	}
	e.markStackWritten(int(f.frameno), spi)
	e.markStackWritten(int(f.frameno), spi-1)
}

// unmarkStackSlotsDynptr is unmark_stack_slots_dynptr: a helper gave the
// dynptr's reference back, ending the dynptr, its clones and their
// slices. It reports whether there was a reference to give back.
func (e *env) unmarkStackSlotsDynptr(reg *regState) bool {
	spi, err := e.dynptrGetSpi(reg)
	if err != nil {
		return false
	}
	f := e.stackFrame(reg)
	ref := f.stack[spi].spilled.refObjID
	if f.stack[spi].spilled.dynptrType != uapi.DynptrTypeRingbuf {
		e.invalidateDynptr(f, spi)
		return true
	}
	if !e.releaseReference(ref) {
		return false
	}
	for i := 1; i < len(f.stack); i++ {
		s := &f.stack[i]
		if s.isDynptr() && s.spilled.refObjID == ref && s.spilled.firstSlot {
			e.invalidateDynptr(f, i)
		}
	}
	return true
}

// checkDynptrRelease is check_func_arg's test of a dynptr a helper
// releases: it must hold a reference.
func (e *env) checkDynptrRelease(reg *regState, regno uint8) error {
	if reg.typ != ptrToStack {
		return e.errorf(uapi.EINVAL, "cannot release unowned const bpf_dynptr")
	}
	spi, err := e.dynptrGetSpi(reg)
	if err != nil || e.stackFrame(reg).stack[spi].spilled.refObjID == 0 {
		return e.errorf(uapi.EINVAL, "arg %d is an unacquired reference", regno)
	}
	return nil
}

// dynptrReg returns what describes the initialised dynptr reg points to:
// its first slot's register, or reg itself for a CONST_PTR_TO_DYNPTR.
func (e *env) dynptrReg(reg *regState) *regState {
	if reg.typ == constPtrToDynptr {
		return reg
	}
	spi, ok := e.dynptrRegValidInit(reg)
	if !ok {
		return nil
	}
	return &e.stackFrame(reg).stack[spi].spilled
}

// formatDynptr prints a dynptr's slots as print_verifier_state does:
// "dynptr_ringbuf(id=2,ref_id=1,dynptr_id=1)". The kernel prints the
// first slot's register, whose dynptr.first_slot shares its bytes with
// dynptr_id in struct bpf_reg_state's union: so "dynptr_id=1", always.
func formatDynptr(s *stackSlot) string {
	r := &s.spilled
	out := "dynptr_" + uapi.DynptrTypeName(r.dynptrType) + "("
	if r.id != 0 {
		out += fmt.Sprintf("id=%d,", r.id)
	}
	if r.refObjID != 0 {
		out += fmt.Sprintf("ref_id=%d,", r.refObjID)
	}
	return out + "dynptr_id=1)"
}
