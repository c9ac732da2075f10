// Package maps is the contract between the simulated kernel and its map
// types: the kernel's struct bpf_map and struct bpf_map_ops
// (include/linux/bpf.h), the creation-time checks of map_create
// (kernel/bpf/syscall.c) and a registry of map types.
//
// A map type is a Type: a name, an AllocCheck that validates creation
// attributes before anything is allocated, and an Alloc that builds an
// instance, which implements Ops. Abilities that only some types have are
// separate small interfaces the kernel checks with a type assertion, the
// way io.WriterTo is optional for an io.Writer: PercpuValues,
// LookupGenerator, LookupAndDeleter, PushPopPeeker.
//
// Map types never import the kernel (package sim). They reach what they
// need of it through the Kernel interface: the simulated address space,
// the per-CPU allocator, RCU and randomness. Values live in the simulated
// address space, so the address a lookup returns is the pointer a program
// gets, exactly as map_lookup_elem returns a kernel pointer.
package maps

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Attr holds the attributes of BPF_MAP_CREATE.
type Attr struct {
	Type       uapi.MapType
	KeySize    uint32
	ValueSize  uint32
	MaxEntries uint32
	Flags      uint32
	Name       string
	MapExtra   uint64
	// BTFVmlinuxValueTypeID is btf_vmlinux_value_type_id: for a
	// struct_ops map, the id of its value type in the kernel's BTF.
	BTFVmlinuxValueTypeID uint32
	// InnerMap is the inner map template of a map-in-map type (the map
	// inner_map_fd refers to). The new map keeps only a copy of its
	// metadata (NewInnerMeta): Create clears the field once the map is
	// allocated, so the template may be closed right away.
	InnerMap *Map
	// BTF says the map was created with BTF for its key and value
	// (btf_fd and the type ids): the verifier's spin lock rules need it.
	BTF bool
	// Record lists the fields of the value the kernel manages itself,
	// found in the value's BTF at creation; nil when there are none.
	Record *Record
}

// Record is struct btf_record: the fields of a map value that the kernel
// manages itself. bpfsim knows two kinds, the spin lock and the timer.
type Record struct {
	// Fields says which kinds the value holds (field_mask).
	Fields FieldType
	// SpinLockOff is the offset of the value's struct bpf_spin_lock
	// (spin_lock_off), if Fields has FieldSpinLock.
	SpinLockOff uint32
	// TimerOff is the offset of the value's struct bpf_timer (timer_off),
	// if Fields has FieldTimer.
	TimerOff uint32
}

// FieldType is enum btf_field_type, for the kinds bpfsim knows.
type FieldType uint32

const (
	FieldSpinLock FieldType = 1 << iota // BPF_SPIN_LOCK
	FieldTimer                          // BPF_TIMER
)

// Has is btf_record_has_field: r (which may be nil) holds a field of a
// kind in f.
func (r *Record) Has(f FieldType) bool { return r != nil && r.Fields&f != 0 }

// SpinLockSize is sizeof(struct bpf_spin_lock).
const SpinLockSize = 4

// TimerSize is sizeof(struct bpf_timer); it is 8-byte aligned.
const TimerSize = 16

// SpinLock reports where the map's value holds its struct bpf_spin_lock,
// if it holds one (btf_record_has_field(map->record, BPF_SPIN_LOCK)).
func (a *Attr) SpinLock() (off uint32, ok bool) {
	if !a.Record.Has(FieldSpinLock) {
		return 0, false
	}
	return a.Record.SpinLockOff, true
}

// Timer reports where the map's value holds its struct bpf_timer, if it
// holds one.
func (a *Attr) Timer() (off uint32, ok bool) {
	if !a.Record.Has(FieldTimer) {
		return 0, false
	}
	return a.Record.TimerOff, true
}

// Kernel is the simulated kernel as a map type sees it.
type Kernel interface {
	// Memory is the address space values live in.
	Memory() *mem.Space
	// NumCPUs is num_possible_cpus().
	NumCPUs() int
	// Percpu is the per-CPU allocator (mm/percpu.c).
	Percpu() *mem.Percpu
	// CallRCU runs fn after a grace period: once every program that was
	// running when CallRCU was called has finished.
	CallRCU(fn func())
	// Random returns a random number, as get_random_u32 does; seeded, so a
	// simulated kernel repeats itself.
	Random() uint32
}

