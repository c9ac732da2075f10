package verifier

import (
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// checkCFG is check_cfg: a depth-first walk of the control flow graph
// from the first instruction (following calls into subprograms) that
// marks prune points and finds instructions no path reaches. A
// privileged loader may have back-edges (bounded loops).
func (e *env) checkCFG() error {
	if e.log.level < 2 {
		if done, err := e.checkStraightCFG(); done {
			return err
		}
	}
	n := len(e.insns) // e.prune, e.force and e.jmpPoint are cleared by reset
	const (
		discovered = 1
		explored   = 2
	)
	state := growU8(&e.scratch.state, 3*n)
	next := state[n : 2*n] // how many successors of each instruction were visited
	nsucc := state[2*n:]
	if cap(e.scratch.succ) < n {
		e.scratch.succ = make([][2]int, n, roomFor(n))
	}
	// Successors are found once per instruction, when it is discovered,
	// and kept for computeLiveness.
	succ := e.scratch.succ[:n]
	visit := func(t int) error {
		if c := e.insns[t].Code; c&0x07 != insn.JMP && c&0x07 != insn.JMP32 && c != insn.LD|insn.IMM|insn.DW {
			// Neither a jump nor an lddw: control goes on to the next
			// instruction, and successors has nothing to mark.
			succ[t] = [2]int{t + 1, -1}
			nsucc[t] = 1
			return nil
		}
		succ[t] = [2]int{-1, -1}
		ns, err := e.successors(t, &succ[t])
		nsucc[t] = uint8(ns)
		return err
	}
	stack := append(e.scratch.stack[:0], 0)
	defer func() { e.scratch.stack = stack }()
	state[0] = discovered
	if err := visit(0); err != nil {
		return err
	}
	for len(stack) > 0 {
		t := stack[len(stack)-1]
		if next[t] < nsucc[t] {
			w := succ[t][next[t]]
			next[t]++
			if w < 0 || w >= n {
				return e.errorf(uapi.EINVAL, "jump out of range from insn %d to %d", t, w)
			}
			if state[w] == 0 {
				state[w] = discovered
				if err := visit(w); err != nil {
					return err
				}
				if next[t] == nsucc[t] {
					// Nothing of t is left to walk: w takes its place,
					// as popping t after w's walk would. Straight-line
					// code then never grows the stack.
					state[t] = explored
					stack[len(stack)-1] = w
				} else {
					stack = append(stack, w)
				}
			}
			continue
		}
		state[t] = explored
		stack = stack[:len(stack)-1]
	}
	for i := 0; i < n; i++ {
		if state[i] != explored {
			return e.errorf(uapi.EINVAL, "unreachable insn %d", i)
		}
		if e.insns[i].IsLdImm64() {
			if state[i+1] != 0 {
				return e.errorf(uapi.EINVAL, "jump into the middle of ldimm64 insn %d", i)
			}
			succ[i+1] = [2]int{-1, -1} // never reached; read by computeLiveness
			i++
		}
	}
	return nil
}

// checkStraightCFG is checkCFG for a program without jumps (exits aside),
// calls or function pointers, in one scan: the path runs from the first
// instruction to the first exit, and anything after it is unreachable. It
// marks no prune point, and leaves no successors for computeLiveness,
// which such a program does not need (the log at level 2 prints it: the
// walk serves that). done is false for any other program.
func (e *env) checkStraightCFG() (done bool, err error) {
	n := len(e.insns)
	for i := 0; i < n; i++ {
		switch c := e.insns[i].Code; {
		case c == insn.JMP|insn.EXIT:
			if i+1 < n {
				return true, e.errorf(uapi.EINVAL, "unreachable insn %d", i+1)
			}
			return true, nil
		case c&0x07 == insn.JMP || c&0x07 == insn.JMP32:
			return false, nil
		case c == insn.LD|insn.IMM|insn.DW:
			if e.insns[i].Src == insn.PseudoFunc {
				return false, nil
			}
			i++
		}
	}
	return false, nil // falls off the end: the walk reports it
}

// successors puts where control goes after insn t (visit_insn) in out and
// returns how many; it marks prune and jump points on the way.
func (e *env) successors(t int, out *[2]int) (int, error) {
	in := e.insns[t]
	cls := in.Class()
	if in.IsLdImm64() {
		out[0] = t + 2
		if in.Src != insn.PseudoFunc {
			return 1, nil
		}
		// visit_func_call_insn: a callback's address leads to the
		// callback, as a call does.
		e.hasCalls, e.hasPrunePoints = true, true
		e.prune[t] = true
		if t+2 < len(e.prune) {
			e.prune[t+2], e.jmpPoint[t+2] = true, true
		}
		target := t + int(in.Imm) + 1
		if target >= 0 && target < len(e.prune) {
			e.prune[target], e.jmpPoint[target] = true, true
		}
		out[1] = target
		return 2, nil
	}
	if cls != insn.JMP && cls != insn.JMP32 {
		out[0] = t + 1
		return 1, nil
	}
	if in.Op() != insn.EXIT {
		e.hasPrunePoints = true // every other jump makes one below
	}
	switch in.Op() {
	case insn.EXIT:
		return 0, nil
	case insn.CALL:
		if t+1 < len(e.prune) {
			// Returning from a subprogram is a non-linear step of the
			// history.
			e.prune[t+1], e.jmpPoint[t+1] = true, true
		}
		out[0] = t + 1
		if in.Src == insn.PseudoCall {
			e.hasCalls = true
			e.prune[t] = true
			target := t + int(in.Imm) + 1
			if target >= 0 && target < len(e.prune) {
				e.prune[target], e.jmpPoint[target] = true, true
			}
			out[1] = target
			return 2, nil
		}
		if in.Src == insn.PseudoKfuncCall && e.isIterNextInsn(t) {
			// Checkpoints at an iterator's _next are where its loop
			// converges: always take one.
			e.prune[t], e.force[t] = true, true
			e.hasPrunePoints = true
		}
		if in.Src == 0 && isSyncCallbackCalling(in.Imm) {
			// How often the callback runs is unknown: its visits
			// return to the call, a checkpoint where they converge.
			e.callsCallback[t], e.force[t], e.prune[t], e.jmpPoint[t] = true, true, true, true
			e.hasPrunePoints = true
		}
		return 1, nil
	case insn.JA:
		if in.Source() != insn.K {
			return 0, e.errorf(uapi.EINVAL, "BPF_JA uses reserved fields")
		}
		off := int(in.Off)
		if cls == insn.JMP32 {
			off = int(in.Imm)
		}
		w := t + off + 1
		if w >= 0 && w < len(e.prune) {
			e.prune[w], e.jmpPoint[w] = true, true
		}
		out[0] = w
		return 1, nil
	}
	e.prune[t] = true
	if in.Code == insn.JMP|insn.JCOND {
		e.force[t] = true
	}
	w := t + int(in.Off) + 1
	if w >= 0 && w < len(e.prune) {
		e.prune[w], e.jmpPoint[w] = true, true
	}
	out[0], out[1] = t+1, w
	return 2, nil
}

// computeLiveness finds, for each instruction, the registers whose value
// on entry some path may still read (a backward data-flow analysis, as the
// kernel's compute_live_registers does since 6.15). State pruning ignores
// the others. A bit per register, R0 in bit 0.
// helperArgs gives the registers a helper call reads (nil: R1-R5).
func (e *env) computeLiveness(insns []insn.Insn, subs []Subprog, helperArgs func(id int32) uint16) []uint16 {
	n := len(insns)
	use := growU16(&e.scratch.use, n)
	def := growU16(&e.scratch.def, n)
	// checkCFG found every instruction's successors; a call of a
	// subprogram continues, for this analysis, at the next instruction
	// (the callee's reads are its arguments).
	succ := e.scratch.succ[:n]
	live := growU16(&e.live, n)
	for pass, changed := 0, true; changed; pass++ {
		changed = false
		backward := false // a loop: another pass may change more
		for i := n - 1; i >= 0; i-- {
			if pass == 0 {
				// Each instruction's reads and writes, found on the
				// first pass; an lddw's second slot has none.
				if in := &insns[i]; i == 0 || !insns[i-1].IsLdImm64() {
					u, d := liveUseDef(in)
					if in.IsLdImm64() && in.Src == insn.PseudoFunc {
						// A callback's address leads to the callback
						// for the walk, not for liveness
						// (insn_successors): the callback reads
						// what its caller's helper passes it.
						succ[i][1] = -1
					}
					if in.Code == insn.JMP|insn.CALL {
						if in.Src == 0 && helperArgs != nil {
							u = helperArgs(in.Imm)
						}
						if in.Src == insn.PseudoKfuncCall {
							u = e.kfuncArgs(in.Imm, in.Off)
						}
						if in.Src == insn.PseudoCall {
							succ[i][1] = -1
						}
					}
					use[i], def[i] = u, d
				}
			}
			var out uint16
			for _, s := range succ[i] {
				if s >= 0 && s < n {
					out |= live[s]
					backward = backward || s <= i
				}
			}
			in := use[i] | out&^def[i]
			if in != live[i] {
				live[i] = in
				changed = true
			}
		}
		// Without jumps backwards, one pass from the end is final.
		changed = changed && backward
	}
	return live
}

// liveFlags classifies each opcode for liveUseDef: which of dst and src
// it reads and whether it writes dst, or that it needs a closer look.
// A table rather than nested switches: the instruction mix of a program is
// random enough that the switches' branches mispredict.
var liveFlags = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		t[c] = liveFlagsOf(uint8(c))
	}
	return t
}()

