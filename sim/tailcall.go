package sim

import (
	"sync/atomic"

	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/arraymap"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// Tail calls (bpf_tail_call, helper 12): the verifier checks the call
// like a helper's (ctx, a prog array, an index) and the fix-ups turn it
// into the kernel-internal tail call instruction, BPF_JMP|BPF_TAIL_CALL
// (0xf5), which the interpreter runs: it reads the slot of the prog array
// r2 points to and, if there is a program there and the chain has made
// fewer than 33 tail calls, continues at that program's first
// instruction with the same context, stack and frames
// (___bpf_prog_run, JMP_TAIL_CALL in kernel/bpf/core.c).

// registerTailCall adds bpf_tail_call to the helper table, for the
// verifier's prototype. The fix-ups replace every call of it, so its
// function only runs in a program loaded unverified, which cannot tail
// call.
func (k *Kernel) registerTailCall() {
	h := &Helper{ID: uapi.FuncTailCall, Fn: func(m *interp.Machine, _, _, _, _, _ uint64) (uint64, error) {
		return 0, &interp.RuntimeError{PC: m.PC(), Errno: uapi.EINVAL,
			Msg: "bpf_tail_call needs a verified program: the verifier's fix-ups make it a tail call instruction"}
	}}
	if err := k.RegisterHelper(h); err != nil {
		panic(err)
	}
}

// tailCallTarget is what the tail call instruction reads: the program in
// slot index of the prog array at address array.
func (k *Kernel) tailCallTarget(m *interp.Machine, array uint64, index uint32) (*interp.Program, bool, error) {
	p, inBounds, err := k.tailCallProg(m, array, index)
	if p == nil {
		return nil, inBounds, err
	}
	code, err := p.interpCode()
	return code, true, err
}

// tailCallProg returns the program in slot index of the prog array at
// address array, nil for an empty slot, and whether index is in bounds.
func (k *Kernel) tailCallProg(m *interp.Machine, array uint64, index uint32) (*Program, bool, error) {
	mp, ok := k.progMap(m, array)
	if !ok {
		return nil, false, errors.Wrapf(uapi.EFAULT, "pc %d: tail call: r2=%#x is not a map", m.PC(), array)
	}
	t, ok := mp.Ops.(maps.TailCallTarget)
	if !ok {
		return nil, false, errors.Wrapf(uapi.EFAULT, "pc %d: tail call through a %s map", m.PC(), mp.Attr.Type)
	}
	obj, inBounds := t.ProgAt(index)
	if obj == nil {
		return nil, inBounds, nil
	}
	po, ok := obj.(*progObject)
	if !ok {
		return nil, inBounds, errors.Wrapf(uapi.EFAULT, "pc %d: tail call: slot %d holds no bpfsim program", m.PC(), index)
	}
	return po.p, true, nil
}

// checkTailCallMaps is bpf_check_tail_call: every program-holding map the
// program uses must accept it as compatible with its owner, and the first
// program checked becomes the owner, whether or not it is ever stored in
// the map.
func (p *Program) checkTailCallMaps() error {
	for _, m := range p.usedMaps {
		h, ok := m.Ops.(maps.ProgHolder)
		if !ok {
			continue
		}
		if !h.ProgCompatible(p.obj.ProgOwner()) {
			return errors.Wrapf(uapi.EINVAL, "program of type %s is not compatible with the owner of %s map %d", p.typ, m.Attr.Type, m.ID)
		}
	}
	return nil
}

// PokeDescriptors returns the program's poke descriptors: one per tail
// call whose prog array and index the verifier knew, with the index of the
// tail call instruction in the xlated program (whose imm is the
// descriptor's position plus one). A JIT emits a direct jump there and
// patches it whenever the slot changes; bpfsim's interpreter reads the
// slot at every tail call, so they only document the program for now.
func (p *Program) PokeDescriptors() []verifier.PokeDesc {
	return append([]verifier.PokeDesc(nil), p.pokes...)
}

// pokeTracker is the program as a prog array's poke list sees it.
type pokeTracker struct {
	p    *Program
	runs atomic.Int64
}

// PokeRun counts the slot changes the program was told of and, for a
// JITed program, patches its direct tail calls through the slot; the
// interpreter has no code to patch.
func (t *pokeTracker) PokeRun(m *maps.Map, key uint32, _, new maps.ProgObject) {
	t.runs.Add(1)
	t.p.k.pokeRunJIT(t.p, m, key, new)
}

// trackPokes registers the program with every map its poke descriptors
// name (map_poke_track, after do_misc_fixups).
func (p *Program) trackPokes() {
	if len(p.pokes) == 0 {
		return
	}
	p.poke = &pokeTracker{p: p}
	seen := map[*maps.Map]bool{}
	for _, d := range p.pokes {
		if seen[d.Map] {
			continue
		}
		seen[d.Map] = true
		if t, ok := d.Map.Ops.(arraymap.PokeTracking); ok {
			t.PokeTrack(p.poke)
		}
	}
}

// untrackPokes is map_poke_untrack, when the program is freed.
func (p *Program) untrackPokes() {
	if p.poke == nil {
		return
	}
	for _, d := range p.pokes {
		if t, ok := d.Map.Ops.(arraymap.PokeTracking); ok {
			t.PokeUntrack(p.poke)
		}
	}
	p.poke = nil
}

// toDump is bpf_insn_prepare_dump's view of the xlated code: user space
// sees the tail call instruction as the helper call it replaced, and a
// probe load (BPF_PROBE_MEM) as the load it was.
func toDump(insns []insn.Insn) []insn.Insn {
	out := append([]insn.Insn(nil), insns...)
	for i, in := range out {
		switch {
		case in.Code == insn.JMP|insn.TailCall:
			out[i] = insn.Insn{Code: insn.JMP | insn.CALL, Imm: uapi.FuncTailCall}
		case in.Class() == insn.LDX && in.Mode() == insn.ProbeMem:
			out[i].Code = insn.LDX | insn.MEM | in.SizeBits()
		case in.Class() == insn.LDX && in.Mode() == insn.ProbeMemSX:
			out[i].Code = insn.LDX | insn.MEMSX | in.SizeBits()
		}
	}
	return out
}

// fromDump undoes toDump for xlated code read back from a kernel: a call
// of helper 12 there is a tail call instruction.
func fromDump(insns []insn.Insn) []insn.Insn {
	out := append([]insn.Insn(nil), insns...)
	for i, in := range out {
		if in.Code == insn.JMP|insn.CALL && in.Src == 0 && in.Imm == uapi.FuncTailCall {
			out[i] = insn.Insn{Code: insn.JMP | insn.TailCall}
		}
	}
	return out
}

// checkTailCallReturns is the tail call rule of check_btf_func: a
// subprogram that tail calls returns what the target returns, an int, so
// its BTF must say it returns a scalar (an integer or an enum).
func checkTailCallReturns(insns []insn.Insn, subs []verifier.Subprog, src *source) error {
	if src == nil || src.funcs == nil {
		return nil
	}
	for i, s := range subs {
		fn := src.funcs[s.Start]
		if i == 0 || fn == nil || !verifier.HasTailCall(insns, s) {
			continue
		}
		proto, ok := fn.Type.(*btf.FuncProto)
		if !ok {
			continue
		}
		ret := btf.UnderlyingType(proto.Return) // skips typedefs and qualifiers
		scalar := false
		switch t := ret.(type) {
		case *btf.Int:
			scalar = t.Size <= 8
		case *btf.Enum:
			scalar = true
		}
		if !scalar {
			return errors.WithStack(&verifier.Error{Errno: uapi.EINVAL, Msg: "tail_call is only allowed in functions that return 'int'."})
		}
	}
	return nil
}
