package splitbtf

import (
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Distill is libbpf's btf__distill_base, what pahole does for a module
// built outside the kernel tree: from split BTF on its full base (vmlinux)
// it makes a distilled base and the split BTF renumbered onto it.
//
// The distilled base holds, for each base type split refers to: named
// ints, floats and forward declarations as they are, named structs and
// unions with their size and no members, named enums (and enum64s) as a
// sized enum with no values. The types split reaches through the others
// (pointers, arrays, typedefs, qualifiers, prototypes, anonymous structs,
// unions and enums) are copied into the new split BTF, after its own
// types. The result is byte for byte libbpf's: types and strings in the
// same order.
func Distill(split *BTF) (distilled, newSplit *BTF, err error) {
	old := split.Base
	if old == nil {
		return nil, nil, errors.Wrap(uapi.EINVAL, "distilling needs split BTF")
	}
	if err := split.validateAll(); err != nil {
		return nil, nil, err
	}
	d := distillation{src: split, splitStart: split.StartID(), idMap: make([]uint32, split.TypeCount())}
	for id := split.StartID(); id < split.TypeCount(); id++ {
		if err := d.markReferenced(id); err != nil {
			return nil, nil, err
		}
	}
	distilled = NewBase()
	if err := d.addTypes(distilled); err != nil {
		return nil, nil, err
	}
	newSplit = NewSplit(distilled)
	for i := range split.Types {
		if err := d.copyType(newSplit, &split.Types[i]); err != nil {
			return nil, nil, err
		}
	}
	if err := d.addTypes(newSplit); err != nil {
		return nil, nil, err
	}
	// Split ids not mapped move down: the distilled base is smaller.
	diff := d.splitStart - distilled.TypeCount()
	for _, b := range []*BTF{distilled, newSplit} {
		for i := range b.Types {
			for _, f := range b.Types[i].idFields() {
				if m := d.idMap[*f]; m != 0 {
					*f = m
				} else if *f >= d.splitStart {
					*f -= diff
				}
			}
		}
	}
	return distilled, newSplit, nil
}

type distillation struct {
	src        *BTF
	splitStart uint32
	// idMap marks the base types split needs (with their own id), then
	// holds their ids in the distilled base or the new split.
	idMap []uint32
}

// markReferenced marks the base types type id refers to, and theirs in
// turn, stopping at named structs and unions: their distilled form has no
// members (btf_add_distilled_type_ids).
func (d *distillation) markReferenced(id uint32) error {
	t := d.src.TypeByID(id)
	for _, f := range t.idFields() {
		ref := *f
		if ref == 0 || ref >= d.splitStart || d.idMap[ref] > 0 {
			continue
		}
		bt := d.src.TypeByID(ref)
		switch bt.Kind() {
		case KindInt, KindFloat, KindForward, KindArray, KindStruct, KindUnion, KindTypedef,
			KindEnum, KindEnum64, KindPointer, KindConst, KindRestrict, KindVolatile,
			KindFuncProto, KindTypeTag:
			d.idMap[ref] = ref
		default:
			return errors.Wrapf(uapi.EINVAL, "unexpected reference to base type[%d] of kind [%d] when creating distilled base BTF.", ref, bt.Kind())
		}
		if bt.composite() && bt.NameOff != 0 {
			continue
		}
		if err := d.markReferenced(ref); err != nil {
			return err
		}
	}
	return nil
}

// addTypes adds the marked base types that belong in dst, the distilled
// base or the new split, in id order (btf_add_distilled_types).
func (d *distillation) addTypes(dst *BTF) error {
	toBase := dst.Base == nil
	for id := uint32(1); id < d.splitStart; id++ {
		if d.idMap[id] == 0 {
			continue
		}
		t := d.src.TypeByID(id)
		named := t.NameOff != 0
		var err error
		switch t.Kind() {
		case KindInt, KindFloat, KindForward:
			if !toBase {
				continue
			}
			err = d.copyType(dst, t)
		case KindStruct, KindUnion, KindEnum, KindEnum64:
			if toBase != named {
				continue
			}
			if !toBase {
				err = d.copyType(dst, t)
				break
			}
			kind := t.Kind()
			if kind == KindEnum64 {
				kind = KindEnum
			}
			if kind == KindEnum && (t.SizeType == 0 || t.SizeType > 8) {
				// btf__add_enum's check.
				return errors.Wrapf(uapi.EINVAL, "enum '%s' [%d] has size %d", d.src.Name(t), id, t.SizeType)
			}
			var off uint32
			if off, err = dst.AddStr(d.src.Name(t)); err == nil {
				dst.AddType(Type{NameOff: off, Info: Info(kind, false, 0), SizeType: t.SizeType})
			}
		case KindArray, KindTypedef, KindPointer, KindConst, KindRestrict, KindVolatile,
			KindFuncProto, KindTypeTag:
			if toBase {
				continue
			}
			err = d.copyType(dst, t)
		default:
			return errors.Wrapf(uapi.EINVAL, "unexpected kind when adding base type '%s'[%d] of kind [%d] to distilled base BTF.", d.src.Name(t), id, t.Kind())
		}
		if err != nil {
			return err
		}
		d.idMap[id] = dst.TypeCount() - 1
	}
	return nil
}

// copyType appends t to dst with its strings added to dst's (btf_add_type
// through a pipe); its type ids are fixed up afterwards.
func (d *distillation) copyType(dst *BTF, t *Type) error {
	c := t.clone()
	for _, f := range c.strFields() {
		if *f == 0 {
			continue
		}
		s, _ := d.src.Str(*f)
		off, err := dst.AddStr(s)
		if err != nil {
			return err
		}
		*f = off
	}
	dst.AddType(c)
	return nil
}
