package verifier

// Loops of the control flow graph (kernel/bpf/verifier.c: compute_scc,
// Linux 6.17). The kernel compares a checkpoint range by range only while
// the loop it lies in is still being explored (incomplete_read_marks): a
// checkpoint outside every loop, such as one in a callback's body without
// a loop of its own, is compared as any other, however its path reached
// it. bpfsim keeps the older loop entries to tell whether a loop is still
// being explored, and asks inLoop whether the checkpoint is in one at all.

// computeLoops marks the instructions that lie on a cycle of succ, the
// successors computeLiveness left (calls and callback addresses lead to
// the next instruction only, as insn_successors has them): the
// strongly connected components of more than one instruction, and
// instructions that jump to themselves. Tarjan's algorithm, without
// recursion.
func computeLoops(succ [][2]int, out []bool, sc *loopScratch) []bool {
	n := len(succ)
	out = clearBools(out, n)
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
				if w == int(v) {
					out[v] = true // a jump to itself
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
			if len(comp) > 1 {
				for _, w := range comp {
					out[w] = true
				}
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
