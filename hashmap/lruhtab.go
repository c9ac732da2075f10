package hashmap

import (
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// The LRU parts of kernel/bpf/hashtab.c: BPF_MAP_TYPE_LRU_HASH and
// BPF_MAP_TYPE_LRU_PERCPU_HASH. Their table, elements and hashing are the
// hash map's; what differs is where elements come from. Every element is
// preallocated and owned by the LRU lists (lru.go); an update takes a node
// from them first (which may evict the least recently used keys), so an
// update never fails with E2BIG, and it takes one even when it replaces a
// key. Deleting a key, or replacing it, gives its node back at once.
//
// A program's lookup marks the element referenced, which keeps it from
// eviction for a while; a lookup from user space does not
// (htab_lru_map_lookup_elem_sys), nor does reading every CPU's copy of a
// per-CPU value (bpf_percpu_hash_copy). Replacing a key marks the new
// element referenced.

// LRUHash is BPF_MAP_TYPE_LRU_HASH.
var LRUHash = &maps.Type{
	ID:         uapi.MapTypeLRUHash,
	Name:       "lru_hash",
	AllocCheck: allocCheck,
	Alloc:      alloc,
	MetaEqual:  maps.DefaultMetaEqual,
	Header:     true,
}

// LRUPercpuHash is BPF_MAP_TYPE_LRU_PERCPU_HASH.
var LRUPercpuHash = &maps.Type{
	ID:         uapi.MapTypeLRUPercpuHash,
	Name:       "lru_percpu_hash",
	AllocCheck: allocCheck,
	Alloc:      alloc,
	MetaEqual:  maps.DefaultMetaEqual,
	Header:     true,
}

// lruHtab is an LRU_HASH map (htab_lru_map_ops). It holds the table
// rather than embedding it, so that only the kernel's operations of the
// type are its methods.
type lruHtab struct{ h *htab }

// lruPercpuHtab is an LRU_PERCPU_HASH map (htab_lru_percpu_map_ops),
// which has no inlined lookup.
type lruPercpuHtab struct{ h *htab }

var (
	_ maps.LookupGenerator  = (*lruHtab)(nil)
	_ maps.SysLookuper      = (*lruHtab)(nil)
	_ maps.LookupAndDeleter = (*lruHtab)(nil)
	_ ElemLookuper          = (*lruHtab)(nil)
	_ maps.MetaOpser        = (*lruHtab)(nil)
	_ maps.PercpuValues     = (*lruPercpuHtab)(nil)
	_ maps.LookupAndDeleter = (*lruPercpuHtab)(nil)
	_ ElemLookuper          = (*lruPercpuHtab)(nil)
	_ maps.MetaOpser        = (*lruPercpuHtab)(nil)
)

// percpuLRUMaxEntries is the max_entries of a map with per-CPU LRU lists:
// rounded up to a multiple of the CPUs, so that each CPU's lists get the
// same number of nodes, or down if rounding up wraps around 32 bits. The
// map reports the rounded number.
func percpuLRUMaxEntries(maxEntries uint32, ncpu int) uint32 {
	n := uint32(ncpu)
	up := (maxEntries + n - 1) / n * n
	if up < maxEntries {
		return maxEntries / n * n
	}
	return up
}

// allocLRU is htab_map_alloc for the LRU types: the table, then
// prealloc_init's elements handed to the LRU lists (bpf_lru_populate).
func allocLRU(k maps.Kernel, m *maps.Map) (maps.Ops, error) {
	if m.Flags&uapi.BPF_F_NO_COMMON_LRU != 0 {
		m.MaxEntries = percpuLRUMaxEntries(m.MaxEntries, k.NumCPUs())
		if err := checkMaxEntries(m.MaxEntries); err != nil {
			return nil, err
		}
	}
	h, err := newHtab(k, m)
	if err != nil {
		return nil, err
	}
	h.lru = newLRU(m.Flags&uapi.BPF_F_NO_COMMON_LRU != 0, h.ncpu, h.lruDeleteNode, h.lruBind)
	elems := h.chunks[0].elems
	h.lruNodes = make([]lruNode, len(elems))
	for i := range elems {
		h.lruNodes[i].elem = &elems[i]
		elems[i].node = &h.lruNodes[i]
	}
	// The elements are the nodes' now, not the free list's.
	h.mu.Lock()
	h.free = h.free[:0]
	h.mu.Unlock()
	h.lru.populate(h.lruNodes)
	if h.percpu {
		return &lruPercpuHtab{h}, nil
	}
	return &lruHtab{h}, nil
}

// lruDeleteNode is htab_lru_map_delete_node, the LRU's del_from_htab: it
// unlinks n's element if it is still in its chain.
func (h *htab) lruDeleteNode(n *lruNode) bool {
	e := n.elem
	if !e.everLinked.Load() {
		return false
	}
	b := h.bucket(e.hash.Load())
	if b == nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var prev *elem
	for l := b.head.Load(); l != nil; prev, l = l, l.next.Load() {
		if l == e {
			unlink(b, prev, e)
			maps.FreeFields(h.m, e.addr+h.valueOff) // evicted: htab_lru_map_delete_node
			return true
		}
	}
	return false
}

// lruBind prepares node n to be handed out: if its element was ever in the
// table, a program may still hold it, so n gets fresh memory and the old
// element is returned for retirement. The header (the LRU node's bytes,
// the ref among them) starts at zero. If no memory can be had, the element
// is reused at once, as the kernel reuses it.
func (h *htab) lruBind(n *lruNode) *elem {
	var old *elem
	if e := n.elem; e.everLinked.Load() {
		h.mu.Lock()
		fresh, err := h.takeFree()
		h.mu.Unlock()
		if err == nil {
			old = e
			e.node = nil
			fresh.node = n
			n.elem = fresh
		}
		n.elem.everLinked.Store(false)
	}
	mem.Fill(n.elem.raw[:KeyOffset], 0)
	return old
}

// lruPop is prealloc_lru_pop on cpu: a node's element for key, its hash
// and key written, not yet in the table.
func (h *htab) lruPop(cpu int, key []byte, hash uint32) (*elem, error) {
	if cpu < 0 || cpu >= h.ncpu {
		return nil, errBadCPU
	}
	n, old := h.lru.popFree(cpu)
	if old != nil {
		h.retire(old, false)
	}
	if n == nil {
		return nil, errors.WithMessage(uapi.ENOMEM, "LRU hash map: no node could be freed")
	}
	e := n.elem
	e.hash.Store(hash)
	var hb [4]byte
	hb[0], hb[1], hb[2], hb[3] = byte(hash), byte(hash>>8), byte(hash>>16), byte(hash>>24)
	mem.StoreBytes(e.raw[HashOffset:HashOffset+4], hb[:])
	mem.StoreBytes(e.raw[KeyOffset:], key[:h.keySize])
	mem.Fill(e.raw[KeyOffset+h.keySize:h.valueOff], 0)
	if h.percpu {
		var p [8]byte
		for i := range p {
			p[i] = byte(e.pptr >> (8 * i))
		}
		mem.StoreBytes(e.raw[h.valueOff:], p[:])
	}
	return e, nil
}

// lruLink is hlist_nulls_add_head_rcu for an LRU element; the caller holds
// b.mu.
func lruLink(b *bucket, e *elem) {
	e.everLinked.Store(true)
	linkHead(b, e)
}

// lruFind returns key's element, or nil.
func (h *htab) lruFind(key []byte) *elem { return h.lookup(key) }

// lruRemove is htab_lru_map_delete_elem and, with last,
// __htab_map_lookup_and_delete_elem for an LRU map: the element leaves
// its chain and its node goes back to the LRU.
func (h *htab) lruRemove(key []byte, last func(e *elem)) error {
	e, err := h.unlinkKey(key, last)
	if err != nil {
		return err
	}
	maps.FreeFields(h.m, e.addr+h.valueOff)
	h.lru.pushFree(e.node)
	return nil
}

// lruLookupAndDeleteFlags checks the flags of map_lookup_and_delete_elem:
// only BPF_F_LOCK exists, and it needs a bpf_spin_lock, which LRU hash
// values cannot hold (map_check_btf refuses it with EOPNOTSUPP).
func lruLookupAndDeleteFlags(flags uint64) error {
	switch {
	case flags&^uapi.BPF_F_LOCK != 0:
		return errors.Wrapf(uapi.EINVAL, "unknown lookup-and-delete flags %#x", flags)
	case flags&uapi.BPF_F_LOCK != 0:
		return errLock
	}
	return nil
}

// LookupElem is htab_lru_map_lookup_elem, a program's lookup that did not
// get inlined: the value's address, the element marked referenced.
func (l *lruHtab) LookupElem(cpu int, key []byte) (uint64, error) {
	e := l.h.lruFind(key)
	if e == nil {
		return 0, nil
	}
	setElemRef(e)
	return e.addr + l.h.valueOff, nil
}

// LookupElemSys is htab_lru_map_lookup_elem_sys, user space's lookup: it
// leaves the ref alone, so that dumping a map does not change what it
// evicts.
func (l *lruHtab) LookupElemSys(key []byte) (uint64, error) {
	if e := l.h.lruFind(key); e != nil {
		return e.addr + l.h.valueOff, nil
	}
	return 0, nil
}

// LookupElemAddr is __htab_map_lookup_elem, which the inlined lookup calls
// before it sets the ref itself.
func (l *lruHtab) LookupElemAddr(key []byte) uint64 { return l.h.LookupElemAddr(key) }

// UpdateElem is htab_lru_map_update_elem. The node comes first, before
// the bucket is locked, since taking it may evict a key of any bucket; it
// goes back if the flags refuse the update. A replaced key's element is
// unlinked and its node freed, the new element marked referenced.
func (l *lruHtab) UpdateElem(cpu int, key, value []byte, flags uint64) error {
	h := l.h
	if flags > uapi.BPF_EXIST {
		return errors.Wrapf(uapi.EINVAL, "unknown update flags %#x", flags)
	}
	key = key[:h.keySize]
	hash := HashKey(key, h.hashrnd)
	e, err := h.lruPop(cpu, key, hash)
	if err != nil {
		return err
	}
	h.setValue(e, value)
	b := h.bucketForUpdate(hash)
	b.mu.Lock()
	prev, old := h.find(b, hash, key)
	if err := checkFlags(old != nil, flags); err != nil {
		b.mu.Unlock()
		h.lru.pushFree(e.node)
		return err
	}
	lruLink(b, e)
	if old != nil {
		setElemRef(e)
		if prev == nil {
			prev = e
		}
		unlink(b, prev, old)
	}
	b.mu.Unlock()
	if old != nil {
		maps.FreeFields(h.m, old.addr+h.valueOff) // htab_lru_push_free
		h.lru.pushFree(old.node)
	}
	return nil
}

// DeleteElem is htab_lru_map_delete_elem.
func (l *lruHtab) DeleteElem(cpu int, key []byte) error { return l.h.lruRemove(key, nil) }

// GetNextKey is htab_map_get_next_key.
func (l *lruHtab) GetNextKey(key, next []byte) error { return l.h.GetNextKey(key, next) }

// LookupAndDeleteElem is htab_lru_map_lookup_and_delete_elem.
func (l *lruHtab) LookupAndDeleteElem(cpu int, key, value []byte, flags uint64) error {
	if err := lruLookupAndDeleteFlags(flags); err != nil {
		return err
	}
	h := l.h
	return h.lruRemove(key, func(e *elem) {
		mem.LoadBytes(value, e.raw[h.valueOff:h.valueOff+uint64(h.valueSize)])
	})
}

// Free is htab_map_free.
func (l *lruHtab) Free() { l.h.Free() }

// GenLookup is htab_lru_map_gen_lookup: the hash lookup's sequence, plus
// setting the element's ref unless it is already set.
//
//	call __htab_map_lookup_elem
//	if r0 == 0x0 goto +4
//	r1 = *(u8 *)(r0 +35)
//	if r1 != 0x0 goto +1
//	*(u8 *)(r0 +35) = 1
//	r0 += ValueOffset(key_size)
func (l *lruHtab) GenLookup(call func(string) (insn.Insn, error)) ([]insn.Insn, error) {
	return genLRULookup(call, l.h.valueOff)
}

func genLRULookup(call func(string) (insn.Insn, error), valueOff uint64) ([]insn.Insn, error) {
	c, err := call(ElemLookupFunc)
	if err != nil {
		return nil, err
	}
	return []insn.Insn{
		c,
		{Code: insn.JMP | insn.JEQ | insn.K, Dst: insn.R0, Off: 4},
		{Code: insn.LDX | insn.MEM | insn.B, Dst: insn.R1, Src: insn.R0, Off: LRURefOffset},
		{Code: insn.JMP | insn.JNE | insn.K, Dst: insn.R1, Off: 1},
		{Code: insn.ST | insn.MEM | insn.B, Dst: insn.R0, Off: LRURefOffset, Imm: 1},
		{Code: insn.ALU64 | insn.ADD | insn.K, Dst: insn.R0, Imm: int32(valueOff)},
	}, nil
}

// MetaOps is what the verifier keeps of an LRU hash as an inner map
// template: the LRU's inlined lookup.
func (l *lruHtab) MetaOps(meta *maps.Map) maps.Ops {
	return &lruHtabMeta{valueOff: l.h.valueOff}
}

type lruHtabMeta struct {
	maps.TemplateOps
	maps.TemplateWalk
	valueOff uint64
}

func (m *lruHtabMeta) GenLookup(call func(string) (insn.Insn, error)) ([]insn.Insn, error) {
	return genLRULookup(call, m.valueOff)
}

// LookupElem is htab_lru_percpu_map_lookup_elem: cpu's copy, the element
// marked referenced.
func (l *lruPercpuHtab) LookupElem(cpu int, key []byte) (uint64, error) {
	h := l.h
	if cpu < 0 || cpu >= h.ncpu {
		return 0, errBadCPU
	}
	e := h.lruFind(key)
	if e == nil {
		return 0, nil
	}
	setElemRef(e)
	return e.pptr + h.percpuA.Offset(cpu), nil
}

// LookupPercpuElem is htab_lru_percpu_map_lookup_percpu_elem.
func (l *lruPercpuHtab) LookupPercpuElem(key []byte, cpu int) (uint64, error) {
	h := l.h
	if cpu < 0 || cpu >= h.ncpu {
		return 0, nil
	}
	e := h.lruFind(key)
	if e == nil {
		return 0, nil
	}
	setElemRef(e)
	return e.pptr + h.percpuA.Offset(cpu), nil
}

// LookupElemAddr is __htab_map_lookup_elem.
func (l *lruPercpuHtab) LookupElemAddr(key []byte) uint64 { return l.h.LookupElemAddr(key) }

// LookupPercpu is bpf_percpu_hash_copy: every CPU's copy, without marking
// the element.
func (l *lruPercpuHtab) LookupPercpu(key, values []byte) error {
	return (&percpuHtab{l.h}).LookupPercpu(key, values)
}

// UpdateElem is htab_lru_percpu_map_update_elem: cpu's copy.
func (l *lruPercpuHtab) UpdateElem(cpu int, key, value []byte, flags uint64) error {
	return l.update(cpu, key, value, flags, false)
}

// UpdatePercpu is bpf_percpu_hash_update: every CPU's copy, on CPU 0 (the
// CPU user space runs on in the simulator).
func (l *lruPercpuHtab) UpdatePercpu(key, values []byte, flags uint64) error {
	h := l.h
	if uint64(len(values)) < h.pcpuSize*uint64(h.ncpu) {
		return errors.Wrapf(uapi.EINVAL, "per-CPU value buffer of %d bytes, want %d", len(values), h.pcpuSize*uint64(h.ncpu))
	}
	return l.update(0, key, values, flags, true)
}

// update is __htab_lru_percpu_map_update_elem. Unless the flags are
// BPF_EXIST it takes a node first, even for a key that exists (whose
// copies are then written in place and the node given back): so updating
// an existing key of a full map can evict another one, as in the kernel.
func (l *lruPercpuHtab) update(cpu int, key, values []byte, flags uint64, all bool) error {
	h := l.h
	if flags > uapi.BPF_EXIST {
		return errors.Wrapf(uapi.EINVAL, "unknown update flags %#x", flags)
	}
	if cpu < 0 || cpu >= h.ncpu {
		return errBadCPU
	}
	key = key[:h.keySize]
	hash := HashKey(key, h.hashrnd)
	var e *elem
	if flags != uapi.BPF_EXIST {
		var err error
		if e, err = h.lruPop(cpu, key, hash); err != nil {
			return err
		}
	}
	b := h.bucketForUpdate(hash)
	b.mu.Lock()
	_, old := h.find(b, hash, key)
	err := checkFlags(old != nil, flags)
	switch {
	case err != nil:
	case old != nil:
		setElemRef(old)
		h.writePercpu(old, cpu, values, all, false)
	default:
		h.writePercpu(e, cpu, values, all, true)
		lruLink(b, e)
		e = nil
	}
	b.mu.Unlock()
	if e != nil {
		h.lru.pushFree(e.node)
	}
	return err
}

// DeleteElem is htab_lru_map_delete_elem.
func (l *lruPercpuHtab) DeleteElem(cpu int, key []byte) error { return l.h.lruRemove(key, nil) }

// GetNextKey is htab_map_get_next_key.
func (l *lruPercpuHtab) GetNextKey(key, next []byte) error { return l.h.GetNextKey(key, next) }

// LookupAndDeleteElem is htab_lru_percpu_map_lookup_and_delete_elem:
// every CPU's copy, then the delete.
func (l *lruPercpuHtab) LookupAndDeleteElem(cpu int, key, value []byte, flags uint64) error {
	if err := lruLookupAndDeleteFlags(flags); err != nil {
		return err
	}
	h := l.h
	if uint64(len(value)) < h.pcpuSize*uint64(h.ncpu) {
		return errors.Wrapf(uapi.EINVAL, "per-CPU value buffer of %d bytes, want %d", len(value), h.pcpuSize*uint64(h.ncpu))
	}
	return h.lruRemove(key, func(e *elem) { h.copyPercpu(e, value) })
}

// Free is htab_map_free.
func (l *lruPercpuHtab) Free() { l.h.Free() }

// MetaOps is what the verifier keeps of an LRU per-CPU hash template: no
// inlined lookup, and the per-CPU abilities.
func (l *lruPercpuHtab) MetaOps(meta *maps.Map) maps.Ops {
	return &lruPercpuHtabMeta{}
}

type lruPercpuHtabMeta struct {
	maps.TemplateOps
	maps.TemplateWalk
}

func (m *lruPercpuHtabMeta) LookupPercpu([]byte, []byte) error { return m.UpdateElem(0, nil, nil, 0) }
func (m *lruPercpuHtabMeta) UpdatePercpu([]byte, []byte, uint64) error {
	return m.UpdateElem(0, nil, nil, 0)
}
func (m *lruPercpuHtabMeta) LookupPercpuElem([]byte, int) (uint64, error) {
	return m.LookupElem(0, nil)
}
