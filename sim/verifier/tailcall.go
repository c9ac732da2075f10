package verifier

import (
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Tail calls in the verifier (kernel/bpf/verifier.c, fixups.c):
// bpf_tail_call(ctx, prog_array, index) is checked like a helper whose map
// must be a prog array (check_map_func_compatibility); the index it is
// called with is recorded per call site (record_func_key); in a
// subprogram, a tail call that succeeds returns from the subprogram with
// the target's return value, so the verifier explores that exit as well;
// the stack the frames below a tail-calling subprogram use is limited
// (check_max_stack_depth); and the fix-ups turn the call into the
// kernel-internal tail call instruction, with a poke descriptor when map
// and index are known.

// maxTailCallCallerStack is the stack the frames below a subprogram with a
// tail call may use: with up to 33 tail calls in a chain, each leaving
// its caller's frames in place, the worst case stays near 8 KiB.
const maxTailCallCallerStack = 256

// PokeDesc is struct bpf_jit_poke_descriptor for a tail call: the tail
// call instruction at Insn (in the xlated program) always goes through
// slot Key of Map, so a JIT may emit a direct jump there and patch it
// whenever the slot changes (map_poke_run).
type PokeDesc struct {
	Map  *maps.Map
	Key  uint32
	Insn int
}

// The states of InsnAux.MapKey (bpf_map_key_store): a tail call site
// records the index it was called with, or that it saw several.
const (
	mapKeyUnseen uint8 = iota
	mapKeyConst
	mapKeyPoison
)

// recordFuncKey is record_func_key: the index a tail call site uses, if
// every path gives the same constant below max_entries.
func (e *env) recordFuncKey(meta *callMeta, id int32, idx int) error {
	if id != uapi.FuncTailCall {
		return nil
	}
	m := meta.mapPtr
	if m == nil || m.Attr.Type != uapi.MapTypeProgArray {
		return e.errorf(uapi.EINVAL, "kernel subsystem misconfigured verifier")
	}
	reg := &e.regs()[insn.R3]
	aux := &e.aux[idx]
	val := reg.varOff.value
	if !(reg.typ == scalarValue && reg.isConst() && val < uint64(m.MaxEntries)) {
		aux.MapKeyState = mapKeyPoison
		return nil
	}
	if err := e.markPrecise(insn.R3); err != nil {
		return err
	}
	switch {
	case aux.MapKeyState == mapKeyUnseen:
		aux.MapKeyState, aux.MapKey = mapKeyConst, val
	case aux.MapKeyState == mapKeyConst && aux.MapKey != val:
		aux.MapKeyState = mapKeyPoison
	}
	return nil
}

// tailCallExit is the tail call's second outcome in a subprogram: the
// failed tail call continues after the call (queued), the successful one
// leaves the subprogram with whatever the target returned, and packet
// pointers, which the target may have invalidated, are gone. It returns
// where the current path continues: after the subprogram's call.
func (e *env) tailCallExit(idx int) (int, error) {
	e.scratchReg(insn.R0)
	if _, err := e.pushStack(idx+1, idx); err != nil {
		return 0, err
	}
	e.clearAllPktPointers()
	e.regs()[insn.R0].markUnknown()
	return e.prepareFuncExit()
}

// clearAllPktPointers is clear_all_pkt_pointers for a privileged loader:
// every packet pointer, in registers or spilled, of every frame, becomes
// an unknown scalar (mark_reg_invalid).
func (e *env) clearAllPktPointers() {
	for _, f := range e.cur.frames[:e.cur.curframe+1] {
		for i := range f.regs {
			if r := &f.regs[i]; r.isPkt() || r.typ == ptrToPacketEnd || r.isPktSlice() {
				r.markUnknown()
			}
		}
		for i := range f.stack {
			s := &f.stack[i]
			if r := &s.spilled; s.isSpilled() && (r.isPkt() || r.typ == ptrToPacketEnd || r.isPktSlice()) {
				r.markUnknown()
			}
		}
	}
}

// hasTailCall reports whether subprogram s calls bpf_tail_call anywhere,
// reached or not (subprog_info.has_tail_call, set when subprograms are
// found).
func (e *env) hasTailCall(s Subprog) bool {
	for i := s.Start; i < s.End; i++ {
		if in := e.insns[i]; in.Code == insn.JMP|insn.CALL && in.Src == 0 && in.Imm == uapi.FuncTailCall {
			return true
		}
	}
	return false
}

// HasTailCall reports whether insns[start:end] call bpf_tail_call, for
// the loader's BTF checks (check_btf_func).
func HasTailCall(insns []insn.Insn, s Subprog) bool {
	for i := s.Start; i < s.End && i < len(insns); i++ {
		if in := insns[i]; in.Code == insn.JMP|insn.CALL && in.Src == 0 && in.Imm == uapi.FuncTailCall {
			return true
		}
	}
	return false
}

// fixupTailCall is do_misc_fixups for a tail call at i: the call becomes
// BPF_JMP|BPF_TAIL_CALL. bpfsim's loader is privileged, never blinds
// constants and always asks for the JIT, so a site whose map and key are
// known gets a poke descriptor and imm = its position + 1; any other gets
// imm 0.
func fixupTailCall(p *Prog, i int) {
	aux := &p.Aux[i]
	in := insn.Insn{Code: insn.JMP | insn.TailCall}
	if aux.MapPtr != nil && !aux.MapPoisoned && aux.MapKeyState == mapKeyConst {
		p.Pokes = append(p.Pokes, PokeDesc{Map: aux.MapPtr, Key: uint32(aux.MapKey), Insn: i})
		in.Imm = int32(len(p.Pokes))
	}
	p.Insns[i] = in
}

// placePokes sets each poke descriptor's instruction to where its tail
// call ended up once the fix-ups' sequences were spliced in.
func placePokes(p *Prog) {
	for i, in := range p.Insns {
		if in.Code == insn.JMP|insn.TailCall && in.Imm > 0 && int(in.Imm) <= len(p.Pokes) {
			p.Pokes[in.Imm-1].Insn = i
		}
	}
}
