// Package hashmap simulates the kernel's hash maps, kernel/bpf/hashtab.c:
// BPF_MAP_TYPE_HASH and BPF_MAP_TYPE_PERCPU_HASH, the LRU hashes
// BPF_MAP_TYPE_LRU_HASH and BPF_MAP_TYPE_LRU_PERCPU_HASH (lruhtab.go, with
// the LRU lists of kernel/bpf/bpf_lru_list.c in lru.go), and the hash of
// maps, BPF_MAP_TYPE_HASH_OF_MAPS (hashofmaps.go; hashes as inner maps:
// inner.go).
//
// Every element is a struct htab_elem in simulated memory, laid out as on
// LP64: a 48-byte header (the hash at offset 40), the key at KeyOffset and
// the value round_up(key_size, 8) bytes after it. For PERCPU_HASH the value
// slot holds the element's 8-byte per-CPU pointer, as in the kernel. A
// lookup returns the value's address, which is the pointer a program gets;
// an inlined lookup (htab_map_gen_lookup) can compute it itself from the
// element address LookupElemAddr returns and ValueOffset.
//
// The buckets and chain links live in Go: programs never walk them, and Go
// pointers let lookups follow the chains lock-free with sync/atomic, as
// the kernel's readers follow hlist_nulls links under RCU. Writers take a
// per-bucket lock (the kernel's bucket raw_lock). The hash, the bucket and
// the order of each chain are the kernel's: jhash/jhash2 of the key seeded
// with hashrnd, bucket = hash & (n_buckets-1), new elements at the head. So
// with BPF_F_ZERO_SEED, GetNextKey walks the keys in the same order as the
// kernel.
//
// # RCU and element reuse
//
// A deleted or replaced element is unlinked at once but goes back to the
// free list only from a Kernel.CallRCU callback, that is after every
// program that might still hold its value pointer has finished. Before it
// goes back, the callback fills the whole element (and, for PERCPU_HASH,
// every CPU's copy of its value) with 0x6b, the kernel's POISON_FREE, so a
// program that keeps a value pointer past a grace period reads poison
// rather than another key's value. The kernel itself reuses preallocated
// elements at once (the nulls markers make readers restart); the simulator
// is stricter so that stale pointers show, and so that readers never see an
// element change under them.
//
// Because reuse waits for a grace period, a burst of deletes and inserts,
// or of replacements, can find the free list empty while fewer than
// max_entries keys are in the map. The kernel would not fail then (its
// freed preallocated elements are reusable at once), so neither does the
// simulator: it maps more element memory. E2BIG depends only on the number
// of keys, as the kernel's observable rule does: a new key when max_entries
// keys are present.
//
// # User space
//
// User-space operations (syscalls) other than LookupElem take the bucket
// lock while they read an element, so they are safe whatever RCU
// protection the simulated kernel gives them. LookupElem returns an
// address; like the kernel's syscall path, the caller must hold an RCU
// read-side section until it has copied the value out, or the element may
// be poisoned under it. Its walk itself never faults or races.
//
// # Memory
//
// With preallocation (the default) all elements are mapped up front in one
// area: max_entries plus one per CPU for HASH (the kernel's extra_elems,
// which let an update replace a key of a full map), max_entries for
// PERCPU_HASH (whose updates are in place). With BPF_F_NO_PREALLOC element
// memory is mapped on demand in chunks of growing size. Element memory goes
// back to the address space only when the map is freed. The kernel's
// per-CPU free lists are one mutex-protected stack here.
package hashmap

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Layout of struct htab_elem on LP64.
const (
	// HashOffset is offsetof(struct htab_elem, hash).
	HashOffset = 40
	// KeyOffset is offsetof(struct htab_elem, key), also sizeof(struct
	// htab_elem): the key follows the 48-byte header, 8-byte aligned.
	KeyOffset = 48
)

// KmallocMaxSize is KMALLOC_MAX_SIZE on x86-64 and arm64 with 4 KiB pages
// (order-10 pages, 4 MiB). htab_map_alloc_check refuses key_size +
// value_size >= KmallocMaxSize - sizeof(struct htab_elem) with E2BIG, so
// that a whole element can be kmalloc'ed.
const KmallocMaxSize = 4 << 20

// PoisonFree is the byte freed elements are filled with (POISON_FREE).
const PoisonFree = 0x6b