const (
	liveUseDst = 1 << iota
	liveUseSrc
	liveDefDst
	liveSpecial
)

func liveFlagsOf(code uint8) uint8 {
	in := insn.Insn{Code: code}
	switch in.Class() {
	case insn.ALU, insn.ALU64:
		switch {
		case in.Op() == insn.MOV && in.Source() == insn.X:
			return liveUseSrc | liveDefDst
		case in.Op() == insn.MOV:
			return liveDefDst
		case in.Op() == insn.END:
			// The source bit picks the byte order: no source register.
			return liveUseDst | liveDefDst
		case in.Source() == insn.X:
			return liveUseDst | liveUseSrc | liveDefDst
		}
		return liveUseDst | liveDefDst
	case insn.LDX:
		return liveUseSrc | liveDefDst
	case insn.ST:
		return liveUseDst
	case insn.STX:
		if in.Mode() == insn.ATOMIC {
			return liveSpecial
		}
		return liveUseDst | liveUseSrc
	case insn.LD:
		if in.Mode() == insn.IMM {
			return liveDefDst
		}
		return liveSpecial
	}
	switch in.Op() { // JMP, JMP32
	case insn.EXIT, insn.CALL:
		return liveSpecial
	case insn.JA, insn.JCOND:
		return 0
	}
	if in.Source() == insn.X {
		return liveUseDst | liveUseSrc
	}
	return liveUseDst
}

