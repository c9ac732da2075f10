package verifier

import (
	"fmt"
	"strings"
)

// Loops of the control flow graph (kernel/bpf/verifier.c: compute_scc,
// Linux 6.17). A checkpoint is compared range by range only while the
// loop it lies in is still being explored (incomplete_read_marks, below):
// a checkpoint outside every loop, such as one in a callback's body
// without a loop of its own, is compared as any other, however its path
// reached it.

// computeLoops numbers the loops of succ, the successors computeLiveness
// left (calls and callback addresses lead to the next instruction only,
// as insn_successors has them): out[i] is the loop instruction i lies on,
// 0 for none. A loop is a strongly connected component of more than one
// instruction, or an instruction that jumps to itself; loops are numbered
// from 1 as their depth-first search completes them, as compute_scc
// numbers them (the log's "Live regs before insn" shows the numbers).
// Tarjan's algorithm, without recursion.
func computeLoops(succ [][2]int, out []int32, sc *loopScratch) []int32 {
	n := len(succ)
	out = growInt32s(out, n)
	next := int32(1)
	sc.index = growInt32s(sc.index, n) // 0: not visited; else DFS order + 1
	sc.low = growInt32s(sc.low, n)
	sc.onStack = clearBools(sc.onStack, n)
	index, low, onStack := sc.index, sc.low, sc.onStack
	stack := sc.stack[:0] // Tarjan's stack
	call := sc.call[:0]
	defer func() { sc.stack, sc.call = stack[:0], call[:0] }()
	order := int32(0)
	for root := 0; root < n; root++ {
		if index[root] != 0 {
			continue
		}
		call = append(call[:0], loopFrame{v: int32(root)})
		order++
		index[root], low[root] = order, order
		stack = append(stack, int32(root))
		onStack[root] = true
		for len(call) > 0 {
			f := &call[len(call)-1]
			v := f.v
			if f.next < 2 {
				w := succ[v][f.next]
				f.next++
				if w < 0 || w >= n {
					continue
				}
				if index[w] == 0 {
					order++
					index[w], low[w] = order, order
					stack = append(stack, int32(w))
					onStack[w] = true
					call = append(call, loopFrame{v: int32(w)})
				} else if onStack[w] {
					low[v] = min(low[v], index[w])
				}
				continue
			}
			call = call[:len(call)-1]
			if len(call) > 0 {
				p := call[len(call)-1].v
				low[p] = min(low[p], low[v])
			}
			if low[v] != index[v] {
				continue
			}
			// v roots a component: pop it.
			top := len(stack) - 1
			for stack[top] != v {
				top--
			}
			comp := stack[top:]
			if len(comp) > 1 || succ[v][0] == int(v) || succ[v][1] == int(v) {
				for _, w := range comp {
					out[w] = next
				}
				next++
			}
			for _, w := range comp {
				onStack[w] = false
			}
			stack = stack[:top]
		}
	}
	return out
}

// loopScratch is computeLoops' memory, kept between verifications.
type loopScratch struct {
	index, low []int32
	onStack    []bool
	stack      []int32
	call       []loopFrame
}

// loopFrame is a function call of Tarjan's recursion: an instruction and
// how many of its successors were visited.
type loopFrame struct {
	v    int32
	next uint8
}

func growInt32s(b []int32, n int) []int32 {
	if cap(b) < n {
		return make([]int32, n, roomFor(n))
	}
	b = b[:n]
	clear(b)
	return b
}

// Loop convergence (Linux 6.17: compute_scc_callchain, maybe_enter_scc,
// maybe_exit_scc, add_scc_backedge, incomplete_read_marks,
// propagate_backedges). A checkpoint inside a loop lacks the precision
// and read marks of the loop's paths not yet explored, so it may cover a
// state only range by range until they are all explored. The first
// checkpoint a path takes inside a loop is the loop's entry (per chain
// of calls leading to the loop: a function's loop called from two places
// is two visits); a state pruned inside the loop while marks are
// incomplete is kept as a backedge; when the entry's last path ends, the
// marks of each state a backedge was pruned against flow to the
// backedge's checkpoints, over and over until nothing changes.

// sccCallchain is struct bpf_scc_callchain: the call sites of the frames
// above the first whose instruction lies on a loop, and that loop.
type sccCallchain struct {
	callsites [maxCallFrames - 1]int32
	scc       int32
}

// sccVisit is struct bpf_scc_visit.
type sccVisit struct {
	entry     *vstate
	backedges []sccBackedge // oldest first
}

// sccBackedge is a pruned state (a copy) and the checkpoint that covered
// it (equal_state).
type sccBackedge struct {
	st, equal *vstate
}

