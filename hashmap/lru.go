package hashmap

import (
	"sync"
	"sync/atomic"

	"github.com/bpfsim/bpfsim/sim/mem"
)

// The LRU lists of the LRU hash maps, as kernel/bpf/bpf_lru_list.c keeps
// them (Linux 6.18). An LRU hash map owns exactly max_entries nodes, one
// per preallocated element; a node is always on one list, and its type
// says which:
//
//   - ACTIVE and INACTIVE: the nodes of keys in the map, most recent at
//     the head. A node is "referenced" when its ref byte, which lives in
//     the element's memory at LRURefOffset, is set: a program's lookup
//     sets it (the inlined lookup stores it itself), the LRU clears it
//     whenever it moves the node.
//   - FREE: nodes no key uses.
//   - per CPU, LOCAL_FREE and LOCAL_PENDING (common LRU only): nodes a CPU
//     took from the global FREE list in a batch of target_free, and the
//     nodes of keys that CPU added since its last batch.
//
// With BPF_F_NO_COMMON_LRU every CPU has its own ACTIVE/INACTIVE/FREE
// lists instead (max_entries/num_possible_cpus nodes each, for good) and
// no local lists.
//
// Taking a free node (bpf_lru_pop_free) is where eviction happens. Common
// LRU: pop the CPU's LOCAL_FREE list; if it is empty, flush the CPU's
// pending nodes into the global lists (referenced ones to ACTIVE), rotate
// the global lists, move up to target_free FREE nodes to LOCAL_FREE, and if
// there were fewer, shrink the INACTIVE list (evicting unreferenced keys,
// oldest first) or, failing that, force-evict one key; if that still
// yields nothing, steal a free or pending node from any CPU's local lists,
// round robin. Per-CPU LRU: rotate the CPU's lists, and if its FREE list
// is empty shrink by PERCPU_FREE_TARGET.
//
// Evicting a key (del_from_htab, htab_lru_map_delete_node) unlinks its
// element from the hash table under the bucket lock; an element someone
// else unlinked first is skipped. Lock order, as in the kernel: a local
// list's lock, then the global list's lock, then a bucket lock, then the
// table's memory lock (htab.mu).
//
// # Element memory
//
// The kernel reuses a node's element at once, and its lock-free readers
// restart a walk when the nulls marker shows they strayed into another
// chain. The simulator keeps its rule that element memory is reused only
// after a grace period (see the package comment): a node handed out again
// gets a fresh element if its previous one was ever in the hash table, and
// the previous one goes through CallRCU. Which keys are in the map, and
// which are evicted, do not depend on that: the lists, their order and the
// ref bits are the kernel's. Only element addresses differ.

// LRURefOffset is the offset of the ref byte in a struct htab_elem:
// offsetof(struct htab_elem, lru_node) + offsetof(struct bpf_lru_node,
// ref), 16 + 19 on LP64. The inlined LRU lookup sets it.
const LRURefOffset = 35

// lruListType is enum bpf_lru_list_type.
type lruListType uint32

const (
	lruActive       lruListType = iota // BPF_LRU_LIST_T_ACTIVE
	lruInactive                        // BPF_LRU_LIST_T_INACTIVE
	lruFree                            // BPF_LRU_LIST_T_FREE
	lruLocalFree                       // BPF_LRU_LOCAL_LIST_T_FREE
	lruLocalPending                    // BPF_LRU_LOCAL_LIST_T_PENDING

	nrLRUListT     = 3 // NR_BPF_LRU_LIST_T: the lists of a bpf_lru_list
	nrLRUListCount = 2 // NR_BPF_LRU_LIST_COUNT: only ACTIVE and INACTIVE are counted
)

func (t lruListType) isLocal() bool { return t >= lruLocalFree }

// The batch sizes and scan limits of bpf_lru_list.c.
const (
	localFreeTarget  = 128 // LOCAL_FREE_TARGET: the most a CPU takes at once
	localNrScans     = localFreeTarget
	percpuFreeTarget = 4 // PERCPU_FREE_TARGET
	percpuNrScans    = percpuFreeTarget
)

