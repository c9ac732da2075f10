package maps

import (
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Map-in-map (kernel/bpf/map_in_map.c). A map of maps (ARRAY_OF_MAPS,
// HASH_OF_MAPS) is created from an inner map template, of which it keeps
// a copy of the metadata only, the kernel's inner_map_meta: type, sizes,
// flags, max_entries, and what the type's inlined lookup needs. The
// verifier checks every access a program makes through an inner map
// against that copy, and inlines lookups into inner maps with its
// constants; so a map may be stored in the outer map only if its type's
// MetaEqual accepts it against the copy.

// Outer is the ability of map-in-map types: the metadata of their inner
// maps (map->inner_map_meta), which the verifier uses as the map of every
// pointer to an inner map.
type Outer interface {
	InnerMeta() *Map
}

// MetaOpser is an ability of a map type's Ops: MetaOps returns the Ops of
// an inner map template made from this map, meta. They are what the
// verifier sees of an inner map: its inlined lookup (LookupGenerator),
// built from the template's constants, and the type's optional abilities,
// by which the verifier picks the functions programs call. They hold no
// elements and are never called at run time (a program's calls reach the
// real inner map, by its address); their element operations fail.
//
// A type whose Ops lack MetaOpser gets Ops with no ability: lookups into
// its inner maps are calls of its lookup function.
type MetaOpser interface {
	MetaOps(meta *Map) Ops
}

// NewInnerMeta is bpf_map_meta_alloc: the inner map template of a new map
// of maps, copied from tmpl (the map inner_map_fd refers to). The copy
// does not reference tmpl, which the caller may close right after the
// outer map is created. Maps of maps cannot nest (EINVAL), and a type
// without MetaEqual cannot be an inner map (ENOTSUPP).
//
// The copy is not a map of the kernel: it has no id, no address and no
// reference count; its owner, the outer map, drops it with itself.
func NewInnerMeta(tmpl *Map) (*Map, error) {
	switch {
	case tmpl == nil:
		return nil, errors.Wrap(uapi.EBADF, "a map of maps needs an inner map template (inner_map_fd)")
	case isOuter(tmpl):
		return nil, errors.Wrap(uapi.EINVAL, "maps of maps do not nest: the inner map template is a map of maps")
	case tmpl.Type == nil || tmpl.Type.MetaEqual == nil:
		name := "this"
		if tmpl.Type != nil {
			name = tmpl.Type.Name
		}
		return nil, errors.Wrapf(uapi.ENOTSUPP, "%s maps cannot be inner maps (no map_meta_equal)", name)
	}
	meta := &Map{Type: tmpl.Type, Kernel: tmpl.Kernel}
	meta.Attr = tmpl.Attr
	// The kernel copies neither the name nor, of course, a template of
	// the template.
	meta.Name, meta.InnerMap = "", nil
	if mo, ok := tmpl.Ops.(MetaOpser); ok {
		meta.Ops = mo.MetaOps(meta)
	} else {
		meta.Ops = TemplateOps{}
	}
	return meta, nil
}

func isOuter(m *Map) bool {
	_, ok := m.Ops.(Outer)
	return ok
}

// MetaEqual reports whether m may be stored in a map of maps whose inner
// map template is meta: the template's type decides (map_meta_equal).
func MetaEqual(meta, m *Map) bool {
	if meta == nil || m == nil || meta.Type == nil || meta.Type.MetaEqual == nil {
		return false
	}
	return meta.Type.MetaEqual(meta, m)
}

// InnerMap is bpf_map_fd_get_ptr's check of a map being stored in a map
// of maps whose template is meta: obj must be a map that the template's
// type accepts, else EINVAL.
func InnerMap(meta *Map, obj Object) (*Map, error) {
	inner, ok := obj.(*Map)
	if !ok || inner == nil {
		return nil, errors.Wrap(uapi.EINVAL, "the fd is not a map's")
	}
	if !MetaEqual(meta, inner) {
		return nil, errors.Wrapf(uapi.EINVAL, "map %d (%s, key_size %d, value_size %d, max_entries %d, flags %#x) does not match the inner map template (%s, key_size %d, value_size %d, max_entries %d, flags %#x)",
			inner.ID, inner.Type.Name, inner.KeySize, inner.ValueSize, inner.MaxEntries, inner.Attr.Flags,
			meta.Type.Name, meta.KeySize, meta.ValueSize, meta.MaxEntries, meta.Attr.Flags)
	}
	return inner, nil
}

// DefaultMetaEqual is bpf_map_meta_equal, the rule of most types: the same
// type, key and value sizes and flags. max_entries may differ (since
// "bpf: Relax max_entries check for most of the inner map types"): the
// verifier does not use it for them. The records of special fields must
// be equal too (btf_record_equal): an inner map's spin lock where the
// template has one.
func DefaultMetaEqual(meta, m *Map) bool {
	return meta.Attr.Type == m.Attr.Type &&
		meta.KeySize == m.KeySize &&
		meta.ValueSize == m.ValueSize &&
		meta.Attr.Flags == m.Attr.Flags &&
		RecordEqual(meta.Record, m.Record)
}

// errTemplate is what the element operations of an inner map template
// return: it has no elements.
var errTemplate = errors.WithMessage(uapi.EINVAL, "an inner map template has no elements")

// TemplateOps are the element operations of an inner map template: every
// one fails. Map types embed them in the Ops their MetaOps return; a
// template whose type builds no Ops of its own gets them alone.
type TemplateOps struct{}

func (TemplateOps) LookupElem(int, []byte) (uint64, error)       { return 0, errTemplate }
func (TemplateOps) UpdateElem(int, []byte, []byte, uint64) error { return errTemplate }
func (TemplateOps) DeleteElem(int, []byte) error                 { return errTemplate }
func (TemplateOps) GetNextKey([]byte, []byte) error              { return errTemplate }
func (TemplateOps) Free()                                        {}

// TemplateWalk is what the templates of map types that can be walked
// (ForEacher) embed besides TemplateOps: the verifier lets a program walk
// an inner map of such a type, as the kernel does (the template has its
// type's ops), and the walk at run time is the inner map's own; the
// template itself has no elements to walk.
type TemplateWalk struct{}

func (TemplateWalk) ForEachElem(int, func(uint64, uint32, uint64) (bool, error)) (uint32, error) {
	return 0, errTemplate
}
