// Package localstorage simulates BPF local storage
// (kernel/bpf/bpf_local_storage.c) and its task flavour,
// BPF_MAP_TYPE_TASK_STORAGE (kernel/bpf/bpf_task_storage.c): a map that
// holds at most one value per kernel object, its owner, and none for the
// others. A task's value lives as long as the task, or until deleted.
//
// The map knows owners by a 4-byte id. The kernel names them differently
// on each side: user space passes a pidfd as the key, a program passes
// the task_struct to bpf_task_storage_get. The simulated kernel turns
// either into the task's pid before it calls the map, which is therefore
// keyed by pid. The values are in simulated memory, so that the pointer
// bpf_task_storage_get returns works like a map value's; a value removed
// (deleted, replaced, or gone with its task) is reused only after an RCU
// grace period, as the kernel frees it.
package localstorage

import (
	"encoding/binary"
	"sync"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// MaxValueSize is BPF_LOCAL_STORAGE_MAX_VALUE_SIZE: U16_MAX less the
// 128 bytes of struct bpf_local_storage_elem (measured on Linux 6.18
// x86-64: 65,407 bytes create, 65,408 are E2BIG).
const MaxValueSize = 1<<16 - 1 - 128

// createFlags is BPF_LOCAL_STORAGE_CREATE_FLAG_MASK.
const createFlags = uapi.BPF_F_NO_PREALLOC | uapi.BPF_F_CLONE

// GetFCreate is BPF_LOCAL_STORAGE_GET_F_CREATE, the flag of
// bpf_task_storage_get that makes a value for an owner without one.
const GetFCreate = 1

// TaskStorage is the task storage map type, for a kernel's registry.
var TaskStorage = &maps.Type{
	ID:         uapi.MapTypeTaskStorage,
	Name:       "task_storage",
	AllocCheck: allocCheck,
	Alloc:      alloc,
	MetaEqual:  maps.DefaultMetaEqual,
}

// allocCheck is bpf_local_storage_map_alloc_check: BPF_F_NO_PREALLOC, no
// max_entries, an int key (a pidfd), a value, and BTF for both (the
// kernel wants it to dump values).
func allocCheck(attr *maps.Attr) error {
	switch {
	case attr.Flags&^createFlags != 0:
		return errors.Wrapf(uapi.EINVAL, "local storage map_flags %#x: only BPF_F_NO_PREALLOC and BPF_F_CLONE", attr.Flags)
	case attr.Flags&uapi.BPF_F_NO_PREALLOC == 0:
		return errors.Wrap(uapi.EINVAL, "local storage needs BPF_F_NO_PREALLOC")
	case attr.MaxEntries != 0:
		return errors.Wrapf(uapi.EINVAL, "local storage has no max_entries (got %d)", attr.MaxEntries)
	case attr.KeySize != 4 || attr.ValueSize == 0:
		return errors.Wrapf(uapi.EINVAL, "local storage takes a 4-byte key and a value (got %d and %d bytes)", attr.KeySize, attr.ValueSize)
	case !attr.BTF:
		return errors.Wrap(uapi.EINVAL, "local storage needs BTF for its key and value")
	case attr.ValueSize > MaxValueSize:
		return errors.Wrapf(uapi.E2BIG, "local storage values are at most %d bytes (got %d)", MaxValueSize, attr.ValueSize)
	}
	return nil
}

// Storage is a local storage map's ability beyond maps.Ops, for the
// simulated kernel that owns the objects.
type Storage interface {
	// Get is the helper's lookup: the value of owner, or with create a
	// new one, init's bytes (zeros for nil), if it has none. 0 when
	// there is none, as the helper returns NULL.
	Get(owner uint32, init []byte, create bool) uint64
	// DeleteOwner drops owner's value, if any: the owner is gone
	// (bpf_task_storage_free).
	DeleteOwner(owner uint32)
}

// elem is one value (struct bpf_local_storage_elem's data).
type elem struct {
	addr uint64
	raw  []byte
}

// storage is struct bpf_local_storage_map.
type storage struct {
	m     *maps.Map
	k     maps.Kernel
	space *mem.Space
	size  uint64 // the value size rounded up to 8 bytes

	mu     sync.RWMutex // programs' gets of existing values share it
	owners map[uint32]*elem
	chunks []uint64 // the areas values are cut from
	freed  bool

	// freeMu guards free alone: an RCU callback hands values back
	// under it, and may run at once, in a call made holding mu.
	freeMu sync.Mutex
	free   []*elem // values past their grace period
	dead   bool    // freed, as freeMu sees it
}

// objectSize is the room for the map object programs point to.
const objectSize = mem.PageSize

func alloc(k maps.Kernel, m *maps.Map) (maps.Ops, error) {
	s := &storage{m: m, k: k, space: k.Memory(), size: uint64(maps.RoundUp8(m.ValueSize)), owners: make(map[uint32]*elem)}
	addr, err := s.space.Vmalloc(objectSize, mem.PermRW, "bpf_local_storage_map")
	if err != nil {
		return nil, err
	}
	m.Addr = addr
	return s, nil
}

// owner reads the key, which the simulated kernel has made an owner id.
func owner(key []byte) (uint32, error) {
	if len(key) != 4 {
		return 0, errors.Wrapf(uapi.EINVAL, "a local storage key is 4 bytes, not %d", len(key))
	}
	return binary.LittleEndian.Uint32(key), nil
}

// newElem takes a free value or cuts a chunk of new ones. The caller
// holds s.mu.
func (s *storage) newElem() (*elem, error) {
	if s.freed {
		return nil, errors.Wrap(uapi.EINVAL, "local storage map is freed")
	}
	s.freeMu.Lock()
	defer s.freeMu.Unlock()
	if len(s.free) == 0 {
		n := max(mem.PageSize/s.size, 1)
		addr, err := s.space.Vmalloc(n*s.size, mem.PermRW, "bpf_local_storage_elem")
		if err != nil {
			return nil, errors.Wrap(uapi.ENOMEM, err.Error())
		}
		raw, err := s.space.Bytes(addr, n*s.size)
		if err != nil {
			_ = s.space.Free(addr)
			return nil, err
		}
		s.chunks = append(s.chunks, addr)
		for i := n; i > 0; i-- {
			off := (i - 1) * s.size
			s.free = append(s.free, &elem{addr: addr + off, raw: raw[off : off+s.size : off+s.size]})
		}
	}
	e := s.free[len(s.free)-1]
	s.free = s.free[:len(s.free)-1]
	return e, nil
}

// retire hands e back once no program can hold its address any more.
func (s *storage) retire(e *elem) {
	s.k.CallRCU(func() {
		s.freeMu.Lock()
		defer s.freeMu.Unlock()
		if !s.dead {
			s.free = append(s.free, e)
		}
	})
}

// store makes a new value for o from v (zeros for nil) and replaces o's
// old one, if any. The caller holds s.mu.
func (s *storage) store(o uint32, v []byte) (*elem, error) {
	e, err := s.newElem()
	if err != nil {
		return nil, err
	}
	val := e.raw[:s.m.ValueSize]
	clear(val)
	if v != nil {
		maps.StoreValue(s.m.Record, val, v)
	}
	maps.InitSpecialFields(s.m.Record, val)
	if old := s.owners[o]; old != nil {
		s.retire(old)
	}
	s.owners[o] = e
	return e, nil
}

// LookupElem returns the owner's value, 0 for none.
func (s *storage) LookupElem(_ int, key []byte) (uint64, error) {
	o, err := owner(key)
	if err != nil {
		return 0, err
	}
	return s.Get(o, nil, false), nil
}

// UpdateElem is bpf_local_storage_update: a new value replaces the old
// one (its address changes), unless BPF_F_LOCK copies it into the old one
// under its spin lock.
func (s *storage) UpdateElem(_ int, key, value []byte, flags uint64) error {
	o, err := owner(key)
	if err != nil {
		return err
	}
	if flags&^uapi.BPF_F_LOCK > uapi.BPF_EXIST {
		return errors.Wrapf(uapi.EINVAL, "local storage update flags %#x", flags)
	}
	if flags&uapi.BPF_F_LOCK != 0 && !s.m.Record.Has(maps.FieldSpinLock) {
		return errors.Wrap(uapi.EINVAL, "BPF_F_LOCK needs a bpf_spin_lock in the value")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.owners[o]
	switch {
	case old != nil && flags&^uapi.BPF_F_LOCK == uapi.BPF_NOEXIST:
		return errors.Wrap(uapi.EEXIST, "the owner has a value")
	case old == nil && flags&^uapi.BPF_F_LOCK == uapi.BPF_EXIST:
		return errors.Wrap(uapi.ENOENT, "the owner has no value")
	case old != nil && flags&uapi.BPF_F_LOCK != 0:
		maps.StoreValueLocked(s.m.Record, old.raw[:s.m.ValueSize], value)
		return nil
	}
	_, err = s.store(o, value)
	return err
}

// DeleteElem removes the owner's value: ENOENT if it has none.
func (s *storage) DeleteElem(_ int, key []byte) error {
	o, err := owner(key)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.owners[o]
	if e == nil {
		return errors.Wrap(uapi.ENOENT, "the owner has no value")
	}
	delete(s.owners, o)
	s.retire(e)
	return nil
}

// GetNextKey is notsupp_get_next_key: owners cannot be walked from user
// space.
func (s *storage) GetNextKey([]byte, []byte) error {
	return errors.Wrap(uapi.ENOTSUPP, "local storage keys cannot be walked")
}

// Get is bpf_task_storage_get's part in the map: a new value is made as
// an update with BPF_NOEXIST makes it; failing that, there is none.
func (s *storage) Get(o uint32, init []byte, create bool) uint64 {
	s.mu.RLock()
	e := s.owners[o]
	s.mu.RUnlock()
	if e != nil || !create {
		if e == nil {
			return 0
		}
		return e.addr
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.owners[o]; e != nil { // made meanwhile
		return e.addr
	}
	e, err := s.store(o, init)
	if err != nil {
		return 0
	}
	return e.addr
}

// DeleteOwner drops o's value, if it has one.
func (s *storage) DeleteOwner(o uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.owners[o]; e != nil {
		delete(s.owners, o)
		s.retire(e)
	}
}

// Free releases every value and the map object.
func (s *storage) Free() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.freed = true
	for _, c := range s.chunks {
		_ = s.space.Free(c)
	}
	s.freeMu.Lock()
	s.chunks, s.free, s.owners, s.dead = nil, nil, nil, true
	s.freeMu.Unlock()
	_ = s.space.Free(s.m.Addr)
}
