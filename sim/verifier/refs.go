package verifier

import (
	"fmt"
	"strings"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Reference tracking (kernel/bpf/verifier.c: acquire_reference,
// release_reference, check_reference_leak, refsafe). A helper that hands
// the program an object it must give back (bpf_ringbuf_reserve's record)
// acquires a reference: the path's state records it, and the pointer
// carries its id in refObjID. Releasing it (bpf_ringbuf_submit or
// discard, or finding the pointer NULL) drops the record and invalidates
// every copy of the pointer; a path that reaches the program's exit, a
// tail call or a legacy packet load still holding one is refused, since
// the object would never be given back.

// refState is struct bpf_reference_state: an acquired object (refPtr) or
// a held spin lock (refLock, spinlock.go).
type refState struct {
	id      uint32
	insnIdx int // the call that acquired it
	kind    refKind
	// ptr is a lock's map, as an index like regState.mapIdx.
	ptr uint16
}

// acquireReference is acquire_reference: a new reference, acquired at
// insnIdx, with a fresh id.
func (e *env) acquireReference(insnIdx int) uint32 {
	e.idGen++
	e.cur.refs = append(e.cur.refs, refState{id: e.idGen, insnIdx: insnIdx})
	return e.idGen
}

// releaseReferenceNomark is release_reference_nomark: drop the record of
// reference id, keeping the others in order (the kernel keeps the array's
// order for its lock-like references).
func releaseReferenceNomark(st *vstate, id uint32) bool {
	for i, r := range st.refs {
		if r.kind == refPtr && r.id == id {
			st.refs = append(st.refs[:i], st.refs[i+1:]...)
			return true
		}
	}
	return false
}

// releaseReference is release_reference: the object is given back, so no
// register or spilled copy points to it any more. A privileged loader
// (allow_ptr_leaks) turns them into unknown scalars.
func (e *env) releaseReference(id uint32) bool {
	if !releaseReferenceNomark(e.cur, id) {
		return false
	}
	e.cur.forEachReg(func(r *regState) {
		if r.refObjID == id {
			r.markUnknown()
		}
	})
	return true
}

// checkReferenceLeak is check_reference_leak: at the end of the main
// program every reference must have been released. A subprogram returns
// its references to its caller.
func (e *env) checkReferenceLeak() error {
	if e.cur.cur().frameno != 0 {
		return nil
	}
	lingering := false
	for _, r := range e.cur.refs {
		if r.kind != refPtr {
			continue
		}
		e.log.always(fmt.Sprintf("Unreleased reference id=%d alloc_insn=%d", r.id, r.insnIdx))
		lingering = true
	}
	if lingering {
		return uapi.EINVAL
	}
	return nil
}

// checkResourceLeak is check_resource_leak: what would end the program
// (prefix names it) must not leave a reference behind, nor, when
// checkLock, a lock held.
func (e *env) checkResourceLeak(prefix string, checkLock bool) error {
	if checkLock && e.cur.activeLocks > 0 {
		return e.errorf(uapi.EINVAL, "%s cannot be used inside bpf_spin_lock-ed region", prefix)
	}
	if err := e.checkReferenceLeak(); err != nil {
		return e.errorf(uapi.EINVAL, "%s would lead to reference leak", prefix)
	}
	if checkLock && e.cur.activeRCULocks > 0 {
		return e.errorf(uapi.EINVAL, "%s cannot be used inside bpf_rcu_read_lock-ed region", prefix)
	}
	return nil
}

// inRCU is in_rcu_cs: a program that does not sleep runs in an RCU read
// section throughout; a sleepable one between bpf_rcu_read_lock and
// unlock, or holding a spin lock.
func (e *env) inRCU() bool {
	return !e.cfg.Sleepable || e.cur.activeRCULocks > 0 || e.cur.activeLocks > 0
}

// refsafe is refsafe: a checkpoint covers a state only with the same
// references, their ids mapped as the registers' are.
func (e *env) refsafe(old, cur *vstate) bool {
	if len(old.refs) != len(cur.refs) || old.activeLocks != cur.activeLocks || old.activeRCULocks != cur.activeRCULocks {
		return false
	}
	if !e.checkIDs(old.activeLockID, cur.activeLockID) || old.activeLockPtr != cur.activeLockPtr {
		return false
	}
	for i := range old.refs {
		o, c := &old.refs[i], &cur.refs[i]
		if !e.checkIDs(o.id, c.id) || o.kind != c.kind || (o.kind == refLock && o.ptr != c.ptr) {
			return false
		}
	}
	return true
}

// refsSuffix is how print_verifier_state ends a state line that holds
// references: " refs=2,4".
func (s *vstate) refsSuffix() string {
	if len(s.refs) == 0 || s.refs[0].id == 0 {
		return ""
	}
	var b strings.Builder
	for i, r := range s.refs {
		if i == 0 {
			fmt.Fprintf(&b, " refs=%d", r.id)
		} else if r.id != 0 {
			fmt.Fprintf(&b, ",%d", r.id)
		}
	}
	return b.String()
}
