package verifier

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Pointers the kernel types with BTF: PTR_TO_BTF_ID, a kernel object of
// a struct type the kernel's BTF describes, read field by field as
// btf_struct_access allows; and PTR_TO_BUF, a buffer a program is handed
// whose size it does not know, only bounded afterwards (an iterator's key
// and value: the verifier records the furthest byte read and written,
// max_rdonly_access and max_rdwr_access, and attaching the program to a
// map checks them against its sizes).
//
// The contexts typed this way (BTFCtxType, btf_ctx_access) are one u64
// slot per argument of a function's prototype: the iterators' (struct
// bpf_iter__<target>, of bpf_iter_<target>), struct_ops members' and the
// functions fentry and fexit programs attach to. Kernel objects also come
// from helpers and kfuncs, with references for those that acquire them
// (kfunc.go).

// BTFCtxType is the context of a program the kernel describes by a
// function's BTF prototype: one 8-byte slot per argument, read-only.
type BTFCtxType struct {
	// Func names the function in log messages (bpf_iter_bpf_map_elem).
	Func string
	// Args describes each slot.
	Args []BTFCtxArg
	// Iter marks an iterator program: its R0 must be 0 or 1.
	Iter bool
	// Ret, if set, is the slot after the arguments: the function's
	// return value, which an fexit program reads.
	Ret *BTFCtxArg
	// ZeroReturn makes R0 at exit 0 (fentry and fexit programs).
	ZeroReturn bool
}

// BTFCtxArg is one argument slot of a BTFCtxType.
type BTFCtxArg struct {
	// Kind is what a load of the slot yields: CtxScalar, CtxBTFID or
	// CtxBuf.
	Kind CtxKind
	// Struct is the struct a CtxBTFID pointer points to.
	Struct *btf.Struct
	// MaybeNull, ReadOnly and Trusted are the pointer's flags
	// (PTR_MAYBE_NULL, MEM_RDONLY, PTR_TRUSTED).
	MaybeNull, ReadOnly, Trusted bool
	// Note is the line the log gets at each load of the slot (the
	// kernel's "func '...' arg0 has btf_id ..." for a pointer its
	// prototype types; none for the slots a program type describes
	// itself, such as an iterator's or a nullable argument's).
	Note string
	// Refusal, if set, refuses every load of the slot with this
	// message (a pointer to what is not a struct).
	Refusal string
}

// ValidAccess is bpf_tracing_btf_ctx_access: aligned 8-byte reads of a
// slot that exists (a narrower read of a scalar slot too). A refusal
// says why in CtxField.Msg, as btf_ctx_access logs it.
func (t *BTFCtxType) ValidAccess(off, size int, write, ldsx bool) (CtxField, bool) {
	if write || off < 0 || off >= 8*maxFuncArgs || off%size != 0 {
		return CtxField{}, false
	}
	if off%8 != 0 {
		return CtxField{Msg: fmt.Sprintf("func '%s' offset %d is not multiple of 8", t.Func, off)}, false
	}
	if off/8 > len(t.Args) || off/8 == len(t.Args) && t.Ret == nil {
		return CtxField{Msg: fmt.Sprintf("func '%s' doesn't have %d-th argument", t.Func, off/8+1)}, false
	}
	var a BTFCtxArg
	if off/8 == len(t.Args) {
		a = *t.Ret
	} else {
		a = t.Args[off/8]
	}
	if a.Kind == CtxScalar {
		return CtxField{Kind: CtxScalar, Arg: &a}, true
	}
	if size != 8 {
		return CtxField{Msg: fmt.Sprintf("func '%s' size %d must be 8", t.Func, size)}, false
	}
	if a.Refusal != "" {
		return CtxField{Msg: a.Refusal}, false
	}
	if ldsx {
		return CtxField{}, false
	}
	return CtxField{Kind: a.Kind, Arg: &a, Msg: a.Note}, true
}

