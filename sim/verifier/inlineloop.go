package verifier

import (
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// optimizeBpfLoop is optimize_bpf_loop: each bpf_loop call that passed
// flags 0 and one callback on every path becomes a loop in the program
// that calls the callback directly (inline_bpf_loop). The loop keeps its
// bound, counter and context in R6, R7 and R8, whose values it saves in
// three new stack slots below the function's stack; the function's stack
// grows by them (once, however many calls it inlines). The kernel runs
// the pass before dead code removal.
func optimizeBpfLoop(p *Prog) error {
	var extra []int
	for i := 0; i < len(p.Insns); i++ {
		in := p.Insns[i]
		if in.Code != insn.JMP|insn.CALL || in.Src != 0 || in.Imm != uapi.FuncLoop || !p.Aux[i].Loop.Fit {
			continue
		}
		if extra == nil {
			extra = make([]int, len(p.Subprogs))
		}
		s := subprogAt(p.Subprogs, i)
		depth := p.Subprogs[s].StackDepth
		extra[s] = 3*regSize + roundUp(depth, regSize) - depth
		seq := inlineLoopInsns(int16(-(depth + extra[s])))
		callback := p.Aux[i].Loop.Callback
		if err := p.Patch(i, seq); err != nil {
			return err
		}
		// The callback's start is known once the patch is in.
		call := i + inlineLoopCall
		p.Insns[call].Imm = int32(p.Subprogs[callback].Start - call - 1)
		i += len(seq) - 1
	}
	for s, n := range extra {
		p.Subprogs[s].StackDepth += n
	}
	return nil
}

// inlineLoopCall is the index of the callback's call in inlineLoopInsns.
const inlineLoopCall = 12

// inlineLoopInsns is inline_bpf_loop's sequence, bpf_loop written in BPF
// (kernel/bpf/bpf_iter.c): at most BPF_MAX_LOOPS calls (-E2BIG
// otherwise), each with the index and the context, until the callback
// returns non-zero; R0 is the number of calls. base is the lowest of the
// three slots that keep R6 to R8.
func inlineLoopInsns(base int16) []insn.Insn {
	const r0, r1, r2, r3, r6, r7, r8, fp = 0, 1, 2, 3, 6, 7, 8, 10
	stx := func(off int16, src uint8) insn.Insn {
		return insn.Insn{Code: insn.STX | insn.MEM | insn.DW, Dst: fp, Src: src, Off: off}
	}
	ldx := func(dst uint8, off int16) insn.Insn {
		return insn.Insn{Code: insn.LDX | insn.MEM | insn.DW, Dst: dst, Src: fp, Off: off}
	}
	mov := func(dst, src uint8) insn.Insn {
		return insn.Insn{Code: insn.ALU64 | insn.MOV | insn.X, Dst: dst, Src: src}
	}
	return []insn.Insn{
		{Code: insn.JMP | insn.JLE | insn.K, Dst: r1, Off: 2, Imm: uapi.BPF_MAX_LOOPS},
		{Code: insn.ALU | insn.MOV | insn.K, Dst: r0, Imm: -int32(uapi.E2BIG)},
		{Code: insn.JMP | insn.JA, Off: 16},
		stx(base, r6),
		stx(base+regSize, r7),
		stx(base+2*regSize, r8),
		mov(r6, r1),
		{Code: insn.ALU | insn.MOV | insn.K, Dst: r7},
		mov(r8, r3),
		{Code: insn.JMP | insn.JGE | insn.X, Dst: r7, Src: r6, Off: 5},
		mov(r1, r7),
		mov(r2, r8),
		{Code: insn.JMP | insn.CALL, Src: insn.PseudoCall}, // inlineLoopCall
		{Code: insn.ALU64 | insn.ADD | insn.K, Dst: r7, Imm: 1},
		{Code: insn.JMP | insn.JEQ | insn.K, Dst: r0, Off: -6},
		mov(r0, r7),
		ldx(r6, base),
		ldx(r7, base+regSize),
		ldx(r8, base+2*regSize),
	}
}

// numberCallbacks gives each callback's lddw, in its second slot, the
// index of the function it loads: where jit_subprogs leaves it in the
// program a dump shows (the first slot keeps the relative offset).
func numberCallbacks(p *Prog) {
	for i := 0; i+1 < len(p.Insns); i++ {
		if in := p.Insns[i]; in.IsLdImm64() {
			if in.Src == insn.PseudoFunc {
				p.Insns[i+1].Imm = int32(subprogAt(p.Subprogs, i+1+int(in.Imm)))
			}
			i++
		}
	}
}

// subprogAt returns the function that holds instruction i.
func subprogAt(subs []Subprog, i int) int {
	for s := len(subs) - 1; s > 0; s-- {
		if subs[s].Start <= i {
			return s
		}
	}
	return 0
}