// Map is struct bpf_map: the part of a map every type shares. The kernel
// creates it and hands it to the type's Alloc, which fills in Addr.
type Map struct {
	Attr
	// ID is the map's id, as bpftool shows it.
	ID uint32
	// Addr is the map's address in the simulated address space: the
	// pointer a program holds after loading the map (ld_imm64 with
	// BPF_PSEUDO_MAP_FD). Alloc must set it.
	Addr uint64
	// Ops are the type's operations on this instance.
	Ops    Ops
	Type   *Type
	Kernel Kernel

	// refcnt counts every holder, usercnt the holders in user space (fds,
	// pins), as the kernel's two counters do.
	refcnt  atomic.Int64
	usercnt atomic.Int64
	frozen  atomic.Bool
	// freezeMu orders freezing against writable mappings (the kernel's
	// freeze_mutex); writeActive counts the writable mappings
	// (bpf_map_write_active).
	freezeMu    sync.Mutex
	writeActive int
	// release runs when the last reference goes; the kernel uses it to
	// free the map's id and defer Free past a grace period.
	release func(*Map)
}

// Ops is struct bpf_map_ops for one map. cpu is the simulated CPU the
// operation runs on (this_cpu in the kernel), which per-CPU types use to
// pick the current CPU's copy.
//
// Keys and values arrive as Go bytes of exactly KeySize and ValueSize; an
// implementation must not keep those slices after it returns. Errors carry
// the kernel's errno.
type Ops interface {
	// LookupElem returns the address of key's value in simulated memory,
	// or 0 if there is none (map_lookup_elem).
	LookupElem(cpu int, key []byte) (uint64, error)
	// UpdateElem creates or replaces key's value (map_update_elem); a
	// per-CPU type writes only cpu's copy.
	UpdateElem(cpu int, key, value []byte, flags uint64) error
	// DeleteElem removes key (map_delete_elem).
	DeleteElem(cpu int, key []byte) error
	// GetNextKey writes the key after key into next; a nil or unknown key
	// yields the first key, the last key ENOENT (map_get_next_key).
	GetNextKey(key, next []byte) error
	// Free releases everything the map holds, once no one can reach it
	// (map_free).
	Free()
}

// PercpuValues is the ability of per-CPU maps: user space reads and
// writes every CPU's copy at once, each rounded up to 8 bytes
// (bpf_percpu_array_copy, bpf_percpu_hash_update), and programs can read
// another CPU's copy (map_lookup_percpu_elem).
type PercpuValues interface {
	LookupPercpu(key, values []byte) error
	UpdatePercpu(key, values []byte, flags uint64) error
	LookupPercpuElem(key []byte, cpu int) (uint64, error)
}

// Mmaper is the ability of maps user space may map into its memory
// (map_mmap): BPF_F_MMAPABLE arrays.
type Mmaper interface {
	// MmapBytes returns the memory a mapping shows: the values, whole
	// pages of them. A map of the type created without the flag fails
	// with EINVAL.
	MmapBytes() ([]byte, error)
}

// DirectValuer is the ability of maps whose value a program may address
// directly, as global data (.data, .rodata, .bss) is: map_direct_value_addr.
type DirectValuer interface {
	// DirectValueAddr returns the address of byte off of the map's value.
	// A map whose type has the ability but not this map (the kernel's
	// arrays of more than one element) fails with ENOTSUPP; an offset
	// past the value fails with EINVAL; ErrNoDirectValue says that the
	// map acts as if its type lacked the ability.
	DirectValueAddr(off uint32) (uint64, error)
}

// ErrNoDirectValue is what DirectValueAddr returns for a map whose type,
// in the kernel, has no map_direct_value_addr, although its Go type shares
// the method with one that has (per-CPU arrays with arrays).
var ErrNoDirectValue = errors.WithMessage(uapi.EINVAL, "no direct value access support for this map type")

