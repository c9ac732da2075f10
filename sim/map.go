package sim

import (
	"bytes"
	"encoding/binary"
	"strings"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/structops"
)

// Map is a user-space handle on a map: an open file descriptor, like
// cilium/ebpf's *ebpf.Map. Keys and values are Go values marshalled the way
// cilium/ebpf marshals them: []byte, encoding.BinaryMarshaler, or
// fixed-size values (little-endian). Per-CPU maps take and return one value
// per possible CPU, as a slice.
type Map struct {
	k    *Kernel
	proc *Process
	m    *maps.Map
	fd   int
	file *file
	// access is what the handle's file lets user space do with the map
	// (its f_mode): fixed when the file is opened, shared by its dups.
	access fileAccess
	closed atomic.Bool
	// pinnedPath is where this handle pinned the map, or the pin it was
	// loaded from (pin.go).
	pinnedPath string
	// memory is the handle's mapping of the map, made once (memory.go).
	memory *Memory
}

// ErrKeyNotExist is returned when a key is not in the map. Like every map
// error it carries the kernel's errno (ENOENT) and also matches
// cilium/ebpf's sentinel, so errors.Is(err, ebpf.ErrKeyNotExist) holds.
var ErrKeyNotExist error = mapError{errors.Wrap(uapi.ENOENT, "key does not exist")}

// mapError lets map errors match cilium/ebpf's sentinels as well as the
// errno they wrap, as cilium/ebpf's wrapMapError makes them.
type mapError struct{ err error }

func (e mapError) Error() string { return e.err.Error() }
func (e mapError) Unwrap() error { return e.err }
func (e mapError) Is(target error) bool {
	switch target {
	case ebpf.ErrKeyNotExist:
		return errors.Is(e.err, uapi.ENOENT)
	case ebpf.ErrKeyExist:
		return errors.Is(e.err, uapi.EEXIST)
	case ebpf.ErrNotSupported:
		return errors.Is(e.err, uapi.ENOTSUPP)
	}
	return false
}

// mapErr dresses an error from a map operation for user space.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	return mapError{err}
}

// NewMap creates a map from a cilium/ebpf MapSpec, fills in its Contents
// and freezes it if it is a read-only data section (.rodata), as
// cilium/ebpf does.
func (k *Kernel) NewMap(spec *ebpf.MapSpec) (*Map, error) { return k.newMap(k.init, spec) }

func (k *Kernel) newMap(p *Process, spec *ebpf.MapSpec) (*Map, error) {
	if spec == nil {
		return nil, errors.Wrap(uapi.EINVAL, "nil MapSpec")
	}
	if spec.Type == ebpf.StructOpsMap {
		return k.newStructOpsMap(p, spec) // structops.go
	}
	if err := checkMapSpec(spec); err != nil {
		return nil, errors.Wrapf(err, "map %s", spec.Name)
	}
	fixed, err := fixupPerfEventArray(spec, k.NumCPUs())
	if err != nil {
		return nil, errors.Wrapf(err, "map %s", spec.Name)
	}
	spec = fixed
	attr := maps.Attr{
		Type:       uapi.MapType(spec.Type),
		KeySize:    spec.KeySize,
		ValueSize:  mapOfMapsValueSize(spec),
		MaxEntries: spec.MaxEntries,
		Flags:      spec.Flags,
		Name:       spec.Name,
		MapExtra:   spec.MapExtra,
	}
	tmpl, dropTmpl, err := k.innerTemplate(spec) // mapinmap.go
	if err != nil {
		return nil, errors.Wrapf(err, "map %s", spec.Name)
	}
	attr.InnerMap = tmpl
	mb, err := specBTF(spec, &attr) // mapbtf.go
	if err != nil {
		dropTmpl()
		return nil, errors.Wrapf(err, "map %s", spec.Name)
	}
	m, err := k.createMapWithBTF(attr, mb)
	dropTmpl()
	if err != nil {
		return nil, errors.Wrapf(err, "map %s", spec.Name)
	}
	// The creating fd's access mode comes from the create flags, which
	// the map itself does not keep (bpf_map_flags_retain_permanent).
	access, err := fileAccessOf(spec.Flags)
	if err != nil {
		m.Put()
		return nil, errors.Wrapf(err, "map %s", spec.Name)
	}
	h, err := p.newMapFile(m, access)
	if err != nil {
		return nil, errors.Wrapf(err, "map %s", spec.Name)
	}
	for _, kv := range spec.Contents {
		if err := h.Update(kv.Key, kv.Value, ebpf.UpdateAny); err != nil {
			h.Close()
			return nil, errors.Wrapf(err, "map %s: filling contents", spec.Name)
		}
	}
	if strings.HasPrefix(spec.Name, ".rodata") || spec.Name == ".kconfig" {
		if err := h.Freeze(); err != nil {
			h.Close()
			return nil, err
		}
	}
	return h, nil
}

