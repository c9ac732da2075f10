package verifier

import (
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Inlinable kfuncs, after seed 003 (the RFC "bpf: inlinable kfuncs for
// BPF", bpf-next, November 2024; not in any released kernel). A kfunc may
// come with a body written in BPF as well as its Go function. The
// verifier checks a call of it as any kfunc call, and records at each
// call site what it knew on every path that reached it: the scalar
// arguments' known bits, and for a dynptr argument its type, which the
// dynptr's size word carries in bits 28-30. After verification the call
// is replaced by the body, specialised to those facts: a branch whose
// outcome the facts decide is hard-wired and the code it skips removed,
// as the RFC's instances are pruned by opt_hard_wire_dead_code_branches
// and opt_remove_dead_code (a type switch of bpf_dynptr_slice collapses
// to its one case). The RFC verifies each instance in a "distilled"
// context; bpfsim evaluates the body with tristate numbers only, which is
// what deciding its branches on these facts takes.
//
// A body uses R0-R5 only (a call clobbers R1-R5 anyway), no stack and no
// calls, jumps only forward, and returns in R0 at an exit. It may mark a
// path it cannot take inline with InlineBail: where that path stays
// reachable, the call stays.

// InlineBail, in an inlinable kfunc's body, marks a path the body cannot
// take inline: a call site whose facts leave it reachable keeps the call.
var InlineBail = insn.Insn{Code: insn.JMP | insn.CALL, Src: insn.PseudoKfuncCall, Imm: -1}

// KfuncFacts is what the verifier knew at a kfunc call site on every path
// that reached it.
type KfuncFacts struct {
	// Args are the arguments' known bits (unknown for pointers).
	Args [5]tnum
	// Dynptr marks the dynptr arguments; DynptrWord is the known bits
	// of such a dynptr's size word (its type).
	Dynptr     [5]bool
	DynptrWord [5]tnum
}

// union is tnum_union: the bits known alike in a and b.
func (a tnum) union(b tnum) tnum {
	mu := a.mask | b.mask | (a.value ^ b.value)
	return tnum{a.value &^ mu, mu}
}

// CheckInlineBody checks that body can be inlined: R0-R5 only, no stack,
// no calls but InlineBail, forward jumps within the body, and an exit (or
// InlineBail) at its end.
func CheckInlineBody(name string, body []insn.Insn) error {
	if len(body) == 0 || body[len(body)-1].Code != insn.JMP|insn.EXIT && body[len(body)-1] != InlineBail {
		return errors.Wrapf(uapi.EINVAL, "inline body of %s must end with an exit", name)
	}
	for i, in := range body {
		cls := in.Class()
		if in == InlineBail || in.Code == insn.JMP|insn.EXIT {
			continue
		}
		if in.IsLdImm64() || in.Dst > insn.R5 || in.Src > insn.R5 {
			return errors.Wrapf(uapi.EINVAL, "inline body of %s: insn %d uses more than R0-R5 or an lddw", name, i)
		}
		switch {
		case (cls == insn.JMP || cls == insn.JMP32) && (in.Op() == insn.CALL || in.Op() == insn.EXIT):
			return errors.Wrapf(uapi.EINVAL, "inline body of %s: insn %d calls", name, i)
		case cls == insn.JMP32 && in.Op() == insn.JA:
			return errors.Wrapf(uapi.EINVAL, "inline body of %s: insn %d is a long jump", name, i)
		case cls == insn.JMP || cls == insn.JMP32:
			if t := i + 1 + int(in.Off); in.Off < 0 || t >= len(body) {
				return errors.Wrapf(uapi.EINVAL, "inline body of %s: insn %d jumps back or out", name, i)
			}
		case cls == insn.ST || cls == insn.STX:
			return errors.Wrapf(uapi.EINVAL, "inline body of %s: insn %d stores", name, i)
		}
	}
	return nil
}

// recordKfuncFacts notes what the verifier knows of the call's arguments
// at idx, joined with what other paths knew.
func (e *env) recordKfuncFacts(kf *KfuncProto, idx int) {
	var f KfuncFacts
	regs := e.regs()
	for i, a := range kf.Args {
		r := &regs[insn.R1+i]
		f.Args[i] = tnumUnknown
		switch {
		case r.typ == scalarValue:
			f.Args[i] = r.varOff
		case a.Kind == KfArgDynptr && !a.Uninit && r.typ == ptrToStack:
			// (A CONST_PTR_TO_DYNPTR's type is only assumed local: a
			// global function's caller may pass any dynptr.)
			if s := e.dynptrReg(r); s != nil {
				f.Dynptr[i] = true
				const typeBits = uint64(uapi.DynptrTypeMask) << uapi.DynptrTypeShift
				f.DynptrWord[i] = tnum{value: uint64(s.dynptrType) << uapi.DynptrTypeShift, mask: 0xffffffff &^ typeBits}
			}
		}
	}
	a := &e.aux[idx]
	if a.KfuncFacts == nil {
		a.KfuncFacts = &f
		return
	}
	old := a.KfuncFacts
	for i := range f.Args {
		old.Args[i] = old.Args[i].union(f.Args[i])
		if old.Dynptr[i] && f.Dynptr[i] {
			old.DynptrWord[i] = old.DynptrWord[i].union(f.DynptrWord[i])
		} else {
			old.Dynptr[i] = false
		}
	}
}

// specializeBody evaluates body on the facts and returns it without the
// code they make unreachable, its decided branches hard-wired and its
// exits made jumps past its end; ok is false when an InlineBail stays
// reachable.
func specializeBody(body []insn.Insn, f *KfuncFacts) (out []insn.Insn, ok bool) {
	type state struct {
		regs    [6]tnum
		dynptr  [6]int8 // the dynptr argument a register points to, -1 for none
		reached bool
	}
	states := make([]state, len(body)+1)
	for r := range states[0].regs {
		states[0].regs[r] = tnumUnknown
		states[0].dynptr[r] = -1
	}
	for i := 0; i < 5; i++ {
		states[0].regs[i+1] = f.Args[i]
		if f.Dynptr[i] {
			states[0].dynptr[i+1] = int8(i)
		}
	}
	states[0].reached = true
	join := func(to int, s state) {
		t := &states[to]
		if !t.reached {
			*t = s
			return
		}
		for r := range t.regs {
			t.regs[r] = t.regs[r].union(s.regs[r])
			if t.dynptr[r] != s.dynptr[r] {
				t.dynptr[r] = -1
			}
		}
	}
	// taken[i]: 1 jump, 2 fall through, 3 both.
	taken := make([]uint8, len(body))
	for i, in := range body {
		s := states[i]
		if !s.reached {
			continue
		}
		if in == InlineBail {
			return nil, false
		}
		cls := in.Class()
		switch {
		case in.Code == insn.JMP|insn.EXIT:
			continue
		case cls == insn.JMP || cls == insn.JMP32:
			if in.Op() == insn.JA {
				join(i+1+int(in.Off), s)
				taken[i] = 1
				continue
			}
			src := tnumConst(uint64(int64(in.Imm)))
			if in.Source() == insn.X {
				src = s.regs[in.Src]
			}
			dst := s.regs[in.Dst]
			if cls == insn.JMP32 {
				dst, src = dst.subreg(), src.cast(4)
			}
			switch tnumBranch(dst, src, in.Op(), cls == insn.JMP32) {
			case 1:
				taken[i] = 1
				join(i+1+int(in.Off), s)
			case 0:
				taken[i] = 2
				join(i+1, s)
			default:
				taken[i] = 3
				join(i+1+int(in.Off), s)
				join(i+1, s)
			}
			continue
		case cls == insn.LDX:
			v := tnumUnknown
			if p := s.dynptr[in.Src]; p >= 0 && in.Off == uapi.DynptrOffSize && in.Code == insn.LDX|insn.MEM|insn.W {
				v = f.DynptrWord[p]
			}
			s.regs[in.Dst], s.dynptr[in.Dst] = v, -1
		case cls == insn.ALU || cls == insn.ALU64:
			s.regs[in.Dst] = tnumALU(in, s.regs[in.Dst], s.regs[in.Src])
			s.dynptr[in.Dst] = -1
			if in.Op() == insn.MOV && in.Source() == insn.X && cls == insn.ALU64 && in.Off == 0 {
				s.dynptr[in.Dst] = states[i].dynptr[in.Src]
			}
		}
		join(i+1, s)
	}
	// Emit what is reached; a decided branch becomes a jump or nothing.
	newIdx := make([]int, len(body)+1)
	var keep []int
	for i, in := range body {
		newIdx[i] = len(keep)
		if !states[i].reached {
			continue
		}
		cls := in.Class()
		isCond := (cls == insn.JMP || cls == insn.JMP32) && in.Op() != insn.JA && in.Op() != insn.EXIT && in.Op() != insn.CALL
		if isCond && taken[i] == 2 {
			continue // never jumps: falls through
		}
		keep = append(keep, i)
	}
	newIdx[len(body)] = len(keep)
	end := len(keep) // the instruction after the inlined body
	for n, i := range keep {
		in := body[i]
		cls := in.Class()
		switch {
		case in.Code == insn.JMP|insn.EXIT:
			in = insn.Insn{Code: insn.JMP | insn.JA, Off: int16(end - n - 1)}
		case cls == insn.JMP || cls == insn.JMP32:
			target := newIdx[i+1+int(in.Off)]
			if taken[i] == 1 && in.Op() != insn.JA {
				in = insn.Insn{Code: insn.JMP | insn.JA}
			}
			in.Off = int16(target - n - 1)
		}
		out = append(out, in)
	}
	// Jumps to the very next instruction are nops: drop them, fixing up
	// the jumps over them.
	for {
		k := -1
		for n, in := range out {
			if in.Code == insn.JMP|insn.JA && in.Off == 0 {
				k = n
				break
			}
		}
		if k < 0 {
			return out, true
		}
		for n := range out {
			in := &out[n]
			cls := in.Class()
			if (cls == insn.JMP || cls == insn.JMP32) && in.Op() != insn.EXIT && in.Op() != insn.CALL {
				if t := n + 1 + int(in.Off); n < k && t > k {
					in.Off--
				}
			}
		}
		out = append(out[:k], out[k+1:]...)
	}
}

// tnumALU is an ALU instruction on tristate numbers: what bits of the
// result are known.
func tnumALU(in insn.Insn, dst, src tnum) tnum {
	if in.Source() == insn.K {
		src = tnumConst(uint64(int64(in.Imm)))
	}
	is32 := in.Class() == insn.ALU
	if is32 {
		dst, src = dst.subreg(), src.cast(4)
	}
	var r tnum
	switch in.Op() {
	case insn.MOV:
		r = src
	case insn.ADD:
		r = dst.add(src)
	case insn.SUB:
		r = dst.sub(src)
	case insn.AND:
		r = dst.and(src)
	case insn.OR:
		r = dst.or(src)
	case insn.XOR:
		r = dst.xor(src)
	case insn.LSH, insn.RSH:
		if !src.isConst() {
			return tnumUnknown
		}
		if in.Op() == insn.LSH {
			r = dst.lsh(uint8(src.value))
		} else {
			r = dst.rsh(uint8(src.value))
		}
	default:
		return tnumUnknown
	}
	if is32 {
		r = r.cast(4)
	}
	return r
}

// tnumBranch decides an unsigned or equality comparison from known bits:
// 1 always taken, 0 never, -1 either.
func tnumBranch(a, b tnum, op uint8, is32 bool) int {
	switch op {
	case insn.JEQ, insn.JNE:
		eq := -1
		switch {
		case a.isConst() && b.isConst():
			eq = b2i(a.value == b.value)
		case (a.value^b.value)&^(a.mask|b.mask) != 0:
			eq = 0 // a known bit differs
		}
		if eq < 0 || op == insn.JEQ {
			return eq
		}
		return 1 - eq
	case insn.JGT:
		return decide(a.umin() > b.umax(), a.umax() <= b.umin())
	case insn.JGE:
		return decide(a.umin() >= b.umax(), a.umax() < b.umin())
	case insn.JLT:
		return decide(a.umax() < b.umin(), a.umin() >= b.umax())
	case insn.JLE:
		return decide(a.umax() <= b.umin(), a.umin() > b.umax())
	case insn.JSET:
		if a.and(b).value != 0 {
			return 1
		}
		if a.and(b).isConst() {
			return 0
		}
	}
	return -1
}

func decide(always, never bool) int {
	switch {
	case always:
		return 1
	case never:
		return 0
	}
	return -1
}