// LookupGenerator is the ability of map types whose lookups the verifier
// inlines into programs (map_gen_lookup). After verification, a call of
// bpf_map_lookup_elem whose map is known is replaced by the instructions
// GenLookup returns for that map: on entry r1 holds the map's address and
// r2 the key's; the sequence leaves the value's address, or 0, in r0, may
// clobber r1-r5 and AX, and must hold fewer than 32 instructions. A
// sequence that calls a kernel function (as htab_map_gen_lookup calls
// __htab_map_lookup_elem) gets its call instruction from call, by the
// function's name.
//
// An error wrapping uapi.EOPNOTSUPP declines for this map (as arrays made
// with BPF_F_INNER_MAP do, whose size may change under the program): the
// call then goes straight to the map type's lookup function.
type LookupGenerator interface {
	GenLookup(call func(name string) (insn.Insn, error)) ([]insn.Insn, error)
}

// SysLookuper is the ability of maps whose lookups from user space differ
// from programs' (map_lookup_elem_sys_only): an LRU hash marks an element
// a program looks up as referenced, but not one user space reads. The
// kernel's syscall path uses LookupElemSys when a map has it.
type SysLookuper interface {
	LookupElemSys(key []byte) (uint64, error)
}

// ForEacher is the ability of map types a program may walk with
// bpf_for_each_map_elem (map_for_each_callback): arrays, per-CPU arrays
// and the hash types. ForEachElem calls fn once per element in the order
// the kernel walks them (arrays by index; hashes bucket by bucket, each
// bucket's list from its head), with the addresses of the element's key
// and value; a per-CPU type passes cpu's copy of the value. It stops after
// the first call that returns true or fails and returns how many calls it
// made (the helper's return value). A map that stores no keys (an array)
// passes key 0 and the index in idx; the caller then shows the program an
// address holding the index, as the kernel passes &key on its stack.
// fn may update and delete elements of the map, the one it is given
// included: the walk goes on from that element's successor as it was
// before the call (hlist_nulls_for_each_entry_safe).
type ForEacher interface {
	ForEachElem(cpu int, fn func(key uint64, idx uint32, value uint64) (stop bool, err error)) (uint32, error)
}

// SeqWalker is the ability of the map types an element iterator walks
// (their map_ops' iter_seq_info: kernel/bpf/hashtab.c's and arraymap.c's
// bpf_*_map_seq_find_next). SeqFind returns the element at pos, or the
// first one after it, with its key, index and value as ForEachElem passes
// them and its own position; ok is false past the last element. A walk
// that stopped at an element resumes at its position, as an iterator
// resumes between reads; the next element is the one at its position's
// Next.
type SeqWalker interface {
	SeqFind(cpu int, pos SeqPos) (key uint64, idx uint32, value uint64, at SeqPos, ok bool)
}

// SeqPos is a position in a SeqWalker's walk: the bucket and the elements
// of it to skip (bucket_id, skip_elems), or for an array the index, Bucket
// plus Skip.
type SeqPos struct{ Bucket, Skip uint32 }

// Next is the position after the element at p.
func (p SeqPos) Next() SeqPos { return SeqPos{p.Bucket, p.Skip + 1} }

// LookupAndDeleter is the ability to remove an element and return its value
// in one step (map_lookup_and_delete_elem).
type LookupAndDeleter interface {
	LookupAndDeleteElem(cpu int, key, value []byte, flags uint64) error
}

// Redirector is the ability of maps XDP programs redirect packets
// through with bpf_redirect_map (map_redirect): Redirect returns the
// program's verdict for index and flags.
type Redirector interface {
	Redirect(index, flags uint64) uint64
}

// PushPopPeeker is the ability of queue-like maps (map_push_elem,
// map_pop_elem, map_peek_elem). Their keys are empty.
type PushPopPeeker interface {
	PushElem(cpu int, value []byte, flags uint64) error
	PopElem(cpu int, value []byte) error
	PeekElem(cpu int, value []byte) error
}