// createMapWithBTF creates the map of attr with the BTF mb describes, as
// map_create and cilium/ebpf do: the map is allocated, then its spin lock
// checked (checkRecord), then the type's map_check_btf run; if that
// refuses the BTF, cilium/ebpf creates the map again without it.
func (k *Kernel) createMapWithBTF(attr maps.Attr, mb mapBTF) (*maps.Map, error) {
	attr.BTF, attr.Record = mb.keep, mb.record
	if mb.typeRefuses && mb.record == nil {
		// Nothing can fail the first creation that would not fail
		// cilium/ebpf's second, without BTF: make only that one.
		attr.BTF = false
	}
	m, err := k.createMap(attr)
	if err != nil {
		return nil, err
	}
	if err := checkRecord(m); err != nil {
		m.Put()
		return nil, err
	}
	if attr.BTF && mb.typeRefuses {
		m.Put()
		attr.BTF, attr.Record = false, nil
		return k.createMap(attr)
	}
	return m, nil
}

// extraIsZero says whether the unread extra bytes of a map definition are
// all zero; extra is a copy, so the caller's reader does not move.
func extraIsZero(extra bytes.Reader) bool {
	for {
		b, err := extra.ReadByte()
		if err != nil {
			return true
		}
		if b != 0 {
			return false
		}
	}
}

// checkMapSpec refuses what the simulated kernel cannot create yet, naming
// it.
func checkMapSpec(spec *ebpf.MapSpec) error {
	switch {
	case spec.Pinning != ebpf.PinNone:
		return errors.Wrap(uapi.EINVAL, "a map pinned by name needs NewMapWithOptions (or a collection) and a PinPath")
	case spec.Extra != nil && !extraIsZero(*spec.Extra):
		// cilium/ebpf tolerates the trailing fields of older struct
		// bpf_map_def (inner_map_idx, numa_node) and iproute2's struct
		// bpf_elf_map when they are zero, or read by the caller.
		return errors.Wrap(uapi.EINVAL, "extra map definition bytes are not zero: read them (MapSpec.Extra) before creating the map, as with cilium/ebpf")
	}
	if name := specialField(spec.Value); name != "" {
		return errors.Wrapf(uapi.EINVAL, "values with a %s field are not simulated yet", name)
	}
	return nil
}

// specialField returns the name of a kernel-managed field type (timer,
// kptr...) in a map value's BTF, which the simulator does not support yet.
// The spin lock it does (mapbtf.go).
func specialField(t btf.Type) string {
	seen := map[btf.Type]bool{}
	var walk func(t btf.Type) string
	walk = func(t btf.Type) string {
		if t == nil || seen[t] {
			return ""
		}
		seen[t] = true
		switch v := btf.UnderlyingType(t).(type) {
		case *btf.Struct:
			switch v.Name {
			case "bpf_wq", "bpf_list_head", "bpf_list_node",
				"bpf_rb_root", "bpf_rb_node", "bpf_refcount", "bpf_res_spin_lock", "bpf_task_work":
				return v.Name
			}
			for _, m := range v.Members {
				if n := walk(m.Type); n != "" {
					return n
				}
			}
		case *btf.Union:
			for _, m := range v.Members {
				if n := walk(m.Type); n != "" {
					return n
				}
			}
		case *btf.Array:
			return walk(v.Type)
		}
		if tag, ok := t.(*btf.TypeTag); ok && (tag.Value == "kptr" || tag.Value == "kptr_untrusted" || tag.Value == "percpu_kptr") {
			return tag.Value
		}
		return ""
	}
	return walk(t)
}

