package structops

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Prog is a loaded program as struct_ops maps see it: the kernel
// implements it on its programs.
type Prog interface {
	// Get and Put take and drop a reference (bpf_prog_inc, bpf_prog_put).
	maps.Object
	Name() string
	// StructOpsTarget returns the attach_btf_id and expected_attach_type
	// (the member's index) of a BPF_PROG_TYPE_STRUCT_OPS program; ok is
	// false for other types.
	StructOpsTarget() (typeID btf.TypeID, member uint32, ok bool)
	// AssocStructOps associates the program with m
	// (bpf_prog_assoc_struct_ops).
	AssocStructOps(m *maps.Map) error
	// DisassocStructOps drops the association
	// (bpf_prog_disassoc_struct_ops).
	DisassocStructOps()
	// Run runs the program with args as its context (the u64 array a
	// struct_ops trampoline passes): on CPU cpu, or, when caller is not
	// nil, nested in the run on caller's CPU (a kfunc calling a member).
	Run(caller *interp.Machine, cpu int, args []uint64) (uint64, error)
}

// Map is a BPF_MAP_TYPE_STRUCT_OPS map (struct bpf_struct_ops_map): one
// instance of a struct_ops type. Subsystems receive it in their callbacks.
type Map struct {
	desc *Desc
	m    *maps.Map
	k    maps.Kernel

	// mu serialises updates (st_map->lock).
	mu sync.Mutex
	// state is kvalue.common.state; the copy in simulated memory follows
	// it.
	state atomic.Uint32
	// kvalue is the kernel's value in simulated memory: the common
	// header, then the struct (kdata) at DataOffset.
	kvalue     []byte
	kvalueAddr uint64
	// uvalue is the value user space last wrote (st_map->uvalue).
	uvalue []byte
	// progs are the members' programs (st_map->links[i]->prog), by
	// member index, published once an update succeeded.
	progs atomic.Pointer[[]Prog]
	// image holds the members' trampolines (st_map->image_pages).
	image uint64
}

// trampolineSlot is the room each member's trampoline takes in the image.
const trampolineSlot = 64

// mapObjectSize is the room the map object (struct bpf_map) takes before
// the value in the map's area.
const mapObjectSize = 64

// MapType returns the BPF_MAP_TYPE_STRUCT_OPS map type of the registry's
// kernel.
func (r *Registry) MapType() *maps.Type {
	return &maps.Type{
		ID:   uapi.MapTypeStructOps,
		Name: "struct_ops",
		// bpf_struct_ops_map_alloc_check.
		AllocCheck: func(attr *maps.Attr) error {
			switch {
			case attr.KeySize != 4:
				return errors.Wrapf(uapi.EINVAL, "struct_ops maps have 4-byte keys, not %d", attr.KeySize)
			case attr.MaxEntries != 1:
				return errors.Wrapf(uapi.EINVAL, "struct_ops maps have one entry, not %d", attr.MaxEntries)
			case attr.Flags&^MapFlags != 0:
				return errors.Wrapf(uapi.EINVAL, "map_flags %#x are not struct_ops flags", attr.Flags&^MapFlags)
			case attr.BTFVmlinuxValueTypeID == 0:
				return errors.Wrap(uapi.EINVAL, "struct_ops maps need btf_vmlinux_value_type_id")
			case attr.Flags&uapi.BPF_F_VTYPE_BTF_OBJ_FD != 0:
				return errors.Wrap(uapi.EINVAL, "value types from module BTF (BPF_F_VTYPE_BTF_OBJ_FD) are not simulated")
			}
			return nil
		},
		Alloc: func(k maps.Kernel, m *maps.Map) (maps.Ops, error) { return r.alloc(k, m) },
	}
}