// lruNode is struct bpf_lru_node, and doubles as a list head. Its type and
// CPU are read without a lock by bpf_lru_push_free (READ_ONCE), so they are
// atomic; the links are only touched under the lock of the list the node is
// on.
type lruNode struct {
	prev, next *lruNode
	cpu        atomic.Int32
	typ        atomic.Uint32
	// elem is the element the node stands for. It changes only while the
	// node is on no list, when it is handed out again (lruBind).
	elem *elem
}

func (n *lruNode) typeOf() lruListType   { return lruListType(n.typ.Load()) }
func (n *lruNode) setType(t lruListType) { n.typ.Store(uint32(t)) }

// refByte is the node's ref, in its element's memory.
func (n *lruNode) refByte() []byte { return elemRef(n.elem) }

func elemRef(e *elem) []byte { return e.raw[LRURefOffset : LRURefOffset+1] }

// isRef is bpf_lru_node_is_ref.
func (n *lruNode) isRef() bool {
	var b [1]byte
	mem.LoadBytes(b[:], n.refByte())
	return b[0] != 0
}

// clearRef is bpf_lru_node_clear_ref.
func (n *lruNode) clearRef() { mem.Fill(n.refByte(), 0) }

// setElemRef is bpf_lru_node_set_ref on an element found in the table.
// It goes through the element's memory, not its node, as a program's store
// does: a reader may hold an element whose node was handed out since,
// which then keeps the ref for nothing, as in the kernel. It writes only
// if the ref is not set yet, so that a hot element's cache line is not
// dirtied on every lookup.
func setElemRef(e *elem) {
	var b [1]byte
	ref := elemRef(e)
	if mem.LoadBytes(b[:], ref); b[0] == 0 {
		mem.Fill(ref, 1)
	}
}

// Doubly linked circular lists with a head node, as <linux/list.h>.

func listInit(h *lruNode)           { h.prev, h.next = h, h }
func listEmpty(h *lruNode) bool     { return h.next == h }
func listDel(n *lruNode)            { n.prev.next, n.next.prev = n.next, n.prev; n.prev, n.next = nil, nil }
func listMove(n, h *lruNode)        { listDel(n); listAdd(n, h) }
func listAdd(n, h *lruNode)         { n.prev, n.next = h, h.next; h.next.prev = n; h.next = n }
func listFirst(h *lruNode) *lruNode { return h.next }

// lruList is struct bpf_lru_list.
type lruList struct {
	mu     sync.Mutex
	lists  [nrLRUListT]lruNode
	counts [nrLRUListCount]uint32
	// nextInactiveRotation is where the next inactive rotation starts;
	// it may point at the INACTIVE head itself.
	nextInactiveRotation *lruNode
}

func (l *lruList) init() {
	for i := range l.lists {
		listInit(&l.lists[i])
	}
	l.nextInactiveRotation = &l.lists[lruInactive]
}

func (l *lruList) countInc(t lruListType) {
	if t < nrLRUListCount {
		l.counts[t]++
	}
}

func (l *lruList) countDec(t lruListType) {
	if t < nrLRUListCount {
		l.counts[t]--
	}
}

// lruLocalList is struct bpf_lru_locallist: one CPU's free and pending
// nodes of a common LRU.
type lruLocalList struct {
	mu        sync.Mutex
	free      lruNode
	pending   lruNode
	nextSteal int
}

// bpfLRU is struct bpf_lru.
type bpfLRU struct {
	percpu bool
	ncpu   int
	// common LRU
	global lruList
	local  []lruLocalList
	// per-CPU LRU
	lists []lruList

	nrScans    uint32
	targetFree uint32
	// delFromHtab is htab_lru_map_delete_node: unlink n's element from the
	// table, false if it is no longer there.
	delFromHtab func(n *lruNode) bool
	// bind is called for a node being handed out, before anything reads
	// its ref; it may give the node a fresh element and returns the one
	// to retire (or nil).
	bind func(n *lruNode) *elem
}

