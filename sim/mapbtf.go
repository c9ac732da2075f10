package sim

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// The BTF of a map's key and value, as BPF_MAP_CREATE takes it from
// cilium/ebpf: the spin lock a value holds (kernel/bpf/btf.c:
// btf_parse_fields and the functions it calls), whether the map keeps its
// BTF at all (kernel/bpf/syscall.c: map_check_btf), and what cilium/ebpf
// does with a refusal.
//
// cilium/ebpf first loads a BTF blob with the key and value types
// (BPF_BTF_LOAD), which fails for some malformed spin locks (see
// checkBTFLoad), then creates the map with it. When the kernel refuses the
// BTF with EINVAL or ENOTSUPP (a key or value whose size is not the map's,
// a map type that takes no BTF or not this key), cilium/ebpf creates the
// map again without it: the map works, but has no BTF and no spin lock.
// A spin lock in the value of a map type that cannot have one (EOPNOTSUPP)
// or of a map programs may only read or only write (EACCES) fails the
// creation for good.
//
// bpfsim simulates one special field, struct bpf_spin_lock; the others
// (timers, kptrs, list heads...) are refused at creation, naming them
// (specialField). Two locks in one value at different depths of nested
// structs, which the kernel takes with a warning (WARN_ON_ONCE in
// btf_parse_fields) and then uses the last of, and a lock not aligned to 4
// bytes, which the kernel takes when it sits at offset 0 of a struct
// nested at an odd offset of a packed value, are refused too.

// maxResolveDepth is MAX_RESOLVE_DEPTH, the depth of arrays and nested
// structs btf_find_field_one follows; btfFieldsMax is BTF_FIELDS_MAX, the
// special fields a value may hold.
const (
	maxResolveDepth = 32
	btfFieldsMax    = 11
)

const spinLockName = "bpf_spin_lock"

// fieldKind is a kind of special field btf_parse_fields looks for: a
// struct of this name and size, aligned to its size (8 at most).
type fieldKind struct {
	name string
	size uint32
}

var (
	spinLockKind = fieldKind{spinLockName, maps.SpinLockSize}
	timerKind    = fieldKind{"bpf_timer", maps.TimerSize}
)

func (k fieldKind) align() uint32 { return min(k.size, 8) }

// mapBTF is what map_create keeps of a MapSpec's BTF.
type mapBTF struct {
	// keep: the key and value pass map_check_btf's size checks, so the
	// map has BTF unless typeRefuses.
	keep bool
	// record holds the value's spin lock, nil if it has none (or if
	// btf_parse_fields failed, which map_check_btf ignores).
	record *maps.Record
	// typeRefuses: the map type's map_check_btf refuses the BTF (EINVAL,
	// ENOTSUPP). It runs after the spin lock's own checks (checkRecord),
	// so a lock may still fail the creation; otherwise cilium/ebpf's
	// second creation has no BTF.
	typeRefuses bool
}