// alloc is bpf_struct_ops_map_alloc.
func (r *Registry) alloc(k maps.Kernel, m *maps.Map) (maps.Ops, error) {
	d, ok := r.ByValueID(btf.TypeID(m.BTFVmlinuxValueTypeID))
	if !ok {
		return nil, errNoType(m.BTFVmlinuxValueTypeID)
	}
	if m.ValueSize != d.ValueSize() {
		return nil, errors.Wrapf(uapi.EINVAL, "value_size %d is not the size of %s (%d)", m.ValueSize, d.Value.Name, d.ValueSize())
	}
	sm := &Map{desc: d, m: m, k: k, uvalue: make([]byte, m.ValueSize)}
	size := uint64(mapObjectSize) + uint64(m.ValueSize)
	addr, err := k.Memory().Vmalloc(size, mem.PermRW, "bpf_struct_ops_map")
	if err != nil {
		return nil, err
	}
	m.Addr, sm.kvalueAddr = addr, addr+mapObjectSize
	if sm.kvalue, err = k.Memory().Bytes(sm.kvalueAddr, uint64(m.ValueSize)); err != nil {
		sm.Free()
		return nil, err
	}
	imageSize := uint64(len(d.Members)) * trampolineSlot
	if sm.image, err = k.Memory().Vmalloc(max(imageSize, 1), mem.PermRead, "bpf_struct_ops_image"); err != nil {
		sm.Free()
		return nil, err
	}
	return sm, nil
}

// Desc returns the map's struct_ops type.
func (sm *Map) Desc() *Desc { return sm.desc }

// Map returns the map object.
func (sm *Map) Map() *maps.Map { return sm.m }

// ID returns the map's id.
func (sm *Map) ID() uint32 { return sm.m.ID }

// State returns the instance's state.
func (sm *Map) State() State { return State(sm.state.Load()) }

// KData returns the address of the kernel struct in simulated memory:
// what the kernel hands reg and unreg, and what
// bpf_prog_get_assoc_struct_ops returns.
func (sm *Map) KData() uint64 { return sm.kvalueAddr + dataOffset }

// Data returns the kernel struct's bytes; the slice aliases simulated
// memory, which programs may write concurrently.
func (sm *Map) Data() []byte {
	return sm.kvalue[dataOffset : dataOffset+sm.desc.Type.Struct.Size]
}

// Trampoline returns the address a member's function pointer holds in
// kdata once a program implements it, 0 for a member without one.
func (sm *Map) Trampoline(member int) uint64 {
	progs := sm.progs.Load()
	if progs == nil || member < 0 || member >= len(*progs) || (*progs)[member] == nil {
		return 0
	}
	return sm.image + uint64(member)*trampolineSlot
}

// Program returns the program implementing a member, or nil.
func (sm *Map) Program(member int) Prog {
	progs := sm.progs.Load()
	if progs == nil || member < 0 || member >= len(*progs) {
		return nil
	}
	return (*progs)[member]
}

// ErrNoProgram is what calling a member no program implements returns: the
// kernel would call a NULL pointer, which subsystems check first.
var ErrNoProgram = errors.WithMessage(uapi.ENOENT, "no program implements the member")

// Call runs member's program on CPU cpu with args, from the subsystem's
// code: what the kernel's indirect call through kdata does.
func (sm *Map) Call(cpu int, member int, args ...uint64) (uint64, error) {
	return sm.call(nil, cpu, member, args)
}

// CallFrom is Call from inside a program's run on machine caller: a kfunc
// calling a member of the instance it found.
func (sm *Map) CallFrom(caller *interp.Machine, member int, args ...uint64) (uint64, error) {
	return sm.call(caller, caller.CPU, member, args)
}

func (sm *Map) call(caller *interp.Machine, cpu, member int, args []uint64) (uint64, error) {
	p := sm.Program(member)
	if p == nil {
		return 0, ErrNoProgram
	}
	if m := sm.desc.Members[member]; len(args) != len(m.Func.Params) {
		return 0, errors.Wrapf(uapi.EINVAL, "%s.%s takes %d arguments, not %d", sm.desc.Type.Name(), m.Name, len(m.Func.Params), len(args))
	}
	return p.Run(caller, cpu, args)
}

// UpdateElem is the update of a program (bpf_map_update_elem on a
// struct_ops map), which the kernel refuses: only user space, which gives
// program fds, updates a struct_ops map (Update).
func (sm *Map) UpdateElem(int, []byte, []byte, uint64) error {
	return errors.Wrap(uapi.EOPNOTSUPP, "struct_ops maps are updated from user space only")
}

