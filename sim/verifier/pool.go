package verifier

import (
	"math/bits"
	"sync"

	"github.com/bpfsim/bpfsim/sim/insn"
)

// loadBufs are the per-instruction arrays one load goes through: the
// verifier's findings, then the rewrites' original indices and spare
// buffers. A finished load hands them back (Prog.Release) for the next:
// a test suite loads thousands of programs, and without reuse the garbage
// collector spends more time on these arrays than the verifier spends
// filling them. One pooled set per load, rather than a pool per array,
// keeps each Get and Put free of allocations.
type loadBufs struct {
	aux   []InsnAux
	orig  []int
	spare spareBufs
}

// spareBufs hold the arrays a rewrite replaced, for the next one to write
// into: a load runs several rewrites in a row.
type spareBufs struct {
	insns []insn.Insn
	aux   []InsnAux
	orig  []int
	start []int
	// remove is deadCodeAndNops' answer, read by the rewrite after it.
	remove []bool
}

var loadBufsPool = sync.Pool{New: func() any { return new(loadBufs) }}

// zeroed returns s[:n] cleared, or a new slice if s cannot hold n.
func zeroed[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n, roomFor(n))
	}
	s = s[:n]
	clear(s)
	return s
}

// roomFor is the capacity a pooled buffer gets when it must grow to n:
// the next power of two. Loads often come in ascending sizes (test_tag
// loads every length from 2 to 4,096 in order); buffers of exactly n
// would be too small for the next program every time.
func roomFor(n int) int {
	if n <= 16 {
		return 16
	}
	return 1 << bits.Len(uint(n-1))
}

// Release hands the arrays p no longer needs back for other loads: its
// findings, its original indices and the spare buffers of its rewrites.
// p.Insns, p.Subprogs, p.Lines and p.FuncInfo stay the caller's; nothing
// else of p may be used afterwards.
func (p *Prog) Release() {
	b := p.bufs
	if b == nil {
		b = new(loadBufs)
	}
	b.aux, b.orig, b.spare = p.Aux[:0], p.Orig[:0], p.spare
	// The spare instructions are the ones before the last rewrite; the
	// caller keeps p.Insns.
	p.Aux, p.Orig, p.spare, p.bufs = nil, nil, spareBufs{}, nil
	loadBufsPool.Put(b)
}
