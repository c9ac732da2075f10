package verifier

import (
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
// need reference tracking; module BTF (a call's off naming an fd_array
// slot); constant arguments (__k) and the iterator, dynptr and callback
// kinds. A prototype that needs them is refused when the kfunc is
// registered, naming what is missing.

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
)

// KfuncArg is one parameter.
type KfuncArg struct {
	Name string
	Kind KfuncArgKind
	// Size is the size of a KfArgMem's memory.
	Size uint32
	// Nullable ("__nullable") lets a KfArgMem be NULL.
	Nullable bool
}

// KfuncRet is what a kfunc returns.
type KfuncRet uint8

const (
	KfRetVoid   KfuncRet = iota // nothing: R0 is not readable after the call
	KfRetScalar                 // a number
	KfRetMem                    // a pointer to RetSize bytes (PTR_TO_MEM)
)

// The kfunc flags of include/linux/btf.h.
const (
	KfAcquire     = 1 << 0
	KfRelease     = 1 << 1
	KfRetNull     = 1 << 2
	KfTrustedArgs = 1 << 4
	KfSleepable   = 1 << 5
)

// KfuncProto is the verifier's view of one kfunc (struct
// bpf_kfunc_call_arg_meta's static part).
type KfuncProto struct {
	Name  string
	BTFID int32
	Args  []KfuncArg
	Ret   KfuncRet
	// RetSize is the size of the memory a KfRetMem return points to.
	RetSize uint32
	Flags   uint32
	// ProgArg is the index of the "__prog" parameter, -1 if none.
	ProgArg int
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
	kp := &KfuncProto{Name: name, BTFID: id, Flags: flags, ProgArg: -1}
	for i := 0; i < len(fp.Params); i++ {
		p := fp.Params[i]
		a := KfuncArg{Name: p.Name}
		t := btf.UnderlyingType(p.Type)
		switch {
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
			}
		default:
			ptr, ok := t.(*btf.Pointer)
			if !ok {
				return nil, errors.Wrapf(uapi.EINVAL, "kfunc %s: parameter %s of type %s is not simulated", name, p.Name, t)
			}
			a.Nullable = strings.HasSuffix(p.Name, "__nullable")
			target := btf.UnderlyingType(ptr.Target)
			if i+1 < len(fp.Params) && strings.HasSuffix(fp.Params[i+1].Name, "__sz") {
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
	switch t := btf.UnderlyingType(fp.Return); {
	case fp.Return == nil || isVoid(t):
		kp.Ret = KfRetVoid
	case isScalarType(t):
		kp.Ret = KfRetScalar
	default:
		ptr, ok := t.(*btf.Pointer)
		size, scalar := uint32(0), false
		if ok {
			size, scalar = scalarStructSize(btf.UnderlyingType(ptr.Target))
		}
		if !scalar {
			return nil, errors.Wrapf(uapi.EOPNOTSUPP, "kfunc %s returns %s: only scalars and pointers to structs of scalars are simulated", name, t)
		}
		kp.Ret, kp.RetSize = KfRetMem, size
	}
	return kp, nil
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

// checkKfuncCall is check_kfunc_call.
func (e *env) checkKfuncCall(in insn.Insn, idx int) error {
	if e.cfg.Kfunc == nil {
		return e.errorf(uapi.EINVAL, "calling kernel function is not supported without CONFIG_DEBUG_INFO_BTF")
	}
	if in.Off != 0 {
		return e.errorf(uapi.EINVAL, "kfunc offset > 0 without fd_array is invalid")
	}
	kf, err := e.cfg.Kfunc(in.Imm)
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
	var meta callMeta
	for i, a := range kf.Args {
		regno := uint8(insn.R1 + i)
		if a.Kind == KfArgProg {
			// Any value: the fix-ups overwrite it.
			continue
		}
		if err := e.checkRegRead(regno); err != nil {
			return err
		}
		reg := &e.regs()[regno]
		switch a.Kind {
		case KfArgScalar:
			if reg.typ != scalarValue {
				return e.errorf(uapi.EINVAL, "R%d is not a scalar", regno)
			}
		case KfArgMemSize:
			if reg.typ != scalarValue {
				return e.errorf(uapi.EINVAL, "R%d is not a scalar", regno)
			}
			if err := e.checkMemSizeReg(reg, regno, accessRead, false, &meta); err != nil {
				return err
			}
			if err := e.checkMemSizeReg(reg, regno, accessWrite, false, &meta); err != nil {
				return err
			}
		case KfArgMemSized:
			// Checked with its size.
		case KfArgMem:
			if a.Nullable && reg.typ == scalarValue && reg.isConst() && reg.constant() == 0 {
				continue
			}
			if reg.isPointer() && reg.maybeNull {
				return e.errorf(uapi.EACCES, "Possibly NULL pointer passed to trusted arg%d", i)
			}
			if err := e.checkHelperMem(regno, int(a.Size), accessRead, false, nil); err != nil {
				return err
			}
			if err := e.checkHelperMem(regno, int(a.Size), accessWrite, false, nil); err != nil {
				return err
			}
		}
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
		if kf.Flags&KfRetNull != 0 {
			r0.maybeNull = true
			e.idGen++
			r0.id = e.idGen
		}
	}
	e.aux[idx].Kfunc = kf
	return nil
}