// specBTF is the BTF part of BPF_MAP_CREATE for spec and attr (the map's
// attributes after cilium/ebpf's fixups). An error is BPF_BTF_LOAD's.
func specBTF(spec *ebpf.MapSpec, attr *maps.Attr) (mapBTF, error) {
	key, value := voidIsNil(spec.Key), voidIsNil(spec.Value)
	if spec.Key == nil && spec.Value == nil {
		return mapBTF{}, nil
	}
	if err := checkBTFLoad(spec.Key, spec.Value); err != nil {
		return mapBTF{}, errors.Wrap(err, "load BTF")
	}
	if value == nil {
		// No value type id: no BTF check, or EINVAL for a key without a
		// value; either way the map ends up without BTF.
		return mapBTF{}, nil
	}
	// map_check_btf: the key's and the value's sizes.
	if key != nil {
		if size, err := btf.Sizeof(key); err != nil || uint32(size) != attr.KeySize {
			return mapBTF{}, nil
		}
	} else if !hasMapCheckBTF(attr.Type) {
		return mapBTF{}, nil
	}
	if size, err := btf.Sizeof(value); err != nil || uint32(size) != attr.ValueSize {
		return mapBTF{}, nil
	}
	mb := mapBTF{keep: true, typeRefuses: typeRefusesBTF(attr, key, value)}
	locks, err := findSpinLocks(value)
	switch {
	case err != nil || len(locks) == 0:
		// map_check_btf ignores btf_parse_fields' errors: no record.
	case len(locks) > 1:
		return mapBTF{}, errors.Wrapf(uapi.EINVAL, "values with %d bpf_spin_locks (at offsets %v) are not simulated: the kernel warns and uses the last", len(locks), locks)
	case locks[0]%maps.SpinLockSize != 0:
		return mapBTF{}, errors.Wrapf(uapi.EINVAL, "a bpf_spin_lock at offset %d, not a multiple of 4, is not simulated", locks[0])
	default:
		mb.record = &maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: locks[0]}
	}
	timers, err := findFields(value, timerKind)
	switch {
	case err != nil || len(timers) == 0:
	case len(timers) > 1:
		return mapBTF{}, errors.Wrapf(uapi.EINVAL, "values with %d bpf_timers (at offsets %v) are not simulated", len(timers), timers)
	default:
		if mb.record == nil {
			mb.record = &maps.Record{}
		}
		mb.record.Fields |= maps.FieldTimer
		mb.record.TimerOff = timers[0]
	}
	return mb, nil
}

// voidIsNil is the type id cilium/ebpf passes for t: 0 for none and for
// void (a data section's key).
func voidIsNil(t btf.Type) btf.Type {
	if _, ok := t.(*btf.Void); ok {
		return nil
	}
	return t
}

// hasMapCheckBTF says whether the kernel's map type has a map_check_btf,
// which lets a map be created with a value type and no key type.
func hasMapCheckBTF(t uapi.MapType) bool {
	switch t {
	case uapi.MapTypeArray, uapi.MapTypePercpuArray, uapi.MapTypeLPMTrie, uapi.MapTypeBloomFilter:
		return true
	}
	return refusesAllBTF(t)
}

// refusesAllBTF: the type's map_check_btf is map_check_no_btf (ENOTSUPP).
func refusesAllBTF(t uapi.MapType) bool {
	switch t {
	case uapi.MapTypePerfEventArray, uapi.MapTypeArrayOfMaps, uapi.MapTypeHashOfMaps,
		uapi.MapTypeDevmap, uapi.MapTypeRingbuf, uapi.MapTypeDevmapHash, uapi.MapTypeCPUMap:
		return true
	}
	return false
}

// typeRefusesBTF is the map type's map_check_btf (nil key: no key type).
func typeRefusesBTF(attr *maps.Attr, key, value btf.Type) bool {
	switch t := attr.Type; {
	case refusesAllBTF(t):
		return true
	case t == uapi.MapTypeArray || t == uapi.MapTypePercpuArray:
		// array_map_check_btf: a u32 key, or none for a data section
		// (one element, a DATASEC value).
		if key == nil {
			_, datasec := btf.UnderlyingType(value).(*btf.Datasec)
			return t != uapi.MapTypeArray || attr.MaxEntries != 1 || !datasec
		}
		i, ok := btf.UnderlyingType(key).(*btf.Int)
		return !ok || i.Size != 4 // btf_type_is_i32
	case t == uapi.MapTypeLPMTrie:
		// trie_check_btf: the key is a struct.
		_, ok := btf.UnderlyingType(key).(*btf.Struct)
		return key == nil || !ok
	case t == uapi.MapTypeBloomFilter:
		// bloom_map_check_btf: no key.
		return key != nil
	case t == uapi.MapTypeTaskStorage:
		// bpf_local_storage_map_check_btf: an int key, the pidfd.
		i, ok := btf.UnderlyingType(key).(*btf.Int)
		return !ok || i.Size != 4
	}
	return false
}

