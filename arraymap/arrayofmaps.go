package arraymap

import (
	"encoding/binary"
	"sync"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// BPF_MAP_TYPE_ARRAY_OF_MAPS (array_of_maps_map_ops in arraymap.c): an fd
// array whose slots hold inner maps.
//
// Like every array, it is a struct bpf_array in simulated memory; its
// slots, ValueOffset bytes from the map object, are 8 bytes each
// (round_up(value_size 4, 8)) and hold the address of the inner map, 0 for
// an empty slot: the pointer a program's lookup returns, which the inlined
// lookup (array_of_map_gen_lookup) loads itself. User space writes a map
// (its fd, resolved by the kernel: UpdateObject) and reads back its id.
//
// Each occupied slot holds a reference on its inner map. A replaced or
// deleted inner map loses it at once, as in the kernel (bpf_map_fd_put_ptr
// marks it free_after_rcu_gp, then puts it): its id may go, but its memory
// is freed only after a grace period (maps.Map.Put), so a program that
// loaded the pointer before the update keeps a valid map until it ends.

// ArrayOfMaps is BPF_MAP_TYPE_ARRAY_OF_MAPS. Its maps cannot be inner maps
// (no MetaEqual).
var ArrayOfMaps = &maps.Type{
	ID:         uapi.MapTypeArrayOfMaps,
	Name:       "array_of_maps",
	AllocCheck: fdArrayAllocCheck,
	Alloc:      allocArrayOfMaps,
}

var (
	_ maps.FdValues        = (*arrayOfMaps)(nil)
	_ maps.Outer           = (*arrayOfMaps)(nil)
	_ maps.LookupGenerator = (*arrayOfMaps)(nil)
)

// fdArrayAllocCheck is fd_array_map_alloc_check: an fd array's values are
// u32 fds, programs cannot be given read-only or write-only access to it,
// and then the array rules apply, of which BPF_F_INNER_MAP (and
// BPF_F_MMAPABLE) is only for BPF_MAP_TYPE_ARRAY.
func fdArrayAllocCheck(attr *maps.Attr) error {
	switch {
	case attr.ValueSize != 4:
		return errors.Wrapf(uapi.EINVAL, "an fd array's value_size must be 4 (got %d)", attr.ValueSize)
	case attr.Flags&(uapi.BPF_F_RDONLY_PROG|uapi.BPF_F_WRONLY_PROG) != 0:
		return errors.Wrap(uapi.EINVAL, "fd arrays take neither BPF_F_RDONLY_PROG nor BPF_F_WRONLY_PROG")
	case attr.Flags&uapi.BPF_F_INNER_MAP != 0:
		return errors.Wrap(uapi.EINVAL, "BPF_F_INNER_MAP is only for BPF_MAP_TYPE_ARRAY")
	}
	return allocCheck(attr)
}

// slotSize is the elem_size of an fd array: round_up(sizeof(u32), 8),
// room for a kernel pointer.
const slotSize = 8

// arrayOfMaps is struct bpf_array for ARRAY_OF_MAPS.
type arrayOfMaps struct {
	m    *maps.Map
	k    maps.Kernel
	meta *maps.Map // inner_map_meta
	// slots is the Go view of the slots in simulated memory: what
	// programs read.
	slots []byte

	// mu serialises the writers of slots and inner; readers of slots
	// (programs, LookupElem) take no lock.
	mu    sync.Mutex
	inner []*maps.Map // the map in each slot, holding a reference
	freed bool
}

// allocArrayOfMaps is array_of_map_alloc: the inner map template first
// (bpf_map_meta_alloc), then the array.
func allocArrayOfMaps(k maps.Kernel, m *maps.Map) (maps.Ops, error) {
	meta, err := maps.NewInnerMeta(m.InnerMap)
	if err != nil {
		return nil, err
	}
	a := &arrayOfMaps{m: m, k: k, meta: meta, inner: make([]*maps.Map, m.MaxEntries)}
	data := uint64(m.MaxEntries) * slotSize
	addr, err := k.Memory().Vmalloc(ValueOffset+data, mem.PermRW, "bpf_array")
	if err != nil {
		return nil, err
	}
	m.Addr = addr
	if a.slots, err = k.Memory().Bytes(addr+ValueOffset, data); err != nil {
		_ = k.Memory().Free(addr)
		return nil, err
	}
	return a, nil
}

// InnerMeta returns the inner map template.
func (a *arrayOfMaps) InnerMeta() *maps.Map { return a.meta }

// FdKind: the fds written into an array of maps are maps'.
func (a *arrayOfMaps) FdKind() maps.FdKind { return maps.FdMap }

func (a *arrayOfMaps) index(key []byte) (uint32, bool) { return arrayIndex(a.m.MaxEntries, key) }

// slot is the simulated memory of slot idx.
func (a *arrayOfMaps) slot(idx uint32) []byte {
	off := uint64(idx) * slotSize
	return a.slots[off : off+slotSize : off+slotSize]
}

func (a *arrayOfMaps) loadSlot(idx uint32) uint64 {
	var b [slotSize]byte
	mem.LoadBytes(b[:], a.slot(idx))
	return binary.LittleEndian.Uint64(b[:])
}

func (a *arrayOfMaps) storeSlot(idx uint32, addr uint64) {
	var b [slotSize]byte
	binary.LittleEndian.PutUint64(b[:], addr)
	mem.StoreBytes(a.slot(idx), b[:])
}

// LookupElem is array_of_map_lookup_elem, a program's lookup: the inner
// map's address, or 0 for an empty slot or an index out of range.
func (a *arrayOfMaps) LookupElem(_ int, key []byte) (uint64, error) {
	idx, ok := a.index(key)
	if !ok {
		return 0, nil
	}
	return a.loadSlot(idx), nil
}

var errMapValue = errors.WithMessage(uapi.EINVAL, "the values of a map of maps are maps: they are stored by fd (UpdateObject)")

// UpdateElem: the values of an array of maps are written by fd, which
// only the kernel can resolve (UpdateObject); programs cannot update it
// (the verifier refuses the helper).
func (a *arrayOfMaps) UpdateElem(int, []byte, []byte, uint64) error { return errMapValue }

// UpdateObject is bpf_fd_array_map_update_elem with bpf_map_fd_get_ptr:
// only BPF_ANY, an index in range, and a map the template's map_meta_equal
// accepts (else EINVAL). The slot takes a reference on the map; the map it
// replaces loses its reference (its memory outlives the grace period).
func (a *arrayOfMaps) UpdateObject(key []byte, obj maps.Object, _ maps.File, flags uint64) error {
	if flags != uapi.BPF_ANY {
		return errors.Wrapf(uapi.EINVAL, "an fd array takes only BPF_ANY (flags %#x)", flags)
	}
	idx, ok := a.index(key)
	if !ok {
		return errors.Wrapf(uapi.E2BIG, "index %d is past max_entries %d", idx, a.m.MaxEntries)
	}
	inner, err := maps.InnerMap(a.meta, obj)
	if err != nil {
		return err
	}
	inner.Get()
	a.mu.Lock()
	if a.freed {
		a.mu.Unlock()
		inner.Put()
		return errors.Wrap(uapi.EINVAL, "array of maps is freed")
	}
	old := a.inner[idx]
	a.inner[idx] = inner
	a.storeSlot(idx, inner.Addr)
	a.mu.Unlock()
	if old != nil {
		old.Put()
	}
	return nil
}

// LookupID is bpf_fd_array_map_lookup_elem with bpf_map_fd_sys_lookup_elem:
// the id of the map in the slot; ENOENT for an empty slot or an index out
// of range.
func (a *arrayOfMaps) LookupID(key []byte) (uint32, error) {
	idx, ok := a.index(key)
	if !ok {
		return 0, errors.Wrapf(uapi.ENOENT, "index %d is past max_entries %d", idx, a.m.MaxEntries)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.inner[idx] == nil {
		return 0, errors.Wrapf(uapi.ENOENT, "slot %d is empty", idx)
	}
	return a.inner[idx].ID, nil
}

// DeleteElem is fd_array_map_delete_elem: E2BIG out of range, ENOENT for
// an empty slot; the removed map loses the slot's reference.
func (a *arrayOfMaps) DeleteElem(_ int, key []byte) error {
	idx, ok := a.index(key)
	if !ok {
		return errors.Wrapf(uapi.E2BIG, "index %d is past max_entries %d", idx, a.m.MaxEntries)
	}
	a.mu.Lock()
	old := a.inner[idx]
	if old != nil {
		a.inner[idx] = nil
		a.storeSlot(idx, 0)
	}
	a.mu.Unlock()
	if old == nil {
		return errors.Wrapf(uapi.ENOENT, "slot %d is empty", idx)
	}
	old.Put()
	return nil
}

// GetNextKey is array_map_get_next_key: indexes, empty slots included.
func (a *arrayOfMaps) GetNextKey(key, next []byte) error {
	return maps.IndexNextKey(a.m.MaxEntries, key, next)
}

// GenLookup is array_of_map_gen_lookup: the array lookup followed by a
// load of the slot, and NULL for an empty one. Like the ARRAY sequence
// (genlookup.go), it is the variant without Spectre masking, the one the
// kernel emits for a loader that may bypass Spectre v1:
//
//	r1 += ValueOffset
//	r0 = *(u32 *)(r2 +0)
//	if r0 >= max_entries goto +5
//	r0 <<= 3
//	r0 += r1
//	r0 = *(u64 *)(r0 +0)
//	if r0 == 0x0 goto +1
//	goto +1
//	r0 = 0
func (a *arrayOfMaps) GenLookup(func(string) (insn.Insn, error)) ([]insn.Insn, error) {
	const r0, r1, r2 = insn.R0, insn.R1, insn.R2
	return []insn.Insn{
		{Code: insn.ALU64 | insn.ADD | insn.K, Dst: r1, Imm: ValueOffset},
		{Code: insn.LDX | insn.MEM | insn.W, Dst: r0, Src: r2},
		{Code: insn.JMP | insn.JGE | insn.K, Dst: r0, Off: 5, Imm: int32(a.m.MaxEntries)},
		scaleIndex(slotSize),
		{Code: insn.ALU64 | insn.ADD | insn.X, Dst: r0, Src: r1},
		{Code: insn.LDX | insn.MEM | insn.DW, Dst: r0, Src: r0},
		{Code: insn.JMP | insn.JEQ | insn.K, Dst: r0, Off: 1},
		{Code: insn.JMP | insn.JA, Off: 1},
		{Code: insn.ALU64 | insn.MOV | insn.K, Dst: r0},
	}, nil
}

// Free is array_of_map_free: every inner map loses its slot's reference
// (bpf_fd_array_map_clear), then the array goes.
func (a *arrayOfMaps) Free() {
	a.mu.Lock()
	if a.freed {
		a.mu.Unlock()
		return
	}
	a.freed = true
	inner := append([]*maps.Map(nil), a.inner...)
	clear(a.inner)
	a.mu.Unlock()
	for _, m := range inner {
		if m != nil {
			m.Put()
		}
	}
	if a.m.Addr != 0 {
		_ = a.k.Memory().Free(a.m.Addr)
	}
}
