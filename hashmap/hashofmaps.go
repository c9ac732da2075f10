package hashmap

import (
	"encoding/binary"
	"sync"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// BPF_MAP_TYPE_HASH_OF_MAPS (htab_of_maps_map_ops in hashtab.c): a hash
// map whose values are inner maps.
//
// User space gives a 4-byte value, a map's fd, which the kernel resolves
// (UpdateObject); each element stores the inner map's address in its
// 8-byte value slot (round_up(4, 8) bytes, room for a kernel pointer),
// where a program's lookup, or its inlined htab_of_map_gen_lookup, loads
// it. User space reads back the inner map's id.
//
// Each element holds a reference on its inner map. Replacing the inner map
// of an existing key writes the new pointer into the element in place
// (htab_map_update_elem_in_place, since Linux 6.16's "bpf: Support atomic
// update for htab of maps"): the element keeps its place in its bucket, so
// a concurrent lookup never misses the key, and get_next_key keeps its
// order. A deleted element goes as a HASH element goes (unlinked at once,
// reused after a grace period). A replaced or deleted inner map loses the
// element's reference at once, as in the kernel; its memory is freed only
// after a grace period (maps.Map.Put), so a program holding its pointer is
// safe.

// HashOfMaps is BPF_MAP_TYPE_HASH_OF_MAPS. Its maps cannot be inner maps
// (no MetaEqual).
var HashOfMaps = &maps.Type{
	ID:         uapi.MapTypeHashOfMaps,
	Name:       "hash_of_maps",
	AllocCheck: fdHtabAllocCheck,
	Alloc:      allocHashOfMaps,
}

var (
	_ maps.FdValues        = (*htabOfMaps)(nil)
	_ maps.Outer           = (*htabOfMaps)(nil)
	_ maps.LookupGenerator = (*htabOfMaps)(nil)
	_ ElemLookuper         = (*htabOfMaps)(nil)
)

// fdHtabAllocCheck is fd_htab_map_alloc_check: the value is a u32 fd, then
// the hash map rules apply.
func fdHtabAllocCheck(attr *maps.Attr) error {
	if attr.ValueSize != 4 {
		return errors.Wrapf(uapi.EINVAL, "a hash of maps' value_size must be 4 (got %d)", attr.ValueSize)
	}
	return allocCheck(attr)
}

// ptrSize is the size of the inner map pointer an element stores.
const ptrSize = 8

// htabOfMaps is struct bpf_htab for HASH_OF_MAPS.
type htabOfMaps struct {
	h    *htab
	meta *maps.Map // inner_map_meta

	// mu guards refs and freed. Lock order: a bucket's lock, then mu.
	mu sync.Mutex
	// refs are the inner maps the elements hold, by address, with the
	// number of elements holding each: an element's value is only the
	// address, and the map is needed to drop its reference.
	refs  map[uint64]*innerRef
	freed bool
}

type innerRef struct {
	m *maps.Map
	n int
}

// allocHashOfMaps is htab_of_map_alloc: the inner map template first
// (bpf_map_meta_alloc), then the hash table.
func allocHashOfMaps(k maps.Kernel, m *maps.Map) (maps.Ops, error) {
	meta, err := maps.NewInnerMeta(m.InnerMap)
	if err != nil {
		return nil, err
	}
	h, err := newHtab(k, m)
	if err != nil {
		return nil, err
	}
	// The value slot holds a pointer, not the 4 bytes user space gives.
	h.valueSize = ptrSize
	return &htabOfMaps{h: h, meta: meta, refs: map[uint64]*innerRef{}}, nil
}

// InnerMeta returns the inner map template.
func (o *htabOfMaps) InnerMeta() *maps.Map { return o.meta }

// FdKind: the fds written into a hash of maps are maps'.
func (o *htabOfMaps) FdKind() maps.FdKind { return maps.FdMap }

// innerAddr reads the inner map address e stores.
func (o *htabOfMaps) innerAddr(e *elem) uint64 {
	var b [ptrSize]byte
	mem.LoadBytes(b[:], e.raw[o.h.valueOff:o.h.valueOff+ptrSize])
	return binary.LittleEndian.Uint64(b[:])
}

// LookupElem is htab_of_map_lookup_elem, a program's lookup: the inner
// map's address, or 0.
func (o *htabOfMaps) LookupElem(_ int, key []byte) (uint64, error) {
	if e := o.h.lookup(key); e != nil {
		return o.innerAddr(e), nil
	}
	return 0, nil
}

// LookupElemAddr is __htab_map_lookup_elem, which the inlined lookup calls.
func (o *htabOfMaps) LookupElemAddr(key []byte) uint64 { return o.h.LookupElemAddr(key) }

// UpdateElem: values are written by fd, which only the kernel resolves
// (UpdateObject); programs cannot update a hash of maps.
func (o *htabOfMaps) UpdateElem(int, []byte, []byte, uint64) error {
	return errors.WithMessage(uapi.EINVAL, "the values of a map of maps are maps: they are stored by fd (UpdateObject)")
}

// UpdateObject is bpf_fd_htab_map_update_elem: the map must be one the
// template's map_meta_equal accepts (EINVAL, checked first, as the kernel
// resolves the fd before it looks at the flags); then BPF_ANY, BPF_NOEXIST
// and BPF_EXIST as for a hash map. An existing key's element gets the new
// pointer in place, so it needs no free element even in a full map; a new
// key gets a new element at the head of its bucket. A failed update drops
// the reference it took; a replaced inner map loses its element's.
func (o *htabOfMaps) UpdateObject(key []byte, obj maps.Object, _ maps.File, flags uint64) error {
	inner, err := maps.InnerMap(o.meta, obj)
	if err != nil {
		return err
	}
	if flags&^uapi.BPF_F_LOCK > uapi.BPF_EXIST {
		return errors.Wrapf(uapi.EINVAL, "unknown update flags %#x", flags)
	}
	if flags&uapi.BPF_F_LOCK != 0 {
		return errLock
	}
	inner.Get()
	h := o.h
	key = key[:h.keySize]
	hash := HashKey(key, h.hashrnd)
	b := h.bucketForUpdate(hash)
	b.mu.Lock()
	_, old := h.find(b, hash, key)
	if err := checkFlags(old != nil, flags); err != nil {
		b.mu.Unlock()
		inner.Put()
		return err
	}
	o.mu.Lock()
	if o.freed {
		o.mu.Unlock()
		b.mu.Unlock()
		inner.Put()
		return errors.Wrap(uapi.EINVAL, "hash of maps is freed")
	}
	o.hold(inner)
	o.mu.Unlock()
	var e *elem
	if old == nil {
		if e, err = h.getElem(true); err != nil {
			b.mu.Unlock()
			o.drop(inner.Addr) // the reference taken above
			return err
		}
	}
	var v [ptrSize]byte
	binary.LittleEndian.PutUint64(v[:], inner.Addr)
	if old != nil {
		// One aligned 8-byte store: a program loading the pointer sees
		// the old map or the new one.
		oldAddr := o.innerAddr(old)
		mem.StoreBytes(old.raw[h.valueOff:h.valueOff+ptrSize], v[:])
		b.mu.Unlock()
		o.drop(oldAddr)
		return nil
	}
	h.initElem(e, hash, key)
	h.setValue(e, v[:])
	linkHead(b, e)
	b.mu.Unlock()
	return nil
}

// hold counts one more element holding inner, whose reference the caller
// took. The caller holds o.mu.
func (o *htabOfMaps) hold(inner *maps.Map) {
	if r := o.refs[inner.Addr]; r != nil {
		r.n++
		return
	}
	o.refs[inner.Addr] = &innerRef{m: inner, n: 1}
}

// drop ends an element's hold on the inner map at addr and drops its
// reference.
func (o *htabOfMaps) drop(addr uint64) {
	o.mu.Lock()
	r := o.refs[addr]
	if r == nil {
		o.mu.Unlock()
		return // freed meanwhile: Free dropped it
	}
	if r.n--; r.n == 0 {
		delete(o.refs, addr)
	}
	o.mu.Unlock()
	r.m.Put()
}

// DeleteElem is htab_map_delete_elem; the inner map loses the element's
// reference (free_htab_elem puts it).
func (o *htabOfMaps) DeleteElem(_ int, key []byte) error {
	var addr uint64
	if err := o.h.remove(key, func(e *elem) { addr = o.innerAddr(e) }); err != nil {
		return err
	}
	o.drop(addr)
	return nil
}

// LookupID is bpf_fd_htab_map_lookup_elem with bpf_map_fd_sys_lookup_elem:
// the id of key's inner map, ENOENT for a missing key. The bucket lock
// keeps the element, and so its map, in place while the id is read.
func (o *htabOfMaps) LookupID(key []byte) (uint32, error) {
	h := o.h
	key = key[:h.keySize]
	hash := HashKey(key, h.hashrnd)
	b := h.bucket(hash)
	if b == nil {
		return 0, errNoKey
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	_, e := h.find(b, hash, key)
	if e == nil {
		return 0, errNoKey
	}
	addr := o.innerAddr(e)
	o.mu.Lock()
	defer o.mu.Unlock()
	r := o.refs[addr]
	if r == nil {
		return 0, errNoKey
	}
	return r.m.ID, nil
}

// GetNextKey is htab_map_get_next_key.
func (o *htabOfMaps) GetNextKey(key, next []byte) error { return o.h.GetNextKey(key, next) }

// GenLookup is htab_of_map_gen_lookup: the element lookup, then a load of
// the inner map pointer from its value:
//
//	call __htab_map_lookup_elem
//	if r0 == 0x0 goto +2
//	r0 += ValueOffset(key_size)
//	r0 = *(u64 *)(r0 +0)
func (o *htabOfMaps) GenLookup(call func(string) (insn.Insn, error)) ([]insn.Insn, error) {
	c, err := call(ElemLookupFunc)
	if err != nil {
		return nil, err
	}
	return []insn.Insn{
		c,
		{Code: insn.JMP | insn.JEQ | insn.K, Dst: insn.R0, Off: 2},
		{Code: insn.ALU64 | insn.ADD | insn.K, Dst: insn.R0, Imm: int32(o.h.valueOff)},
		{Code: insn.LDX | insn.MEM | insn.DW, Dst: insn.R0, Src: insn.R0},
	}, nil
}

// Free is htab_of_map_free: every inner map loses its elements'
// references (fd_htab_map_free), then the table goes.
func (o *htabOfMaps) Free() {
	o.mu.Lock()
	if o.freed {
		o.mu.Unlock()
		return
	}
	o.freed = true
	refs := o.refs
	o.refs = map[uint64]*innerRef{}
	o.mu.Unlock()
	for _, r := range refs {
		for ; r.n > 0; r.n-- {
			r.m.Put()
		}
	}
	o.h.Free()
}