// CtxPointee is btf_ctx_access's reading of a function parameter's type
// t: a pointer to a struct gives the struct; a pointer to void or to an
// integer, and anything not a pointer, is a number (nil, ""); a pointer
// to anything else gives the BTF kind the kernel's refusal names ("func
// '...' arg0 type ARRAY is not a struct"). bpfsim refuses pointers to
// unions this way too ("UNION"), which the kernel reads as structs.
func CtxPointee(t btf.Type) (st *btf.Struct, other string) {
	ptr, ok := btf.UnderlyingType(t).(*btf.Pointer)
	if !ok {
		return nil, ""
	}
	switch target := btf.UnderlyingType(ptr.Target).(type) {
	case *btf.Void, *btf.Int:
		return nil, ""
	case *btf.Struct:
		return target, ""
	case *btf.Pointer:
		return nil, "PTR"
	case *btf.Array:
		return nil, "ARRAY"
	case *btf.Union:
		return nil, "UNION"
	case *btf.Enum:
		return nil, "ENUM"
	case *btf.FuncProto:
		return nil, "FUNC_PROTO"
	case *btf.Float:
		return nil, "FLOAT"
	}
	return nil, "UNKNOWN"
}

// maxFuncArgs is MAX_BPF_FUNC_ARGS.
const maxFuncArgs = 12

// BTFWriter is implemented by the program types that let programs store
// into some kernel objects (a struct_ops type's btf_struct_access): the
// error's message is logged and refuses the store.
type BTFWriter interface {
	BTFStructWrite(s *btf.Struct, off, size int) error
}

func (*BTFCtxType) DirectPacketAccess(bool) bool { return false }

// ReturnRange is check_return_code's for iterators (0 moves on, 1 asks
// for the same object again) and for fentry and fexit programs (0).
func (t *BTFCtxType) ReturnRange() (lo, hi int64, ok bool) {
	if t.ZeroReturn {
		return 0, 0, true
	}
	return 0, 1, t.Iter
}

func (*BTFCtxType) spinLockRefusal() string { return "tracing progs cannot use bpf_spin_lock yet" }
func (*BTFCtxType) refusesTimers() bool     { return true }

// btfIndex returns st's index for regState.btfIdx, adding it to the
// table.
func (e *env) btfIndex(st *btf.Struct) uint16 {
	for i, t := range e.btfs {
		if t == st {
			return uint16(i + 1)
		}
	}
	e.btfs = append(e.btfs, st)
	return uint16(len(e.btfs))
}

// btfOf returns the struct a PTR_TO_BTF_ID points to.
func (e *env) btfOf(r *regState) *btf.Struct {
	if e == nil || r.btfIdx == 0 || int(r.btfIdx) > len(e.btfs) {
		return nil
	}
	return e.btfs[r.btfIdx-1]
}

// markCtxArg sets r to what a load of a BTF context slot yields.
func (e *env) markCtxArg(r *regState, a *BTFCtxArg) {
	switch a.Kind {
	case CtxBTFID:
		r.markPtr(ptrToBTFID)
		r.btfIdx, r.trusted = e.btfIndex(a.Struct), a.Trusted
	case CtxBuf:
		r.markPtr(ptrToBuf)
		r.rdonly = a.ReadOnly
	default:
		r.markUnknown()
		return
	}
	if a.MaybeNull {
		r.maybeNull = true
		e.idGen++
		r.id = e.idGen
	}
}

// checkBufAccess is check_buffer_access: a constant, non-negative offset;
// the furthest byte goes into max_rdonly_access or max_rdwr_access.
func (e *env) checkBufAccess(reg *regState, regno uint8, off, size int, t accessKind) error {
	kind := "rdwr"
	if reg.rdonly {
		if t == accessWrite {
			return e.errorf(uapi.EACCES, "R%d cannot write into %s", regno, reg.typeName())
		}
		kind = "rdonly"
	}
	if off < 0 {
		return e.errorf(uapi.EACCES, "R%d invalid %s buffer access: off=%d, size=%d", regno, kind, off, size)
	}
	if !reg.varOff.isConst() || reg.varOff.value != 0 {
		return e.errorf(uapi.EACCES, "R%d invalid variable buffer offset: off=%d, var_off=%s", regno, off, reg.varOff)
	}
	if reg.rdonly {
		e.maxRdonly = max(e.maxRdonly, off+size)
	} else {
		e.maxRdwr = max(e.maxRdwr, off+size)
	}
	return nil
}