// liveUseDef returns the registers an instruction reads and writes.
func liveUseDef(in *insn.Insn) (use, def uint16) {
	f := liveFlags[in.Code]
	if f&liveSpecial != 0 {
		return liveUseDefSpecial(in)
	}
	d, s := uint16(1)<<(in.Dst&15), uint16(1)<<(in.Src&15)
	use = d&-uint16(f&liveUseDst) | s&-uint16(f>>1&1)
	def = d & -uint16(f>>2&1)
	return use, def
}

// liveUseDefSpecial is liveUseDef for atomics, legacy packet loads, calls
// and exits.
func liveUseDefSpecial(in *insn.Insn) (use, def uint16) {
	bit := func(r uint8) uint16 { return 1 << (r & 15) }
	const args = 0x3e // R1-R5
	switch in.Class() {
	case insn.STX: // atomic
		use = bit(in.Dst) | bit(in.Src)
		switch {
		case in.Imm == insn.Cmpxchg:
			use |= bit(insn.R0)
			def = bit(insn.R0)
		case in.Imm == insn.LoadAcq:
			use, def = bit(in.Src), bit(in.Dst)
		case in.Imm&insn.Fetch != 0:
			def = bit(in.Src)
		}
	case insn.LD: // ABS, IND
		// compute_insn_live_regs keeps its defaults for these: every
		// register read, none written (so R0-R5 stay live across one).
		use, def = 0xffff, 0
	default:
		if in.Op() == insn.EXIT {
			use = bit(insn.R0)
		} else { // call
			use, def = args, args|1
		}
	}
	return use, def
}