// bucketSize is sizeof(struct bucket) on LP64: htab_map_alloc refuses more
// buckets than U32_MAX / sizeof(struct bucket) with E2BIG.
const bucketSize = 16

// Hash is BPF_MAP_TYPE_HASH.
var Hash = &maps.Type{
	ID:         uapi.MapTypeHash,
	Name:       "hash",
	AllocCheck: allocCheck,
	Alloc:      alloc,
	MetaEqual:  maps.DefaultMetaEqual,
	Header:     true,
}

// PercpuHash is BPF_MAP_TYPE_PERCPU_HASH.
var PercpuHash = &maps.Type{
	ID:         uapi.MapTypePercpuHash,
	Name:       "percpu_hash",
	AllocCheck: allocCheck,
	Alloc:      alloc,
	MetaEqual:  maps.DefaultMetaEqual,
	Header:     true,
}

// ElemLookuper is implemented by the Ops of both types: LookupElemAddr is
// __htab_map_lookup_elem, the call an inlined lookup makes before adding
// ValueOffset (htab_map_gen_lookup, htab_percpu_map_gen_lookup).
type ElemLookuper interface {
	LookupElemAddr(key []byte) uint64
}

var (
	_ ElemLookuper          = (*htab)(nil)
	_ maps.LookupAndDeleter = (*htab)(nil)
	_ maps.PercpuValues     = (*percpuHtab)(nil)
)

// ValueOffset is the distance from a struct htab_elem to its value (the
// per-CPU pointer for PERCPU_HASH): offsetof(struct htab_elem, key) +
// round_up(key_size, 8), the constant htab_map_gen_lookup adds to the
// element address.
func ValueOffset(keySize uint32) uint64 { return KeyOffset + roundUp8(uint64(keySize)) }

// ElemSize is htab->elem_size: header, key rounded to 8, then the value
// rounded to 8 or, for per-CPU maps, an 8-byte per-CPU pointer.
func ElemSize(keySize, valueSize uint32, percpu bool) uint64 {
	if percpu {
		return ValueOffset(keySize) + 8
	}
	return ValueOffset(keySize) + roundUp8(uint64(valueSize))
}

func roundUp8(n uint64) uint64 { return (n + 7) &^ 7 }

// allowedFlags are the map_flags htab_map_alloc_check accepts
// (HTAB_CREATE_FLAG_MASK). BPF_F_NO_COMMON_LRU is refused for non-LRU
// types, and BPF_F_INNER_MAP is not in the mask.
const allowedFlags = uapi.BPF_F_NO_PREALLOC | uapi.BPF_F_NO_COMMON_LRU | uapi.BPF_F_NUMA_NODE | uapi.BPF_F_ACCESS_MASK | uapi.BPF_F_ZERO_SEED

// isPercpuType and isLRUType are htab_is_percpu and htab_is_lru.
func isPercpuType(t uapi.MapType) bool {
	return t == uapi.MapTypePercpuHash || t == uapi.MapTypeLRUPercpuHash
}

func isLRUType(t uapi.MapType) bool {
	return t == uapi.MapTypeLRUHash || t == uapi.MapTypeLRUPercpuHash
}