// LookupElem is a program's lookup, which fails (the kernel's
// bpf_struct_ops_map_lookup_elem returns -EINVAL).
func (sm *Map) LookupElem(int, []byte) (uint64, error) {
	return 0, errors.Wrap(uapi.EINVAL, "struct_ops maps cannot be looked up by programs")
}

// GetNextKey is bpf_struct_ops_map_get_next_key: the only key is 0.
func (sm *Map) GetNextKey(key, next []byte) error {
	if key != nil && binary.LittleEndian.Uint32(key) == 0 {
		return errors.Wrap(uapi.ENOENT, "0 is the only key")
	}
	binary.LittleEndian.PutUint32(next, 0)
	return nil
}

// SysLookup is bpf_struct_ops_map_sys_lookup_elem: the value user space
// wrote, with the current state and, as refcnt, how many kernel-side
// references the map has (references that are not user references).
func (sm *Map) SysLookup(key, value []byte) error {
	if binary.LittleEndian.Uint32(key) != 0 {
		return errors.Wrap(uapi.ENOENT, "0 is the only key")
	}
	state := sm.State()
	if state == StateInit {
		clear(value)
		return nil
	}
	sm.mu.Lock()
	copy(value, sm.uvalue)
	sm.mu.Unlock()
	refcnt, usercnt := sm.m.Refs()
	binary.LittleEndian.PutUint32(value[0:], uint32(max(refcnt-usercnt, 0)))
	binary.LittleEndian.PutUint32(value[4:], uint32(state))
	return nil
}

// Update is bpf_struct_ops_map_update_elem: value is a struct
// bpf_struct_ops_<name> whose function members hold program fds, which
// progByFD turns into programs with a reference each. Everything is
// checked before the instance changes: on error it is left in StateInit
// with no program and zeroed memory, and every reference taken is dropped.
func (sm *Map) Update(key, value []byte, flags uint64, progByFD func(fd int) (Prog, error)) error {
	d := sm.desc
	if flags != 0 {
		return errors.Wrapf(uapi.EINVAL, "struct_ops updates take no flags (%#x)", flags)
	}
	if binary.LittleEndian.Uint32(key) != 0 {
		return errors.Wrap(uapi.E2BIG, "0 is the only key")
	}
	if err := sm.checkZeroHoles(value); err != nil {
		return err
	}
	if binary.LittleEndian.Uint32(value[0:]) != 0 || binary.LittleEndian.Uint32(value[4:]) != 0 {
		return errors.Wrap(uapi.EINVAL, "the value's refcnt and state must be zero")
	}
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if sm.State() != StateInit {
		return errors.Wrapf(uapi.EBUSY, "struct_ops map %d is %s: a struct_ops map is updated once", sm.m.ID, sm.State())
	}
	size := d.Type.Struct.Size
	udata := value[dataOffset : dataOffset+size]
	kdata := make([]byte, size)
	progs := make([]Prog, len(d.Members))
	reset := func(err error) error {
		// The kernel's reset_unlock, which also drops the associations
		// this update made, so that no program keeps pointing at an
		// instance that never was.
		clear(sm.kvalue)
		for _, p := range progs {
			if p != nil {
				p.DisassocStructOps()
				p.Put()
			}
		}
		sm.progs.Store(nil)
		return err
	}
	for i, mb := range d.Members {
		field := udata[mb.Offset : mb.Offset+mb.Size]
		if mb.Func == nil {
			if d.Type.InitMember != nil {
				handled, err := d.Type.InitMember(mb, kdata, udata)
				if err != nil {
					return reset(errors.Wrapf(withErrno(err, uapi.EINVAL), "%s.%s", d.Type.Name(), mb.Name))
				}
				if handled {
					continue
				}
			}
			if !isZero(field) {
				return reset(errors.Wrapf(uapi.EINVAL, "%s.%s: non-zero data member the subsystem does not take", d.Type.Name(), mb.Name))
			}
			continue
		}
		fd := binary.LittleEndian.Uint64(field)
		if fd == 0 {
			continue
		}
		p, err := progByFD(int(int32(uint32(fd))))
		if err != nil {
			return reset(errors.Wrapf(err, "%s.%s: prog fd %d", d.Type.Name(), mb.Name, int32(uint32(fd))))
		}
		typeID, idx, ok := p.StructOpsTarget()
		if !ok || typeID != d.TypeID || idx != uint32(i) {
			p.Put()
			return reset(errors.Wrapf(uapi.EINVAL, "%s.%s: program %s was not loaded for this member", d.Type.Name(), mb.Name, p.Name()))
		}
		progs[i] = p
		// Reusing a program in a second map poisons its association
		// rather than failing, for backward compatibility.
		_ = p.AssocStructOps(sm.m)
		binary.LittleEndian.PutUint64(kdata[mb.Offset:], sm.image+uint64(i)*trampolineSlot)
	}
	copy(sm.kvalue[dataOffset:], kdata)
	sm.progs.Store(&progs)
	if d.Type.Validate != nil {
		if err := d.Type.Validate(sm); err != nil {
			return reset(withErrno(err, uapi.EINVAL))
		}
	}
	copy(sm.uvalue, value)
	if sm.m.Flags&uapi.BPF_F_LINK != 0 {
		// A link registers it.
		sm.setState(StateReady)
		return nil
	}
	if err := d.Type.Reg(sm, nil); err != nil {
		clear(sm.uvalue)
		return reset(withErrno(err, uapi.EINVAL))
	}
	// The registration holds a reference until the delete unregisters.
	sm.m.Get()
	sm.setState(StateInUse)
	return nil
}