// checkBTFAccess is check_ptr_to_btf_access for a program that may only
// read kernel objects: the access must be a constant offset into the
// struct, and a load yields what btf_struct_walk finds there.
func (e *env) checkBTFAccess(reg *regState, regno uint8, off, size int, t accessKind, value int) error {
	st := e.btfOf(reg)
	name := "?"
	if st != nil {
		name = st.Name
	}
	if off < 0 {
		return e.errorf(uapi.EACCES, "R%d is ptr_%s invalid negative access: off=%d", regno, name, off)
	}
	if !reg.varOff.isConst() || reg.varOff.value != 0 {
		return e.errorf(uapi.EACCES, "R%d is ptr_%s invalid variable offset: off=%d, var_off=%s", regno, name, off, reg.varOff)
	}
	if st == nil {
		return e.errorf(uapi.EFAULT, "verifier internal error: R%d ptr_ without BTF", regno)
	}
	if t == accessWrite {
		w, ok := e.cfg.Type.(BTFWriter)
		if !ok {
			return e.errorf(uapi.EACCES, "only read is supported")
		}
		if err := w.BTFStructWrite(st, off, size); err != nil {
			errno := uapi.EACCES
			if !errors.As(err, &errno) {
				errno = uapi.EACCES
			}
			return e.errorf(errno, "%s", err.Error())
		}
		// A store the type allows is a plain store: the object is
		// the kernel's own and trusted.
		return nil
	}
	target, field, err := btfStructWalk(st, off, size)
	if err != nil {
		return e.errorf(uapi.EACCES, "%v", err)
	}
	e.aux[e.insnIdx].ProbeMem = true
	if value < 0 {
		return nil
	}
	r := &e.regs()[value]
	if target == nil {
		r.markUnknown()
		return nil
	}
	trusted, rcu, maybeNull, untrusted := e.walkedTrust(reg, st.Name, field)
	r.markPtr(ptrToBTFID)
	r.btfIdx = e.btfIndex(target)
	r.trusted, r.rcu, r.untrusted = trusted, rcu, untrusted
	if maybeNull {
		r.maybeNull = true
		e.idGen++
		r.id = e.idGen
	}
	return nil
}

// Struct fields whose pointers keep some of the trust of the object they
// are read from (verifier.c's BTF_TYPE_SAFE_TRUSTED, _TRUSTED_OR_NULL,
// _RCU and _RCU_OR_NULL lists), by "struct.field".
var (
	safeTrusted = map[string]bool{
		"bpf_iter_meta.seq": true, "bpf_iter__task.task": true, "linux_binprm.file": true,
		"file.f_inode": true, "dentry.d_inode": true,
	}
	safeTrustedOrNull = map[string]bool{
		"socket.sk": true, "vm_area_struct.vm_mm": true, "vm_area_struct.vm_file": true,
	}
	safeRCU = map[string]bool{
		"task_struct.cpus_ptr": true, "task_struct.cgroups": true, "task_struct.real_parent": true,
		"task_struct.group_leader": true, "cgroup.kn": true, "css_set.dfl_cgrp": true,
		"cgroup_subsys_state.cgroup": true,
	}
	safeRCUOrNull = map[string]bool{
		"mm_struct.exe_file": true, "sk_buff.sk": true, "request_sock.sk": true,
	}
)