// allocCheck mirrors htab_map_alloc_check, followed by the size checks
// htab_map_alloc makes before it allocates anything. BPF_F_ZERO_SEED needs
// CAP_SYS_ADMIN in the kernel; the simulated loader is privileged, so it is
// always accepted.
func allocCheck(attr *maps.Attr) error {
	percpu := isPercpuType(attr.Type)
	lru := isLRUType(attr.Type)
	percpuLRU := attr.Flags&uapi.BPF_F_NO_COMMON_LRU != 0
	const progRW = uapi.BPF_F_RDONLY_PROG | uapi.BPF_F_WRONLY_PROG
	switch {
	case attr.Flags&^allowedFlags != 0:
		return errors.Wrapf(uapi.EINVAL, "hash map_flags %#x include unsupported flags", attr.Flags)
	case attr.Flags&progRW == progRW:
		return errors.Wrap(uapi.EINVAL, "BPF_F_RDONLY_PROG and BPF_F_WRONLY_PROG together")
	case !lru && percpuLRU:
		return errors.Wrap(uapi.EINVAL, "BPF_F_NO_COMMON_LRU is only for LRU hash maps")
	case lru && attr.Flags&uapi.BPF_F_NO_PREALLOC != 0:
		return errors.Wrap(uapi.ENOTSUPP, "LRU hash maps are always preallocated: BPF_F_NO_PREALLOC")
	case (percpu || percpuLRU) && attr.Flags&uapi.BPF_F_NUMA_NODE != 0:
		return errors.Wrap(uapi.EINVAL, "per-CPU hash maps and per-CPU LRU lists cannot be placed on a NUMA node")
	case attr.MaxEntries == 0 || attr.KeySize == 0 || attr.ValueSize == 0:
		return errors.Wrapf(uapi.EINVAL, "hash needs max_entries, key_size and value_size > 0 (got %d, %d, %d)",
			attr.MaxEntries, attr.KeySize, attr.ValueSize)
	case uint64(attr.KeySize)+uint64(attr.ValueSize) >= KmallocMaxSize-KeyOffset:
		return errors.Wrapf(uapi.E2BIG, "key_size %d + value_size %d reach the %d-byte element limit",
			attr.KeySize, attr.ValueSize, KmallocMaxSize-KeyOffset)
	case percpu && roundUp8(uint64(attr.ValueSize)) > mem.PercpuMaxAlloc:
		return errors.Wrapf(uapi.E2BIG, "per-CPU value of %d bytes exceeds %d", attr.ValueSize, mem.PercpuMaxAlloc)
	}
	return checkMaxEntries(attr.MaxEntries)
}

// checkMaxEntries is htab_map_alloc's limit on max_entries (after a
// per-CPU LRU's rounding): at most 2^31, and a bucket array whose size
// fits in 32 bits.
func checkMaxEntries(maxEntries uint32) error {
	switch {
	case maxEntries > 1<<31:
		return errors.Wrapf(uapi.E2BIG, "max_entries %d exceeds 2^31", maxEntries)
	case uint64(nBuckets(maxEntries)) > math.MaxUint32/bucketSize:
		return errors.Wrapf(uapi.E2BIG, "%d buckets overflow the bucket array", nBuckets(maxEntries))
	}
	return nil
}

// nBuckets is roundup_pow_of_two(max_entries), for 0 < max_entries <= 2^31.
func nBuckets(maxEntries uint32) uint32 {
	if maxEntries <= 1 {
		return 1
	}
	return 1 << bits.Len32(maxEntries-1)
}

// Buckets are allocated in segments on first use, so that a large
// BPF_F_NO_PREALLOC map does not cost host memory for buckets it never
// fills.
const (
	segShift   = 8
	segBuckets = 1 << segShift
	segMask    = segBuckets - 1
)

// bucket is struct bucket: a chain head that readers load atomically and
// a lock that writers hold.
type bucket struct {
	mu   sync.Mutex
	head atomic.Pointer[elem]
}

type segment [segBuckets]bucket

// elem is the Go side of one struct htab_elem.
type elem struct {
	// next is hash_node.next. An unlinked element keeps it, so a reader
	// standing on it continues down the chain (hlist_nulls_del_rcu).
	next atomic.Pointer[elem]
	// hash is written when the element is (re)used and read by lookups;
	// atomic so that even a reader outside any RCU section (a user-space
	// lookup the simulated kernel does not protect) is race-free.
	hash atomic.Uint32
	addr uint64 // simulated address of the struct htab_elem
	// raw is the element's simulated memory: header, key, value.
	raw []byte
	// PERCPU_HASH: the per-CPU value and every CPU's copy of it, CPU c's
	// at Percpu.Offset(c) (a per-CPU chunk keeps its units back to back).
	pptr uint64
	pcpu []byte
	// rcuFree is the element's CallRCU callback, made on its first
	// retirement and kept, so that retiring does not allocate. Only the
	// element's current owner (whoever unlinked it) touches it.
	rcuFree func()
	// LRU maps: the LRU node the element belongs to, and whether it was
	// ever linked into the table (then it may have readers, and its node
	// takes a fresh element when it is handed out again).
	node       *lruNode
	everLinked atomic.Bool
}

// chunk is one area of element memory.
type chunk struct {
	addr  uint64
	elems []elem
}

