// Package structops simulates struct_ops: kernel subsystems whose
// operations BPF programs implement (kernel/bpf/bpf_struct_ops.c,
// include/linux/bpf.h).
//
// A subsystem declares a Type: the BTF of its struct of operations
// (function-pointer members the programs implement, data members user space
// fills in), the checks it wants on programs and values, and what happens
// when an instance registers, unregisters or is replaced. A Registry holds
// the types of one simulated kernel and gives each its BTF ids there; its
// MapType is BPF_MAP_TYPE_STRUCT_OPS, whose one value is an instance of the
// struct. User space updates that value with program fds in the function
// members; the update checks everything first and prepares the instance
// all at once, or leaves it untouched. A map made without BPF_F_LINK
// registers on that update (the legacy attach), one with BPF_F_LINK when a
// Link is created on it.
//
// The kernel side of one instance (what the kernel calls kdata, the struct
// inside struct bpf_struct_ops_<name>) lives in simulated memory, where
// programs reach it; the subsystem reaches it through *Map, and calls a
// member with Map.Call, which runs the member's program on a simulated CPU.
//
// Like the map types, this package does not import the simulated kernel
// (package sim): it reaches programs through the Prog interface, which the
// kernel implements, and BTF through the BTF interface.
//
// Simplifications: the per-member trampolines are addresses in a read-only
// image page that holds no code (the programs run through Map.Call, not by
// jumping there); the image is allocated with the map rather than on its
// first update; types come from the kernel proper (no module BTF, no
// BPF_F_VTYPE_BTF_OBJ_FD).
package structops