// FD returns the handle's simulated file descriptor. It lets a *Map be
// associated with cilium/ebpf instructions (asm.Instructions.AssociateMap),
// which is how a program refers to it when loaded.
func (h *Map) FD() int { return h.fd }

// ID returns the map's id.
func (h *Map) ID() uint32 { return h.m.ID }

// Type, KeySize, ValueSize, MaxEntries and Flags describe the map. Flags
// are the map's, as its info shows them: BPF_F_RDONLY and BPF_F_WRONLY
// belong to a file on the map, not to the map, and are never among them
// (cilium/ebpf's Flags of a map it has just created still shows the
// spec's).
func (h *Map) Type() ebpf.MapType { return ebpf.MapType(h.m.Attr.Type) }
func (h *Map) KeySize() uint32    { return h.m.KeySize }
func (h *Map) ValueSize() uint32  { return h.m.ValueSize }
func (h *Map) MaxEntries() uint32 { return h.m.MaxEntries }
func (h *Map) Flags() uint32      { return h.m.Attr.Flags }

// Name returns the map's name.
func (h *Map) Name() string { return h.m.Name }

// Address returns where the map object lives in the simulated address
// space: the pointer programs hold.
func (h *Map) Address() uint64 { return h.m.Addr }

func (h *Map) String() string {
	return h.m.Attr.Type.String() + "(" + h.m.Name + ")"
}

// Kernel returns the kernel the map lives in.
func (h *Map) Kernel() *Kernel { return h.k }

func (h *Map) check() error {
	if h.closed.Load() {
		return errors.Wrap(uapi.EBADF, "map handle is closed")
	}
	if _, err := h.proc.fds.get(h.fd); err != nil {
		return errors.Wrap(err, "map handle's process has exited")
	}
	return nil
}

// fileAccess is the access mode of an open file on a map: whether its
// f_mode has FMODE_CAN_READ, FMODE_CAN_WRITE or both. The zero value is
// both.
type fileAccess uint8

const (
	readWrite fileAccess = iota
	readOnly
	writeOnly
)

// fileAccessOf is bpf_get_file_flag: the access mode BPF_F_RDONLY or
// BPF_F_WRONLY ask for, in map creation flags, BPF_OBJ_GET's file_flags or
// BPF_MAP_GET_FD_BY_ID's open_flags; both at once are EINVAL.
func fileAccessOf(flags uint32) (fileAccess, error) {
	switch flags & (uapi.BPF_F_RDONLY | uapi.BPF_F_WRONLY) {
	case uapi.BPF_F_RDONLY:
		return readOnly, nil
	case uapi.BPF_F_WRONLY:
		return writeOnly, nil
	case 0:
		return readWrite, nil
	}
	return 0, errors.Wrap(uapi.EINVAL, "BPF_F_RDONLY and BPF_F_WRONLY together")
}

// canRead and canWrite apply the syscall-side access rules
// (map_get_sys_perms): the handle's file must have been opened for
// reading or writing (a map created with BPF_F_RDONLY, or opened from a
// pin read-only, cannot be written through that file, but can through
// another), and a frozen map cannot be written through any.
func (h *Map) canRead() error {
	if err := h.check(); err != nil {
		return err
	}
	if h.access == writeOnly {
		return errors.Wrap(uapi.EPERM, "the map's file is write-only")
	}
	return nil
}

func (h *Map) canWrite() error {
	if err := h.check(); err != nil {
		return err
	}
	if h.access == readOnly {
		return errors.Wrap(uapi.EPERM, "the map's file is read-only")
	}
	if h.m.Frozen() {
		return errors.Wrap(uapi.EPERM, "map is frozen")
	}
	return nil
}