// htab is struct bpf_htab.
type htab struct {
	m        *maps.Map
	k        maps.Kernel
	space    *mem.Space
	percpuA  *mem.Percpu
	percpu   bool
	prealloc bool
	ncpu     int

	keySize   int
	valueSize int
	valueOff  uint64 // ValueOffset(key_size)
	elemSize  uint64
	pcpuSize  uint64 // round_up(value_size, 8): one CPU's copy
	hashrnd   uint32
	mask      uint32 // n_buckets - 1
	nBuckets  uint32
	segs      []atomic.Pointer[segment]

	// mu guards the free list, the element count and the element memory.
	// Lock order: a bucket's lock, then mu, then the address space's locks.
	mu     sync.Mutex
	free   []*elem
	count  uint32 // keys in the map (htab->count)
	total  int    // elements mapped
	chunks []chunk
	freed  bool

	// LRU maps: the lists, and the node of every preallocated element.
	lru      *bpfLRU
	lruNodes []lruNode
}

func alloc(k maps.Kernel, m *maps.Map) (maps.Ops, error) {
	if isLRUType(m.Type.ID) {
		return allocLRU(k, m)
	}
	h, err := newHtab(k, m)
	if err != nil {
		return nil, err
	}
	if h.percpu {
		return &percpuHtab{h}, nil
	}
	return h, nil
}

// newHtab is htab_map_alloc.
func newHtab(k maps.Kernel, m *maps.Map) (*htab, error) {
	percpu := isPercpuType(m.Type.ID)
	n := nBuckets(m.MaxEntries)
	h := &htab{
		m:         m,
		k:         k,
		space:     k.Memory(),
		percpuA:   k.Percpu(),
		percpu:    percpu,
		prealloc:  m.Flags&uapi.BPF_F_NO_PREALLOC == 0,
		ncpu:      k.NumCPUs(),
		keySize:   int(m.KeySize),
		valueSize: int(m.ValueSize),
		valueOff:  ValueOffset(m.KeySize),
		elemSize:  ElemSize(m.KeySize, m.ValueSize, percpu),
		pcpuSize:  roundUp8(uint64(m.ValueSize)),
		mask:      n - 1,
		nBuckets:  n,
	}
	if m.Flags&uapi.BPF_F_ZERO_SEED == 0 {
		h.hashrnd = k.Random()
	}
	addr, err := h.space.Vmalloc(mem.PageSize, mem.PermRW, "bpf_htab")
	if err != nil {
		return nil, err
	}
	m.Addr = addr
	if h.prealloc {
		// prealloc_init: every element up front, before the buckets, so
		// that a map too large for memory fails with ENOMEM without first
		// costing the host its bucket array.
		num := int(m.MaxEntries)
		if !percpu && !isLRUType(m.Type.ID) {
			num += h.ncpu // extra_elems
		}
		h.mu.Lock()
		err = h.grow(num)
		h.mu.Unlock()
		if err != nil {
			h.Free()
			return nil, err
		}
	}
	h.segs = make([]atomic.Pointer[segment], (uint64(n)+segMask)>>segShift)
	return h, nil
}

// percpuHtab adds the per-CPU abilities to a hash map.
type percpuHtab struct{ *htab }

// bucket returns the bucket of hash, or nil if its segment was never used
// (then the bucket is empty).
func (h *htab) bucket(hash uint32) *bucket {
	i := hash & h.mask
	seg := h.segs[i>>segShift].Load()
	if seg == nil {
		return nil
	}
	return &seg[i&segMask]
}

// bucketForUpdate returns the bucket of hash, allocating its segment.
func (h *htab) bucketForUpdate(hash uint32) *bucket {
	i := hash & h.mask
	p := &h.segs[i>>segShift]
	seg := p.Load()
	if seg == nil {
		seg = new(segment)
		if !p.CompareAndSwap(nil, seg) {
			seg = p.Load()
		}
	}
	return &seg[i&segMask]
}

// key returns e's key bytes.
func (h *htab) key(e *elem) []byte { return e.raw[KeyOffset : KeyOffset+h.keySize] }

// find walks b's chain for key: lock-free for readers, and under b.mu for
// writers, which also get the predecessor (nil when e is the head).
func (h *htab) find(b *bucket, hash uint32, key []byte) (prev, e *elem) {
	for e = b.head.Load(); e != nil; prev, e = e, e.next.Load() {
		if e.hash.Load() == hash && keyEqual(e.raw[KeyOffset:KeyOffset+h.keySize], key) {
			return prev, e
		}
	}
	return nil, nil
}

