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
// What is not simulated: PTR_TO_BTF_ID (pointers to kernel objects the
// program may only pass on), and with it KF_ACQUIRE and KF_RELEASE, which
// need reference tracking of kernel objects; module BTF (a call's off
// naming an fd_array slot); constant arguments (__k), callbacks, and
// iterators passed to kfuncs other than their own _new, _next and
// _destroy (the "__iter" suffix). A prototype that needs them is refused
// when the kfunc is registered, naming what is missing.

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
	KfIterNew     = 1 << 8
	KfIterNext    = 1 << 9
	KfIterDestroy = 1 << 10
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
	if flags&(KfAcquire|KfRelease) != 0 {
		return nil, errors.Wrapf(uapi.EOPNOTSUPP, "kfunc %s: KF_ACQUIRE and KF_RELEASE need reference tracking of kernel objects, which bpfsim's verifier does not simulate", name)
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
				return nil, errors.Wrapf(uapi.EOPNOTSUPP, "kfunc %s: parameter %s points to %s, a kernel object (PTR_TO_BTF_ID), which bpfsim's verifier does not simulate", name, p.Name, target)
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
		if isNull && a.Kind == KfArgMem {
			continue // KF_ARG_PTR_TO_NULL
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
	}
	if kf.Ret != KfRetScalar && kf.Ret != KfRetVoid && kf.Flags&KfRetNull != 0 {
		r0.maybeNull = true
		e.idGen++
		r0.id = e.idGen
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
// bpf_kfunc_call_arg_meta's arg_constant and initialized_dynptr).
type kfuncMeta struct {
	constSize  uint64
	constFound bool
	// The initialised dynptr argument: its id, type and reference.
	dynptrID, dynptrRef uint32
	dynptrType          uint8
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