// File identifies an open file description on a map (the kernel's struct
// file): the fds dup makes share one, while opening the map again (by id,
// by pin) makes another. Perf event arrays remember the file an event was
// installed through. 0 is no file (a program, the kernel itself).
type File uint64

// FileReleaser is the ability of maps that act when a file on them is
// closed for the last time (map_release): perf event arrays drop the
// events installed through it.
type FileReleaser interface {
	ReleaseFile(f File)
}

// UrefReleaser is the ability of maps that act when their last user
// reference goes (map_release_uref): prog arrays clear their slots, which
// breaks the reference cycles programs and prog arrays can form.
type UrefReleaser interface {
	ReleaseUref()
}

// NetDevices is the ability of a kernel with network devices: the maps
// that name devices (devmaps) ask it whether one exists. A kernel without
// it has the loopback device alone (ifindex 1).
type NetDevices interface {
	NetDeviceExists(ifindex uint32) bool
}

// NetDeviceExists reports whether k has a device with this ifindex.
func NetDeviceExists(k Kernel, ifindex uint32) bool {
	if nd, ok := k.(NetDevices); ok {
		return nd.NetDeviceExists(ifindex)
	}
	return ifindex == 1
}

// FieldsFreer is the part of the kernel that owns the state behind a
// value's special fields (a timer's hrtimer and callback): the map types
// call it, through FreeFields, wherever the kernel calls
// bpf_obj_free_fields.
type FieldsFreer interface {
	// FreeFields is bpf_obj_free_fields for the value at address value
	// of m: its timer, if armed, is cancelled and forgotten.
	FreeFields(m *Map, value uint64)
	// FreeTimers cancels and forgets every timer of m's values.
	FreeTimers(m *Map)
}

// FreeFields is bpf_obj_free_fields(m->record, value) for a value at
// address value: a map type calls it when it overwrites a value (an array
// update), drops an element (a hash delete or replacement) or frees the
// map. It does nothing for values without such fields.
func FreeFields(m *Map, value uint64) {
	if m.Record.Has(FieldTimer) {
		if f, ok := m.Kernel.(FieldsFreer); ok {
			f.FreeFields(m, value)
		}
	}
}

// Object is a kernel object a map slot can hold a reference on: a map (in
// a map of maps), a program (in a prog array), a perf event.
type Object interface {
	// Get takes a reference; Put drops one, and the last frees the object
	// (after a grace period).
	Get()
	Put()
	// ObjectID is the object's id, what user space reads back.
	ObjectID() uint32
}

// FdKind says what the file descriptors written into an FdValues map refer
// to.
type FdKind uint8

const (
	FdMap FdKind = iota + 1
	FdProg
	FdPerfEvent
)

// FdValues is the ability of maps whose values user space writes as file
// descriptors and reads back as ids: the fd arrays (prog array, perf event
// array, array of maps) and the hash of maps (map_fd_get_ptr,
// map_fd_put_ptr, map_fd_sys_lookup_elem). The kernel turns the fd into
// the object it refers to before calling UpdateObject.
type FdValues interface {
	FdKind() FdKind
	// UpdateObject stores obj under key; file is the map file used for
	// the update. On success the map holds its own reference on obj; a
	// replaced object's reference is dropped as map_fd_put_ptr drops it:
	// at once for maps and programs, which defer their own free past a
	// grace period, after a grace period for perf events.
	UpdateObject(key []byte, obj Object, file File, flags uint64) error
	// LookupID returns the id of the object under key.
	LookupID(key []byte) (uint32, error)
}

// ObjectID makes a map an Object.
func (m *Map) ObjectID() uint32 { return m.ID }

var _ Object = (*Map)(nil)

// Type describes a map type: what the kernel keeps in bpf_types.h.
type Type struct {
	ID   uapi.MapType
	Name string
	// AllocCheck validates the attributes before any allocation
	// (map_alloc_check).
	AllocCheck func(attr *Attr) error
	// Alloc builds an instance for m, whose attributes passed AllocCheck,
	// and sets m.Addr (map_alloc).
	Alloc func(k Kernel, m *Map) (Ops, error)
	// MetaEqual is map_meta_equal: whether m may be stored in a map of
	// maps whose inner map template is meta (see NewInnerMeta). nil: maps
	// of this type cannot be inner maps.
	MetaEqual func(meta, m *Map) bool
	// Header says the type's object starts with HeaderSize bytes of
	// room for struct bpf_map (header.go), which New fills.
	Header bool
}