// valueIn is the value out, a []byte or a pointer to fixed-size data, as
// the bytes it holds: what a bloom filter lookup tests.
func valueIn(out any, size int) ([]byte, error) {
	b, ok := out.([]byte)
	if !ok {
		var err error
		if b, err = binary.Append(nil, binary.LittleEndian, out); err != nil {
			return nil, errors.Wrapf(uapi.EINVAL, "the value to test, %T: %v", out, err)
		}
	}
	if len(b) != size {
		return nil, errors.Wrapf(uapi.EINVAL, "the value to test has %d bytes, the map's values %d", len(b), size)
	}
	return b, nil
}

// queue returns the map's push, pop and peek if it is a key-less
// queue-like map (queue, stack), which the syscalls serve with them.
func (h *Map) queue() (maps.PushPopPeeker, bool) {
	q, ok := h.m.Ops.(maps.PushPopPeeker)
	return q, ok && h.m.KeySize == 0
}

func (h *Map) percpu() (maps.PercpuValues, bool) {
	p, ok := h.m.Ops.(maps.PercpuValues)
	return p, ok
}

// Lookup copies the value of key into valueOut (BPF_MAP_LOOKUP_ELEM).
// A missing key is ErrKeyNotExist. A value's bpf_spin_lock reads as 0.
func (h *Map) Lookup(key, valueOut any) error { return h.LookupWithFlags(key, valueOut, 0) }

// LookupWithFlags is Lookup with the flags of BPF_MAP_LOOKUP_ELEM, as
// cilium/ebpf's: ebpf.LookupLock (BPF_F_LOCK) copies the value while
// holding its bpf_spin_lock, so that it is never half of what a program
// writes under the lock. It is the only flag (EINVAL otherwise), and only
// for maps whose values hold a lock (EINVAL otherwise).
func (h *Map) LookupWithFlags(key, valueOut any, flags ebpf.MapLookupFlags) error {
	if uint64(flags)&^uapi.BPF_F_LOCK != 0 {
		return mapErr(errors.Wrapf(uapi.EINVAL, "unknown lookup flags %#x", uint64(flags)))
	}
	if err := h.canRead(); err != nil {
		return err
	}
	if err := h.checkLockFlag(uint64(flags)); err != nil {
		return err
	}
	if out, ok := valueOut.(**Map); ok {
		return h.lookupMap(key, out) // mapinmap.go
	}
	if q, ok := h.queue(); ok && h.m.Attr.Type == uapi.MapTypeBloomFilter {
		// map_lookup_elem tests the value user space passes in
		// valueOut: ENOENT if the filter certainly lacks it.
		if _, err := marshal(key, 0); err != nil {
			return err
		}
		v, err := valueIn(valueOut, int(h.m.ValueSize))
		if err != nil {
			return err
		}
		return mapErr(q.PeekElem(0, v))
	}
	value, err := h.lookupBytesFlags(key, uint64(flags))
	if err != nil {
		return err
	}
	return h.unmarshalValue(value, valueOut)
}

// checkLockFlag is the syscalls' test of BPF_F_LOCK, made before the map
// type sees the flags: the map's values must hold a bpf_spin_lock.
func (h *Map) checkLockFlag(flags uint64) error {
	if flags&uapi.BPF_F_LOCK != 0 && !h.m.Record.Has(maps.FieldSpinLock) {
		return mapErr(errors.Wrap(uapi.EINVAL, "BPF_F_LOCK needs a bpf_spin_lock in the value"))
	}
	return nil
}

// LookupBytes is Lookup that returns the raw value bytes (every CPU's copy,
// each padded to 8 bytes, for per-CPU maps).
func (h *Map) LookupBytes(key any) ([]byte, error) {
	if err := h.canRead(); err != nil {
		return nil, err
	}
	return h.lookupBytes(key)
}

func (h *Map) lookupBytes(key any) ([]byte, error) { return h.lookupBytesFlags(key, 0) }