// newLRU is bpf_lru_init.
func newLRU(percpu bool, ncpu int, del func(*lruNode) bool, bind func(*lruNode) *elem) *bpfLRU {
	lru := &bpfLRU{percpu: percpu, ncpu: ncpu, delFromHtab: del, bind: bind}
	if percpu {
		lru.lists = make([]lruList, ncpu)
		for i := range lru.lists {
			lru.lists[i].init()
		}
		lru.nrScans = percpuNrScans
	} else {
		lru.local = make([]lruLocalList, ncpu)
		for cpu := range lru.local {
			loc := &lru.local[cpu]
			listInit(&loc.free)
			listInit(&loc.pending)
			loc.nextSteal = cpu
		}
		lru.global.init()
		lru.nrScans = localNrScans
	}
	return lru
}

// populate is bpf_lru_populate: every node starts free. A common LRU puts
// them all on the global FREE list (each at the head, so the last is
// first) and sizes its batches so that the CPUs together hold at most half
// of the map: target_free = clamp(nodes/CPUs/2, 1, LOCAL_FREE_TARGET). A
// per-CPU LRU deals nodes/CPUs consecutive nodes to each CPU.
func (lru *bpfLRU) populate(nodes []lruNode) {
	if !lru.percpu {
		l := &lru.global
		for i := range nodes {
			n := &nodes[i]
			n.setType(lruFree)
			n.clearRef()
			listAdd(n, &l.lists[lruFree])
		}
		lru.targetFree = uint32(min(max(len(nodes)/lru.ncpu/2, 1), localFreeTarget))
		return
	}
	per := len(nodes) / lru.ncpu
	for i := range nodes {
		cpu := min(i/per, lru.ncpu-1)
		n := &nodes[i]
		n.cpu.Store(int32(cpu))
		n.setType(lruFree)
		n.clearRef()
		listAdd(n, &lru.lists[cpu].lists[lruFree])
	}
}

// moveToFree is __bpf_lru_node_move_to_free: from ACTIVE or INACTIVE to a
// free list (the global FREE list, or a list of nodes on their way to a
// CPU's LOCAL_FREE list). The ref is left as it is.
func (l *lruList) moveToFree(n, freeList *lruNode, t lruListType) {
	if n.typeOf().isLocal() {
		return
	}
	if n == l.nextInactiveRotation {
		l.nextInactiveRotation = n.prev
	}
	l.countDec(n.typeOf())
	n.setType(t)
	listMove(n, freeList)
}

// moveIn is __bpf_lru_node_move_in: from a CPU's pending list into the
// global lists.
func (l *lruList) moveIn(n *lruNode, t lruListType) {
	if !n.typeOf().isLocal() || t.isLocal() {
		return
	}
	l.countInc(t)
	n.setType(t)
	n.clearRef()
	listMove(n, &l.lists[t])
}

// move is __bpf_lru_node_move: between or within ACTIVE, INACTIVE and FREE,
// to the head, clearing the ref.
func (l *lruList) move(n *lruNode, t lruListType) {
	if n.typeOf().isLocal() || t.isLocal() {
		return
	}
	if cur := n.typeOf(); cur != t {
		l.countDec(cur)
		l.countInc(t)
		n.setType(t)
	}
	n.clearRef()
	if n == l.nextInactiveRotation {
		l.nextInactiveRotation = n.prev
	}
	listMove(n, &l.lists[t])
}

// inactiveLow is bpf_lru_list_inactive_low.
func (l *lruList) inactiveLow() bool { return l.counts[lruInactive] < l.counts[lruActive] }

// rotateActive is __bpf_lru_list_rotate_active: from the tail of ACTIVE,
// referenced nodes go back to its head and the others to the head of
// INACTIVE, at most nr_scans of them and never past the node that was
// first when it began.
func (lru *bpfLRU) rotateActive(l *lruList) {
	active := &l.lists[lruActive]
	first := listFirst(active)
	var i uint32
	for n := active.prev; n != active; {
		prev := n.prev
		if n.isRef() {
			l.move(n, lruActive)
		} else {
			l.move(n, lruInactive)
		}
		i++
		if i == lru.nrScans || n == first {
			break
		}
		n = prev
	}
}

