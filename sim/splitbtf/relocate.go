package splitbtf

import (
	"sort"
	"strings"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// embedded marks, while matching, a distilled struct or union that a split
// struct or union holds by value (BTF_IS_EMBEDDED): its size must match
// too, or the split type's layout would be wrong.
const embedded = ^uint32(0)

// Relocate is btf_relocate, what the kernel does with a module's split BTF
// whose base is a distilled base: it finds each distilled type in base (by
// name and kind, and size where the name alone is ambiguous or the type is
// embedded), and returns split renumbered onto base: references to
// distilled types point at base's types, split's own ids and strings
// follow base's. idMap takes an id of split (or of its distilled base) to
// the id it has after relocation, as the kernel keeps it to relocate a
// module's .BTF.ids. split and base are left as they were.
//
// A distilled type base lacks, or has twice alike, fails with EINVAL; a
// split string in the distilled base's strings that names no distilled
// type with ENOENT. The error says what libbpf would warn.
func Relocate(split, base *BTF) (relocated *BTF, idMap []uint32, err error) {
	dist := split.Base
	if dist == nil || base == nil || dist == base {
		return nil, nil, errors.Wrap(uapi.EINVAL, "relocation needs split BTF on a distilled base, and another base")
	}
	if dist.Base != nil || base.Base != nil {
		return nil, nil, errors.Wrap(uapi.EINVAL, "relocation works on split BTF of a base BTF, onto a base BTF")
	}
	if err := split.validateAll(); err != nil {
		return nil, nil, err
	}
	// base is not validated: it is the kernel's own vmlinux BTF, which the
	// kernel checked once, at boot; reading it here is safe whatever it
	// holds.
	r := relocation{
		split:   split,
		base:    base,
		dist:    dist,
		nDist:   dist.TypeCount(),
		nBase:   base.TypeCount(),
		idMap:   make([]uint32, split.TypeCount()),
		strMap:  make([]uint32, len(dist.Strings)),
		distStr: uint32(len(dist.Strings)),
		baseStr: uint32(len(base.Strings)),
	}
	if err := r.validateDistilled(); err != nil {
		return nil, nil, err
	}
	// Split ids move by the difference of the two bases' type counts.
	for id := r.nDist; id < split.TypeCount(); id++ {
		r.idMap[id] = id + r.nBase - r.nDist
	}
	if err := r.mapDistilled(); err != nil {
		return nil, nil, err
	}
	out := &BTF{Base: base, Types: make([]Type, len(split.Types)), Strings: append([]byte(nil), split.Strings...)}
	for i := range split.Types {
		t := split.Types[i].clone()
		for _, f := range t.idFields() {
			*f = r.idMap[*f]
		}
		out.Types[i] = t
	}
	for i := range out.Types {
		for _, f := range out.Types[i].strFields() {
			if *f == 0 {
				continue
			}
			if *f >= r.distStr {
				*f += r.baseStr - r.distStr
				continue
			}
			to := r.strMap[*f]
			if to == 0 {
				// libbpf prints the string at offset 0 here, which is
				// always empty; so does this message.
				return nil, nil, errors.Wrapf(uapi.ENOENT, "string '' [offset %d] is not mapped to base BTF", *f)
			}
			*f = to
		}
	}
	return out, r.idMap, nil
}

type relocation struct {
	split, base, dist *BTF
	// nDist and nBase are the bases' type counts.
	nDist, nBase uint32
	idMap        []uint32
	// strMap takes a distilled type's name offset to the offset of the
	// name of the base type it matched.
	strMap           []uint32
	distStr, baseStr uint32
}

// validateDistilled checks that the distilled base holds only named ints,
// floats, enums, structs, unions and forward declarations.
func (r *relocation) validateDistilled() error {
	for i := range r.dist.Types {
		t := &r.dist.Types[i]
		id := uint32(i) + 1
		switch k := t.Kind(); k {
		case KindInt, KindFloat, KindEnum, KindStruct, KindUnion, KindForward:
			if t.NameOff == 0 {
				return errors.Wrapf(uapi.EINVAL, "type [%d], kind [%d] is invalid for distilled base BTF; it is anonymous", id, k)
			}
		default:
			return errors.Wrapf(uapi.EINVAL, "type [%d] in distilled based BTF has unexpected kind [%d]", id, k)
		}
	}
	return nil
}

// nameInfo is a distilled or base type's <name, size, id>, the key
// distilled types are sorted and searched by.
type nameInfo struct {
	name      string
	needsSize bool
	size      uint32
	id        uint32
}

// compareNameSize orders by name, then, when both need it, by size from
// the largest (cmp_btf_name_size).
func compareNameSize(a, b *nameInfo) int {
	if c := strings.Compare(a.name, b.name); c != 0 || !a.needsSize || !b.needsSize {
		return c
	}
	return int(int32(b.size&0x7fffffff) - int32(a.size&0x7fffffff))
}

// leftmost returns the index of the first of infos that compares equal to
// key, or -1 (search_btf_name_size's binary search).
func leftmost(key *nameInfo, infos []nameInfo) int {
	found := -1
	for lo, hi := 0, len(infos)-1; lo <= hi; {
		mid := (lo + hi) / 2
		c := compareNameSize(key, &infos[mid])
		if c == 0 {
			found = mid
		}
		if c <= 0 {
			hi = mid - 1
		} else {
			lo = mid + 1
		}
	}
	return found
}

// markEmbedded marks the distilled structs and unions that split struct
// or union t holds by value, through qualifiers, typedefs and arrays.
func (r *relocation) markEmbedded(t *Type) {
	if !t.composite() {
		return
	}
	for _, f := range t.idFields() {
		// The walk is bounded: a chain of qualifiers longer than the BTF
		// is a loop, which the kernel refuses when it checks the types.
		for next, steps := *f, 0; next != 0 && steps <= len(r.split.Types)+len(r.dist.Types); steps++ {
			m := r.split.TypeByID(next)
			if m == nil {
				break
			}
			switch m.Kind() {
			case KindConst, KindRestrict, KindVolatile, KindTypedef, KindTypeTag:
				next = m.SizeType
			case KindArray:
				next = m.Data[0]
			case KindStruct, KindUnion:
				if next < r.nDist {
					r.idMap[next] = embedded
				}
				next = 0
			default:
				next = 0
			}
		}
	}
}

// mapDistilled fills idMap for the distilled ids and strMap for their
// names (btf_relocate_map_distilled_base).
func (r *relocation) mapDistilled() error {
	infos := make([]nameInfo, r.nDist)
	for id := uint32(0); id < r.nDist; id++ {
		var name string
		var size uint32
		if t := r.dist.TypeByID(id); t != nil {
			name, size = r.dist.Name(t), t.SizeType
		}
		infos[id] = nameInfo{name: name, needsSize: true, size: size, id: id}
	}
	sort.SliceStable(infos, func(i, j int) bool { return compareNameSize(&infos[i], &infos[j]) < 0 })

	for i := range r.split.Types {
		r.markEmbedded(&r.split.Types[i])
	}

	// A struct or union name base has more than once is matched by size.
	// Only names some distilled type has matter: the others are left
	// out at once, here and below (vmlinux has some 100,000 types, a
	// distilled base a few dozen).
	var lengths [256]bool // the lengths of distilled names: a quick filter
	for i := range infos {
		lengths[min(len(infos[i].name), 255)] = true
	}
	var candidates []uint32 // base ids with a distilled name, in order
	named := map[uint32]int{}
	for i := range r.base.Types {
		t := &r.base.Types[i]
		if t.NameOff == 0 {
			continue
		}
		name := r.base.name(t.NameOff)
		if !lengths[min(len(name), 255)] || !hasName(infos, name) {
			continue
		}
		candidates = append(candidates, uint32(i)+1)
		if t.composite() {
			named[t.NameOff]++
		}
	}

	for _, id := range candidates {
		bt := r.base.TypeByID(id)
		bk := bt.Kind()
		key := nameInfo{id: id, name: r.base.name(bt.NameOff)}
		switch bk {
		case KindInt, KindFloat, KindEnum, KindEnum64:
			key.needsSize, key.size = true, bt.SizeType
		case KindForward:
		case KindStruct, KindUnion:
			key.needsSize, key.size = named[bt.NameOff] > 1, bt.SizeType
		default:
			continue
		}
		at := leftmost(&key, infos)
		if at < 0 {
			continue
		}
		for ; at < len(infos) && compareNameSize(&key, &infos[at]) == 0; at++ {
			di := &infos[at]
			if di.id == 0 || di.id >= r.nDist {
				return errors.Wrapf(uapi.EINVAL, "base BTF id [%d] maps to invalid distilled base BTF id [%d]", id, di.id)
			}
			dt := r.dist.TypeByID(di.id)
			if !compatible(dt, bt, r.idMap[di.id] == embedded) {
				continue
			}
			if m := r.idMap[di.id]; m != 0 && m != embedded {
				return errors.Wrapf(uapi.EINVAL, "distilled base BTF type '%s' [%d], size %d has multiple candidates of the same size (ids [%d, %d]) in base BTF",
					key.name, di.id, bt.SizeType, id, m)
			}
			r.idMap[di.id] = id
			r.strMap[dt.NameOff] = bt.NameOff
		}
	}
	for id := uint32(1); id < r.nDist; id++ {
		if m := r.idMap[id]; m != 0 && m != embedded {
			continue
		}
		return errors.Wrapf(uapi.EINVAL, "distilled base BTF type '%s' [%d] is not mapped to base BTF id", r.dist.Name(r.dist.TypeByID(id)), id)
	}
	return nil
}

// compatible reports whether base type bt may stand for distilled type
// dt, whose name (and size, where needed) it has.
func compatible(dt, bt *Type, embeddedType bool) bool {
	bk := bt.Kind()
	switch dt.Kind() {
	case KindForward:
		switch bk {
		case KindForward:
			return dt.KindFlag() == bt.KindFlag()
		case KindStruct:
			return !bt.KindFlag()
		case KindUnion:
			return bt.KindFlag()
		}
		return false
	case KindInt:
		return bk == KindInt && intEncoding(dt) == intEncoding(bt)
	case KindFloat:
		return bk == KindFloat
	case KindEnum:
		// A distilled enum stands for an enum or an enum64.
		return bk == KindEnum || bk == KindEnum64
	case KindStruct, KindUnion:
		return !embeddedType || bt.SizeType == dt.SizeType
	}
	return false
}

// intEncoding is BTF_INT_ENCODING of an int's data word.
func intEncoding(t *Type) uint32 {
	if len(t.Data) == 0 {
		return ^uint32(0) // a malformed int matches none
	}
	return t.Data[0] >> 24 & 0x0f
}

// hasName reports whether some of infos, sorted by name, has name.
func hasName(infos []nameInfo, name string) bool {
	lo, hi := 0, len(infos)
	for lo < hi {
		mid := (lo + hi) / 2
		if infos[mid].name < name {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo < len(infos) && infos[lo].name == name
}
