package arraymap

import (
	"sync"
	"sync/atomic"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// ProgArray is BPF_MAP_TYPE_PROG_ARRAY, the jump table of bpf_tail_call
// (prog_array_map_ops in kernel/bpf/arraymap.c).
//
// Its slots hold references on programs. User space writes a program's
// file descriptor and reads back its id (FdValues); programs cannot look
// it up, only tail call through it. The first program checked against the
// map, stored in it or loaded using it, fixes its owner: every other must
// agree on type and runtime (ProgHolder).
//
// Slots are swapped atomically, so a program running a tail call sees the
// old program or the new one; a program taken out of a slot is put at
// once (prog_fd_array_put_ptr: bpf_prog_put), since a program defers its
// own free past an RCU grace period: a program held only by the slot
// leaves the id list when the update returns, even while a program that
// read the slot still runs. When the last user reference goes, every slot is
// cleared (ReleaseUref): a program that tail calls through a map it is
// stored in would otherwise keep itself and the map alive for ever.
var ProgArray = &maps.Type{
	ID:         uapi.MapTypeProgArray,
	Name:       "prog_array",
	AllocCheck: fdArrayAllocCheck,
	Alloc:      allocProgArray,
}

// progTypeExt is BPF_PROG_TYPE_EXT: freplace programs never go into a
// prog array.
const progTypeExt = 28

// progSlot is what one slot points to: a reference on a program.
type progSlot struct{ p maps.ProgObject }

// progArray is struct bpf_array with its prog array aux data.
type progArray struct {
	m *maps.Map
	k maps.Kernel
	// slots are the kernel's ptrs[]: swapped atomically, read by running
	// programs without a lock.
	slots []atomic.Pointer[progSlot]

	// pokeMu is poke_mutex: updates and deletes run one at a time, with
	// the trackers told of each change in order (map_poke_run).
	pokeMu   sync.Mutex
	trackers []PokeTracker

	ownerMu sync.Mutex
	owner   *maps.ProgOwner
}

// PokeTracker is a program whose code holds direct jumps into a prog
// array's slots (its poke descriptors, made by the verifier for tail calls
// with a constant map and key): the map tells it of every change to a
// slot, under the map's poke mutex, so it can patch the jump
// (map_poke_track, map_poke_run).
type PokeTracker interface {
	PokeRun(m *maps.Map, key uint32, old, new maps.ProgObject)
}

// PokeFixer is the ability of prog arrays to let a JIT install the
// current target of a direct tail call site it just emitted
// (bpf_tail_call_direct_fixup): fn runs with the poke mutex held, so no
// slot change is missed or applied out of order, with the program in slot
// key (nil when empty or out of bounds).
type PokeFixer interface {
	PokeFixup(key uint32, fn func(maps.ProgObject))
}

// PokeTracking is the ability of prog arrays to keep a list of the
// programs that track them (map_poke_track, map_poke_untrack).
type PokeTracking interface {
	PokeTrack(t PokeTracker)
	PokeUntrack(t PokeTracker)
}

func allocProgArray(k maps.Kernel, m *maps.Map) (maps.Ops, error) {
	// The map object, then one pointer per slot, as struct bpf_array.
	addr, err := k.Memory().Vmalloc(ValueOffset+8*uint64(m.MaxEntries), mem.PermRW, "bpf_prog_array")
	if err != nil {
		return nil, err
	}
	m.Addr = addr
	return &progArray{m: m, k: k, slots: make([]atomic.Pointer[progSlot], m.MaxEntries)}, nil
}

var (
	_ maps.FdValues        = (*progArray)(nil)
	_ maps.FdUpdateChecker = (*progArray)(nil)
	_ maps.UrefReleaser    = (*progArray)(nil)
	_ maps.ProgHolder      = (*progArray)(nil)
	_ maps.TailCallTarget  = (*progArray)(nil)
	_ PokeTracking         = (*progArray)(nil)
)

// FdKind: prog array values are program file descriptors.
func (a *progArray) FdKind() maps.FdKind { return maps.FdProg }

func (a *progArray) index(key []byte) (uint32, bool) { return arrayIndex(a.m.MaxEntries, key) }

// CheckFdUpdate is the start of bpf_fd_array_map_update_elem: only
// BPF_ANY, and only indexes below max_entries, before the fd is looked at.
func (a *progArray) CheckFdUpdate(key []byte, flags uint64) error {
	if flags != uapi.BPF_ANY {
		return errors.Wrapf(uapi.EINVAL, "fd array updates take BPF_ANY only (flags %#x)", flags)
	}
	if idx, ok := a.index(key); !ok {
		return errors.Wrapf(uapi.E2BIG, "index %d is past max_entries %d", idx, a.m.MaxEntries)
	}
	return nil
}

// UpdateObject is bpf_fd_array_map_update_elem with prog_fd_array_get_ptr:
// the program must be compatible with the map's owner; the slot's old
// program, if any, is put.
func (a *progArray) UpdateObject(key []byte, obj maps.Object, _ maps.File, flags uint64) error {
	if err := a.CheckFdUpdate(key, flags); err != nil {
		return err
	}
	p, ok := obj.(maps.ProgObject)
	if !ok || p == nil {
		return errors.Wrap(uapi.EINVAL, "prog array values must be programs")
	}
	if o := p.ProgOwner(); o.Type == progTypeExt || !a.ProgCompatible(o) {
		return errors.Wrapf(uapi.EINVAL, "program %d is not compatible with the prog array's owner", p.ObjectID())
	}
	idx, _ := a.index(key)
	p.Get()
	a.swap(idx, &progSlot{p: p})
	return nil
}

// swap puts next in slot idx under the poke mutex, tells the trackers and
// puts the old program. It returns whether the slot held a program.
func (a *progArray) swap(idx uint32, next *progSlot) bool {
	a.pokeMu.Lock()
	old := a.slots[idx].Swap(next)
	var oldP, newP maps.ProgObject
	if old != nil {
		oldP = old.p
	}
	if next != nil {
		newP = next.p
	}
	for _, t := range a.trackers {
		t.PokeRun(a.m, idx, oldP, newP)
	}
	a.pokeMu.Unlock()
	if old == nil {
		return false
	}
	old.p.Put()
	return true
}

// LookupID is prog_fd_array_sys_lookup_elem: the id of the program in the
// slot; an empty slot or an index past the end is ENOENT.
func (a *progArray) LookupID(key []byte) (uint32, error) {
	idx, ok := a.index(key)
	if !ok {
		return 0, errors.Wrapf(uapi.ENOENT, "index %d is past max_entries %d", idx, a.m.MaxEntries)
	}
	s := a.slots[idx].Load()
	if s == nil {
		return 0, errors.Wrapf(uapi.ENOENT, "slot %d is empty", idx)
	}
	return s.p.ObjectID(), nil
}

// ProgAt is what the tail call reads: ptrs[idx].
func (a *progArray) ProgAt(idx uint32) (maps.ProgObject, bool) {
	if idx >= a.m.MaxEntries {
		return nil, false
	}
	if s := a.slots[idx].Load(); s != nil {
		return s.p, true
	}
	return nil, true
}

// ProgCompatible is __bpf_prog_map_compatible: the first program sets the
// owner; later ones must match it.
func (a *progArray) ProgCompatible(o maps.ProgOwner) bool {
	a.ownerMu.Lock()
	defer a.ownerMu.Unlock()
	if a.owner == nil {
		a.owner = &o
		return true
	}
	return *a.owner == o
}

// Owner returns the owner the map recorded, if any.
func (a *progArray) Owner() (maps.ProgOwner, bool) {
	a.ownerMu.Lock()
	defer a.ownerMu.Unlock()
	if a.owner == nil {
		return maps.ProgOwner{}, false
	}
	return *a.owner, true
}

// LookupElem: programs cannot look into a prog array
// (fd_array_map_lookup_elem returns -EOPNOTSUPP; the verifier refuses the
// call before it could).
func (a *progArray) LookupElem(int, []byte) (uint64, error) {
	return 0, errors.Wrap(uapi.EOPNOTSUPP, "prog arrays cannot be looked up from a program")
}

// UpdateElem: values are file descriptors, which only the syscall path
// (UpdateObject) turns into programs.
func (a *progArray) UpdateElem(int, []byte, []byte, uint64) error {
	return errors.Wrap(uapi.EINVAL, "prog array values are program file descriptors: update them from user space")
}

// DeleteElem is fd_array_map_delete_elem: E2BIG past the end, ENOENT for
// an empty slot.
func (a *progArray) DeleteElem(_ int, key []byte) error {
	idx, ok := a.index(key)
	if !ok {
		return errors.Wrapf(uapi.E2BIG, "index %d is past max_entries %d", idx, a.m.MaxEntries)
	}
	if !a.swap(idx, nil) {
		return errors.Wrapf(uapi.ENOENT, "slot %d is empty", idx)
	}
	return nil
}

// GetNextKey is array_map_get_next_key: every index, empty or not.
func (a *progArray) GetNextKey(key, next []byte) error {
	return maps.IndexNextKey(a.m.MaxEntries, key, next)
}

// clear empties every slot (bpf_fd_array_map_clear).
func (a *progArray) clear() {
	for i := range a.slots {
		if a.slots[i].Load() != nil {
			a.swap(uint32(i), nil)
		}
	}
}

// ReleaseUref is prog_array_map_clear (map_release_uref): with no user
// reference left, nothing can fill the map again, and the programs in it
// are dropped, which breaks the cycles of programs stored in the maps
// they tail call through.
//
// The kernel clears in a workqueue (prog_array_map_clear_deferred), after
// the close that dropped the last user reference has returned; bpfsim
// clears before it returns, one of the orders the kernel allows.
func (a *progArray) ReleaseUref() { a.clear() }

// PokeFixup runs fn with the program in slot key under the poke mutex.
func (a *progArray) PokeFixup(key uint32, fn func(maps.ProgObject)) {
	a.pokeMu.Lock()
	defer a.pokeMu.Unlock()
	var p maps.ProgObject
	if key < uint32(len(a.slots)) {
		if s := a.slots[key].Load(); s != nil {
			p = s.p
		}
	}
	fn(p)
}

// PokeTrack adds t to the programs told of slot changes.
func (a *progArray) PokeTrack(t PokeTracker) {
	a.pokeMu.Lock()
	defer a.pokeMu.Unlock()
	for _, x := range a.trackers {
		if x == t {
			return
		}
	}
	a.trackers = append(a.trackers, t)
}

// PokeUntrack removes t.
func (a *progArray) PokeUntrack(t PokeTracker) {
	a.pokeMu.Lock()
	defer a.pokeMu.Unlock()
	for i, x := range a.trackers {
		if x == t {
			a.trackers = append(a.trackers[:i], a.trackers[i+1:]...)
			return
		}
	}
}

// Free is prog_array_map_free: it puts the programs still in the slots.
func (a *progArray) Free() {
	a.clear()
	if a.m.Addr != 0 {
		_ = a.k.Memory().Free(a.m.Addr)
	}
}