// checkRecord is map_check_btf's rules for a value with a spin lock, run
// as the kernel runs them, after map_alloc (which may add flags, as a
// devmap adds BPF_F_RDONLY_PROG).
func checkRecord(m *maps.Map) error {
	if m.Record == nil {
		return nil
	}
	if m.Attr.Flags&(uapi.BPF_F_RDONLY_PROG|uapi.BPF_F_WRONLY_PROG) != 0 {
		return errors.Wrap(uapi.EACCES, "a map whose values hold a bpf_spin_lock or a bpf_timer cannot be read-only or write-only for programs")
	}
	// The fields in the order of their bits, as the kernel checks them.
	t := m.Attr.Type
	if m.Record.Has(maps.FieldSpinLock) && t != uapi.MapTypeHash && t != uapi.MapTypeArray && t != uapi.MapTypeTaskStorage {
		return errors.Wrapf(uapi.EOPNOTSUPP, "%s maps cannot hold a bpf_spin_lock", t)
	}
	if m.Record.Has(maps.FieldTimer) && t != uapi.MapTypeHash && t != uapi.MapTypeLRUHash && t != uapi.MapTypeArray {
		return errors.Wrapf(uapi.EOPNOTSUPP, "%s maps cannot hold a bpf_timer", t)
	}
	return nil
}

// findSpinLocks is btf_parse_fields looking for spin locks in a map value
// of type t: their offsets, or the error btf_find_field fails with. Only a
// struct or a data section can hold fields.
func findSpinLocks(t btf.Type) ([]uint32, error) { return findFields(t, spinLockKind) }

// findFields is findSpinLocks for the fields of kind k.
func findFields(t btf.Type, k fieldKind) ([]uint32, error) {
	switch v := btf.UnderlyingType(t).(type) {
	case *btf.Struct:
		return structFields(v, k, 0)
	case *btf.Datasec:
		// btf_find_datasec_var: each variable must fill its slot.
		var locks []uint32
		seen := false
		for _, vsi := range v.Vars {
			vt := vsi.Type
			if variable, ok := vt.(*btf.Var); ok {
				vt = variable.Type
			}
			found, err := fieldOfKind(vt, k, vsi.Offset, vsi.Size, &seen, 0)
			if err != nil {
				return nil, err
			}
			if locks = append(locks, found...); len(locks) > btfFieldsMax {
				return nil, errors.WithStack(uapi.E2BIG)
			}
		}
		return locks, nil
	}
	return nil, errors.Wrap(uapi.EINVAL, "only a struct or a data section holds special fields")
}

// structSpinLocks is btf_find_struct_field: the spin locks of s, nested
// structs included, level deep.
func structSpinLocks(s *btf.Struct, level int) ([]uint32, error) {
	return structFields(s, spinLockKind, level)
}

// structFields is structSpinLocks for the fields of kind k.
func structFields(s *btf.Struct, k fieldKind, level int) ([]uint32, error) {
	var locks []uint32
	seen := false // seen_mask: one lock per struct level
	for _, m := range s.Members {
		if m.Offset%8 != 0 {
			return nil, errors.Wrapf(uapi.EINVAL, "member %s is not byte aligned", m.Name)
		}
		found, err := fieldOfKind(m.Type, k, uint32(m.Offset/8), 0, &seen, level)
		if err != nil {
			return nil, err
		}
		if locks = append(locks, found...); len(locks) > btfFieldsMax {
			return nil, errors.WithStack(uapi.E2BIG)
		}
	}
	return locks, nil
}

