package verifier

import (
	"fmt"
	"math"

	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// doCheckMain is do_check_main: the main program's entry state (R1 the
// context, R10 the frame pointer) explored path by path.
func (e *env) doCheckMain() error {
	st := e.newState()
	var f *funcState
	if len(st.frames) > 0 {
		f = st.frames[0]
	} else if cap(st.frames) > 0 && st.frames[:1][0] != nil {
		f = st.frames[:1][0]
	} else {
		f = &funcState{}
	}
	*f = funcState{callsite: -1, stack: f.stack[:0]}
	for i := range f.regs {
		f.regs[i].markNotInit()
	}
	f.regs[insn.R1].markPtr(ptrToCtx)
	f.regs[insn.R10].markPtr(ptrToStack)
	*st = vstate{frames: append(st.frames[:0], f), branches: 1}
	e.cur = st
	return e.doCheck()
}

func (e *env) regs() *[11]regState { return &e.cur.cur().regs }

// doCheck is do_check: it follows the current state instruction by
// instruction, pushing the other side of every undecided branch, until
// every path has reached an exit or a state already proven safe.
func (e *env) doCheck() error {
	e.prevIdx = -1
	printState := false // do_print_state: a new path starts here
	e.scratchAll()
	for {
		idx := e.insnIdx
		if idx < 0 || idx >= len(e.insns) {
			return e.errorf(uapi.EFAULT, "invalid insn idx %d insn_cnt %d", idx, len(e.insns))
		}
		e.insnProcessed++
		if e.insnProcessed > e.limit {
			return e.errorf(uapi.E2BIG, "BPF program is too large. Processed %d insn", e.insnProcessed)
		}
		e.curHist = -1
		e.cur.lastInsnIdx = e.prevIdx
		if e.prune[idx] && !e.cfg.DisablePruning {
			visited, err := e.isStateVisited(idx)
			if err != nil {
				return err
			}
			if visited {
				if e.log.level > 0 {
					if printState {
						e.log.printf("\nfrom %d to %d: safe", e.prevIdx, idx)
					} else {
						e.log.printf("%d: safe", idx)
					}
				}
				done, err := e.exitPath()
				if err != nil || done {
					return err
				}
				printState = true
				continue
			}
		}
		if e.jmpPoint[idx] {
			e.pushHistory(0, nil)
		}
		if e.log.level > 0 {
			if printState && e.log.level > 1 {
				e.log.printf("\nfrom %d to %d:%s", e.prevIdx, idx, e.cur.frameLine(e.cur.cur(), e.cur.cur().format(e)))
			}
			printState = false
			e.printInsnState(idx)
			e.verboseLinfo(idx)
			e.log.insnLine(fmt.Sprintf("%d: %s", idx, insn.Format(e.insns, idx, e.logSymbols())))
		}
		e.aux[idx].Seen = true
		e.prevIdx = idx
		in := &e.insns[idx] // by pointer: see insn.Insn
		var err error
		switch in.Class() {
		case insn.ALU, insn.ALU64:
			err = e.checkALU(in)
		case insn.LDX:
			err = e.checkLoad(in)
		case insn.STX:
			if in.Mode() == insn.ATOMIC {
				err = e.checkAtomic(*in)
				break
			}
			if in.Mode() != insn.MEM || in.Imm != 0 {
				return e.errorf(uapi.EINVAL, "BPF_STX uses reserved fields")
			}
			err = e.checkStore(in)
		case insn.ST:
			if in.Mode() != insn.MEM || in.Src != 0 {
				return e.errorf(uapi.EINVAL, "BPF_ST uses reserved fields")
			}
			err = e.checkStoreImm(in)
		case insn.JMP, insn.JMP32:
			var next int
			var exit bool
			next, exit, err = e.checkJump(in)
			if err != nil {
				return err
			}
			if exit {
				done, err := e.exitPath()
				if err != nil || done {
					return err
				}
				printState = true
				continue
			}
			if next >= 0 {
				// After a function's exit the log shows where the
				// path resumes (do_print_state).
				printState = printState || in.Op() == insn.EXIT
				e.insnIdx = next
				continue
			}
		case insn.LD:
			switch in.Mode() {
			case insn.ABS, insn.IND:
				err = e.checkLdAbs(*in)
			case insn.IMM:
				if err = e.checkLdImm(in); err == nil {
					e.insnIdx++ // the second slot
				}
			default:
				return e.errorf(uapi.EINVAL, "invalid BPF_LD mode")
			}
		default:
			return e.errorf(uapi.EINVAL, "unknown insn class %d", in.Class())
		}
		if err != nil {
			return err
		}
		e.insnIdx++
	}
}

// exitPath ends the current path (an exit, or a state found safe): the
// checkpoints above it lose a branch and the next pending path, if any,
// becomes current. done reports that no path is left.
func (e *env) exitPath() (done bool, err error) {
	if err := e.updateBranchCounts(e.cur); err != nil {
		return false, err
	}
	// The finished state is referenced by nothing else: recycle it.
	e.free = append(e.free, e.cur)
	e.cur = nil
	if len(e.pending) == 0 {
		return true, nil
	}
	p := e.pending[len(e.pending)-1]
	e.pending = e.pending[:len(e.pending)-1]
	e.log.reset(p.logPos)
	e.cur, e.insnIdx, e.prevIdx = p.st, p.insnIdx, p.prevIdx
	if e.numBackedges > 0 && e.cur.histEnd < len(e.hist) {
		// The histories of the backedges' checkpoints must outlive
		// the paths that made them: the resumed path continues its
		// history at the end of the buffer instead of over theirs.
		n := len(e.hist)
		e.hist = append(e.hist, e.hist[e.cur.histStart:e.cur.histEnd]...)
		e.cur.histStart, e.cur.histEnd = n, len(e.hist)
	}
	e.scratchAll()
	return false, nil
}

// pushStack is push_stack: a copy of the current state to explore later
// from insnIdx.
func (e *env) pushStack(insnIdx, prevIdx int) (*vstate, error) {
	st := e.cur.cloneInto(e.newState())
	e.pending = append(e.pending, pendingState{st: st, insnIdx: insnIdx, prevIdx: prevIdx, logPos: e.log.pos()})
	if len(e.pending) > jmpSeqLimit {
		// The kernel's callers turn this failure into EFAULT.
		return nil, e.errorf(uapi.EFAULT, "The sequence of %d jumps is too complex.", len(e.pending))
	}
	if st.parent != nil {
		st.parent.branches++
	}
	return st, nil
}

// updateBranchCounts is update_branch_counts: a finished path releases
// the checkpoints it went through, up to the first that still has paths
// to explore.
func (e *env) updateBranchCounts(st *vstate) error {
	for st != nil {
		st.branches--
		if st.branches > 0 {
			return nil
		}
		if err := e.maybeExitScc(st); err != nil {
			return err
		}
		e.maybeFreeState(st)
		st = st.parent
	}
	return nil
}

// Operand checks (check_reg_arg).

func (e *env) checkRegRead(regno uint8) error {
	e.scratchReg(regno)
	if regno > insn.R10 {
		return e.errorf(uapi.EINVAL, "R%d is invalid", regno)
	}
	if e.regs()[regno].typ == notInit {
		return e.errorf(uapi.EACCES, "R%d !read_ok", regno)
	}
	return nil
}

func (e *env) checkRegWrite(regno uint8) error {
	e.scratchReg(regno)
	if regno > insn.R10 {
		return e.errorf(uapi.EINVAL, "R%d is invalid", regno)
	}
	if regno == insn.R10 {
		return e.errorf(uapi.EACCES, "frame pointer is read only")
	}
	return nil
}

// checkALU is check_alu_op.
func (e *env) checkALU(in *insn.Insn) error {
	op := in.Op()
	alu64 := in.Class() == insn.ALU64
	regs := e.regs()
	switch {
	case op == insn.NEG || op == insn.END:
		if op == insn.NEG {
			if in.Source() != insn.K || in.Src != 0 || in.Off != 0 || in.Imm != 0 {
				return e.errorf(uapi.EINVAL, "BPF_NEG uses reserved fields")
			}
		} else if in.Src != 0 || in.Off != 0 || (in.Imm != 16 && in.Imm != 32 && in.Imm != 64) ||
			(alu64 && in.Source() != insn.ToLE) {
			return e.errorf(uapi.EINVAL, "BPF_END uses reserved fields")
		}
		if err := e.checkRegRead(in.Dst); err != nil {
			return err
		}
		if err := e.checkRegWrite(in.Dst); err != nil {
			return err
		}
		r := &regs[in.Dst]
		if r.typ != scalarValue {
			r.markUnknown()
			return nil
		}
		// Recent kernels track both on scalars: a negation is 0 - x, a
		// byte swap moves the known bits (adjust_scalar_min_max_vals).
		// The result is a new value, linked to no other register.
		r.id, r.off = 0, 0
		if op == insn.NEG {
			scalarNeg(!alu64, &r.bounds)
		} else {
			scalarByteSwap(alu64, in.Source() == insn.ToLE, int(in.Imm), &r.bounds)
		}
		return nil
	case op == insn.MOV:
		return e.checkMov(in, alu64)
	case op > insn.END:
		return e.errorf(uapi.EINVAL, "invalid BPF_ALU opcode %x", op)
	}
	if in.Source() == insn.X {
		if in.Imm != 0 || (in.Off != 0 && in.Off != 1) || (in.Off == 1 && op != insn.MOD && op != insn.DIV) {
			return e.errorf(uapi.EINVAL, "BPF_ALU uses reserved fields")
		}
		if err := e.checkRegRead(in.Src); err != nil {
			return err
		}
	} else if in.Src != 0 || (in.Off != 0 && in.Off != 1) || (in.Off == 1 && op != insn.MOD && op != insn.DIV) {
		return e.errorf(uapi.EINVAL, "BPF_ALU uses reserved fields")
	}
	if err := e.checkRegRead(in.Dst); err != nil {
		return err
	}
	if (op == insn.MOD || op == insn.DIV) && in.Source() == insn.K && in.Imm == 0 {
		return e.errorf(uapi.EINVAL, "div by zero")
	}
	if (op == insn.LSH || op == insn.RSH || op == insn.ARSH) && in.Source() == insn.K {
		size := int32(32)
		if alu64 {
			size = 64
		}
		if in.Imm < 0 || in.Imm >= size {
			return e.errorf(uapi.EINVAL, "invalid shift %d", in.Imm)
		}
	}
	if err := e.checkRegWrite(in.Dst); err != nil {
		return err
	}
	return e.adjustRegMinMax(in)
}

// checkMov is the BPF_MOV part of check_alu_op.
func (e *env) checkMov(in *insn.Insn, alu64 bool) error {
	regs := e.regs()
	if in.Source() == insn.X {
		if alu64 {
			if (in.Off != 0 && in.Off != 8 && in.Off != 16 && in.Off != 32) || in.Imm != 0 {
				if in.Off == 1 {
					return e.errorf(uapi.EINVAL, "addr_space_cast insn can only be used in a program that has an associated arena")
				}
				return e.errorf(uapi.EINVAL, "BPF_MOV uses reserved fields")
			}
		} else if (in.Off != 0 && in.Off != 8 && in.Off != 16) || in.Imm != 0 {
			return e.errorf(uapi.EINVAL, "BPF_MOV uses reserved fields")
		}
		if err := e.checkRegRead(in.Src); err != nil {
			return err
		}
	} else if in.Src != 0 || in.Off != 0 {
		return e.errorf(uapi.EINVAL, "BPF_MOV uses reserved fields")
	}
	if err := e.checkRegWrite(in.Dst); err != nil {
		return err
	}
	dst := &regs[in.Dst]
	if in.Source() == insn.K {
		if alu64 {
			dst.markKnown(uint64(int64(in.Imm)))
		} else {
			dst.markKnown(uint64(uint32(in.Imm)))
		}
		return nil
	}
	src := &regs[in.Src]
	switch {
	case alu64 && in.Off == 0:
		// r1 = r2: the state is copied; scalars share an id so that
		// bounds learned on one apply to the other.
		e.assignScalarID(src)
		*dst = *src
	case alu64:
		// r1 = (s8, s16, s32) r2.
		if src.typ != scalarValue {
			dst.markUnknown()
			return nil
		}
		noSext := src.umax < 1<<(in.Off-1)
		if noSext {
			e.assignScalarID(src)
		}
		*dst = *src
		if !noSext {
			dst.id = 0
		}
		dst.coerceToSizeSX(int(in.Off) / 8)
	default:
		// w1 = w2, w1 = (s8, s16) w2.
		if src.typ != scalarValue {
			dst.markUnknown()
		} else if in.Off == 0 {
			is32 := src.umax <= 0xffffffff
			if is32 {
				e.assignScalarID(src)
			}
			*dst = *src
			if !is32 {
				dst.id = 0
			}
		} else {
			noSext := src.umax < 1<<(in.Off-1)
			if noSext {
				e.assignScalarID(src)
			}
			*dst = *src
			if !noSext {
				dst.id = 0
			}
			dst.coerceSubregToSizeSX(int(in.Off) / 8)
		}
		dst.zext32()
		dst.sync()
	}
	return nil
}

// assignScalarID is assign_scalar_id_before_mov: a scalar about to be
// copied gets an id, unless it is a constant (nothing to learn).
func (e *env) assignScalarID(r *regState) {
	if r.typ != scalarValue {
		return
	}
	// A scalar linked with a constant added (rY += const) cannot link
	// a copy too: it starts a link of its own.
	if r.id&addConstFlag != 0 {
		r.id, r.off = 0, 0
	}
	if r.id == 0 && !r.isConst() {
		e.idGen++
		r.id = e.idGen
	}
}

// adjustRegMinMax is adjust_reg_min_max_vals: scalar arithmetic, or
// pointer arithmetic when one side is a pointer.
func (e *env) adjustRegMinMax(in *insn.Insn) error {
	regs := e.regs()
	dst := &regs[in.Dst]
	alu32 := in.Class() != insn.ALU64
	op := in.Op()
	var src regState
	if in.Source() == insn.X {
		src = regs[in.Src]
		if src.typ != scalarValue {
			if dst.typ != scalarValue {
				// Two pointers: only subtraction, which yields a number.
				if op == insn.SUB {
					dst.markUnknown()
					return nil
				}
				return e.errorf(uapi.EACCES, "R%d pointer %s pointer prohibited", in.Dst, aluName(op))
			}
			if err := e.markPrecise(in.Dst); err != nil {
				return err
			}
			off := *dst
			return e.adjustPtrMinMax(in, &src, &off, false)
		}
		if dst.typ != scalarValue {
			if err := e.markPrecise(in.Src); err != nil {
				return err
			}
			ptr := *dst
			return e.adjustPtrMinMax(in, &ptr, &src, true)
		}
		if dst.precise {
			if err := e.markPrecise(in.Src); err != nil {
				return err
			}
		}
	} else {
		src.typ = scalarValue
		src.bounds = constBounds(uint64(int64(in.Imm)))
		if dst.typ != scalarValue {
			ptr := *dst
			return e.adjustPtrMinMax(in, &ptr, &src, true)
		}
	}
	// A 32-bit add keeps a link only from a register whose upper half
	// is zero before it: then the sum, zero-extended, is still the
	// linked value plus a constant.
	dstUmax := dst.umax
	// maybe_fork_scalars: a value that is 0 or -1, and-ed or or-ed with
	// a constant, is explored as both.
	if (op == insn.AND || op == insn.OR) && src.isConst() {
		if err := e.maybeForkScalars(in, dst); err != nil {
			return err
		}
	}
	scalarALU(op, alu32, &dst.bounds, src.bounds)
	// r1 = r2; r1 += const (or -= const, or w1 += const): remember the
	// delta, any s32, so that bounds learned on r2 later carry over
	// (BPF_ADD_CONST64 and BPF_ADD_CONST32, as 6.18's stable updates
	// have them).
	srcConst := src.isConst()
	if alu32 {
		srcConst = src.is32Const()
	}
	if (op == insn.ADD || op == insn.SUB) && dst.id != 0 && srcConst &&
		!(in.Source() == insn.X && in.Src == in.Dst) {
		val := int64(src.constant())
		if alu32 {
			val = int64(int32(uint32(src.constant())))
		}
		off := int32(val)
		if op == insn.SUB {
			off = -off
		}
		switch {
		case dst.id&addConstFlag != 0, !alu32 && val != int64(int32(val)), alu32 && dstUmax > math.MaxUint32,
			op == insn.SUB && int32(val) == math.MinInt32:
			dst.id, dst.off = 0, 0
		case alu32:
			dst.id |= addConst32
			dst.off = off
		default:
			dst.id |= addConst64
			dst.off = off
		}
	} else {
		dst.id, dst.off = 0, 0
	}
	return nil
}

// addConst64 and addConst32 are BPF_ADD_CONST64 and BPF_ADD_CONST32:
// the register is a linked scalar plus off, added with a 64-bit or a
// 32-bit operation (then the sum is zero-extended). addConstFlag is
// either.
const (
	addConst64   = 1 << 31
	addConst32   = 1 << 30
	addConstFlag = addConst64 | addConst32
)

func (e *env) maybeForkScalars(in *insn.Insn, dst *regState) error {
	var alu32 bool
	switch {
	case dst.smin == -1 && dst.smax == 0:
	case dst.s32min == -1 && dst.s32max == 0:
		alu32 = true
	default:
		return nil
	}
	branch, err := e.pushStack(e.insnIdx, e.insnIdx)
	if err != nil {
		return err
	}
	other := &branch.cur().regs[in.Dst]
	if alu32 {
		other.known32(0)
		dst.known32(0xffffffff)
	} else {
		other.bounds = constBounds(0)
		other.id, other.off = 0, 0
		dst.bounds = constBounds(^uint64(0))
		dst.id, dst.off = 0, 0
	}
	return nil
}

// adjustPtrMinMax is adjust_ptr_min_max_vals: pointer plus or minus a
// scalar. ptr and off are copies of the operands (ptrIsDst tells which was
// the destination); the result goes to the destination register.
func (e *env) adjustPtrMinMax(in *insn.Insn, ptr, off *regState, ptrIsDst bool) error {
	dst := &e.regs()[in.Dst]
	op := in.Op()
	known := off.isConst()
	if (known && (off.smin != off.smax || off.umin != off.umax)) || off.smin > off.smax || off.umin > off.umax {
		dst.markUnknown()
		return nil
	}
	if in.Class() != insn.ALU64 {
		if op == insn.SUB {
			dst.markUnknown()
			return nil
		}
		return e.errorf(uapi.EACCES, "R%d 32-bit pointer arithmetic prohibited", in.Dst)
	}
	if ptr.maybeNull {
		return e.errorf(uapi.EACCES, "R%d pointer arithmetic on %s prohibited, null-check it first", in.Dst, ptr.typeName())
	}
	switch ptr.typ {
	case ptrToCtx, ptrToMapValue, ptrToMapKey, ptrToStack, ptrToPacketMeta, ptrToPacket, ptrToMem, ptrToFunc, ptrToBuf, ptrToBTFID:
	case constPtrToMap:
		if known && off.smin == 0 && op == insn.ADD {
			break
		}
		fallthrough
	default:
		return e.errorf(uapi.EACCES, "R%d pointer arithmetic on %s prohibited", in.Dst, ptr.typeName())
	}
	if err := e.checkSaneOffset(off, ptr); err != nil {
		return err
	}
	if err := e.checkSaneOffset(ptr, ptr); err != nil {
		return err
	}
	res := *ptr
	res.s32min, res.s32max, res.u32min, res.u32max = -1<<31, 1<<31-1, 0, 1<<32-1
	switch op {
	case insn.ADD:
		sum := int64(ptr.off) + off.smin
		if known && sum == int64(int32(sum)) {
			res.off = int32(sum)
			break
		}
		lo, o1 := addOverflow64(ptr.smin, off.smin)
		hi, o2 := addOverflow64(ptr.smax, off.smax)
		if o1 || o2 {
			res.smin, res.smax = -1<<63, 1<<63-1
		} else {
			res.smin, res.smax = lo, hi
		}
		ulo, c1 := addU64(ptr.umin, off.umin)
		uhi, c2 := addU64(ptr.umax, off.umax)
		if c1 || c2 {
			res.umin, res.umax = 0, ^uint64(0)
		} else {
			res.umin, res.umax = ulo, uhi
		}
		res.varOff = ptr.varOff.add(off.varOff)
		if ptr.isPkt() {
			e.idGen++
			res.id, res.rng = e.idGen, 0
		}
	case insn.SUB:
		if !ptrIsDst {
			return e.errorf(uapi.EACCES, "R%d tried to subtract pointer from scalar", in.Dst)
		}
		if ptr.typ == ptrToStack {
			return e.errorf(uapi.EACCES, "R%d subtraction from stack pointer prohibited", in.Dst)
		}
		diff := int64(ptr.off) - off.smin
		if known && diff == int64(int32(diff)) {
			res.off = int32(diff)
			break
		}
		lo, o1 := subOverflow64(ptr.smin, off.smax)
		hi, o2 := subOverflow64(ptr.smax, off.smin)
		if o1 || o2 {
			res.smin, res.smax = -1<<63, 1<<63-1
		} else {
			res.smin, res.smax = lo, hi
		}
		if ptr.umin < off.umax {
			res.umin, res.umax = 0, ^uint64(0)
		} else {
			res.umin, res.umax = ptr.umin-off.umax, ptr.umax-off.umin
		}
		res.varOff = ptr.varOff.sub(off.varOff)
		if ptr.isPkt() {
			e.idGen++
			res.id = e.idGen
			if off.smin < 0 {
				res.rng = 0
			}
		}
	case insn.AND, insn.OR, insn.XOR:
		return e.errorf(uapi.EACCES, "R%d bitwise operator %s on pointer prohibited", in.Dst, aluName(op))
	default:
		return e.errorf(uapi.EACCES, "R%d pointer arithmetic with %s operator prohibited", in.Dst, aluName(op))
	}
	if err := e.checkSaneOffset(&res, ptr); err != nil {
		return err
	}
	res.sync()
	*dst = res
	return nil
}

func addU64(a, b uint64) (uint64, bool) {
	s := a + b
	return s, s < a
}

// checkSaneOffset is check_reg_sane_offset: pointer arithmetic keeps
// offsets within BPF_MAX_VAR_OFF.
func (e *env) checkSaneOffset(r, ptr *regState) error {
	name := ptr.typeName()
	if r.isConst() {
		if v := int64(r.varOff.value); v >= maxVarOff || v <= -maxVarOff {
			return e.errorf(uapi.EINVAL, "math between %s pointer and %d is not allowed", name, v)
		}
	}
	if r.off >= maxVarOff || r.off <= -maxVarOff {
		return e.errorf(uapi.EINVAL, "%s pointer offset %d is not allowed", name, r.off)
	}
	if r.smin == -1<<63 {
		return e.errorf(uapi.EINVAL, "math between %s pointer and register with unbounded min value is not allowed", name)
	}
	if r.smin >= maxVarOff || r.smin <= -maxVarOff {
		return e.errorf(uapi.EINVAL, "value %d makes %s pointer be out of bounds", r.smin, name)
	}
	return nil
}

var aluNames = [...]string{"+=", "-=", "*=", "/=", "|=", "&=", "<<=", ">>=", "neg", "%=", "^=", "=", "s>>=", "endian"}

func aluName(op uint8) string {
	if int(op>>4) < len(aluNames) {
		return aluNames[op>>4]
	}
	return "?"
}

// checkLdImm is check_ld_imm: a constant, a map, a map value or a
// function.
// mapRef returns the map reference of the lddw at insn i. Paths mostly
// meet lddw instructions in order, so the reference after the last one
// found is tried before a search.
func (e *env) mapRef(i int) (MapRef, bool) {
	refs := e.cfg.Maps
	if j := e.nextMapRef; j < len(refs) && refs[j].Insn == i {
		e.nextMapRef++
		return refs[j], true
	}
	j, ok := mapRefIndex(refs, i)
	if !ok {
		return MapRef{}, false
	}
	e.nextMapRef = j + 1
	return refs[j], true
}

func (e *env) checkLdImm(in *insn.Insn) error {
	if in.Off != 0 {
		return e.errorf(uapi.EINVAL, "BPF_LD_IMM64 uses reserved fields")
	}
	if err := e.checkRegWrite(in.Dst); err != nil {
		return err
	}
	dst := &e.regs()[in.Dst]
	if ref, ok := e.mapRef(e.insnIdx); ok {
		dst.markPtr(constPtrToMap)
		dst.mapIdx = e.mapIndex(ref.Map)
		if ref.Value {
			dst.typ = ptrToMapValue
			dst.off = int32(ref.Off)
		}
		return nil
	}
	if in.Src == insn.PseudoFunc {
		// A callback needs BTF func info, which says it is static.
		if !e.cfg.FuncInfo {
			return e.errorf(uapi.EINVAL, "missing btf func_info")
		}
		sub := e.findSubprog(e.insnIdx + int(in.Imm) + 1)
		if f := e.funcBTF(sub); f != nil && f.Linkage != btf.StaticFunc {
			return e.errorf(uapi.EINVAL, "callback function not static")
		}
		dst.markPtr(ptrToFunc)
		dst.subprog = sub
		return nil
	}
	dst.markKnown(uint64(uint32(in.Imm)) | uint64(uint32(e.insns[e.insnIdx+1].Imm))<<32)
	return nil
}

func (e *env) findSubprog(start int) int {
	for i, s := range e.subprogs {
		if s.Start == start {
			return i
		}
	}
	return -1
}

// checkLdAbs is check_ld_abs: the legacy packet loads of socket filters
// and tc programs, with the context in R6; they clobber R1-R5 and leave
// an unknown number in R0.
func (e *env) checkLdAbs(in insn.Insn) error {
	if !e.canLdAbs() {
		return e.errorf(uapi.EINVAL, "BPF_LD_[ABS|IND] instructions not allowed for this program type")
	}
	if in.Dst != insn.R0 || in.Off != 0 || in.SizeBits() == insn.DW || (in.Mode() == insn.ABS && in.Src != 0) {
		return e.errorf(uapi.EINVAL, "BPF_LD_[ABS|IND] uses reserved fields")
	}
	if err := e.checkRegRead(insn.R6); err != nil {
		return err
	}
	// The load may end the program (a packet too short): it must not
	// leave a reference behind.
	if err := e.checkResourceLeak("BPF_LD_[ABS|IND]", true); err != nil {
		return err
	}
	regs := e.regs()
	if regs[insn.R6].typ != ptrToCtx {
		return e.errorf(uapi.EINVAL, "at the time of BPF_LD_ABS|IND R6 != pointer to skb")
	}
	if in.Mode() == insn.IND {
		if err := e.checkRegRead(in.Src); err != nil {
			return err
		}
	}
	if err := e.checkPtrOffReg(&regs[insn.R6], insn.R6, false); err != nil {
		return err
	}
	for r := insn.R0; r <= insn.R5; r++ {
		regs[r].markNotInit()
	}
	regs[insn.R0].markUnknown()
	return nil
}

func (e *env) canLdAbs() bool {
	t, ok := e.cfg.Type.(skbType)
	return ok && !t.cgroup // may_access_skb: socket filters and tc
}

// newState returns a state to clone into, recycled if one is free.
func (e *env) newState() *vstate {
	if n := len(e.free); n > 0 {
		st := e.free[n-1]
		e.free = e.free[:n-1]
		return st
	}
	return &vstate{}
}