// Registry holds the map types a kernel knows, keyed by type number. It is
// safe for concurrent use.
type Registry struct {
	mu    sync.RWMutex
	types map[uapi.MapType]*Type
}

// Register adds t; a type number may be registered once (EEXIST).
func (r *Registry) Register(t *Type) error {
	if t == nil || t.AllocCheck == nil || t.Alloc == nil || t.Name == "" {
		return errors.Wrap(uapi.EINVAL, "map type needs a name, AllocCheck and Alloc")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.types == nil {
		r.types = make(map[uapi.MapType]*Type)
	}
	if old, ok := r.types[t.ID]; ok {
		return errors.Wrapf(uapi.EEXIST, "map type %d is already registered as %s", t.ID, old.Name)
	}
	r.types[t.ID] = t
	return nil
}

// Lookup returns the type registered under id.
func (r *Registry) Lookup(id uapi.MapType) (*Type, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, ok := r.types[id]
	return t, ok
}

// Create runs the type-independent checks of map_create, the type's
// AllocCheck and Alloc, and returns the new map with one reference held by
// the caller. id is the id to give it; release runs when the last
// reference is dropped (nil: Free after a grace period).
func (r *Registry) Create(k Kernel, attr Attr, id uint32, release func(*Map)) (*Map, error) {
	t, ok := r.Lookup(attr.Type)
	if !ok {
		return nil, errors.Wrapf(uapi.EINVAL, "map type %s (%d) is not supported", attr.Type, uint32(attr.Type))
	}
	if err := checkName(attr.Name); err != nil {
		return nil, err
	}
	if attr.Flags&uapi.BPF_F_RDONLY != 0 && attr.Flags&uapi.BPF_F_WRONLY != 0 {
		return nil, errors.Wrap(uapi.EINVAL, "BPF_F_RDONLY and BPF_F_WRONLY together")
	}
	if attr.Flags&uapi.BPF_F_RDONLY_PROG != 0 && attr.Flags&uapi.BPF_F_WRONLY_PROG != 0 {
		return nil, errors.Wrap(uapi.EINVAL, "BPF_F_RDONLY_PROG and BPF_F_WRONLY_PROG together")
	}
	if attr.BTFVmlinuxValueTypeID != 0 && attr.Type != uapi.MapTypeStructOps {
		return nil, errors.Wrap(uapi.EINVAL, "btf_vmlinux_value_type_id is only for struct_ops maps")
	}
	if attr.MapExtra != 0 && attr.Type != uapi.MapTypeBloomFilter {
		return nil, errors.Wrap(uapi.EINVAL, "map_extra is only for bloom filters")
	}
	if err := t.AllocCheck(&attr); err != nil {
		return nil, err
	}
	m := &Map{Attr: attr, ID: id, Type: t, Kernel: k, release: release}
	// BPF_F_RDONLY and BPF_F_WRONLY are the access mode of the file the
	// creation opens, not the map's: the map keeps its other flags only
	// (bpf_map_flags_retain_permanent), so that its info, and the
	// map_meta_equal of an inner map, never see them.
	m.Attr.Flags &^= uapi.BPF_F_RDONLY | uapi.BPF_F_WRONLY
	ops, err := t.Alloc(k, m)
	m.Attr.InnerMap = nil // the template's metadata was copied, if needed
	if err != nil {
		return nil, err
	}
	if m.Addr == 0 {
		ops.Free()
		return nil, errors.Errorf("map type %s did not set the map's address", t.Name)
	}
	if t.Header {
		// The kernel's own store, past the page permissions a
		// read-only-for-programs map has.
		b, err := k.Memory().Bytes(m.Addr, HeaderSize)
		if err != nil {
			ops.Free()
			return nil, err
		}
		copy(b, m.Header())
	}
	m.Ops = ops
	m.refcnt.Store(1)
	return m, nil
}

// checkName applies bpf_obj_name_cpy's rules: at most 15 characters of
// letters, digits, '_' and '.'.
func checkName(name string) error {
	if len(name) > 15 {
		return errors.Wrapf(uapi.EINVAL, "map name %q is longer than 15 characters", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.') {
			return errors.Wrapf(uapi.EINVAL, "map name %q has a character other than letters, digits, '_' and '.'", name)
		}
	}
	return nil
}

// Get takes a reference (bpf_map_inc).
func (m *Map) Get() { m.refcnt.Add(1) }

// GetUser takes a user reference, which also counts as a reference
// (bpf_map_inc_with_uref).
func (m *Map) GetUser() {
	m.refcnt.Add(1)
	m.usercnt.Add(1)
}

// Put drops a reference; the last one frees the map (bpf_map_put). The
// free is deferred past an RCU grace period, since programs still running
// may hold pointers into it.
func (m *Map) Put() {
	switch n := m.refcnt.Add(-1); {
	case n == 0 && m.release != nil:
		m.release(m)
	case n == 0:
		m.Kernel.CallRCU(m.Ops.Free)
	case n < 0:
		panic(fmt.Sprintf("bpf_map_put: map %d refcount went negative", m.ID))
	}
}

// PutUser drops a user reference and its reference
// (bpf_map_put_with_uref). When the last user reference goes, a type with
// the UrefReleaser ability runs it (map_release_uref).
func (m *Map) PutUser() {
	if m.usercnt.Add(-1) == 0 {
		if r, ok := m.Ops.(UrefReleaser); ok {
			r.ReleaseUref()
		}
		// The maps that hold timers cancel them all
		// (bpf_map_free_internal_structs, from each type's
		// map_release_uref): a timer's callback holds its program,
		// which may hold the map, a cycle only user space can break.
		if m.Record.Has(FieldTimer) {
			if f, ok := m.Kernel.(FieldsFreer); ok {
				f.FreeTimers(m)
			}
		}
	}
	m.Put()
}

// Refs returns the reference and user reference counts.
func (m *Map) Refs() (refcnt, usercnt int64) { return m.refcnt.Load(), m.usercnt.Load() }

// Freeze makes the map read-only for user space, for good
// (BPF_MAP_FREEZE). Freezing twice is EBUSY, and so is freezing a map
// user space has mapped writable.
func (m *Map) Freeze() error {
	m.freezeMu.Lock()
	defer m.freezeMu.Unlock()
	if m.writeActive > 0 {
		return errors.Wrap(uapi.EBUSY, "map is mapped writable")
	}
	if !m.frozen.CompareAndSwap(false, true) {
		return errors.Wrap(uapi.EBUSY, "map is already frozen")
	}
	return nil
}

// MapWritable records a writable mapping of the map's memory
// (bpf_map_mmap with VM_WRITE): EPERM once the map is frozen, EACCES for
// a map programs may only read. unmap ends the mapping.
func (m *Map) MapWritable() (unmap func(), err error) {
	m.freezeMu.Lock()
	defer m.freezeMu.Unlock()
	switch {
	case m.frozen.Load():
		return nil, errors.Wrap(uapi.EPERM, "a frozen map cannot be mapped writable")
	case m.Flags&uapi.BPF_F_RDONLY_PROG != 0:
		return nil, errors.Wrap(uapi.EACCES, "a map programs only read cannot be mapped writable")
	}
	m.writeActive++
	var once sync.Once
	return func() {
		once.Do(func() {
			m.freezeMu.Lock()
			m.writeActive--
			m.freezeMu.Unlock()
		})
	}, nil
}

// Frozen reports whether Freeze was called.
func (m *Map) Frozen() bool { return m.frozen.Load() }

// RoundUp8 rounds a value size up to 8 bytes, as per-CPU copies and
// element layouts do.
func RoundUp8(n uint32) uint32 { return (n + 7) &^ 7 }