// walkedTrust is check_ptr_to_btf_access's choice of flags for a pointer
// read out of reg's object, st, at field: an untrusted object's pointers
// are untrusted; a trusted or RCU-protected one's are trusted or
// RCU-protected for the fields the kernel lists, plain others in an RCU
// read section (a program that does not sleep is in one throughout) and
// untrusted outside; an old-style plain object's are plain.
func (e *env) walkedTrust(reg *regState, st, field string) (trusted, rcu, maybeNull, untrusted bool) {
	key := st + "." + field
	switch {
	case reg.untrusted:
		return false, false, false, true
	case !reg.isTrustedReg() && !reg.rcu:
		return false, false, false, false
	case safeTrusted[key]:
		return true, false, false, false
	case safeTrustedOrNull[key]:
		return true, false, true, false
	case !e.inRCU():
		return false, false, false, true
	case reg.maybeNull:
		return false, false, false, true
	case safeRCU[key]:
		return false, true, false, false
	case safeRCUOrNull[key]:
		return false, true, true, false
	}
	return false, false, false, false
}

// btfStructWalk is btf_struct_walk: what lies at [off, off+size) of st.
// A pointer to a struct, read whole, yields that struct and the pointer
// member's name; anything else read within one member, a scalar (nil).
func btfStructWalk(st *btf.Struct, off, size int) (*btf.Struct, string, error) {
	var typ btf.Type = st
	field := ""
	for {
		switch t := typ.(type) {
		case *btf.Struct, *btf.Union:
			var members []btf.Member
			var tsize uint32
			var tname string
			if s, ok := t.(*btf.Struct); ok {
				members, tsize, tname = s.Members, s.Size, s.Name
			} else {
				u := t.(*btf.Union)
				members, tsize, tname = u.Members, u.Size, u.Name
			}
			if off+size > int(tsize) {
				return nil, "", fmt.Errorf("access beyond struct %s at off %d size %d", tname, off, size)
			}
			var found *btf.Member
			for i := range members {
				m := &members[i]
				moff := int(m.Offset.Bytes())
				msize, err := btf.Sizeof(m.Type)
				if err != nil || m.BitfieldSize != 0 {
					if m.BitfieldSize != 0 && off >= moff && off < moff+int((m.BitfieldSize+7)/8) {
						return nil, "", nil // a bitfield reads as a scalar
					}
					continue
				}
				if off >= moff && off+size <= moff+msize {
					found = m
					break
				}
				if off < moff+msize && off+size > moff {
					return nil, "", fmt.Errorf("access partially inside struct %s member %s at off %d size %d", tname, m.Name, off, size)
				}
			}
			if found == nil {
				return nil, "", nil // padding: a scalar
			}
			moff := int(found.Offset.Bytes())
			if _, ok := btf.UnderlyingType(found.Type).(*btf.Pointer); ok && (off != moff || size != 8) {
				return nil, "", fmt.Errorf("cannot access ptr member %s with moff %d in struct %s with off %d size %d", found.Name, moff, tname, off, size)
			}
			off -= moff
			typ, field = btf.UnderlyingType(found.Type), found.Name
		case *btf.Array:
			esize, err := btf.Sizeof(t.Type)
			if err != nil || esize == 0 {
				return nil, "", nil
			}
			off %= esize
			typ = btf.UnderlyingType(t.Type)
		case *btf.Pointer:
			if off != 0 || size != 8 {
				return nil, "", fmt.Errorf("access partially inside a pointer at off %d size %d", off, size)
			}
			target, ok := btf.UnderlyingType(t.Target).(*btf.Struct)
			if !ok {
				return nil, "", nil
			}
			return target, field, nil
		default:
			return nil, "", nil
		}
	}
}

// checkBTFArg is check_func_arg's ARG_PTR_TO_BTF_ID: the object itself
// (a zero offset) of the struct the helper takes.
func (e *env) checkBTFArg(reg *regState, regno uint8, want string) error {
	st := e.btfOf(reg)
	if st == nil || st.Name != want {
		name := "?"
		if st != nil {
			name = st.Name
		}
		return e.errorf(uapi.EACCES, "R%d is of type %s but %s is expected", regno, name, want)
	}
	if reg.off != 0 || !reg.varOff.isConst() || reg.varOff.value != 0 {
		return e.errorf(uapi.EACCES, "R%d must have zero offset when passed to release func or trusted arg to kfunc", regno)
	}
	return nil
}