import (
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/kfunc"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// State is enum bpf_struct_ops_state: where an instance is in its life.
type State uint32

const (
	// StateInit: created, not yet updated (or reset after a failed
	// update).
	StateInit State = 0
	// StateInUse: registered by its update (a map without BPF_F_LINK).
	StateInUse State = 1
	// StateToBeFree: unregistered by a delete; it stays so until freed.
	StateToBeFree State = 2
	// StateReady: updated, waiting to be registered by a link (a map
	// with BPF_F_LINK). It stays READY while links use it.
	StateReady State = 3
)

func (s State) String() string {
	switch s {
	case StateInit:
		return "init"
	case StateInUse:
		return "inuse"
	case StateToBeFree:
		return "tobefree"
	case StateReady:
		return "ready"
	}
	return "unknown"
}

// ValuePrefix is the prefix of the value type's name: the map's value is a
// struct bpf_struct_ops_<name>.
const ValuePrefix = "bpf_struct_ops_"

// dataOffset is where the kernel struct starts in the value: after struct
// bpf_struct_ops_common_value, cache-line aligned (L1_CACHE_BYTES of arm64).
const dataOffset = 64

// MaxArgs is MAX_BPF_FUNC_ARGS: a member takes at most 12 arguments.
const MaxArgs = 12

// ProgInfo is what CheckMember sees of a program loaded for a member.
type ProgInfo struct {
	Name      string
	Type      ebpf.ProgramType
	Sleepable bool
}

// Type is a struct_ops type a subsystem declares (struct bpf_struct_ops).
type Type struct {
	// Struct is the BTF of the struct of operations; its name is the
	// type's name (e.g. "tcp_congestion_ops").
	Struct *btf.Struct
	// CheckMember, if set, vets a program being loaded for a member
	// (check_member); its error fails the load.
	CheckMember func(member Member, prog ProgInfo) error
	// InitMember, if set, handles a data member during an update
	// (init_member): it may copy udata's member into kdata and return
	// true. A non-zero data member nobody handles fails the update with
	// EINVAL. udata and kdata are the whole structs.
	InitMember func(member Member, kdata, udata []byte) (handled bool, err error)
	// Validate, if set, checks a prepared instance before it is
	// registered or marked ready (validate).
	Validate func(m *Map) error
	// Reg registers an instance with the subsystem (reg); l is the link
	// for link-attached maps, nil for the legacy attach.
	Reg func(m *Map, l *Link) error
	// Unreg unregisters it (unreg).
	Unreg func(m *Map, l *Link)
	// Update, if set, lets a link switch from old to m in one step
	// (update); without it link updates fail with EOPNOTSUPP.
	Update func(m, old *Map, l *Link) error
	// Kfuncs are the kfuncs the subsystem exposes; the kernel registers
	// them with the type.
	Kfuncs []*kfunc.Func
	// PromoteArg, if set, may give a pointer argument of a member a
	// larger struct than its prototype names, as tcp_congestion_ops'
	// is_valid_access turns every struct sock into a struct tcp_sock:
	// the program then reads the argument as the struct it returns. It
	// returns s to keep the argument as declared.
	PromoteArg func(member Member, arg int, s *btf.Struct) *btf.Struct
	// StructWrite, if set, decides which stores programs may make into
	// the kernel objects they are given (btf_struct_access of the
	// type's verifier_ops): size bytes at off in s. Its error refuses
	// the store, its message going to the verifier log (EACCES unless
	// it wraps another errno). Without it, objects are read-only ("only
	// read is supported").
	StructWrite func(s *btf.Struct, off, size int) error
}

// Name returns the type's name.
func (t *Type) Name() string { return t.Struct.Name }

// Member is one member of a struct_ops struct.
type Member struct {
	Index  int
	Name   string
	Offset uint32 // bytes from the start of the struct
	Size   uint32
	// Func is the member's prototype if it is a function pointer, nil
	// for a data member.
	Func *btf.FuncProto
	// Args describes Func's parameters as a program sees them in its
	// context, one u64 slot each.
	Args []Arg
}

// Arg is one parameter of a function member as its program's context
// slot shows it (btf_ctx_access): a number, or a trusted pointer to a
// kernel object (PTR_TO_BTF_ID | PTR_TRUSTED) the program reads field by
// field.
type Arg struct {
	Name string
	// Struct is the struct a pointer parameter points to, modifiers and
	// typedefs skipped; nil for a number, and for a pointer to void or
	// to an integer, which programs get as a number too.
	Struct *btf.Struct
	// StructID is Struct's id in the kernel's BTF.
	StructID btf.TypeID
	// Nullable marks a pointer the kernel may pass as NULL, which the
	// program must test before using: the parameter's name ends in
	// "__nullable", as the kernel reads it from the type's stub
	// functions (the prototype's parameter names here).
	Nullable bool
	// Other is set for a pointer to anything else (a function, an
	// array, a pointer): its kind, as the kernel's refusal names it.
	// A program may not read such an argument.
	Other string
}

// NullableSuffix marks a nullable pointer parameter.
const NullableSuffix = "__nullable"

// Desc is a registered type (struct bpf_struct_ops_desc): the type, its
// members, and its BTF ids in the kernel's BTF.
type Desc struct {
	Type        *Type
	TypeID      btf.TypeID // of the struct
	ValueTypeID btf.TypeID // of struct bpf_struct_ops_<name>
	Value       *btf.Struct
	Members     []Member
}

// ValueSize is the size of the map value: the common header and the
// struct.
func (d *Desc) ValueSize() uint32 { return d.Value.Size }

// Member returns member i.
func (d *Desc) Member(i int) (Member, bool) {
	if i < 0 || i >= len(d.Members) {
		return Member{}, false
	}
	return d.Members[i], true
}

// MemberByName returns the member called name.
func (d *Desc) MemberByName(name string) (Member, bool) {
	for _, m := range d.Members {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// BTF is the kernel's BTF as the registry extends it.
type BTF interface {
	// Add adds t and what it refers to, returning t's id.
	Add(t btf.Type) (btf.TypeID, error)
}

// Registry holds the struct_ops types of one kernel. It is safe for
// concurrent use.
type Registry struct {
	btf BTF

	mu      sync.RWMutex
	byName  map[string]*Desc
	byType  map[btf.TypeID]*Desc
	byValue map[btf.TypeID]*Desc
}

// NewRegistry makes an empty registry whose types get their ids in b.
func NewRegistry(b BTF) *Registry {
	return &Registry{btf: b, byName: map[string]*Desc{}, byType: map[btf.TypeID]*Desc{}, byValue: map[btf.TypeID]*Desc{}}
}

// Register adds t: its members are checked as bpf_struct_ops_desc_init
// checks them, and its struct and value type are added to the kernel's
// BTF. A name may be registered once (EEXIST).
func (r *Registry) Register(t *Type) (*Desc, error) {
	if t == nil || t.Struct == nil || t.Struct.Name == "" {
		return nil, errors.Wrap(uapi.EINVAL, "struct_ops type needs a named BTF struct")
	}
	if t.Reg == nil || t.Unreg == nil {
		return nil, errors.Wrapf(uapi.EINVAL, "struct_ops %s needs reg and unreg", t.Struct.Name)
	}
	d := &Desc{Type: t}
	for i, bm := range t.Struct.Members {
		if bm.Name == "" {
			return nil, errors.Wrapf(uapi.EINVAL, "struct_ops %s: member %d has no name", t.Struct.Name, i)
		}
		if bm.BitfieldSize != 0 {
			return nil, errors.Wrapf(uapi.EINVAL, "struct_ops %s: member %s is a bitfield", t.Struct.Name, bm.Name)
		}
		if bm.Offset%8 != 0 {
			return nil, errors.Wrapf(uapi.EINVAL, "struct_ops %s: member %s is not byte aligned", t.Struct.Name, bm.Name)
		}
		size, err := btf.Sizeof(bm.Type)
		if err != nil {
			return nil, errors.Wrapf(uapi.EINVAL, "struct_ops %s: member %s: %v", t.Struct.Name, bm.Name, err)
		}
		m := Member{Index: i, Name: bm.Name, Offset: bm.Offset.Bytes(), Size: uint32(size), Func: funcProto(bm.Type)}
		if m.Func != nil && len(m.Func.Params) > MaxArgs {
			return nil, errors.Wrapf(uapi.EINVAL, "struct_ops %s: member %s has more than %d arguments", t.Struct.Name, bm.Name, MaxArgs)
		}
		if m.Func != nil {
			m.Args = args(m.Func)
		}
		if m.Offset+m.Size > t.Struct.Size {
			return nil, errors.Wrapf(uapi.EINVAL, "struct_ops %s: member %s lies past the struct's end", t.Struct.Name, bm.Name)
		}
		d.Members = append(d.Members, m)
	}
	d.Value = valueType(t.Struct)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.byName[t.Struct.Name]; ok {
		return nil, errors.Wrapf(uapi.EEXIST, "struct_ops %s is already registered", t.Struct.Name)
	}
	var err error
	if d.TypeID, err = r.btf.Add(t.Struct); err != nil {
		return nil, err
	}
	if d.ValueTypeID, err = r.btf.Add(d.Value); err != nil {
		return nil, err
	}
	// The structs the members' arguments point to get ids of their own
	// (the verifier's log names them), as every struct has in vmlinux.
	for i := range d.Members {
		for j := range d.Members[i].Args {
			a := &d.Members[i].Args[j]
			if a.Struct == nil {
				continue
			}
			if a.StructID, err = r.btf.Add(a.Struct); err != nil {
				return nil, err
			}
		}
	}
	r.byName[t.Struct.Name] = d
	r.byType[d.TypeID] = d
	r.byValue[d.ValueTypeID] = d
	return d, nil
}

// ByName finds a type by the name of its struct.
func (r *Registry) ByName(name string) (*Desc, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d, ok := r.byName[name]
	return d, ok
}

// ByTypeID finds a type by its struct's BTF id: a struct_ops program's
// attach_btf_id.
func (r *Registry) ByTypeID(id btf.TypeID) (*Desc, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d, ok := r.byType[id]
	return d, ok
}

// ByValueID finds a type by its value type's BTF id: a struct_ops map's
// btf_vmlinux_value_type_id (bpf_struct_ops_find_value).
func (r *Registry) ByValueID(id btf.TypeID) (*Desc, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	d, ok := r.byValue[id]
	return d, ok
}

// funcProto returns the prototype a function-pointer member points to.
func funcProto(t btf.Type) *btf.FuncProto {
	p, ok := btf.As[*btf.Pointer](t)
	if !ok {
		return nil
	}
	fp, _ := btf.As[*btf.FuncProto](p.Target)
	return fp
}

// args describes fp's parameters as btf_ctx_access types them.
func args(fp *btf.FuncProto) []Arg {
	out := make([]Arg, len(fp.Params))
	for i, p := range fp.Params {
		st, other := verifier.CtxPointee(p.Type)
		out[i] = Arg{Name: p.Name, Struct: st, Other: other, Nullable: strings.HasSuffix(p.Name, NullableSuffix)}
	}
	return out
}

// valueType builds struct bpf_struct_ops_<name> { struct
// bpf_struct_ops_common_value common; struct <name> data
// ____cacheline_aligned; }, which is what cilium/ebpf and libbpf look up
// by name to size the map's value.
func valueType(s *btf.Struct) *btf.Struct {
	refcount := &btf.Typedef{Name: "refcount_t", Type: &btf.Struct{Name: "refcount_struct", Size: 4,
		Members: []btf.Member{{Name: "refs", Type: &btf.Typedef{Name: "atomic_t", Type: &btf.Struct{Size: 4,
			Members: []btf.Member{{Name: "counter", Type: &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}}}}}}}}}
	state := &btf.Enum{Name: "bpf_struct_ops_state", Size: 4, Values: []btf.EnumValue{
		{Name: "BPF_STRUCT_OPS_STATE_INIT", Value: uint64(StateInit)},
		{Name: "BPF_STRUCT_OPS_STATE_INUSE", Value: uint64(StateInUse)},
		{Name: "BPF_STRUCT_OPS_STATE_TOBEFREE", Value: uint64(StateToBeFree)},
		{Name: "BPF_STRUCT_OPS_STATE_READY", Value: uint64(StateReady)},
	}}
	common := &btf.Struct{Name: "bpf_struct_ops_common_value", Size: 8, Members: []btf.Member{
		{Name: "refcnt", Type: refcount},
		{Name: "state", Type: state, Offset: 32},
	}}
	size := (dataOffset + s.Size + dataOffset - 1) &^ (dataOffset - 1)
	return &btf.Struct{Name: ValuePrefix + s.Name, Size: size, Members: []btf.Member{
		{Name: "common", Type: common},
		{Name: "data", Type: s, Offset: btf.Bits(dataOffset * 8)},
	}}
}

// MapFlags are the map_flags a struct_ops map accepts.
const MapFlags = uapi.BPF_F_LINK | uapi.BPF_F_VTYPE_BTF_OBJ_FD

// DataOffset is where the struct starts in the map's value.
const DataOffset = dataOffset

// errNoType is bpf_struct_ops_map_alloc's answer to an unknown value type.
func errNoType(id uint32) error {
	return errors.Wrapf(uapi.ENOTSUPP, "btf_vmlinux_value_type_id %d is not a struct_ops value type", id)
}

var _ maps.Ops = (*Map)(nil)
