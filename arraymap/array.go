// Package arraymap simulates the kernel's array maps, kernel/bpf/arraymap.c:
// BPF_MAP_TYPE_ARRAY and BPF_MAP_TYPE_PERCPU_ARRAY, and the array of maps,
// BPF_MAP_TYPE_ARRAY_OF_MAPS (arrayofmaps.go; arrays as inner maps:
// inner.go).
//
// An array is one area of simulated memory laid out like struct bpf_array:
// the map object first, then, ValueOffset bytes from its start, the values
// (ARRAY) or one per-CPU pointer per element (PERCPU_ARRAY). The value of
// index i lives at map + ValueOffset + i*elem_size, the very address an
// inlined lookup computes.
//
// The simulated loader is privileged (it can bypass Spectre v1 masking), so
// arrays hold exactly max_entries elements and the index mask is not
// applied, as for root in the kernel.
//
// BPF_F_RDONLY_PROG and BPF_F_WRONLY_PROG are enforced with page
// permissions on the values: a program store into a read-only-for-programs
// array faults, while the kernel's own writes (user-space updates) reach
// the memory directly.
package arraymap

import (
	"encoding/binary"
	"math"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// ValueOffset is offsetof(struct bpf_array, value) in the simulated kernel:
// where values (or per-CPU pointers) start, counted from the map object.
// The kernel's value depends on its configuration; 272 is what the
// kernel of the map-in-map patch that introduced BPF_F_INNER_MAP printed.
const ValueOffset = 272

// Array is BPF_MAP_TYPE_ARRAY.
var Array = &maps.Type{
	ID:         uapi.MapTypeArray,
	Name:       "array",
	AllocCheck: allocCheck,
	Alloc:      alloc,
	MetaEqual:  arrayMetaEqual,
	Header:     true,
}

// PercpuArray is BPF_MAP_TYPE_PERCPU_ARRAY.
var PercpuArray = &maps.Type{
	ID:         uapi.MapTypePercpuArray,
	Name:       "percpu_array",
	AllocCheck: allocCheck,
	Alloc:      alloc,
	MetaEqual:  maps.DefaultMetaEqual,
	Header:     true,
}

// allowedFlags are the map_flags array_map_alloc_check accepts.
const allowedFlags = uapi.BPF_F_NUMA_NODE | uapi.BPF_F_ACCESS_MASK | uapi.BPF_F_INNER_MAP | uapi.BPF_F_MMAPABLE

// allocCheck mirrors array_map_alloc_check.
func allocCheck(attr *maps.Attr) error {
	percpu := attr.Type == uapi.MapTypePercpuArray
	switch {
	case attr.MaxEntries == 0 || attr.KeySize != 4 || attr.ValueSize == 0:
		return errors.Wrapf(uapi.EINVAL, "array needs max_entries > 0, key_size 4 and value_size > 0 (got %d, %d, %d)",
			attr.MaxEntries, attr.KeySize, attr.ValueSize)
	case attr.Flags&uapi.BPF_F_MMAPABLE != 0 && attr.Type != uapi.MapTypeArray:
		return errors.Wrap(uapi.EINVAL, "BPF_F_MMAPABLE is only for BPF_MAP_TYPE_ARRAY")
	case attr.Flags&^allowedFlags != 0:
		return errors.Wrapf(uapi.EINVAL, "array map_flags %#x include unsupported flags", attr.Flags)
	case percpu && attr.Flags&uapi.BPF_F_NUMA_NODE != 0:
		return errors.Wrap(uapi.EINVAL, "per-CPU arrays cannot be placed on a NUMA node")
	case attr.Flags&uapi.BPF_F_INNER_MAP != 0 && percpu:
		return errors.Wrap(uapi.EINVAL, "BPF_F_INNER_MAP is only for BPF_MAP_TYPE_ARRAY")
	case attr.ValueSize > math.MaxInt32:
		return errors.Wrapf(uapi.E2BIG, "value_size %d", attr.ValueSize)
	case percpu && uint64(maps.RoundUp8(attr.ValueSize)) > mem.PercpuMaxAlloc:
		return errors.Wrapf(uapi.E2BIG, "per-CPU value of %d bytes exceeds %d", attr.ValueSize, mem.PercpuMaxAlloc)
	}
	return nil
}

// array is struct bpf_array.
type array struct {
	m        *maps.Map
	k        maps.Kernel
	elemSize uint64 // round_up(value_size, 8)
	percpu   bool
	// values is the Go view of the simulated memory after the map object:
	// values for ARRAY, per-CPU pointers for PERCPU_ARRAY.
	values []byte
	pptrs  []uint64 // PERCPU_ARRAY: each element's per-CPU address
}

func alloc(k maps.Kernel, m *maps.Map) (maps.Ops, error) {
	a := &array{m: m, k: k, elemSize: uint64(maps.RoundUp8(m.ValueSize)), percpu: m.Type.ID == uapi.MapTypePercpuArray}
	slot := a.elemSize
	if a.percpu {
		slot = 8
	}
	data := uint64(m.MaxEntries) * slot
	if m.Flags&uapi.BPF_F_MMAPABLE != 0 {
		// User space maps whole pages of values.
		data = (data + mem.PageSize - 1) &^ (mem.PageSize - 1)
	}
	size := ValueOffset + data
	addr, err := k.Memory().Vmalloc(size, mem.PermRW, "bpf_array")
	if err != nil {
		return nil, err
	}
	m.Addr = addr
	if a.values, err = k.Memory().Bytes(addr+ValueOffset, data); err != nil {
		a.Free()
		return nil, err
	}
	if a.percpu {
		a.pptrs = make([]uint64, m.MaxEntries)
		for i := range a.pptrs {
			p, err := k.Percpu().Alloc(a.elemSize)
			if err != nil {
				a.Free()
				return nil, err
			}
			a.pptrs[i] = p
			binary.LittleEndian.PutUint64(a.values[uint64(i)*8:], p)
		}
	}
	if err := a.protect(); err != nil {
		a.Free()
		return nil, err
	}
	if a.percpu {
		return &percpuArray{a}, nil
	}
	return a, nil
}

// MmapBytes is array_map_mmap's view: every value, in whole pages. Values
// with a spin lock cannot be mapped (bpf_map_mmap's ENOTSUPP, checked
// first): user space would write their locks.
func (a *array) MmapBytes() ([]byte, error) {
	if a.m.Record != nil {
		return nil, errors.Wrap(uapi.ENOTSUPP, "an array whose values hold a bpf_spin_lock or a bpf_timer cannot be mapped")
	}
	if a.m.Flags&uapi.BPF_F_MMAPABLE == 0 {
		return nil, errors.Wrap(uapi.EINVAL, "the array was not created with BPF_F_MMAPABLE")
	}
	return a.values, nil
}

// percpuArray adds the per-CPU abilities to an array.
type percpuArray struct{ *array }

// DirectValueAddr: the kernel's per-CPU arrays have no direct value
// access.
func (a *percpuArray) DirectValueAddr(uint32) (uint64, error) {
	return 0, maps.ErrNoDirectValue
}

// protect applies BPF_F_RDONLY_PROG and BPF_F_WRONLY_PROG to the pages
// that hold only values.
func (a *array) protect() error {
	var perm mem.Perm
	switch {
	case a.m.Flags&uapi.BPF_F_RDONLY_PROG != 0:
		perm = mem.PermRead
	case a.m.Flags&uapi.BPF_F_WRONLY_PROG != 0:
		perm = mem.PermWrite
	default:
		return nil
	}
	area, ok := a.k.Memory().AreaOf(a.m.Addr)
	if !ok {
		return errors.Errorf("array map %d has no memory", a.m.ID)
	}
	// The page holding the map object keeps its permissions; with
	// ValueOffset under a page, the values' first bytes share it.
	return a.k.Memory().SetPerm(area.Start, area.Size, perm)
}

func (a *array) index(key []byte) (uint32, bool) { return arrayIndex(a.m.MaxEntries, key) }

// LookupElem is array_map_lookup_elem / percpu_array_map_lookup_elem.
func (a *array) LookupElem(cpu int, key []byte) (uint64, error) {
	idx, ok := a.index(key)
	if !ok {
		return 0, nil
	}
	if a.percpu {
		return a.pptrs[idx] + a.k.Percpu().Offset(cpu), nil
	}
	return a.m.Addr + ValueOffset + uint64(idx)*a.elemSize, nil
}

func checkUpdateFlags(flags uint64) error {
	if flags&^uapi.BPF_F_LOCK > uapi.BPF_EXIST {
		return errors.Wrapf(uapi.EINVAL, "unknown update flags %#x", flags)
	}
	return nil
}

// UpdateElem is array_map_update_elem: every element exists, so NOEXIST
// always fails, and an index past the end is E2BIG. The value is copied
// in place around its spin lock, if it has one, and with BPF_F_LOCK while
// holding that lock (copy_map_value, copy_map_value_locked); BPF_F_LOCK
// on a value without a lock is EINVAL.
func (a *array) UpdateElem(cpu int, key, value []byte, flags uint64) error {
	if err := checkUpdateFlags(flags); err != nil {
		return err
	}
	idx, ok := a.index(key)
	rec := a.m.Record
	switch {
	case !ok:
		return errors.Wrapf(uapi.E2BIG, "index %d is past max_entries %d", idx, a.m.MaxEntries)
	case flags&^uapi.BPF_F_LOCK == uapi.BPF_NOEXIST:
		return errors.Wrap(uapi.EEXIST, "every array element exists")
	case flags&uapi.BPF_F_LOCK != 0 && !rec.Has(maps.FieldSpinLock):
		return errors.Wrap(uapi.EINVAL, "BPF_F_LOCK needs a bpf_spin_lock in the value")
	}
	dst, err := a.value(idx, cpu)
	if err != nil {
		return err
	}
	if flags&uapi.BPF_F_LOCK != 0 {
		maps.StoreValueLocked(rec, dst, value)
	} else {
		maps.StoreValue(rec, dst, value)
	}
	if !a.percpu {
		// An update ends the old value's timer, as array_map_update_elem
		// frees the fields after the copy.
		maps.FreeFields(a.m, a.m.Addr+ValueOffset+uint64(idx)*a.elemSize)
	}
	return nil
}

// value returns the Go view of element idx (cpu's copy for per-CPU).
func (a *array) value(idx uint32, cpu int) ([]byte, error) {
	if a.percpu {
		return a.k.Percpu().Bytes(a.pptrs[idx], uint64(a.m.ValueSize), cpu)
	}
	off := uint64(idx) * a.elemSize
	return a.values[off : off+uint64(a.m.ValueSize)], nil
}

// DirectValueAddr is array_map_direct_value_addr: a program may address
// the value of a one-element array directly (global data sections).
func (a *array) DirectValueAddr(off uint32) (uint64, error) {
	if a.m.MaxEntries != 1 {
		// -ENOTSUPP, the kernel-internal errno, reaches user space.
		return 0, errors.Wrap(uapi.ENOTSUPP, "direct value access needs an array of one element")
	}
	if off >= a.m.ValueSize {
		return 0, errors.Wrapf(uapi.EINVAL, "offset %d is past the %d-byte value", off, a.m.ValueSize)
	}
	return a.m.Addr + ValueOffset + uint64(off), nil
}

// DeleteElem: array elements cannot be deleted.
func (a *array) DeleteElem(int, []byte) error {
	return errors.Wrap(uapi.EINVAL, "array elements cannot be deleted")
}

// arrayIndex reads an array key: the index, and whether it is in range.
func arrayIndex(maxEntries uint32, key []byte) (uint32, bool) {
	idx := binary.LittleEndian.Uint32(key)
	return idx, idx < maxEntries
}

// GetNextKey is array_map_get_next_key.
func (a *array) GetNextKey(key, next []byte) error {
	return maps.IndexNextKey(a.m.MaxEntries, key, next)
}

// Free is array_map_free.
func (a *array) Free() {
	if f, ok := a.k.(maps.FieldsFreer); ok && a.m.Record.Has(maps.FieldTimer) {
		f.FreeTimers(a.m)
	}
	for _, p := range a.pptrs {
		if p != 0 {
			a.k.Percpu().Free(p, a.elemSize)
		}
	}
	if a.m.Addr != 0 {
		_ = a.k.Memory().Free(a.m.Addr)
	}
}

// LookupPercpu copies every CPU's copy of the element, each rounded up to
// 8 bytes (bpf_percpu_array_copy).
func (a *percpuArray) LookupPercpu(key, values []byte) error {
	idx, ok := a.index(key)
	if !ok {
		return errors.Wrapf(uapi.ENOENT, "index %d is past max_entries %d", idx, a.m.MaxEntries)
	}
	for cpu := 0; cpu < a.k.NumCPUs(); cpu++ {
		v, err := a.value(idx, cpu)
		if err != nil {
			return err
		}
		mem.LoadBytes(values[uint64(cpu)*a.elemSize:], v)
	}
	return nil
}

// UpdatePercpu writes every CPU's copy (bpf_percpu_array_update).
func (a *percpuArray) UpdatePercpu(key, values []byte, flags uint64) error {
	if flags&^uapi.BPF_F_LOCK > uapi.BPF_EXIST || flags&uapi.BPF_F_LOCK != 0 {
		return errors.Wrapf(uapi.EINVAL, "unsupported update flags %#x", flags)
	}
	idx, ok := a.index(key)
	switch {
	case !ok:
		return errors.Wrapf(uapi.E2BIG, "index %d is past max_entries %d", idx, a.m.MaxEntries)
	case flags == uapi.BPF_NOEXIST:
		return errors.Wrap(uapi.EEXIST, "every array element exists")
	}
	for cpu := 0; cpu < a.k.NumCPUs(); cpu++ {
		v, err := a.value(idx, cpu)
		if err != nil {
			return err
		}
		mem.StoreBytes(v, values[uint64(cpu)*a.elemSize:])
	}
	return nil
}

// LookupPercpuElem is percpu_array_map_lookup_percpu_elem: another CPU's
// copy, or NULL for a CPU that does not exist.
func (a *percpuArray) LookupPercpuElem(key []byte, cpu int) (uint64, error) {
	idx, ok := a.index(key)
	if !ok || cpu < 0 || cpu >= a.k.NumCPUs() {
		return 0, nil
	}
	return a.pptrs[idx] + a.k.Percpu().Offset(cpu), nil
}