// lookupBytesFlags is bpf_map_copy_value: the value of key, copied under
// its spin lock with BPF_F_LOCK, the lock word zeroed.
func (h *Map) lookupBytesFlags(key any, flags uint64) ([]byte, error) {
	k, err := marshal(key, int(h.m.KeySize))
	if err != nil {
		return nil, err
	}
	if k, err = h.userKey(k); err != nil { // taskstorage.go
		return nil, mapErr(err)
	}
	if fv, ok := h.fdValues(); ok {
		return lookupID(fv, k) // mapinmap.go
	}
	if so, ok := h.m.Ops.(*structops.Map); ok {
		return h.lookupStructOps(so, k) // structops.go
	}
	if q, ok := h.queue(); ok {
		// bpf_map_copy_value peeks at a queue or stack.
		v := make([]byte, h.m.ValueSize)
		if err := q.PeekElem(0, v); err != nil {
			return nil, mapErr(err)
		}
		return v, nil
	}
	if p, ok := h.percpu(); ok {
		buf := make([]byte, int(maps.RoundUp8(h.m.ValueSize))*h.k.NumCPUs())
		if err := p.LookupPercpu(k, buf); err != nil {
			return nil, mapErr(err)
		}
		return buf, nil
	}
	// Like bpf_map_copy_value, find and copy the value inside an RCU
	// read-side section, so a concurrent delete cannot free it mid-copy.
	slot := h.k.rcu.readLockUser()
	defer h.k.rcu.readUnlockUser(slot)
	var addr uint64
	if s, ok := h.m.Ops.(maps.SysLookuper); ok {
		addr, err = s.LookupElemSys(k) // map_lookup_elem_sys_only
	} else {
		addr, err = h.m.Ops.LookupElem(0, k)
	}
	if err != nil {
		return nil, err
	}
	if addr == 0 {
		return nil, ErrKeyNotExist
	}
	// The kernel copies the value out with its own access, whatever the
	// program-side permissions of the pages.
	v, err := h.k.mem.Bytes(addr, uint64(h.m.ValueSize))
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(v))
	if flags&uapi.BPF_F_LOCK != 0 {
		maps.LoadValueLocked(h.m.Record, out, v)
	} else {
		maps.LoadValue(h.m.Record, out, v)
	}
	return out, nil
}

func (h *Map) unmarshalValue(value []byte, out any) error {
	if _, ok := h.percpu(); ok {
		return unmarshalPercpu(value, out, int(h.m.ValueSize), h.k.NumCPUs())
	}
	return unmarshal(value, out)
}

func (h *Map) marshalValue(value any) ([]byte, error) {
	if _, ok := h.percpu(); ok {
		return marshalPercpu(value, int(h.m.ValueSize), h.k.NumCPUs())
	}
	return marshal(value, int(h.m.ValueSize))
}

// Update sets key's value (BPF_MAP_UPDATE_ELEM) with the kernel's flags:
// ebpf.UpdateAny, UpdateNoExist, UpdateExist, and ebpf.UpdateLock for a
// value with a bpf_spin_lock, copied while holding it. An update never
// writes the value's lock.
func (h *Map) Update(key, value any, flags ebpf.MapUpdateFlags) error {
	if err := h.canWrite(); err != nil {
		return err
	}
	// map_update_elem refuses BPF_F_LOCK up front for a value without a
	// bpf_spin_lock, before the map type sees the flags.
	if err := h.checkLockFlag(uint64(flags)); err != nil {
		return err
	}
	if so, ok := h.m.Ops.(*structops.Map); ok {
		return mapErr(h.updateStructOps(so, key, value, uint64(flags))) // structops.go
	}
	if q, ok := h.queue(); ok {
		// bpf_map_update_value pushes into a queue or stack.
		if _, err := marshal(key, 0); err != nil {
			return err
		}
		v, err := h.marshalValue(value)
		if err != nil {
			return err
		}
		return mapErr(q.PushElem(0, v, uint64(flags)))
	}
	if fv, ok := h.fdValues(); ok {
		defer h.waitForPrograms()
		return mapErr(h.updateFd(fv, key, value, uint64(flags))) // fdvalues.go
	}
	k, err := marshal(key, int(h.m.KeySize))
	if err != nil {
		return err
	}
	if k, err = h.userKey(k); err != nil {
		return mapErr(err)
	}
	if fv, ok := h.m.Ops.(maps.FdValues); ok {
		return mapErr(h.updateFd(fv, k, value, uint64(flags)))
	}
	v, err := h.marshalValue(value)
	if err != nil {
		return err
	}
	if p, ok := h.percpu(); ok {
		return mapErr(p.UpdatePercpu(k, v, uint64(flags)))
	}
	if pf, ok := h.m.Ops.(maps.ProgFdField); ok {
		if off, ok := pf.ProgFdOffset(); ok {
			if fd := int32(binary.LittleEndian.Uint32(v[off:])); fd > 0 {
				return mapErr(pf.UpdateElemWithProg(k, v, h.progOfFd(int(fd)), uint64(flags)))
			}
		}
	}
	return mapErr(h.m.Ops.UpdateElem(0, k, v, uint64(flags)))
}

