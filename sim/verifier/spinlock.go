package verifier

import (
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// bpf_spin_lock (kernel/bpf/verifier.c: process_spin_lock,
// acquire_lock_state, release_lock_state and their callers). A program may
// take the struct bpf_spin_lock of a map value, one lock at a time, and
// must release it on every path before it exits; while it holds one it
// may call nothing but bpf_spin_unlock (static functions are fine: they
// run under the caller's lock), and it may never load or store the lock
// word itself. A held lock is a reference of its own kind in the state's
// references: its id is the map value pointer's (which keeps its id after
// the null check for this reason), its pointer the map, so that the
// unlock must name the same value of the same map.

// refKind is enum ref_state_type, for the kinds bpfsim tracks.
type refKind uint8

const (
	refPtr  refKind = iota // REF_TYPE_PTR: an acquired object
	refLock                // REF_TYPE_LOCK: a held bpf_spin_lock
)

// spinLockOf returns the offset of the spin lock in the values of the map
// r points into, if they have one (reg_may_point_to_spin_lock).
func (e *env) spinLockOf(r *regState) (uint32, bool) {
	if r.typ != ptrToMapValue {
		return 0, false
	}
	m := e.mapOf(r)
	if m == nil {
		return 0, false
	}
	return m.SpinLock()
}

// processSpinLock is process_spin_lock for bpf_spin_lock (lock) and
// bpf_spin_unlock: the argument in regno must point at the value's lock.
func (e *env) processSpinLock(regno uint8, lock bool) error {
	reg := &e.regs()[regno]
	cur := e.cur
	m, err := e.checkFieldArg(regno, "bpf_spin_lock", (*maps.Map).SpinLock)
	if err != nil {
		return err
	}
	ptr := e.mapIndex(m)
	if lock {
		if cur.activeLocks > 0 && cur.findLock(refLock, 0, 0) {
			return e.errorf(uapi.EINVAL, "Locking two bpf_spin_locks are not allowed")
		}
		cur.refs = append(cur.refs, refState{id: reg.id, insnIdx: e.insnIdx, kind: refLock, ptr: ptr})
		cur.activeLocks++
		cur.activeLockID, cur.activeLockPtr = reg.id, ptr
		return nil
	}
	if cur.activeLocks == 0 {
		return e.errorf(uapi.EINVAL, "bpf_spin_unlock without taking a lock")
	}
	if !cur.findLock(refLock, reg.id, ptr) {
		return e.errorf(uapi.EINVAL, "bpf_spin_unlock of different lock")
	}
	if reg.id != cur.activeLockID || ptr != cur.activeLockPtr {
		return e.errorf(uapi.EINVAL, "bpf_spin_unlock cannot be out of order")
	}
	if !cur.releaseLock(reg.id, ptr) {
		return e.errorf(uapi.EINVAL, "bpf_spin_unlock of different lock")
	}
	return nil
}

// checkFieldArg is what process_spin_lock and process_timer_func check
// of the pointer in regno, a map value's: it points at the value's field
// called name, which field finds, at a constant offset, and the map has
// BTF. It returns the map.
func (e *env) checkFieldArg(regno uint8, name string, field func(*maps.Map) (uint32, bool)) (*maps.Map, error) {
	reg := &e.regs()[regno]
	if !reg.varOff.isConst() {
		return nil, e.errorf(uapi.EINVAL, "R%d doesn't have constant offset. %s has to be at the constant offset", regno, name)
	}
	m := e.mapOf(reg)
	if !m.BTF {
		return nil, e.errorf(uapi.EINVAL, "map '%s' has to have BTF in order to use %s", m.Name, name)
	}
	at, ok := field(m)
	if !ok {
		return nil, e.errorf(uapi.EINVAL, "map '%s' has no valid %s", m.Name, name)
	}
	if off := int64(reg.varOff.value) + int64(reg.off); off != int64(at) {
		return nil, e.errorf(uapi.EINVAL, "off %d doesn't point to 'struct %s' that is at %d", off, name, at)
	}
	return m, nil
}

// findLock is find_lock_state: a held lock of kind with id and ptr, or any
// held lock of kind when both are 0.
func (s *vstate) findLock(kind refKind, id uint32, ptr uint16) bool {
	for _, r := range s.refs {
		if r.kind != kind {
			continue
		}
		if (id == 0 && ptr == 0) || (r.id == id && r.ptr == ptr) {
			return true
		}
	}
	return false
}

// releaseLock is release_lock_state: the lock goes, and the active lock
// becomes the one taken before it, if any.
func (s *vstate) releaseLock(id uint32, ptr uint16) bool {
	var prevID uint32
	var prevPtr uint16
	for i, r := range s.refs {
		if r.kind == refLock && r.id == id && r.ptr == ptr {
			s.refs = append(s.refs[:i], s.refs[i+1:]...)
			s.activeLocks--
			s.activeLockID, s.activeLockPtr = prevID, prevPtr
			return true
		}
		if r.kind == refLock {
			prevID, prevPtr = r.id, r.ptr
		}
	}
	return false
}

// checkCallUnderLock is do_check's rule for calls while a lock is held:
// only bpf_spin_unlock, and static functions (whose own calls meet the
// same rule).
func (e *env) checkCallUnderLock(in *insn.Insn) error {
	if e.cur.activeLocks == 0 {
		return nil
	}
	if (in.Src == 0 && in.Imm != uapi.FuncSpinUnlock) || in.Src == insn.PseudoKfuncCall {
		return e.errorf(uapi.EINVAL, "function calls are not allowed while holding a lock")
	}
	return nil
}

// checkMapFields is the part of check_map_access after the bounds: no
// access, direct or by a helper, may touch a field the kernel manages.
// off is the access's fixed offset, the register's ranges its variable
// part.
func (e *env) checkMapFields(reg *regState, m *maps.Map, off, size int) error {
	if m.Record == nil {
		return nil
	}
	// The fields in the order of their offsets, as the record holds them.
	type field struct {
		name    string
		at, len int64
	}
	var fields [2]field
	n := 0
	if p, ok := m.SpinLock(); ok {
		fields[n] = field{"bpf_spin_lock", int64(p), maps.SpinLockSize}
		n++
	}
	if p, ok := m.Timer(); ok {
		fields[n] = field{"bpf_timer", int64(p), maps.TimerSize}
		if n == 1 && fields[0].at > fields[1].at {
			fields[0], fields[1] = fields[1], fields[0]
		}
		n++
	}
	for _, f := range fields[:n] {
		if reg.smin+int64(off) < f.at+f.len && f.at < int64(reg.umax)+int64(off)+int64(size) {
			return e.errorf(uapi.EACCES, "%s cannot be accessed directly by load/store", f.name)
		}
	}
	return nil
}

// checkMapProgCompat is the special fields' part of
// check_map_prog_compatibility: socket filters and tracing programs may
// not use a map whose values hold a lock, nor tracing programs one whose
// values hold a timer.
func (e *env) checkMapProgCompat(m *maps.Map) error {
	r, ok := e.cfg.Type.(spinLockRefuser)
	if !ok {
		return nil
	}
	if _, lock := m.SpinLock(); lock {
		if msg := r.spinLockRefusal(); msg != "" {
			return e.errorf(uapi.EINVAL, "%s", msg)
		}
	}
	if _, timer := m.Timer(); timer && r.refusesTimers() {
		return e.errorf(uapi.EINVAL, "tracing progs cannot use bpf_timer yet")
	}
	return nil
}
