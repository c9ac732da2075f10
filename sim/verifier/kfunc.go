package verifier

import (
	"fmt"
	"strings"

	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Calls of kernel functions (kfuncs): check_kfunc_call and
// check_kfunc_args, for the argument and return kinds bpfsim simulates.
// A kfunc's prototype is BTF; NewKfuncProto turns it into the kinds the
// checks use, as the kernel's verifier reads the BTF of each parameter.
//
// Kernel objects (PTR_TO_BTF_ID) go in and out of kfuncs: a parameter
// pointing to a struct that is not plain memory takes one, and a kfunc
// returning a pointer to such a struct gives one. KF_ACQUIRE makes the
// object returned a reference the program must give back, through a
// KF_RELEASE kfunc, on every path; KF_TRUSTED_ARGS (implied by
// KF_RELEASE) and KF_RCU restrict which objects a kfunc takes.
//
// What is not simulated: constant arguments (__k), callbacks, iterators
// passed to kfuncs other than their own _new, _next and _destroy (the
// "__iter" suffix), kptrs and allocated objects (bpf_obj_new), and the
// __rcu type tags of struct fields (GCC-built kernels have none; the
// fields the kernel lists as RCU-protected are, see btfptr.go). A prototype
// that needs what is missing is refused when the kfunc is registered,
// naming it.

// KfuncArgKind is what a kfunc parameter takes (enum kfunc_ptr_arg_type,
// reduced).
type KfuncArgKind uint8

const (
	// KfArgScalar is an integer or enum.
	KfArgScalar KfuncArgKind = iota
	// KfArgMem points to a struct of scalars: Size bytes the kfunc may
	// read and write (KF_ARG_PTR_TO_MEM).
	KfArgMem
	// KfArgMemSized points to memory whose size is the next parameter
	// (KF_ARG_PTR_TO_MEM_SIZE).
	KfArgMemSized
	// KfArgMemSize is that size (the "__sz" parameter).
	KfArgMemSize
	// KfArgProg is the "__prog" parameter: whatever the program passes,
	// the fix-ups load the calling program's struct bpf_prog_aux pointer
	// into it.
	KfArgProg
	// KfArgCtx is the program's context, a struct __sk_buff or xdp_md
	// (KF_ARG_PTR_TO_CTX).
	KfArgCtx
	// KfArgDynptr is a struct bpf_dynptr on the stack
	// (KF_ARG_PTR_TO_DYNPTR): a new one with Uninit ("__uninit"), else
	// an initialised one.
	KfArgDynptr
	// KfArgIter is the struct bpf_iter_<type> on the stack of an
	// iterator's _new, _next or _destroy (KF_ARG_PTR_TO_ITER).
	KfArgIter
	// KfArgIgnore is a parameter named "x__ign": anything goes, unchecked
	// (is_kfunc_arg_ignore); the kfunc must cope with what it gets.
	KfArgIgnore
	// KfArgBTFID is a kernel object: a pointer to Struct
	// (KF_ARG_PTR_TO_BTF_ID).
	KfArgBTFID
)

// KfuncArg is one parameter.
type KfuncArg struct {
	Name string
	Kind KfuncArgKind
	// Size is the size of a KfArgMem's memory.
	Size uint32
	// Nullable ("__nullable", "__opt") lets a KfArgMem or KfArgMemSized
	// be NULL.
	Nullable bool
	// Uninit ("__uninit") makes a KfArgDynptr a new dynptr.
	Uninit bool
	// Const ("__szk") makes a KfArgMemSize a known constant, the size of
	// what the kfunc returns.
	Const bool
	// Struct is the struct a KfArgBTFID points to.
	Struct *btf.Struct
}

// KfuncRet is what a kfunc returns.
type KfuncRet uint8

const (
	KfRetVoid   KfuncRet = iota // nothing: R0 is not readable after the call
	KfRetScalar                 // a number
	KfRetMem                    // a pointer to RetSize bytes (PTR_TO_MEM)
	// KfRetDynptrSlice is bpf_dynptr_slice's: the constant size
	// argument's bytes of the dynptr argument's data.
	KfRetDynptrSlice
	// KfRetBTFID is a kernel object, a pointer to RetStruct
	// (PTR_TO_BTF_ID); with KF_ACQUIRE, a reference.
	KfRetBTFID
)

// KfuncSpecial names the kfuncs the verifier treats apart
// (special_kfunc_list), by their kernel names.
type KfuncSpecial uint8

const (
	KfNotSpecial KfuncSpecial = iota
	KfDynptrFromSKB
	KfDynptrFromXDP
	KfDynptrClone
	KfDynptrSlice
	KfDynptrSliceRdwr
)

var specialKfuncs = map[string]KfuncSpecial{
	"bpf_dynptr_from_skb":   KfDynptrFromSKB,
	"bpf_dynptr_from_xdp":   KfDynptrFromXDP,
	"bpf_dynptr_clone":      KfDynptrClone,
	"bpf_dynptr_slice":      KfDynptrSlice,
	"bpf_dynptr_slice_rdwr": KfDynptrSliceRdwr,
}

// The kfunc flags of include/linux/btf.h.
const (
	KfAcquire     = 1 << 0
	KfRelease     = 1 << 1
	KfRetNull     = 1 << 2
	KfTrustedArgs = 1 << 4
	KfSleepable   = 1 << 5
	KfRCU         = 1 << 7
	KfIterNew     = 1 << 8
	KfIterNext    = 1 << 9
	KfIterDestroy = 1 << 10
	// KfRCUProtected (KF_RCU_PROTECTED): an iterator made only in an RCU
	// read section, whose next gives RCU-protected objects.
	KfRCUProtected = 1 << 11
)

// kfIter is the three iterator flags, of which an iterator kfunc has one.
const kfIter = KfIterNew | KfIterNext | KfIterDestroy

// KfuncProto is the verifier's view of one kfunc (struct
// bpf_kfunc_call_arg_meta's static part).
type KfuncProto struct {
	Name  string
	BTFID int32
	// Module is the module whose BTF BTFID is of, "" for vmlinux's.
	Module string
	Args   []KfuncArg
	Ret    KfuncRet
	// RetSize is the size of the memory a KfRetMem return points to;
	// RetRdonly makes it read-only (a pointer to a scalar, such as an
	// iterator's _next returns).
	RetSize   uint32
	RetRdonly bool
	// RetStruct is the struct a KfRetBTFID points to.
	RetStruct *btf.Struct
	Flags     uint32
	// ProgArg is the index of the "__prog" parameter, -1 if none.
	ProgArg int
	// Special is, for a kfunc of the kernel's special list, which.
	Special KfuncSpecial
	// IterType and IterSlots are, for an iterator's kfunc, the iterator
	// type (an interned <type> of struct bpf_iter_<type>) and the stack
	// slots it takes.
	IterType  uint8
	IterSlots int
	// Body is an inlinable kfunc's BPF body (inlinekfunc.go), nil for
	// one that is only called.
	Body []insn.Insn
}

// NewKfuncProto reads a kfunc's BTF prototype.
func NewKfuncProto(name string, id int32, fp *btf.FuncProto, flags uint32) (*KfuncProto, error) {
	if fp == nil {
		return nil, errors.Wrapf(uapi.EINVAL, "kfunc %s has no prototype", name)
	}
	if len(fp.Params) > 5 {
		return nil, errors.Wrapf(uapi.EINVAL, "kfunc %s has %d parameters: at most 5", name, len(fp.Params))
	}
	kp := &KfuncProto{Name: name, BTFID: id, Flags: flags, ProgArg: -1, Special: specialKfuncs[name]}
	for i := 0; i < len(fp.Params); i++ {
		p := fp.Params[i]
		a := KfuncArg{Name: p.Name}
		t := btf.UnderlyingType(p.Type)
		switch {
		case strings.HasSuffix(p.Name, "__ign"):
			a.Kind = KfArgIgnore
		case strings.HasSuffix(p.Name, "__prog"):
			if _, ok := t.(*btf.Pointer); !ok {
				return nil, errors.Wrapf(uapi.EINVAL, "kfunc %s: %s must be a pointer", name, p.Name)
			}
			if kp.ProgArg >= 0 {
				return nil, errors.Wrapf(uapi.EINVAL, "kfunc %s: only one __prog argument is supported", name)
			}
			a.Kind, kp.ProgArg = KfArgProg, i
		case isScalarType(t):
			a.Kind = KfArgScalar
			if strings.HasSuffix(p.Name, "__sz") || strings.HasSuffix(p.Name, "__szk") {
				a.Kind = KfArgMemSize
				a.Const = strings.HasSuffix(p.Name, "__szk")
			}
		default:
			ptr, ok := t.(*btf.Pointer)
			if !ok {
				return nil, errors.Wrapf(uapi.EINVAL, "kfunc %s: parameter %s of type %s is not simulated", name, p.Name, t)
			}
			a.Nullable = strings.HasSuffix(p.Name, "__nullable") || strings.HasSuffix(p.Name, "__opt")
			target := btf.UnderlyingType(ptr.Target)
			if flags&kfIter != 0 && i == 0 {
				if err := kp.checkIterKfunc(fp, target); err != nil {
					return nil, err
				}
				a.Kind = KfArgIter
				break
			}
			if st, ok := target.(*btf.Struct); ok {
				switch st.Name {
				case "bpf_dynptr":
					a.Kind, a.Uninit = KfArgDynptr, strings.HasSuffix(p.Name, "__uninit")
				case "__sk_buff", "xdp_md":
					a.Kind = KfArgCtx
				}
				if a.Kind != KfArgScalar {
					break
				}
			}
			if next := i + 1; next < len(fp.Params) && (strings.HasSuffix(fp.Params[next].Name, "__sz") || strings.HasSuffix(fp.Params[next].Name, "__szk")) {
				a.Kind = KfArgMemSized
				break
			}
			size, ok := scalarStructSize(target)
			if !ok {
				st, isStruct := target.(*btf.Struct)
				if !isStruct {
					return nil, errors.Wrapf(uapi.EOPNOTSUPP, "kfunc %s: parameter %s points to %s, which bpfsim's verifier does not simulate", name, p.Name, target)
				}
				a.Kind, a.Struct = KfArgBTFID, st
				break
			}
			a.Kind, a.Size = KfArgMem, size
		}
		if a.Kind == KfArgMemSize && (i == 0 || kp.Args[i-1].Kind != KfArgMemSized) {
			return nil, errors.Wrapf(uapi.EINVAL, "kfunc %s: %s follows no memory argument", name, p.Name)
		}
		kp.Args = append(kp.Args, a)
	}
	if flags&kfIter != 0 && (len(kp.Args) == 0 || kp.Args[0].Kind != KfArgIter) {
		return nil, errors.Wrapf(uapi.EINVAL, "kfunc %s: an iterator kfunc takes a struct bpf_iter_<type> pointer first", name)
	}
	switch t := btf.UnderlyingType(fp.Return); {
	case fp.Return == nil || isVoid(t):
		kp.Ret = KfRetVoid
	case isScalarType(t):
		kp.Ret = KfRetScalar
	case kp.Special == KfDynptrSlice || kp.Special == KfDynptrSliceRdwr:
		kp.Ret = KfRetDynptrSlice
	case flags&KfAcquire != 0 || isObjectPtr(t):
		// A struct that is not plain memory is a kernel object; what
		// a kfunc acquires always is.
		st, ok := structPtr(t)
		if !ok {
			return nil, errors.Wrapf(uapi.EINVAL, "kfunc %s: acquire kernel function does not return PTR_TO_BTF_ID", name)
		}
		kp.Ret, kp.RetStruct = KfRetBTFID, st
	default:
		ptr, ok := t.(*btf.Pointer)
		size, scalar := uint32(0), false
		if ok {
			target := btf.UnderlyingType(ptr.Target)
			size, scalar = scalarStructSize(target)
			if !scalar && isScalarType(target) {
				// Not a struct: memory of the scalar's size, read-only
				// (btf_resolve_size and r0_rdonly).
				sz, err := btf.Sizeof(target)
				if err != nil {
					return nil, errors.Wrapf(uapi.EINVAL, "kfunc %s: %v", name, err)
				}
				size, scalar, kp.RetRdonly = uint32(sz), true, true
			}
		}
		if !scalar {
			return nil, errors.Wrapf(uapi.EOPNOTSUPP, "kfunc %s returns %s: only scalars and pointers to structs of scalars are simulated", name, t)
		}
		kp.Ret, kp.RetSize = KfRetMem, size
	}
	return kp, nil
}

// checkIterKfunc is btf_check_iter_kfuncs: an iterator kfunc is named
// bpf_iter_<type>_{new,next,destroy} after its first parameter, a
// pointer to struct bpf_iter_<type>, whose size is a whole number of
// stack slots; only _new takes more arguments, _next returns a pointer
// and _destroy nothing.
func (kp *KfuncProto) checkIterKfunc(fp *btf.FuncProto, target btf.Type) error {
	bad := func(why string) error {
		return errors.Wrapf(uapi.EINVAL, "iterator kfunc %s: %s", kp.Name, why)
	}
	f := kp.Flags & kfIter
	if f&(f-1) != 0 {
		return bad("more than one of KF_ITER_NEW, KF_ITER_NEXT and KF_ITER_DESTROY")
	}
	st, ok := target.(*btf.Struct)
	if !ok || !strings.HasPrefix(st.Name, "bpf_iter_") {
		return bad("the first parameter must point to a struct bpf_iter_<type>")
	}
	if st.Size == 0 || st.Size%regSize != 0 || st.Size > maxStack {
		return bad(fmt.Sprintf("struct %s has size %d, not a whole number of 8-byte stack slots", st.Name, st.Size))
	}
	typ := strings.TrimPrefix(st.Name, "bpf_iter_")
	sfx := map[uint32]string{KfIterNew: "new", KfIterNext: "next", KfIterDestroy: "destroy"}[f]
	if want := "bpf_iter_" + typ + "_" + sfx; kp.Name != want {
		return bad("must be named " + want)
	}
	if f != KfIterNew && len(fp.Params) != 1 {
		return bad("only _new takes more than the iterator")
	}
	ret := btf.UnderlyingType(fp.Return)
	if _, ptr := ret.(*btf.Pointer); f == KfIterNext && !ptr {
		return bad("_next must return a pointer")
	}
	if f == KfIterDestroy && fp.Return != nil && !isVoid(ret) {
		return bad("_destroy must return void")
	}
	t, ok := internIterType(typ)
	if !ok {
		return bad("too many iterator types")
	}
	kp.IterType, kp.IterSlots = t, int(st.Size/regSize)
	return nil
}

// structPtr returns the struct t points to.
func structPtr(t btf.Type) (*btf.Struct, bool) {
	ptr, ok := t.(*btf.Pointer)
	if !ok {
		return nil, false
	}
	st, ok := btf.UnderlyingType(ptr.Target).(*btf.Struct)
	return st, ok
}

// isObjectPtr tells a pointer to a kernel object: a struct that is not
// made of scalars only.
func isObjectPtr(t btf.Type) bool {
	st, ok := structPtr(t)
	if !ok {
		return false
	}
	_, scalar := scalarStructSize(st)
	return !scalar
}

func isVoid(t btf.Type) bool {
	_, ok := t.(*btf.Void)
	return ok
}

func isScalarType(t btf.Type) bool {
	switch t.(type) {
	case *btf.Int, *btf.Enum:
		return true
	}
	return false
}

// scalarStructSize is the size of a struct made only of scalars (and
// arrays and structs of them), which a kfunc takes as plain memory
// (__btf_type_is_scalar_struct).
func scalarStructSize(t btf.Type) (uint32, bool) {
	s, ok := t.(*btf.Struct)
	if !ok || s.Size == 0 {
		return 0, false
	}
	var scalar func(t btf.Type, depth int) bool
	scalar = func(t btf.Type, depth int) bool {
		switch v := btf.UnderlyingType(t).(type) {
		case *btf.Int, *btf.Enum:
			return true
		case *btf.Array:
			return scalar(v.Type, depth)
		case *btf.Struct:
			if depth > 4 {
				return false
			}
			for _, m := range v.Members {
				if !scalar(m.Type, depth+1) {
					return false
				}
			}
			return true
		}
		return false
	}
	return s.Size, scalar(s, 0)
}

// addKfuncCalls is add_kfunc_call, for each kfunc call before the
// program is checked (add_subprog_and_kfunc): the BTF a call's offset
// names must exist, and its id must be a function there. Other refusals
// (a kfunc the program's type may not call...) come when the call is
// checked, as in the kernel.
func (e *env) addKfuncCalls() error {
	if e.cfg.Kfunc == nil {
		return nil
	}
	for _, in := range e.insns {
		if in.Code != insn.JMP|insn.CALL || in.Src != insn.PseudoKfuncCall || (in.Imm == 0 && in.Off == 0) {
			continue
		}
		_, err := e.cfg.Kfunc(in.Imm, in.Off)
		var v *Error
		if err == nil || !errors.As(err, &v) {
			continue
		}
		switch {
		case in.Off != 0 && !strings.HasPrefix(v.Msg, "kernel btf_id "):
			// find_kfunc_desc_btf's refusals.
			return e.fail(v.Errno, v.Msg, "failed to find BTF for kernel function")
		case strings.HasPrefix(v.Msg, "kernel btf_id "):
			return e.fail(v.Errno, v.Msg)
		}
	}
	return nil
}

// checkKfuncCall is check_kfunc_call.
func (e *env) checkKfuncCall(in insn.Insn, idx int) error {
	if e.cfg.Kfunc == nil {
		return e.errorf(uapi.EINVAL, "calling kernel function is not supported without CONFIG_DEBUG_INFO_BTF")
	}
	kf, err := e.cfg.Kfunc(in.Imm, in.Off)
	if err != nil {
		var v *Error
		if errors.As(err, &v) {
			return e.errorf(v.Errno, "%s", v.Msg)
		}
		return e.errorf(uapi.EINVAL, "%v", err)
	}
	if !e.cfg.GPLCompatible {
		return e.errorf(uapi.EINVAL, "cannot call kernel function from non-GPL compatible program")
	}
	switch {
	case kf.Name == "bpf_rcu_read_lock":
		// 6.18 has one section at a time (later kernels nest them).
		if e.cur.activeRCULocks > 0 {
			return e.errorf(uapi.EINVAL, "nested rcu read lock (kernel function %s)", kf.Name)
		}
		e.cur.activeRCULocks++
	case kf.Name == "bpf_rcu_read_unlock":
		if e.cur.activeRCULocks == 0 {
			return e.errorf(uapi.EINVAL, "unmatched rcu read unlock (kernel function %s)", kf.Name)
		}
		e.cur.activeRCULocks--
		if e.cur.activeRCULocks == 0 {
			// Out of the section, RCU-protected objects are
			// untrusted.
			e.cur.forEachReg(func(r *regState) {
				if r.typ == ptrToBTFID && r.rcu {
					r.rcu, r.maybeNull, r.untrusted = false, false, true
				}
			})
		}
	case kf.Flags&KfSleepable != 0 && e.cur.activeRCULocks > 0:
		return e.errorf(uapi.EACCES, "kernel func %s is sleepable within rcu_read_lock region", kf.Name)
	}
	if kf.Flags&KfRCUProtected != 0 && !e.inRCU() {
		return e.errorf(uapi.EACCES, "kernel func %s requires RCU critical section protection", kf.Name)
	}
	var km kfuncMeta
	var im iterMeta
	for i := 0; i < len(kf.Args); i++ {
		a := kf.Args[i]
		regno := uint8(insn.R1 + i)
		if a.Kind == KfArgProg || a.Kind == KfArgIgnore {
			// Any value: the fix-ups overwrite a __prog, and an __ign
			// is not checked at all.
			continue
		}
		if err := e.checkRegRead(regno); err != nil {
			return err
		}
		reg := &e.regs()[regno]
		if a.Kind == KfArgScalar || a.Kind == KfArgMemSize {
			if reg.typ != scalarValue {
				return e.errorf(uapi.EINVAL, "R%d is not a scalar", regno)
			}
			continue
		}
		isNull := reg.typ == scalarValue && reg.isConst() && reg.constant() == 0
		// (A dynptr's or an iterator's checks name what it must be
		// instead.)
		if (isNull || reg.isPointer() && reg.maybeNull) && !a.Nullable && a.Kind != KfArgDynptr && a.Kind != KfArgIter {
			return e.errorf(uapi.EACCES, "Possibly NULL pointer passed to trusted arg%d", i)
		}
		if isNull && (a.Kind == KfArgMem || a.Nullable && a.Kind == KfArgBTFID) {
			continue // KF_ARG_PTR_TO_NULL, or a __nullable object's NULL
		}
		if a.Kind == KfArgBTFID {
			if err := e.checkKfuncBTFArg(kf, a, i, regno, &km); err != nil {
				return err
			}
			continue
		}
		// check_func_arg_reg_off: the context is passed unmoved.
		if reg.typ == ptrToCtx {
			if err := e.checkPtrOffReg(reg, regno, false); err != nil {
				return err
			}
		}
		switch a.Kind {
		case KfArgIter:
			if err := e.processIterArg(kf, regno, idx, &im); err != nil {
				return err
			}
		case KfArgCtx:
			if reg.typ != ptrToCtx {
				return e.errorf(uapi.EINVAL, "arg#%d expected pointer to ctx, but got %s", i, reg.typeName())
			}
		case KfArgDynptr:
			if err := e.checkKfuncDynptr(kf, a, regno, &km); err != nil {
				return err
			}
		case KfArgMemSized:
			size := &e.regs()[regno+1]
			if !isNull {
				if err := e.checkKfuncMemSize(size, regno+1); err != nil {
					var errno uapi.Errno
					errors.As(err, &errno)
					return e.errorf(errno, "arg#%d arg#%d memory, len pair leads to invalid memory access", i, i+1)
				}
			}
			if kf.Args[i+1].Const {
				if !size.isConst() {
					return e.errorf(uapi.EINVAL, "R%d must be a known constant", regno+1)
				}
				km.constSize, km.constFound = size.constant(), true
			}
			i++ // the size is checked
		case KfArgMem:
			if err := e.checkHelperMem(regno, int(a.Size), accessRead, false, nil); err != nil {
				return err
			}
			if err := e.checkHelperMem(regno, int(a.Size), accessWrite, false, nil); err != nil {
				return err
			}
		}
	}
	if kf.Flags&KfRelease != 0 && km.releaseRegno == 0 {
		return e.errorf(uapi.EINVAL, "release kernel function %s expects refcounted PTR_TO_BTF_ID", kf.Name)
	}
	if km.releaseRegno != 0 && !e.releaseReference(e.regs()[km.releaseRegno].refObjID) {
		return e.errorf(uapi.EINVAL, "kfunc %s#%d reference has not been acquired before", kf.Name, kf.BTFID)
	}
	if kf.Body != nil {
		e.recordKfuncFacts(kf, idx)
	}
	regs := e.regs()
	for r := insn.R0; r <= insn.R5; r++ {
		regs[r].markNotInit()
	}
	e.scratchReg(insn.R0)
	r0 := &regs[insn.R0]
	switch kf.Ret {
	case KfRetScalar:
		r0.markUnknown()
	case KfRetMem:
		r0.markPtr(ptrToMem)
		r0.memSize = kf.RetSize
		r0.rdonly = kf.RetRdonly
		// Memory of an iterator ends with it (release_reference).
		r0.refObjID = im.ref
	case KfRetDynptrSlice:
		if err := e.markDynptrSlice(kf, r0, &km); err != nil {
			return err
		}
	case KfRetBTFID:
		r0.markPtr(ptrToBTFID)
		r0.btfIdx = e.btfIndex(kf.RetStruct)
		// An iterator's next gives objects as trusted as the iterator
		// has them: RCU-protected for one made by a KF_RCU_PROTECTED
		// new.
		if kf.Flags&KfIterNext != 0 {
			if e.cur.frames[im.frameno].stack[im.spi].spilled.rcu {
				r0.rcu = true
			} else {
				r0.trusted = true
			}
		}
	}
	if kf.Ret != KfRetScalar && kf.Ret != KfRetVoid && kf.Flags&KfRetNull != 0 {
		r0.maybeNull = true
		e.idGen++
		r0.id = e.idGen
	}
	if kf.Ret == KfRetBTFID && kf.Flags&KfAcquire != 0 {
		id := e.acquireReference(idx)
		if r0.maybeNull {
			r0.id = id
		}
		r0.refObjID = id
	}
	e.aux[idx].Kfunc = kf
	if kf.Special == KfDynptrFromSKB && !e.cfg.Type.DirectPacketAccess(true) {
		e.aux[idx].KfuncVariant = "bpf_dynptr_from_skb_rdonly"
	}
	if kf.Flags&KfIterNext != 0 {
		return e.processIterNextCall(idx, &im)
	}
	return nil
}

// kfuncMeta is what check_kfunc_args learns for the return value (struct
// bpf_kfunc_call_arg_meta's arg_constant and initialized_dynptr, and its
// ref_obj_id and release_regno).
type kfuncMeta struct {
	refObjID     uint32
	releaseRegno uint8
	constSize    uint64
	constFound   bool
	// The initialised dynptr argument: its id, type and reference.
	dynptrID, dynptrRef uint32
	dynptrType          uint8
}

// checkKfuncBTFArg is check_kfunc_args for a kernel object
// (KF_ARG_PTR_TO_BTF_ID): a PTR_TO_BTF_ID of the struct the kfunc takes,
// trusted or referenced for KF_TRUSTED_ARGS and KF_RELEASE kfuncs (or
// RCU-protected for KF_RCU ones), whole for a release; the one a release kfunc is given
// references what it releases.
func (e *env) checkKfuncBTFArg(kf *KfuncProto, a KfuncArg, i int, regno uint8, km *kfuncMeta) error {
	reg := &e.regs()[regno]
	release := kf.Flags&KfRelease != 0
	if reg.refObjID != 0 {
		if release && km.refObjID != 0 {
			return e.errorf(uapi.EFAULT, "verifier internal error: more than one arg with ref_obj_id R%d %d %d", regno, reg.refObjID, km.refObjID)
		}
		km.refObjID = reg.refObjID
		if release {
			km.releaseRegno = regno
		}
	}
	if reg.typ != ptrToBTFID {
		return e.errorf(uapi.EINVAL, "arg#%d pointer type STRUCT %s must point to scalar, or struct with scalar", i, a.Struct.Name)
	}
	trustedArgs := kf.Flags&KfTrustedArgs != 0 || release
	if (trustedArgs || kf.Flags&KfRCU != 0) && !reg.isTrustedReg() {
		if kf.Flags&KfRCU == 0 {
			return e.errorf(uapi.EINVAL, "R%d must be referenced or trusted", regno)
		}
		if !reg.rcu {
			return e.errorf(uapi.EINVAL, "R%d must be a rcu pointer", regno)
		}
	}
	if release && reg.refObjID != 0 {
		if reg.off != 0 {
			return e.errorf(uapi.EINVAL, "R%d must have zero offset when passed to release func or trusted arg to kfunc", regno)
		}
		if err := e.checkPtrOffReg(reg, regno, false); err != nil {
			return err
		}
	} else if err := e.checkPtrOffReg(reg, regno, true); err != nil {
		return err
	}
	// The struct itself, or for kfuncs that neither take nor give
	// references, one that begins with it.
	strict := release || kf.Flags&(KfAcquire|KfTrustedArgs) != 0
	have := e.btfOf(reg)
	if have == nil || !structAt(have, int(reg.off), a.Struct.Name, strict) {
		name := "?"
		if have != nil {
			name = have.Name
		}
		return e.errorf(uapi.EINVAL, "kernel function %s args#%d expected pointer to STRUCT %s but R%d has a pointer to STRUCT %s", kf.Name, i, a.Struct.Name, regno, name)
	}
	return nil
}

// structAt is btf_struct_ids_match: whether off into st is a struct
// named want, st itself at 0 or, unless strict, a struct nested there.
func structAt(st *btf.Struct, off int, want string, strict bool) bool {
	for {
		if off == 0 && st.Name == want {
			return true
		}
		if strict {
			return false
		}
		var next *btf.Struct
		for _, m := range st.Members {
			moff := int(m.Offset.Bytes())
			inner, ok := btf.UnderlyingType(m.Type).(*btf.Struct)
			if ok && m.BitfieldSize == 0 && off >= moff && off < moff+int(inner.Size) {
				next, off = inner, off-moff
				break
			}
		}
		if next == nil {
			return false
		}
		st = next
	}
}

// checkKfuncMemSize is check_kfunc_mem_size_reg: the size bounds the
// memory before it, which may be NULL, for reading and writing.
func (e *env) checkKfuncMemSize(size *regState, regno uint8) error {
	mem := &e.regs()[regno-1]
	saved := *mem
	if mem.maybeNull {
		e.markPtrNotNull(mem)
	}
	err := e.checkMemSizeReg(size, regno, accessRead, true, &callMeta{})
	if err == nil {
		err = e.checkMemSizeReg(size, regno, accessWrite, true, &callMeta{})
	}
	if saved.maybeNull {
		*mem = saved
	}
	return err
}

// checkKfuncDynptr is check_kfunc_args for KF_ARG_PTR_TO_DYNPTR.
func (e *env) checkKfuncDynptr(kf *KfuncProto, a KfuncArg, regno uint8, km *kfuncMeta) error {
	// A CONST_PTR_TO_DYNPTR is taken as read-only whatever the kfunc.
	arg := DynptrArg{Uninit: a.Uninit, Rdonly: e.regs()[regno].typ == constPtrToDynptr}
	var cloneRef uint32
	switch {
	case kf.Special == KfDynptrFromSKB:
		arg.Type = uapi.DynptrTypeSKB
	case kf.Special == KfDynptrFromXDP:
		arg.Type = uapi.DynptrTypeXDP
	case kf.Special == KfDynptrClone && a.Uninit:
		if km.dynptrType == uapi.DynptrTypeInvalid {
			return e.errorf(uapi.EFAULT, "verifier internal error: no dynptr type for parent of clone")
		}
		arg.Type, cloneRef = km.dynptrType, km.dynptrRef
	}
	if err := e.processDynptrFunc(regno, e.insnIdx, arg, cloneRef); err != nil {
		return err
	}
	if !a.Uninit {
		s := e.dynptrReg(&e.regs()[regno])
		km.dynptrID, km.dynptrType, km.dynptrRef = s.id, s.dynptrType, s.refObjID
	}
	return nil
}

// markDynptrSlice makes R0 what bpf_dynptr_slice returns: the constant
// size's bytes of the dynptr's data, read-only unless from
// bpf_dynptr_slice_rdwr, ending with the dynptr, or with the packet for
// an skb or xdp dynptr.
func (e *env) markDynptrSlice(kf *KfuncProto, r0 *regState, km *kfuncMeta) error {
	r0.markPtr(ptrToMem)
	if !km.constFound {
		return e.errorf(uapi.EFAULT, "verifier internal error: bpf_dynptr_slice(_rdwr) no constant size")
	}
	r0.memSize = uint32(km.constSize)
	// The slice carries its dynptr's type (DYNPTR_TYPE_*): a packet's
	// ends with the packet; and unlike bpf_dynptr_data's, the kernel
	// does not end it with a local dynptr that is overwritten.
	r0.dynptrType = km.dynptrType
	if kf.Special == KfDynptrSlice {
		r0.rdonly = true
	} else if !e.cfg.Type.DirectPacketAccess(true) {
		return e.errorf(uapi.EINVAL, "the prog does not allow writes to packet data")
	} else {
		e.seenDirectWrite = true
	}
	if km.dynptrID == 0 {
		return e.errorf(uapi.EFAULT, "verifier internal error: no dynptr id")
	}
	r0.dynptrID = km.dynptrID
	return nil
}