// checkMaxStackDepth is check_max_stack_depth: along any chain of calls,
// the functions' stacks (each rounded up to 16 bytes, as with a JIT)
// together fit in MAX_BPF_STACK, and the chain is at most 8 deep.
func (e *env) checkMaxStackDepth() error {
	if !e.hasCalls {
		// No function calls another: the walk below would only scan
		// the main program for calls.
		if depth := roundUp(e.subprogs[0].StackDepth, 16); depth > maxStack {
			return e.errorf(uapi.EACCES, "combined stack size of %d calls is %d. Too large", 1, depth)
		}
		return nil
	}
	var walk func(sub, depth, frame int) error
	walk = func(sub, depth, frame int) error {
		if sub > 0 && depth >= maxTailCallCallerStack && e.hasTailCall(e.subprogs[sub]) {
			return e.errorf(uapi.EACCES, "tail_calls are not allowed when call stack of previous frames is %d bytes. Too large", depth)
		}
		depth += roundUp(e.subprogs[sub].StackDepth, 16)
		if depth > maxStack {
			return e.errorf(uapi.EACCES, "combined stack size of %d calls is %d. Too large", frame+1, depth)
		}
		s := e.subprogs[sub]
		for i := s.Start; i < s.End; i++ {
			in := e.insns[i]
			if !(in.Code == insn.JMP|insn.CALL && in.Src == insn.PseudoCall) && !(in.IsLdImm64() && in.Src == insn.PseudoFunc) {
				continue
			}
			callee := e.findSubprog(i + int(in.Imm) + 1)
			if callee < 0 {
				continue
			}
			if frame+1 >= maxCallFrames {
				return e.errorf(uapi.E2BIG, "the call stack of %d frames is too deep !", frame+1)
			}
			if err := walk(callee, depth, frame+1); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(0, 0, 0)
}

func roundUp(n, to int) int { return (n + to - 1) / to * to }

// helperArgs is the registers a helper reads: its declared arguments.
func (e *env) helperArgs(id int32) uint16 {
	fn := e.cfg.Helper(id)
	if fn == nil || fn == UncheckedProto {
		return argRegs
	}
	var m uint16
	for i, a := range fn.Args {
		if a != ArgDontCare {
			m |= 1 << (i + 1)
		}
	}
	return m
}

// kfuncArgs is the registers a kfunc call reads: its parameters, as the
// kernel counts them from the kfunc's BTF (get_call_summary).
func (e *env) kfuncArgs(imm int32, off int16) uint16 {
	if e.cfg.Kfunc == nil {
		return argRegs
	}
	kf, err := e.cfg.Kfunc(imm, off)
	if err != nil {
		return argRegs
	}
	var m uint16
	for i := range kf.Args {
		m |= 1 << (i + 1)
	}
	return m
}

// logSymbols names kfunc calls in the log by their kfunc, as the
// kernel's log does ("call bpf_dynptr_slice#<BTF id>"); nil without
// kfuncs.
func (e *env) logSymbols() *insn.Symbols {
	if e.cfg.Kfunc == nil {
		return nil
	}
	if e.logSyms == nil {
		e.logSyms = &insn.Symbols{Call: func(_ int, in insn.Insn) string {
			if in.Src != insn.PseudoKfuncCall {
				return ""
			}
			if kf, err := e.cfg.Kfunc(in.Imm, in.Off); err == nil {
				return kf.Name
			}
			return ""
		}}
	}
	return e.logSyms
}

// growU8 and growU16 return a cleared buffer of n elements, reusing *b.
func growU8(b *[]uint8, n int) []uint8 {
	if cap(*b) < n {
		*b = make([]uint8, n, roomFor(n))
	}
	*b = (*b)[:n]
	clear(*b)
	return *b
}

func growU16(b *[]uint16, n int) []uint16 {
	if cap(*b) < n {
		*b = make([]uint16, n, roomFor(n))
	}
	*b = (*b)[:n]
	clear(*b)
	return *b
}
