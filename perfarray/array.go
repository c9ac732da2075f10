// Package perfarray simulates BPF_MAP_TYPE_PERF_EVENT_ARRAY, the perf
// event array part of kernel/bpf/arraymap.c, together with what it points
// to: perf events bound to a CPU (struct perf_event, kernel/events/core.c)
// and the perf ring buffer BPF output events write samples to
// (kernel/events/ring_buffer.c).
//
// A slot holds a reference on a perf event and remembers the map file it
// was installed through (struct bpf_event_entry's map_file). Closing that
// file for the last time (map_release, FileReleaser) empties the slots it
// filled, unless the map was made with BPF_F_PRESERVE_ELEMS, whose entries
// stay until they are deleted or the map is freed. Removed events are put
// after an RCU grace period, since a program may still be writing to them.
//
// Programs cannot look slots up; they write samples with
// bpf_perf_event_output (Output) and read counters with
// bpf_perf_event_read(_value) (ReadCounter). User space writes perf event
// fds and cannot read anything back (there is no map_fd_sys_lookup_elem).
package perfarray

import (
	"encoding/binary"
	"math"
	"sync/atomic"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/arraymap"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// PerfEventArray is BPF_MAP_TYPE_PERF_EVENT_ARRAY. It may be an inner map
// of a map of maps (perf_event_array_map_ops has bpf_map_meta_equal):
// programs then write to the array an outer map lookup returns.
var PerfEventArray = &maps.Type{
	ID:         uapi.MapTypePerfEventArray,
	Name:       "perf_event_array",
	AllocCheck: allocCheck,
	Alloc:      alloc,
	MetaEqual:  maps.DefaultMetaEqual,
}

// allowedFlags are ARRAY_CREATE_FLAG_MASK less the flags that array_map_
// alloc_check allows only for plain arrays (MMAPABLE, INNER_MAP) and the
// program access flags fd arrays refuse.
const allowedFlags = uapi.BPF_F_NUMA_NODE | uapi.BPF_F_RDONLY | uapi.BPF_F_WRONLY | uapi.BPF_F_PRESERVE_ELEMS

// allocCheck is fd_array_map_alloc_check followed by array_map_alloc_check.
// The kernel needs max_entries > 0; cilium/ebpf fills in the number of
// possible CPUs when a spec leaves it 0, and so does sim.Kernel.NewMap.
func allocCheck(attr *maps.Attr) error {
	switch {
	case attr.ValueSize != 4:
		return errors.Wrapf(uapi.EINVAL, "perf event array values are 4-byte fds, not %d bytes", attr.ValueSize)
	case attr.Flags&(uapi.BPF_F_RDONLY_PROG|uapi.BPF_F_WRONLY_PROG) != 0:
		return errors.Wrap(uapi.EINVAL, "fd arrays take no program access flags")
	case attr.MaxEntries == 0 || attr.KeySize != 4:
		return errors.Wrapf(uapi.EINVAL, "perf event array needs max_entries > 0 and key_size 4 (got %d, %d)", attr.MaxEntries, attr.KeySize)
	case attr.Flags&(uapi.BPF_F_RDONLY|uapi.BPF_F_WRONLY) == uapi.BPF_F_RDONLY|uapi.BPF_F_WRONLY:
		return errors.Wrap(uapi.EINVAL, "BPF_F_RDONLY and BPF_F_WRONLY together")
	case attr.Flags&^allowedFlags != 0:
		return errors.Wrapf(uapi.EINVAL, "perf event array map_flags %#x include flags it does not take", attr.Flags)
	case uint64(attr.MaxEntries)*8 > math.MaxInt32:
		// The slot pointers would not fit one kernel allocation.
		return errors.Wrapf(uapi.ENOMEM, "%d slots", attr.MaxEntries)
	}
	return nil
}

// entry is struct bpf_event_entry: the event and the map file that put it
// there.
type entry struct {
	ev   *Event
	file maps.File
}

// array is struct bpf_array of a perf event array: the map object at Addr,
// then one pointer per slot. The simulated memory holds the header only
// for the map's address; the slots are Go pointers, which programs never
// see.
type array struct {
	m     *maps.Map
	k     maps.Kernel
	slots []atomic.Pointer[entry]
}

var (
	_ maps.FdValues     = (*array)(nil)
	_ maps.FileReleaser = (*array)(nil)
)

func alloc(k maps.Kernel, m *maps.Map) (maps.Ops, error) {
	addr, err := k.Memory().Vmalloc(arraymap.ValueOffset+uint64(m.MaxEntries)*8, mem.PermRW, "bpf_array")
	if err != nil {
		return nil, err
	}
	m.Addr = addr
	return &array{m: m, k: k, slots: make([]atomic.Pointer[entry], m.MaxEntries)}, nil
}

func (a *array) index(key []byte) (uint32, error) {
	idx := binary.LittleEndian.Uint32(key)
	if idx >= a.m.MaxEntries {
		return idx, errors.Wrapf(uapi.E2BIG, "index %d is past max_entries %d", idx, a.m.MaxEntries)
	}
	return idx, nil
}

// LookupElem: programs may not look up fd arrays (the verifier refuses the
// call), and user space gets ENOTSUPP since the perf event array has no
// map_fd_sys_lookup_elem (bpf_fd_array_map_lookup_elem).
func (a *array) LookupElem(int, []byte) (uint64, error) {
	return 0, errors.Wrap(uapi.ENOTSUPP, "perf event array slots cannot be read back")
}

// UpdateElem: a perf event array's values are fds, which only the kernel
// can turn into events; it calls UpdateObject instead. Reaching here is
// the verifier's check_map_func_compatibility failing, or a caller that
// skipped the fd.
func (a *array) UpdateElem(_ int, key, _ []byte, flags uint64) error {
	if err := a.CheckFdUpdate(key, flags); err != nil {
		return err
	}
	return errors.Wrap(uapi.EINVAL, "perf event array values are perf event fds, installed with UpdateObject")
}

// CheckFdUpdate makes the checks bpf_fd_array_map_update_elem makes before
// it resolves the fd: only BPF_ANY, and an index within max_entries.
func (a *array) CheckFdUpdate(key []byte, flags uint64) error {
	if flags != uapi.BPF_ANY {
		return errors.Wrapf(uapi.EINVAL, "fd array updates take BPF_ANY only, not %#x", flags)
	}
	_, err := a.index(key)
	return err
}

// FdKind says the fds are perf events.
func (a *array) FdKind() maps.FdKind { return maps.FdPerfEvent }

// UpdateObject is bpf_fd_array_map_update_elem with perf_event_fd_array_
// get_ptr: obj must be a perf event that can be read from atomic context;
// the slot takes a reference on it and remembers file.
func (a *array) UpdateObject(key []byte, obj maps.Object, file maps.File, flags uint64) error {
	if err := a.CheckFdUpdate(key, flags); err != nil {
		return err
	}
	idx, _ := a.index(key)
	ev, ok := obj.(*Event)
	if !ok || ev == nil {
		// perf_event_get on a file that is not a perf event.
		return errors.Wrap(uapi.EBADF, "fd is not a perf event")
	}
	if ev.attr.Inherit {
		// perf_event_read_local refuses inherited events.
		return errors.Wrap(uapi.EOPNOTSUPP, "an inherited perf event cannot be stored")
	}
	ev.Get()
	old := a.slots[idx].Swap(&entry{ev: ev, file: file})
	a.putLater(old)
	return nil
}

// putLater drops a removed entry's reference after a grace period.
func (a *array) putLater(e *entry) {
	if e != nil {
		a.k.CallRCU(e.ev.Put)
	}
}

// LookupID: no map_fd_sys_lookup_elem for perf event arrays.
func (a *array) LookupID([]byte) (uint32, error) {
	return 0, errors.Wrap(uapi.ENOTSUPP, "perf event array slots cannot be read back")
}

// DeleteElem is fd_array_map_delete_elem.
func (a *array) DeleteElem(_ int, key []byte) error {
	idx, err := a.index(key)
	if err != nil {
		return err
	}
	old := a.slots[idx].Swap(nil)
	if old == nil {
		return errors.Wrapf(uapi.ENOENT, "slot %d is empty", idx)
	}
	a.putLater(old)
	return nil
}

// GetNextKey is array_map_get_next_key: every index exists.
func (a *array) GetNextKey(key, next []byte) error {
	return maps.IndexNextKey(a.m.MaxEntries, key, next)
}

// ReleaseFile is perf_event_fd_array_release: the last close of a map file
// removes the events installed through it, unless the map preserves its
// elements.
func (a *array) ReleaseFile(f maps.File) {
	if a.m.Flags&uapi.BPF_F_PRESERVE_ELEMS != 0 {
		return
	}
	for i := range a.slots {
		e := a.slots[i].Load()
		if e != nil && e.file == f && a.slots[i].CompareAndSwap(e, nil) {
			a.putLater(e)
		}
	}
}

// Free is perf_event_fd_array_map_free. With BPF_F_PRESERVE_ELEMS it
// clears the slots; without, the kernel's slots are already empty, since
// every file on the map was released before the map could be freed. The
// simulation clears them either way, for callers that never released a
// file. No program can reach the map any more: the events go at once.
func (a *array) Free() {
	for i := range a.slots {
		if e := a.slots[i].Swap(nil); e != nil {
			e.ev.Put()
		}
	}
	_ = a.k.Memory().Free(a.m.Addr)
}

// Event returns the event in slot idx, or nil; for tests and dumps.
func (a *array) event(idx uint32) *Event {
	if idx >= uint32(len(a.slots)) {
		return nil
	}
	if e := a.slots[idx].Load(); e != nil {
		return e.ev
	}
	return nil
}

// SlotEvent returns the event in slot idx of perf event array m, or nil.
func SlotEvent(m *maps.Map, idx uint32) *Event {
	a, ok := m.Ops.(*array)
	if !ok {
		return nil
	}
	return a.event(idx)
}

// slot is what the helpers share (get_map_perf_counter and
// __bpf_perf_event_output): the index from flags, the current CPU for
// BPF_F_CURRENT_CPU, and the event there.
func slot(m *maps.Map, cpu int, flags uint64) (*Event, error) {
	a, ok := m.Ops.(*array)
	if !ok {
		return nil, errors.Wrapf(uapi.EINVAL, "map %d is a %s, not a perf event array", m.ID, m.Attr.Type)
	}
	index := flags & uapi.BPF_F_INDEX_MASK
	if index == uapi.BPF_F_CURRENT_CPU {
		index = uint64(cpu)
	}
	if index >= uint64(len(a.slots)) {
		return nil, errors.Wrapf(uapi.E2BIG, "index %d is past max_entries %d", index, len(a.slots))
	}
	e := a.slots[index].Load()
	if e == nil {
		return nil, errors.Wrapf(uapi.ENOENT, "slot %d is empty", index)
	}
	return e.ev, nil
}

// OutputTarget makes the checks of __bpf_perf_event_output on cpu and
// returns the BPF output event in the slot flags selects. Flags other than
// the index are the caller's to check (they differ between tracing and
// packet programs).
func OutputTarget(m *maps.Map, cpu int, flags uint64) (*Event, error) {
	ev, err := slot(m, cpu, flags)
	if err != nil {
		return nil, err
	}
	switch {
	case !ev.attr.IsBPFOutput():
		return nil, errors.Wrap(uapi.EINVAL, "event is not a BPF output event")
	case ev.onCPU() != cpu:
		return nil, errors.Wrapf(uapi.EOPNOTSUPP, "event is not on CPU %d", cpu)
	}
	return ev, nil
}

// Output is __bpf_perf_event_output on cpu: a sample of frags to the
// event in the slot flags selects.
func Output(m *maps.Map, cpu int, flags uint64, frags ...[]byte) error {
	ev, err := OutputTarget(m, cpu, flags)
	if err != nil {
		return err
	}
	return ev.Output(frags...)
}

// ReadCounter is get_map_perf_counter: the counter of the event in the
// slot flags selects, read on cpu.
func ReadCounter(m *maps.Map, cpu int, flags uint64) (value, enabled, running uint64, err error) {
	if flags&^uapi.BPF_F_INDEX_MASK != 0 {
		return 0, 0, 0, errors.Wrapf(uapi.EINVAL, "flags %#x outside BPF_F_INDEX_MASK", flags)
	}
	ev, err := slot(m, cpu, flags)
	if err != nil {
		return 0, 0, 0, err
	}
	return ev.ReadLocal(cpu)
}