// lookup is __htab_map_lookup_elem. Elements are not reused within a
// grace period, so unlike the kernel the walk never has to restart.
func (h *htab) lookup(key []byte) *elem {
	key = key[:h.keySize]
	hash := HashKey(key, h.hashrnd)
	b := h.bucket(hash)
	if b == nil {
		return nil
	}
	_, e := h.find(b, hash, key)
	return e
}

// linkHead is hlist_nulls_add_head_rcu; the caller holds b.mu and has
// written all of e's bytes, which the atomic store publishes.
func linkHead(b *bucket, e *elem) {
	e.next.Store(b.head.Load())
	b.head.Store(e)
}

// unlink is hlist_nulls_del_rcu; the caller holds b.mu. e.next is kept.
func unlink(b *bucket, prev, e *elem) {
	if prev == nil {
		b.head.Store(e.next.Load())
	} else {
		prev.next.Store(e.next.Load())
	}
}

// getElem takes an element for a new key (newKey) or for a replacement.
// Only a new key counts against max_entries: E2BIG when the map holds
// max_entries keys, as the kernel's empty free list (prealloc) or full
// count (BPF_F_NO_PREALLOC) says. The caller holds a bucket lock.
func (h *htab) getElem(newKey bool) (*elem, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if newKey && h.count >= h.m.MaxEntries {
		return nil, errors.Wrapf(uapi.E2BIG, "hash map is full (%d keys)", h.m.MaxEntries)
	}
	e, err := h.takeFree()
	if err == nil && newKey {
		h.count++
	}
	return e, err
}

// takeFree takes element memory from the free list, mapping more if it is
// empty. The caller holds h.mu.
func (h *htab) takeFree() (*elem, error) {
	if len(h.free) == 0 {
		if err := h.grow(h.chunkLen()); err != nil {
			return nil, err
		}
	}
	e := h.free[len(h.free)-1]
	h.free = h.free[:len(h.free)-1]
	return e, nil
}

// chunkLen is how many elements the next chunk of on-demand element memory
// holds: at least a page's worth, doubling what exists, but not more than
// 64 Ki elements, nor past max_entries plus one per CPU while the map has
// not reached that.
func (h *htab) chunkLen() int {
	n := max(h.total, int(mem.PageSize/h.elemSize), 1)
	n = min(n, 1<<16)
	if limit := int(h.m.MaxEntries) + h.ncpu; h.total < limit {
		n = min(n, limit-h.total)
	}
	return n
}

// grow maps n more elements and puts them on the free list, the first of
// them on top. The caller holds h.mu.
func (h *htab) grow(n int) error {
	if h.freed {
		return errors.Wrap(uapi.EINVAL, "hash map is freed")
	}
	size := uint64(n) * h.elemSize
	addr, err := h.space.Vmalloc(size, mem.PermRW, "bpf_htab_elems")
	if err != nil {
		return err
	}
	raw, err := h.space.Bytes(addr, size)
	if err != nil {
		_ = h.space.Free(addr)
		return err
	}
	c := chunk{addr: addr, elems: make([]elem, n)}
	for i := range c.elems {
		e := &c.elems[i]
		off := uint64(i) * h.elemSize
		e.addr = addr + off
		e.raw = raw[off : off+h.elemSize : off+h.elemSize]
		if h.percpu {
			if err := h.allocPercpu(e); err != nil {
				h.freeChunk(c)
				return err
			}
		}
	}
	h.chunks = append(h.chunks, c)
	h.total += n
	h.free = append(h.free, make([]*elem, n)...)
	top := len(h.free) - 1
	for i := range c.elems {
		h.free[top-i] = &c.elems[i]
	}
	return nil
}

// allocPercpu gives e its per-CPU value for good: the element keeps it
// while it is free, as preallocated per-CPU elements do in the kernel.
func (h *htab) allocPercpu(e *elem) error {
	p, err := h.percpuA.Alloc(h.pcpuSize)
	if err != nil {
		return err
	}
	view, err := h.space.Bytes(p, h.percpuA.Offset(h.ncpu-1)+h.pcpuSize)
	if err != nil {
		h.percpuA.Free(p, h.pcpuSize)
		return err
	}
	e.pptr, e.pcpu = p, view
	return nil
}