// Put is Update with ebpf.UpdateAny.
func (h *Map) Put(key, value any) error { return h.Update(key, value, ebpf.UpdateAny) }

// Delete removes key (BPF_MAP_DELETE_ELEM).
func (h *Map) Delete(key any) error {
	if err := h.canWrite(); err != nil {
		return err
	}
	k, err := marshal(key, int(h.m.KeySize))
	if err != nil {
		return err
	}
	if k, err = h.userKey(k); err != nil {
		return mapErr(err)
	}
	defer h.waitForPrograms()
	return mapErr(h.m.Ops.DeleteElem(0, k))
}

// waitForPrograms is maybe_wait_bpf_programs: after user space changes a
// map of maps, the syscall returns only once every program that may still
// use the inner map it removed has finished (synchronize_rcu), so that
// user space may then change or reuse that map knowing no program sees
// it through the outer map any more.
func (h *Map) waitForPrograms() {
	if isMapOfMaps(h.Type()) {
		h.k.rcu.synchronize()
	}
}

// LookupAndDelete copies key's value into valueOut and removes it
// (BPF_MAP_LOOKUP_AND_DELETE_ELEM).
func (h *Map) LookupAndDelete(key, valueOut any) error {
	return h.LookupAndDeleteWithFlags(key, valueOut, 0)
}

// LookupAndDeleteWithFlags is LookupAndDelete with the flags of
// BPF_MAP_LOOKUP_AND_DELETE_ELEM, as cilium/ebpf's: ebpf.LookupLock copies
// a hash map's value while holding its bpf_spin_lock. It is the only flag
// (EINVAL otherwise), and only for maps whose values hold a lock (EINVAL
// otherwise).
func (h *Map) LookupAndDeleteWithFlags(key, valueOut any, flags ebpf.MapLookupFlags) error {
	if uint64(flags)&^uapi.BPF_F_LOCK != 0 {
		return mapErr(errors.Wrapf(uapi.EINVAL, "unknown lookup-and-delete flags %#x", uint64(flags)))
	}
	if err := h.canWrite(); err != nil {
		return err
	}
	if err := h.canRead(); err != nil {
		return err
	}
	// Queues and stacks take no flags (EINVAL), and BPF_F_LOCK needs a
	// lock, which they never hold: one test says both.
	if err := h.checkLockFlag(uint64(flags)); err != nil {
		return err
	}
	if q, ok := h.queue(); ok && h.m.Attr.Type != uapi.MapTypeBloomFilter {
		// map_lookup_and_delete_elem pops from a queue or stack.
		if _, err := marshal(key, 0); err != nil {
			return err
		}
		v := make([]byte, h.m.ValueSize)
		if err := q.PopElem(0, v); err != nil {
			return mapErr(err)
		}
		return h.unmarshalValue(v, valueOut)
	}
	ld, ok := h.m.Ops.(maps.LookupAndDeleter)
	if !ok {
		return mapErr(errors.Wrapf(uapi.ENOTSUPP, "%s maps have no lookup-and-delete", h.m.Attr.Type))
	}
	k, err := marshal(key, int(h.m.KeySize))
	if err != nil {
		return err
	}
	size := int(h.m.ValueSize)
	if _, ok := h.percpu(); ok {
		size = int(maps.RoundUp8(h.m.ValueSize)) * h.k.NumCPUs()
	}
	value := make([]byte, size)
	if err := ld.LookupAndDeleteElem(0, k, value, uint64(flags)); err != nil {
		return mapErr(err)
	}
	return h.unmarshalValue(value, valueOut)
}

