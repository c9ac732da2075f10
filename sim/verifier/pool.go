package verifier

import (
	"sync"

	"github.com/bpfsim/bpfsim/sim/insn"
)

// slicePool keeps the per-instruction arrays of finished loads for the next
// ones: a test suite loads thousands of programs, and without reuse the
// garbage collector spends more time on these arrays than the verifier
// spends filling them.
type slicePool[T any] struct{ p sync.Pool }

// get returns a zeroed slice of n elements.
func (sp *slicePool[T]) get(n int) []T {
	if b, ok := sp.p.Get().(*[]T); ok && cap(*b) >= n {
		s := (*b)[:n]
		clear(s)
		return s
	}
	return make([]T, n)
}

// put hands s back; the caller must not use it afterwards.
func (sp *slicePool[T]) put(s []T) {
	if cap(s) == 0 {
		return
	}
	s = s[:0]
	sp.p.Put(&s)
}

var (
	auxPool   slicePool[InsnAux]
	intPool   slicePool[int]
	insnsPool slicePool[insn.Insn]
)

// Release hands the arrays p no longer needs back for other loads: its
// findings, its original indices and the spare buffers of its rewrites.
// p.Insns, p.Subprogs, p.Lines and p.FuncInfo stay the caller's; nothing
// else of p may be used afterwards.
func (p *Prog) Release() {
	auxPool.put(p.Aux)
	auxPool.put(p.spare.aux)
	intPool.put(p.Orig)
	intPool.put(p.spare.orig)
	intPool.put(p.spare.start)
	insnsPool.put(p.spare.insns)
	p.Aux, p.Orig = nil, nil
	p.spare.aux, p.spare.orig, p.spare.start, p.spare.insns = nil, nil, nil, nil
}