// freeChunk releases a chunk's per-CPU values and memory.
func (h *htab) freeChunk(c chunk) {
	for i := range c.elems {
		if p := c.elems[i].pptr; p != 0 {
			h.percpuA.Free(p, h.pcpuSize)
		}
	}
	_ = h.space.Free(c.addr)
}

// cpuValue is CPU cpu's copy of e's per-CPU value, padding included.
func (h *htab) cpuValue(e *elem, cpu int) []byte {
	off := h.percpuA.Offset(cpu)
	return e.pcpu[off : off+h.pcpuSize : off+h.pcpuSize]
}

// keyEqual compares a key in simulated memory with key. In race-enabled
// builds simulated memory is read with mem.LoadBytes, as everywhere else,
// so that the race detector sees the same atomic accesses programs make.
func keyEqual(stored, key []byte) bool {
	if !mem.RaceMode {
		return bytes.Equal(stored, key)
	}
	if len(stored) != len(key) {
		return false
	}
	var buf [64]byte
	for len(stored) > 0 {
		n := mem.LoadBytes(buf[:], stored)
		if !bytes.Equal(buf[:n], key[:n]) {
			return false
		}
		stored, key = stored[n:], key[n:]
	}
	return true
}

// initElem writes the header and key of an element about to be linked,
// clearing what a previous use or the poison left. The value is the
// caller's to write. Simulated memory is written with the mem accessors,
// which are atomic in race-enabled builds.
func (h *htab) initElem(e *elem, hash uint32, key []byte) {
	e.hash.Store(hash)
	var hdr [KeyOffset]byte
	binary.LittleEndian.PutUint32(hdr[HashOffset:], hash)
	mem.StoreBytes(e.raw[:KeyOffset], hdr[:])
	mem.StoreBytes(e.raw[KeyOffset:], key[:h.keySize])
	mem.Fill(e.raw[KeyOffset+h.keySize:h.valueOff], 0)
	if h.percpu {
		var p [8]byte
		binary.LittleEndian.PutUint64(p[:], e.pptr)
		mem.StoreBytes(e.raw[h.valueOff:], p[:])
	}
}

// value is a HASH element's value.
func (h *htab) value(e *elem) []byte {
	return e.raw[h.valueOff : h.valueOff+uint64(h.valueSize)]
}

// setValue writes the value of a HASH element about to be linked
// (alloc_htab_elem's copy_map_value) and clears its padding. The copy goes
// around the value's spin lock, which starts free.
func (h *htab) setValue(e *elem, value []byte) {
	v := e.raw[h.valueOff:]
	maps.InitSpecialFields(h.m.Record, v[:h.valueSize])
	maps.StoreValue(h.m.Record, v[:h.valueSize], value)
	mem.Fill(v[h.valueSize:], 0)
}

// retire ends an unlinked element's life: it leaves the count at once
// (dec_elem_count), and its memory is poisoned and reused only after a
// grace period. The caller holds no lock: CallRCU may run fn at once.
func (h *htab) retire(e *elem, wasKey bool) {
	// The value's timer ends with the element, at once
	// (check_and_free_fields), not after the grace period.
	maps.FreeFields(h.m, e.addr+h.valueOff)
	if wasKey {
		h.mu.Lock()
		h.count--
		h.mu.Unlock()
	}
	if e.rcuFree == nil {
		e.rcuFree = func() { h.release(e) }
	}
	h.k.CallRCU(e.rcuFree)
}

// release poisons e and returns it to the free list.
func (h *htab) release(e *elem) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.freed {
		return
	}
	mem.Fill(e.raw, PoisonFree)
	if h.percpu {
		for cpu := 0; cpu < h.ncpu; cpu++ {
			mem.Fill(h.cpuValue(e, cpu), PoisonFree)
		}
	}
	h.free = append(h.free, e)
}

// Free is htab_map_free: element memory, per-CPU values and the map
// object go back to the address space. Callbacks still queued with
// CallRCU find the map freed and do nothing.
func (h *htab) Free() {
	if f, ok := h.k.(maps.FieldsFreer); ok && h.m.Record.Has(maps.FieldTimer) {
		f.FreeTimers(h.m)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.freed {
		return
	}
	h.freed = true
	for _, c := range h.chunks {
		h.freeChunk(c)
	}
	h.chunks, h.free = nil, nil
	if h.m.Addr != 0 {
		_ = h.space.Free(h.m.Addr)
	}
}