// NextKey writes the key after key into nextKeyOut (BPF_MAP_GET_NEXT_KEY);
// a nil key asks for the first. At the end it returns ErrKeyNotExist.
func (h *Map) NextKey(key, nextKeyOut any) error {
	next, err := h.NextKeyBytes(key)
	if err != nil {
		return err
	}
	return unmarshal(next, nextKeyOut)
}

// NextKeyBytes is NextKey returning the raw key.
func (h *Map) NextKeyBytes(key any) ([]byte, error) {
	if err := h.canRead(); err != nil {
		return nil, err
	}
	var k []byte
	if key != nil {
		var err error
		if k, err = marshal(key, int(h.m.KeySize)); err != nil {
			return nil, err
		}
	}
	next := make([]byte, h.m.KeySize)
	if err := h.m.Ops.GetNextKey(k, next); err != nil {
		return nil, mapErr(err)
	}
	return next, nil
}

// Freeze makes the map read-only for user space (BPF_MAP_FREEZE).
func (h *Map) Freeze() error {
	// map_freeze needs a handle that may write: a frozen map (frozen
	// again) or a read-only one is EPERM, before the EBUSY of a map
	// mapped writable.
	if err := h.canWrite(); err != nil {
		return err
	}
	return h.m.Freeze()
}

// Close closes the handle's fd. The map lives on while programs, outer
// maps or other fds use it. Closing a handle whose process has exited
// does nothing: the exit closed the fd.
func (h *Map) Close() error {
	if !h.closed.CompareAndSwap(false, true) {
		return nil
	}
	if err := h.proc.fds.close(h.fd); err != nil && !h.proc.fds.isClosed() {
		return err
	}
	return nil
}

// Iterate walks the map with NextKey and Lookup, like cilium/ebpf's
// MapIterator.
func (h *Map) Iterate() *MapIterator { return &MapIterator{h: h} }

// MapIterator iterates a map's keys in the kernel's get_next_key order.
type MapIterator struct {
	h    *Map
	prev []byte
	done bool
	err  error
	// count guards against a map that keeps changing under the walk.
	count uint64
}

// Next copies the next key and value into keyOut and valueOut; it returns
// false at the end or on error (see Err).
func (it *MapIterator) Next(keyOut, valueOut any) bool {
	for !it.done {
		var prev any
		if it.prev != nil {
			prev = it.prev
		}
		next, err := it.h.NextKeyBytes(prev)
		if errors.Is(err, uapi.ENOENT) {
			it.done = true
			return false
		}
		if err != nil {
			it.err, it.done = err, true
			return false
		}
		it.prev = next
		it.count++
		if it.count > uint64(it.h.m.MaxEntries)*2+16 {
			it.err, it.done = errors.New("iteration aborted: the map keeps changing"), true
			return false
		}
		value, err := it.h.lookupBytes(next)
		if errors.Is(err, uapi.ENOENT) {
			continue // deleted meanwhile
		}
		if err != nil {
			it.err, it.done = err, true
			return false
		}
		if err := unmarshal(next, keyOut); err != nil {
			it.err, it.done = err, true
			return false
		}
		if err := it.h.unmarshalValue(value, valueOut); err != nil {
			it.err, it.done = err, true
			return false
		}
		return true
	}
	return false
}

// Err returns the error that stopped the iteration, if any.
func (it *MapIterator) Err() error { return it.err }