// computeSccCallchain is compute_scc_callchain.
func (e *env) computeSccCallchain(st *vstate) (sccCallchain, bool) {
	var c sccCallchain
	for i := 0; i <= st.curframe; i++ {
		idx := st.insnIdx
		if i < st.curframe {
			idx = st.frames[i+1].callsite
		}
		if idx < 0 || idx >= len(e.scc) {
			return c, false
		}
		if s := e.scc[idx]; s != 0 {
			c.scc = s
			return c, true
		}
		if i == st.curframe {
			return c, false
		}
		c.callsites[i] = int32(idx)
	}
	return c, false
}

// String is format_callchain: "(callsite,...,scc)".
func (c sccCallchain) String() string {
	var b strings.Builder
	b.WriteByte('(')
	for _, cs := range c.callsites {
		if cs == 0 {
			break
		}
		fmt.Fprintf(&b, "%d,", cs)
	}
	fmt.Fprintf(&b, "%d)", c.scc)
	return b.String()
}

// maybeEnterScc is maybe_enter_scc, for a new checkpoint.
func (e *env) maybeEnterScc(st *vstate) {
	c, ok := e.computeSccCallchain(st)
	if !ok {
		return
	}
	if e.visits == nil {
		e.visits = map[sccCallchain]*sccVisit{}
	}
	v := e.visits[c]
	if v == nil {
		v = &sccVisit{}
		e.visits[c] = v
	}
	if v.entry == nil {
		v.entry = st
		st.sccEntry = true
		if e.log.level >= 2 {
			e.log.printf("SCC enter %s", c)
		}
	}
}

// maybeExitScc is maybe_exit_scc: st's paths are all explored; if it
// entered its loop, the loop's marks are now complete.
func (e *env) maybeExitScc(st *vstate) error {
	if !st.sccEntry {
		return nil
	}
	c, _ := e.computeSccCallchain(st)
	v := e.visits[c]
	if v == nil || v.entry != st {
		return nil
	}
	st.sccEntry = false
	if e.log.level >= 2 {
		e.log.printf("SCC exit %s", c)
	}
	v.entry = nil
	return e.propagateBackedges(v)
}

// addSccBackedge is add_scc_backedge: cur, pruned at idx against equal
// (a checkpoint inside a loop), is kept until the loop's exploration
// ends.
func (e *env) addSccBackedge(equal, cur *vstate, idx int) {
	c, ok := e.computeSccCallchain(equal)
	v := e.visits[c]
	if !ok || v == nil {
		return // cannot happen: equal lies in a loop it entered
	}
	if e.log.level >= 2 {
		e.log.printf("SCC backedge %s", c)
	}
	bk := cur.clone()
	bk.insnIdx = idx
	v.backedges = append(v.backedges, sccBackedge{st: bk, equal: equal})
	e.numBackedges++
	e.addStates(1)
}

// incompleteReadMarks is incomplete_read_marks: st lies in a loop some
// of whose paths are still to be explored.
func (e *env) incompleteReadMarks(st *vstate) bool {
	if len(e.visits) == 0 {
		return false
	}
	c, ok := e.computeSccCallchain(st)
	if !ok {
		return false
	}
	v := e.visits[c]
	return v != nil && len(v.backedges) > 0
}

// maxBackedgeIters is MAX_BACKEDGE_ITERS.
const maxBackedgeIters = 64

// propagateBackedges is propagate_backedges: the marks of each covering
// checkpoint flow to its backedge's checkpoints until they no longer
// change (past maxBackedgeIters passes, every scalar of the backedges'
// paths becomes precise), and the backedges go.
func (e *env) propagateBackedges(v *sccVisit) error {
	for i := 0; ; i++ {
		if i > maxBackedgeIters {
			if e.log.level >= 2 {
				e.log.printf("propagate_backedges: too many iterations")
			}
			for j := len(v.backedges) - 1; j >= 0; j-- {
				e.markAllPrecise(v.backedges[j].st)
			}
			break
		}
		changed := false
		// Newest first, as the kernel's list holds them.
		for j := len(v.backedges) - 1; j >= 0; j-- {
			bk := v.backedges[j]
			e.propagateLivenessFrom(bk.equal, bk.st, &changed)
			if err := e.propagatePrecisionFrom(bk.equal, bk.st, bk.st.insnIdx, &changed); err != nil {
				return err
			}
		}
		if !changed {
			break
		}
	}
	e.numBackedges -= len(v.backedges)
	e.curStates -= len(v.backedges)
	clear(v.backedges)
	v.backedges = v.backedges[:0]
	return nil
}

// addStates counts n more states held (explored, in the free list or
// backedges) and keeps the peak (update_peak_states).
func (e *env) addStates(n int) {
	e.curStates += n
	if e.curStates > e.peakStates {
		e.peakStates = e.curStates
	}
}

// maybeFreeState is maybe_free_verifier_state: a checkpoint dropped from
// its list is freed once no path below it is left and its loop's marks
// are complete.
func (e *env) maybeFreeState(st *vstate) {
	if !st.inFreeList || st.branches != 0 || e.incompleteReadMarks(st) {
		return
	}
	st.inFreeList = false
	e.curStates--
}
