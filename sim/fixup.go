package sim

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// source is what a program's ELF object says about its source: the BTF
// line info and the func info, by instruction slot.
type source struct {
	lines []verifier.LineInfo
	funcs map[int]*btf.Func
}

// sourceOf collects the line and func info cilium/ebpf attached to the
// instructions, counting slots the way the encoded program does (an lddw
// takes two).
func sourceOf(in asm.Instructions) *source {
	src := &source{}
	slot := 0
	for i := range in {
		ins := &in[i]
		if !insn.HasMetadata(ins) {
			slot += int(ins.Size() / asm.InstructionSize)
			continue
		}
		if l := ins.Source(); l != nil {
			src.lines = append(src.lines, verifier.LineInfo{Insn: slot, Line: l})
		}
		if fn := btf.FuncMetadata(ins); fn != nil {
			if src.funcs == nil {
				src.funcs = map[int]*btf.Func{}
			}
			src.funcs[slot] = fn
		}
		slot += int(ins.Size() / asm.InstructionSize)
	}
	if src.lines == nil && src.funcs == nil {
		return nil
	}
	return src
}

// lineInfo returns the BTF line info, nil for none.
func (s *source) lineInfo() []verifier.LineInfo {
	if s == nil {
		return nil
	}
	return s.lines
}

// funcBTF returns the BTF func info of the function that starts at
// instruction start, nil for none.
func (s *source) funcBTF(start int) *btf.Func {
	if s == nil {
		return nil
	}
	return s.funcs[start]
}

// fixup runs the verifier's rewrite passes on a program that verification
// accepted, and keeps what the program holds per instruction in step: the
// maps its lddw instructions load, its functions, its line and func info.
// Afterwards its calls go to kernel functions by address.
func (k *Kernel) fixup(p *Program, src *source) error {
	// The verifier's per-instruction findings are only needed here: the
	// rewrites take them over.
	vp := verifier.AdoptProg(p.xlated, p.verified)
	p.verified.Aux, p.verified.Subprogs = nil, nil
	if src != nil {
		vp.Lines = append([]verifier.LineInfo(nil), src.lines...)
		if src.funcs != nil {
			// One record per function, as the kernel requires of func
			// info; a function without one gets nil.
			vp.FuncInfo = make([]*btf.Func, len(vp.Subprogs))
			for i, sp := range vp.Subprogs {
				vp.FuncInfo[i] = src.funcs[sp.Start]
			}
		}
	}
	typ, _ := verifier.ProgTypeFor(p.typ, p.attachType)
	p.aux = k.newProgAux(p)
	if err := verifier.Fixup(vp, &verifier.FixupConfig{HardWire: k.hardWire, Calls: kfuncCalls{kernelCalls{k}, p}, Type: typ, ProgAux: p.aux, InlineKfuncs: k.inlineKfuncs, Sleepable: p.sleepable}); err != nil {
		return err
	}
	p.ctxConverted = convertsCtx(p.typ)
	// The rewrites never create or move an lddw of a map, so each one
	// left is found through its original index; both lists are in
	// instruction order, and the list is renumbered in place (an entry
	// is written at or before the one it came from).
	loads := p.mapLoads[:0]
	next := 0
	for i, in := range vp.Insns {
		if next == len(p.mapLoads) {
			break
		}
		if !in.IsLdImm64() {
			continue
		}
		o := vp.Orig[i]
		for next < len(p.mapLoads) && p.mapLoads[next].Insn < o {
			next++
		}
		if next < len(p.mapLoads) && p.mapLoads[next].Insn == o {
			l := p.mapLoads[next]
			l.Insn = i
			loads = append(loads, l)
			next++
		}
	}
	if len(loads) == 0 {
		loads = nil
	}
	p.xlated, p.subprogs, p.mapLoads = vp.Insns, vp.Subprogs, loads
	p.lines, p.funcs = vp.Lines, vp.FuncInfo
	p.pokes = vp.Pokes
	p.trackPokes()
	vp.Release()
	p.fixedUp = true
	return nil
}

// lineAt returns the source line that starts at instruction i, for dumps.
func (p *Program) lineAt(i int, next *int) (verifier.LineInfo, bool) {
	for *next < len(p.lines) && p.lines[*next].Insn < i {
		*next++
	}
	if *next < len(p.lines) && p.lines[*next].Insn == i {
		return p.lines[*next], true
	}
	return verifier.LineInfo{}, false
}

// convertsCtx says whether the verifier's rewrites convert the context
// loads of programs of type typ.
func convertsCtx(typ ebpf.ProgramType) bool {
	t, _ := verifier.ProgTypeFor(typ, ebpf.AttachNone)
	_, ok := t.(verifier.CtxConverter)
	return ok
}