// setState stores the state (smp_store_release) and its copy in memory.
func (sm *Map) setState(s State) {
	binary.LittleEndian.PutUint32(sm.kvalue[4:], uint32(s))
	sm.state.Store(uint32(s))
}

// checkZeroHoles is check_zero_holes on the value: the padding after the
// common header and between the struct's members must be zero.
func (sm *Map) checkZeroHoles(value []byte) error {
	covered := make([]bool, len(value))
	for i := 0; i < 8; i++ {
		covered[i] = true
	}
	for _, mb := range sm.desc.Members {
		for i := uint32(0); i < mb.Size; i++ {
			covered[dataOffset+mb.Offset+i] = true
		}
	}
	for i, c := range covered {
		if !c && value[i] != 0 {
			return errors.Wrapf(uapi.EINVAL, "byte %d of the value is padding and must be zero", i)
		}
	}
	return nil
}

// DeleteElem is bpf_struct_ops_map_delete_elem: it unregisters an instance
// its update registered. Link-attached maps are unregistered by their
// links instead.
func (sm *Map) DeleteElem(_ int, key []byte) error {
	if sm.m.Flags&uapi.BPF_F_LINK != 0 {
		return errors.Wrap(uapi.EOPNOTSUPP, "a struct_ops map with BPF_F_LINK is detached through its link")
	}
	sm.mu.Lock()
	prev := sm.State()
	if prev == StateInUse {
		sm.setState(StateToBeFree)
	}
	sm.mu.Unlock()
	switch prev {
	case StateInUse:
		sm.desc.Type.Unreg(sm, nil)
		sm.m.Put() // the registration's reference
		return nil
	case StateToBeFree:
		return errors.Wrap(uapi.EINPROGRESS, "struct_ops map is being unregistered")
	case StateInit:
		return errors.Wrap(uapi.ENOENT, "struct_ops map was never updated")
	}
	return errors.Wrapf(uapi.ENOTSUPP, "struct_ops map in state %s", prev)
}

// Free is bpf_struct_ops_map_free: the programs lose their association and
// their reference, then the memory goes.
func (sm *Map) Free() {
	if progs := sm.progs.Swap(nil); progs != nil {
		for _, p := range *progs {
			if p != nil {
				p.DisassocStructOps()
			}
		}
		for _, p := range *progs {
			if p != nil {
				p.Put()
			}
		}
	}
	if sm.image != 0 {
		_ = sm.k.Memory().Free(sm.image)
		sm.image = 0
	}
	if sm.m.Addr != 0 {
		_ = sm.k.Memory().Free(sm.m.Addr)
	}
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// withErrno makes sure a subsystem's error carries an errno.
func withErrno(err error, errno uapi.Errno) error {
	var e uapi.Errno
	if errors.As(err, &e) {
		return err
	}
	return errors.Wrap(errno, err.Error())
}