// rotateInactive is __bpf_lru_list_rotate_inactive: walking backwards from
// next_inactive_rotation (skipping the head), referenced nodes move to
// ACTIVE, the others stay for the next shrink. The walk covers at most
// nr_scans nodes and stops at the node after where it began; the next
// rotation starts where this one stopped.
func (lru *bpfLRU) rotateInactive(l *lruList) {
	inactive := &l.lists[lruInactive]
	if listEmpty(inactive) {
		return
	}
	last := l.nextInactiveRotation.next
	if last == inactive {
		last = last.next
	}
	cur := l.nextInactiveRotation
	next := inactive
	var i uint32
	for i < lru.nrScans {
		if cur == inactive {
			cur = cur.prev
			continue
		}
		next = cur.prev
		if cur.isRef() {
			l.move(cur, lruActive)
		}
		if cur == last {
			break
		}
		cur = next
		i++
	}
	l.nextInactiveRotation = next
}

// shrinkInactive is __bpf_lru_list_shrink_inactive: from the tail of
// INACTIVE, referenced nodes go to ACTIVE and unreferenced ones are evicted
// to freeList, until want are evicted or nr_scans nodes were seen.
func (lru *bpfLRU) shrinkInactive(l *lruList, want uint32, freeList *lruNode, t lruListType) uint32 {
	inactive := &l.lists[lruInactive]
	var shrunk, i uint32
	for n := inactive.prev; n != inactive; {
		prev := n.prev
		if n.isRef() {
			l.move(n, lruActive)
		} else if lru.delFromHtab(n) {
			l.moveToFree(n, freeList, t)
			shrunk++
			if shrunk == want {
				break
			}
		}
		i++
		if i == lru.nrScans {
			break
		}
		n = prev
	}
	return shrunk
}

// rotate is __bpf_lru_list_rotate.
func (lru *bpfLRU) rotate(l *lruList) {
	if l.inactiveLow() {
		lru.rotateActive(l)
	}
	lru.rotateInactive(l)
}

// shrink is __bpf_lru_list_shrink: shrink INACTIVE, and if that evicted
// nothing, evict the first key that can be, from the tail of INACTIVE (or
// of ACTIVE when INACTIVE is empty), whatever its ref.
func (lru *bpfLRU) shrink(l *lruList, want uint32, freeList *lruNode, t lruListType) uint32 {
	if n := lru.shrinkInactive(l, want, freeList, t); n > 0 {
		return n
	}
	force := &l.lists[lruInactive]
	if listEmpty(force) {
		force = &l.lists[lruActive]
	}
	for n := force.prev; n != force; {
		prev := n.prev
		if lru.delFromHtab(n) {
			l.moveToFree(n, freeList, t)
			return 1
		}
		n = prev
	}
	return 0
}

// localFlush is __local_list_flush: a CPU's pending nodes, oldest first,
// into ACTIVE (referenced) or INACTIVE.
func (l *lruList) localFlush(loc *lruLocalList) {
	for n := loc.pending.prev; n != &loc.pending; {
		prev := n.prev
		if n.isRef() {
			l.moveIn(n, lruActive)
		} else {
			l.moveIn(n, lruInactive)
		}
		n = prev
	}
}

// listPushFree is bpf_lru_list_push_free.
func (l *lruList) listPushFree(n *lruNode) {
	if n.typeOf().isLocal() {
		return
	}
	l.mu.Lock()
	l.move(n, lruFree)
	l.mu.Unlock()
}

// popFreeToLocal is bpf_lru_list_pop_free_to_local; the caller holds
// loc.mu.
func (lru *bpfLRU) popFreeToLocal(loc *lruLocalList) {
	l := &lru.global
	l.mu.Lock()
	defer l.mu.Unlock()
	l.localFlush(loc)
	lru.rotate(l)
	free := &l.lists[lruFree]
	var nfree uint32
	for n := free.next; n != free; {
		next := n.next
		l.moveToFree(n, &loc.free, lruLocalFree)
		nfree++
		if nfree == lru.targetFree {
			break
		}
		n = next
	}
	if nfree < lru.targetFree {
		lru.shrink(l, lru.targetFree-nfree, &loc.free, lruLocalFree)
	}
}

