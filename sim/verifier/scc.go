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
func computeLoops(succ [][2]int, out []bool) []bool {
	n := len(succ)
	if cap(out) < n {
		out = make([]bool, n)
	}
	out = out[:n]
	clear(out)
	index := make([]int32, n) // 0: not visited; else DFS order + 1
	low := make([]int32, n)
	onStack := make([]bool, n)
	var stack []int32 // Tarjan's stack
	type frame struct {
		v    int32
		next uint8 // successors of v visited
	}
	var call []frame
	order := int32(0)
	for root := 0; root < n; root++ {
		if index[root] != 0 {
			continue
		}
		call = append(call[:0], frame{v: int32(root)})
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
					call = append(call, frame{v: int32(w)})
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