// fieldSpinLocks is btf_find_field_one for a member (or variable) of type
// t at off: arrays are flattened, a member whose type is named
// bpf_spin_lock is the lock if it is a 4-byte struct at an offset aligned
// to 4 (else it is ignored, though it counts as the level's lock), and
// other structs are searched (btf_find_nested_struct). Neither typedefs
// nor qualifiers are looked through, as the kernel does not. A lock may
// not repeat, in an array or in an array of structs (btf_repeat_fields:
// EINVAL).
func fieldOfKind(t btf.Type, k fieldKind, off, expectedSize uint32, seen *bool, level int) ([]uint32, error) {
	nelems := uint64(1)
	depth := 0
	for ; depth < maxResolveDepth; depth++ {
		a, ok := t.(*btf.Array)
		if !ok {
			break
		}
		nelems *= uint64(a.Nelems)
		t = a.Type
	}
	switch {
	case depth == maxResolveDepth:
		return nil, errors.Wrap(uapi.E2BIG, "arrays nested too deep")
	case nelems == 0:
		return nil, nil
	}
	if t.TypeName() == k.name {
		if *seen {
			return nil, errors.Wrapf(uapi.E2BIG, "two %ss in one struct", k.name)
		}
		*seen = true
		s, ok := t.(*btf.Struct)
		switch {
		case expectedSize != 0 && uint64(expectedSize) != uint64(k.size)*nelems,
			off%k.align() != 0, !ok, s.Size != k.size:
			return nil, nil
		case nelems > 1:
			return nil, errors.Wrapf(uapi.EINVAL, "an array of %ss", k.name)
		}
		return []uint32{off}, nil
	}
	s, ok := t.(*btf.Struct)
	if !ok || expectedSize != 0 && uint64(expectedSize) != uint64(s.Size)*nelems {
		return nil, nil
	}
	if level+1 >= maxResolveDepth {
		return nil, errors.Wrap(uapi.E2BIG, "structs nested too deep")
	}
	locks, err := structFields(s, k, level+1)
	if err != nil || len(locks) == 0 {
		return nil, err
	}
	if nelems > 1 {
		return nil, errors.Wrapf(uapi.EINVAL, "an array of structs holding a %s", k.name)
	}
	for i := range locks {
		locks[i] += off
	}
	return locks, nil
}

// checkBTFLoad is the part of BPF_BTF_LOAD that looks at spin locks
// (btf_parse_struct_metas): every struct with a member of type struct
// bpf_spin_lock itself (not through a typedef, a qualifier, an array or a
// nested struct) must hold a lock btf_parse_fields finds: two at its own
// level are E2BIG, one it ignores (misaligned, or not 4 bytes) EFAULT.
// The blob holds every type the key and value refer to.
func checkBTFLoad(types ...btf.Type) error {
	seen := map[btf.Type]bool{}
	var walk func(t btf.Type) error
	walk = func(t btf.Type) error {
		if t == nil || seen[t] {
			return nil
		}
		seen[t] = true
		switch v := t.(type) {
		case *btf.Struct:
			if err := checkStructMeta(v); err != nil {
				return err
			}
			for _, m := range v.Members {
				if err := walk(m.Type); err != nil {
					return err
				}
			}
		case *btf.Union:
			for _, m := range v.Members {
				if err := walk(m.Type); err != nil {
					return err
				}
			}
		case *btf.Array:
			return walk(v.Type)
		case *btf.Typedef:
			return walk(v.Type)
		case *btf.Const:
			return walk(v.Type)
		case *btf.Volatile:
			return walk(v.Type)
		case *btf.Restrict:
			return walk(v.Type)
		case *btf.TypeTag:
			return walk(v.Type)
		case *btf.Pointer:
			return walk(v.Target)
		case *btf.Var:
			return walk(v.Type)
		case *btf.Datasec:
			for _, vsi := range v.Vars {
				if err := walk(vsi.Type); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, t := range types {
		if err := walk(t); err != nil {
			return err
		}
	}
	return nil
}

// checkStructMeta is btf_parse_struct_metas for one struct.
func checkStructMeta(s *btf.Struct) error {
	direct := false
	for _, m := range s.Members {
		if l, ok := m.Type.(*btf.Struct); ok && l.Name == spinLockName {
			direct = true
		}
	}
	if !direct {
		return nil
	}
	locks, err := structSpinLocks(s, 0)
	if err != nil {
		return errors.Wrapf(err, "struct %s", s.Name)
	}
	if len(locks) == 0 {
		return errors.Wrapf(uapi.EFAULT, "struct %s: its bpf_spin_lock is not one (misaligned, or not 4 bytes)", s.Name)
	}
	return nil
}