// localAddPending is __local_list_add_pending; the caller holds loc.mu.
// The node is handed out here, so this is where it gets its element.
func (lru *bpfLRU) localAddPending(loc *lruLocalList, cpu int, n *lruNode) (retired *elem) {
	retired = lru.bind(n)
	n.cpu.Store(int32(cpu))
	n.setType(lruLocalPending)
	n.clearRef()
	listAdd(n, &loc.pending)
	return retired
}

// localPopFree is __local_list_pop_free.
func localPopFree(loc *lruLocalList) *lruNode {
	if listEmpty(&loc.free) {
		return nil
	}
	n := listFirst(&loc.free)
	listDel(n)
	return n
}

// localPopPending is __local_list_pop_pending: the oldest pending node
// whose key can be evicted, unreferenced ones first.
func (lru *bpfLRU) localPopPending(loc *lruLocalList) *lruNode {
	for _, force := range []bool{false, true} {
		for n := loc.pending.prev; n != &loc.pending; n = n.prev {
			if (!n.isRef() || force) && lru.delFromHtab(n) {
				listDel(n)
				return n
			}
		}
	}
	return nil
}

// percpuPopFree is bpf_percpu_lru_pop_free.
func (lru *bpfLRU) percpuPopFree(cpu int) (n *lruNode, old *elem) {
	l := &lru.lists[cpu]
	l.mu.Lock()
	defer l.mu.Unlock()
	lru.rotate(l)
	free := &l.lists[lruFree]
	if listEmpty(free) {
		lru.shrink(l, percpuFreeTarget, free, lruFree)
	}
	if listEmpty(free) {
		return nil, nil
	}
	n = listFirst(free)
	old = lru.bind(n)
	n.clearRef()
	l.move(n, lruInactive)
	return n, old
}

// commonPopFree is bpf_common_lru_pop_free.
func (lru *bpfLRU) commonPopFree(cpu int) (*lruNode, *elem) {
	loc := &lru.local[cpu]
	loc.mu.Lock()
	n := localPopFree(loc)
	if n == nil {
		lru.popFreeToLocal(loc)
		n = localPopFree(loc)
	}
	var old *elem
	if n != nil {
		old = lru.localAddPending(loc, cpu, n)
	}
	first := loc.nextSteal
	loc.mu.Unlock()
	if n != nil {
		return n, old
	}

	// Nothing free here nor globally: steal a free or pending node from
	// the CPUs' local lists, round robin from next_steal.
	steal := first
	for {
		sl := &lru.local[steal]
		sl.mu.Lock()
		n = localPopFree(sl)
		if n == nil {
			n = lru.localPopPending(sl)
		}
		sl.mu.Unlock()
		steal = (steal + 1) % lru.ncpu
		if n != nil || steal == first {
			break
		}
	}
	loc.mu.Lock()
	loc.nextSteal = steal
	if n != nil {
		old = lru.localAddPending(loc, cpu, n)
	}
	loc.mu.Unlock()
	return n, old
}

// popFree is bpf_lru_pop_free, on cpu: a node for a new element, or nil.
// old, if not nil, is the element the node stood for before, which the
// caller retires once it holds no lock.
func (lru *bpfLRU) popFree(cpu int) (n *lruNode, old *elem) {
	if lru.percpu {
		return lru.percpuPopFree(cpu)
	}
	return lru.commonPopFree(cpu)
}

// pushFree is bpf_lru_push_free: n's key has left the table. A common
// LRU's pending node goes back to its CPU's LOCAL_FREE list, any other to
// the FREE list of its list.
func (lru *bpfLRU) pushFree(n *lruNode) {
	if lru.percpu {
		lru.lists[n.cpu.Load()].listPushFree(n)
		return
	}
	t := n.typeOf()
	if t == lruFree || t == lruLocalFree {
		return
	}
	if t == lruLocalPending {
		loc := &lru.local[n.cpu.Load()]
		loc.mu.Lock()
		if n.typeOf() == lruLocalPending {
			n.setType(lruLocalFree)
			n.clearRef()
			listMove(n, &loc.free)
			loc.mu.Unlock()
			return
		}
		loc.mu.Unlock()
	}
	lru.global.listPushFree(n)
}
