package verifier

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Global functions (kernel/bpf/verifier.c: do_check_subprogs,
// btf_prepare_func_args and btf_check_func_arg_match in kernel/bpf/btf.c).
// A function the BTF func info does not mark static is verified once, on
// its own, for any arguments its prototype allows: integers are unknown
// scalars, a pointer to the program type's context is the context, any
// other pointer is memory of its pointee's size, possibly NULL. A call of
// it is checked against the prototype and then assumed valid: the caller
// goes on with R0 an unknown scalar. Only the global functions some
// verified code calls are verified, after the main program.

// argKind is the verifier's type of a function argument (struct
// bpf_subprog_arg_info's arg_type).
type argKind uint8

const (
	argAnything argKind = iota // ARG_ANYTHING: an integer
	argCtx                     // ARG_PTR_TO_CTX
	argMem                     // ARG_PTR_TO_MEM | PTR_MAYBE_NULL
	// argDynptr is a struct bpf_dynptr the caller made (ARG_PTR_TO_DYNPTR
	// | MEM_RDONLY): the function sees it as a CONST_PTR_TO_DYNPTR to a
	// local dynptr, which it may read through but not remake or release.
	argDynptr
)

type funcArg struct {
	kind    argKind
	memSize int
}

// subprogAux is what the verifier learns about one function
// (bpf_func_info_aux and bpf_subprog_info's argument cache).
type subprogAux struct {
	called, verified bool
	argsCached       bool
	// unreliable says a call's arguments once failed to match the
	// prototype (func_info_aux.unreliable): later checks fail quietly.
	unreliable bool
	// pktKnown says pktChanges (changesPktData) is computed.
	pktKnown, pktChanges bool
	args                 []funcArg
}

// funcBTF is the BTF func info of function sub, nil without.
func (e *env) funcBTF(sub int) *btf.Func {
	if e.cfg.FuncBTF == nil || sub < 0 || sub >= len(e.subprogs) {
		return nil
	}
	return e.cfg.FuncBTF(e.subprogs[sub].Start)
}

// isGlobal is subprog_is_global.
func (e *env) isGlobal(sub int) bool {
	f := e.funcBTF(sub)
	return f != nil && f.Linkage == btf.GlobalFunc
}

// subprogName is subprog_name.
func (e *env) subprogName(sub int) string {
	if f := e.funcBTF(sub); f != nil {
		return f.Name
	}
	return ""
}

// ctxTypeNames are the context structs a global function's argument may
// point to for each program type (the uapi ctx types of bpf_ctx_convert).
func ctxTypeName(pt ProgType) string {
	switch pt.(type) {
	case xdpType:
		return "xdp_md"
	case skbType:
		return "__sk_buff"
	}
	return ""
}

// prepareFuncArgs is btf_prepare_func_args: the verifier's types of sub's
// arguments, from its prototype. A global function's unsupported
// prototype is an error the log explains; a static one's only means its
// calls are not checked against it.
func (e *env) prepareFuncArgs(sub int) ([]funcArg, error) {
	a := &e.subAux[sub]
	if a.argsCached {
		return a.args, nil
	}
	f := e.funcBTF(sub)
	if f == nil {
		return nil, uapi.EINVAL
	}
	global := f.Linkage == btf.GlobalFunc
	proto, ok := f.Type.(*btf.FuncProto)
	if !ok {
		return nil, uapi.EINVAL
	}
	if len(proto.Params) > 5 {
		if global {
			e.log.always(fmt.Sprintf("Global function %s() with %d > %d args. Buggy compiler.", f.Name, len(proto.Params), 5))
		}
		return nil, uapi.EINVAL
	}
	switch btf.UnderlyingType(proto.Return).(type) {
	case *btf.Int, *btf.Enum:
	default:
		if global {
			e.log.always(fmt.Sprintf("Global function %s() doesn't return scalar. Only those are supported.", f.Name))
		}
		return nil, uapi.EINVAL
	}
	args := make([]funcArg, len(proto.Params))
	for i, p := range proto.Params {
		switch t := btf.UnderlyingType(p.Type).(type) {
		case *btf.Int, *btf.Enum:
			args[i] = funcArg{kind: argAnything}
		case *btf.Pointer:
			target := btf.UnderlyingType(t.Target)
			if s, ok := target.(*btf.Struct); ok && s.Name != "" && s.Name == ctxTypeName(e.cfg.Type) {
				args[i] = funcArg{kind: argCtx}
				continue
			}
			if s, ok := target.(*btf.Struct); ok && s.Name == "bpf_dynptr" {
				args[i] = funcArg{kind: argDynptr}
				continue
			}
			if !global {
				// Memory arguments are a global function's: a static
				// function's prototype is not used, and says nothing.
				return nil, uapi.EINVAL
			}
			size, err := btf.Sizeof(t.Target)
			if err != nil {
				if global {
					e.log.always(fmt.Sprintf("arg#%d reference type('%s') size cannot be determined: %d", i, typeKind(target), -int(uapi.EINVAL)))
				}
				return nil, uapi.EINVAL
			}
			args[i] = funcArg{kind: argMem, memSize: size}
		default:
			if global {
				e.log.always(fmt.Sprintf("Arg#%d type %s in %s() is not supported yet.", i, typeKind(t), f.Name))
			}
			return nil, uapi.EINVAL
		}
	}
	a.args, a.argsCached = args, true
	return args, nil
}

// typeKind names a BTF type's kind as btf_type_str does.
func typeKind(t btf.Type) string {
	switch t.(type) {
	case *btf.Int:
		return "INT"
	case *btf.Pointer:
		return "PTR"
	case *btf.Array:
		return "ARRAY"
	case *btf.Struct:
		return "STRUCT"
	case *btf.Union:
		return "UNION"
	case *btf.Enum:
		return "ENUM"
	case *btf.FuncProto:
		return "FUNC_PROTO"
	case *btf.Float:
		return "FLOAT"
	}
	return "UNKNOWN"
}

// checkFuncArgs is btf_check_func_arg_match: the caller's R1-R5 against
// sub's prototype. Its messages go to the log; the error says only that
// they do not match.
func (e *env) checkFuncArgs(sub int) error {
	if !e.cfg.FuncInfo {
		return uapi.EINVAL
	}
	// btf_check_subprog_call: one mismatch makes the prototype
	// unreliable, and only the first is logged.
	if e.subAux[sub].unreliable {
		return uapi.EINVAL
	}
	err := e.matchFuncArgs(sub)
	if err != nil && !errors.Is(err, uapi.EFAULT) {
		e.subAux[sub].unreliable = true
	}
	return err
}

// matchFuncArgs is btf_check_func_arg_match.
func (e *env) matchFuncArgs(sub int) error {
	args, err := e.prepareFuncArgs(sub)
	if err != nil {
		return err
	}
	regs := e.regs()
	for i, a := range args {
		regno := uint8(i + 1)
		reg := &regs[regno]
		switch a.kind {
		case argAnything:
			if reg.typ != scalarValue {
				e.log.always(fmt.Sprintf("R%d is not a scalar", regno))
				return uapi.EINVAL
			}
		case argCtx:
			if reg.typ == ptrToCtx {
				if err := e.quiet(func() error { return e.checkPtrOffReg(reg, regno, false) }); err != nil {
					return err
				}
			}
			if reg.typ != ptrToCtx {
				e.log.always(fmt.Sprintf("arg#%d expects pointer to ctx", i))
				return uapi.EINVAL
			}
		case argDynptr:
			if err := e.quiet(func() error { return e.processDynptrFunc(regno, -1, DynptrArg{Rdonly: true}, 0) }); err != nil {
				return err
			}
		case argMem:
			if reg.typ == scalarValue && reg.isConst() && reg.constant() == 0 {
				continue // NULL
			}
			// check_mem_reg: the bytes must be readable and writable,
			// the pointer taken as not NULL for the check.
			saved := *reg
			reg.maybeNull = false
			err := e.quiet(func() error { return e.checkHelperMem(regno, a.memSize, accessRead, true, nil) })
			if err == nil {
				err = e.quiet(func() error { return e.checkHelperMem(regno, a.memSize, accessWrite, true, nil) })
			}
			*reg = saved
			if err != nil {
				return uapi.EINVAL
			}
		}
	}
	return nil
}

// quiet runs a check whose failure is not the verification's end: its
// message stays in the log, but the caller decides what the error is.
func (e *env) quiet(check func() error) error {
	// Not the end: no statistics after its message.
	e.quietChecks++
	err := check()
	e.quietChecks--
	var ve *Error
	if errors.As(err, &ve) {
		return ve.Errno
	}
	return err
}

// callGlobal is check_func_call for a global function: its arguments
// must match its prototype; then it is assumed valid, to be verified on
// its own, and the caller continues after the call with R0 unknown.
func (e *env) callGlobal(sub, idx int) (int, error) {
	name := e.subprogName(sub)
	if e.cur.activeLocks > 0 {
		return 0, e.fail(uapi.EINVAL, "global function calls are not allowed while holding a lock,", "use static function instead")
	}
	if err := e.checkFuncArgs(sub); err != nil {
		if errors.Is(err, uapi.EFAULT) {
			return 0, err
		}
		return 0, e.errorf(uapi.EINVAL, "Caller passes invalid args into func#%d ('%s')", sub, name)
	}
	if e.log.level > 0 {
		e.log.printf("Func#%d ('%s') is global and assumed valid.", sub, name)
	}
	e.subAux[sub].called = true
	if e.changesPktData(sub) {
		// The callee may move the packet: the caller's pointers into
		// it are stale after the call.
		e.clearAllPktPointers()
	}
	regs := e.regs()
	for r := insn.R0; r <= insn.R5; r++ {
		regs[r].markNotInit()
		e.scratchReg(uint8(r))
	}
	regs[insn.R0].markUnknown()
	return idx + 1, nil
}

// changesPktData is subprog_info.changes_pkt_data: sub, or a function it
// calls, may change the packet (bpf_tail_call, which the kernel counts as
// one since 6.13, and the helpers whose prototype says so).
func (e *env) changesPktData(sub int) bool {
	a := &e.subAux[sub]
	if a.pktKnown {
		return a.pktChanges
	}
	a.pktKnown = true // a call cycle is refused by check_cfg; be safe anyway
	s := e.subprogs[sub]
	for i := s.Start; i < s.End && !a.pktChanges; i++ {
		in := e.insns[i]
		switch {
		case in.Code == insn.JMP|insn.CALL && in.Src == 0 && in.Imm == uapi.FuncTailCall:
			a.pktChanges = true
		case in.Code == insn.JMP|insn.CALL && in.Src == 0 && e.cfg.Helper != nil:
			if fn := e.cfg.Helper(in.Imm); fn != nil && fn.ChangesPktData {
				a.pktChanges = true
			}
		case in.Code == insn.JMP|insn.CALL && in.Src == insn.PseudoCall:
			if callee := e.findSubprog(i + int(in.Imm) + 1); callee >= 0 && callee != sub {
				a.pktChanges = e.changesPktData(callee)
			}
		}
	}
	return a.pktChanges
}

// doCheckSubprogs is do_check_subprogs: each global function verified
// code calls is verified on its own, until no new one is called.
func (e *env) doCheckSubprogs() error {
	if !e.cfg.FuncInfo {
		return nil
	}
	for {
		n := 0
		for sub := 1; sub < len(e.subprogs); sub++ {
			a := &e.subAux[sub]
			if !e.isGlobal(sub) || !a.called || a.verified {
				continue
			}
			if err := e.doCheckGlobal(sub); err != nil {
				return err
			}
			if e.log.level > 0 {
				e.log.printf("Func#%d ('%s') is safe for any args that match its prototype", sub, e.subprogName(sub))
			}
			a.verified = true
			n++
		}
		if n == 0 {
			return nil
		}
	}
}

// doCheckGlobal is do_check_common for a global function: a fresh
// exploration (no state of another function's is reused) from its first
// instruction, with the arguments its prototype allows.
func (e *env) doCheckGlobal(sub int) error {
	e.forgetStates()
	if e.log.level > 0 {
		e.log.printf("Validating %s() func#%d...", e.subprogName(sub), sub)
	}
	args, err := e.prepareFuncArgs(sub)
	if err != nil {
		return e.errorf(uapi.EFAULT, "verifier bug: func#%d's arguments", sub)
	}
	st := e.newState()
	f := &funcState{callsite: -1, subprog: sub}
	for i := range f.regs {
		f.regs[i].markNotInit()
	}
	for i, a := range args {
		r := &f.regs[insn.R1+i]
		switch a.kind {
		case argAnything:
			r.markUnknown()
		case argCtx:
			r.markPtr(ptrToCtx)
		case argMem:
			r.markPtr(ptrToMem)
			r.memSize = uint32(a.memSize)
			r.maybeNull = true
			e.idGen++
			r.id = e.idGen
		case argDynptr:
			// Assumed a local dynptr, as the kernel assumes it.
			r.markPtr(constPtrToDynptr)
			r.dynptrType, r.firstSlot = uapi.DynptrTypeLocal, true
			e.idGen++
			r.id = e.idGen
		}
	}
	f.regs[insn.R10].markPtr(ptrToStack)
	*st = vstate{frames: append(st.frames[:0], f), branches: 1, firstInsnIdx: e.subprogs[sub].Start}
	e.cur = st
	e.insnIdx = e.subprogs[sub].Start
	if err := e.doCheck(); err != nil {
		return err
	}
	if e.log.level == 1 {
		e.log.reset(0)
	}
	return nil
}

// forgetStates is free_states: the checkpoints of one function's
// exploration are not another's.
func (e *env) forgetStates() {
	clear(e.visits)
	e.numBackedges = 0 // (the kernel never resets its state counts: peak_states spans functions)
	for i, l := range e.explored {
		for _, sl := range l {
			e.free = append(e.free, sl.st)
		}
		clear(l)
		e.explored[i] = l[:0]
	}
	for _, p := range e.pending {
		e.free = append(e.free, p.st)
	}
	e.pending = e.pending[:0]
	if e.cur != nil {
		e.free = append(e.free, e.cur)
		e.cur = nil
	}
}

// checkSubprogReturn is check_return_code for a global function's exit:
// R0 must be a scalar.
func (e *env) checkSubprogReturn() error {
	if err := e.checkRegRead(insn.R0); err != nil {
		return err
	}
	if r0 := &e.regs()[insn.R0]; r0.typ != scalarValue {
		return e.errorf(uapi.EINVAL, "At subprogram exit the register R0 is not a scalar value (%s)", r0.typeName())
	}
	return nil
}
