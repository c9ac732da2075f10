package sim

import (
	"encoding/binary"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Maps of maps (BPF_MAP_TYPE_ARRAY_OF_MAPS, BPF_MAP_TYPE_HASH_OF_MAPS)
// from user space, in cilium/ebpf's style:
//
//   - a MapSpec with an InnerMap creates the inner map template first,
//     passes it to the outer map's creation (inner_map_fd) and closes it,
//     as cilium/ebpf does; the outer map keeps only its metadata;
//   - Update takes the inner map as a *Map, or as an fd (uint32, int,
//     4 bytes), which the kernel resolves (map_fd_get_ptr);
//   - Lookup returns the inner map's id (uint32), or into a **Map a new
//     handle on the inner map, as cilium/ebpf's Lookup into **ebpf.Map
//     opens it by id.
//
// A program's bpf_map_lookup_elem on an outer map returns the inner map's
// pointer, which it may pass to the map helpers after a null check.
//
// The open file an update comes through (maps.File) is 0 until user
// space handles carry one.

// isMapOfMaps reports whether t stores maps.
func isMapOfMaps(t ebpf.MapType) bool { return t == ebpf.ArrayOfMaps || t == ebpf.HashOfMaps }

// innerTemplate creates the inner map template of spec, if it is a map of
// maps: the caller passes it in maps.Attr.InnerMap and drops it with the
// returned function once the outer map exists.
func (k *Kernel) innerTemplate(spec *ebpf.MapSpec) (*maps.Map, func(), error) {
	if spec.InnerMap == nil || !isMapOfMaps(spec.Type) {
		// cilium/ebpf ignores an inner map other types do not take.
		return nil, func() {}, nil
	}
	// Created as cilium/ebpf creates it: without contents, named only if
	// the name fits, and with its own inner map if it has one (which
	// the outer map then refuses: maps of maps do not nest).
	inner := spec.InnerMap.Copy()
	inner.Contents = nil
	if len(inner.Name) > 15 {
		inner.Name = ""
	}
	tmpl, err := k.NewMap(inner)
	if err != nil {
		return nil, nil, errors.Wrap(err, "inner map")
	}
	return tmpl.m, func() { tmpl.Close() }, nil
}

// mapOfMapsValueSize is cilium/ebpf's fixup of a map of maps' value size:
// 0 means 4, the size of an fd.
func mapOfMapsValueSize(spec *ebpf.MapSpec) uint32 {
	if isMapOfMaps(spec.Type) && spec.ValueSize == 0 {
		return 4
	}
	return spec.ValueSize
}

// fdValues returns the map's FdValues ability.
func (h *Map) fdValues() (maps.FdValues, bool) {
	fv, ok := h.m.Ops.(maps.FdValues)
	return fv, ok
}

// lookupID is BPF_MAP_LOOKUP_ELEM on a map whose values are fds: the id
// of the object under key, as 4 bytes.
func lookupID(fv maps.FdValues, key []byte) ([]byte, error) {
	id, err := fv.LookupID(key)
	if err != nil {
		return nil, mapErr(err)
	}
	return binary.LittleEndian.AppendUint32(make([]byte, 0, 4), id), nil
}

// lookupMap serves Lookup into a **Map: a new handle on the inner map.
func (h *Map) lookupMap(key any, out **Map) error {
	if _, ok := h.fdValues(); !ok || !isMapOfMaps(h.Type()) {
		return errors.Wrapf(uapi.EINVAL, "%s maps do not hold maps", h.m.Attr.Type)
	}
	v, err := h.lookupBytes(key)
	if err != nil {
		return err
	}
	m, err := h.proc.NewMapFromID(binary.LittleEndian.Uint32(v))
	if err != nil {
		return err
	}
	*out = m
	return nil
}

// collectionMap creates the map called name of a collection, and first
// the maps its contents name: in an ELF object, the initial values of a
// map of maps (`.values = { [0] = &inner }` in C) are the names of other
// maps of the object, which cilium/ebpf resolves once they exist.
func (p *Process) collectionMap(c *Collection, spec *ebpf.CollectionSpec, name string, mo MapOptions, busy map[string]bool) (*Map, error) {
	if m, ok := c.Maps[name]; ok {
		return m, nil
	}
	ms, ok := spec.Maps[name]
	if !ok {
		return nil, errors.Wrapf(uapi.EINVAL, "the object has no map %q", name)
	}
	if busy[name] {
		return nil, errors.Wrapf(uapi.EINVAL, "map %s: its contents refer back to it", name)
	}
	busy[name] = true
	defer delete(busy, name)
	if ms.Type == ebpf.ProgramArray {
		// Prog array contents name programs: filled once they are
		// loaded, as cilium/ebpf does (collection.go).
		ms = ms.Copy()
		ms.Contents = nil
	}
	named := false
	for _, kv := range ms.Contents {
		if _, ok := kv.Value.(string); ok {
			named = true
		}
	}
	if named {
		ms = ms.Copy()
		for i, kv := range ms.Contents {
			ref, ok := kv.Value.(string)
			if !ok {
				continue
			}
			if !isMapOfMaps(ms.Type) {
				return nil, errors.Wrapf(uapi.EINVAL, "map %s: %s maps cannot refer to %q (programs in prog arrays are not simulated yet)", name, ms.Type, ref)
			}
			inner, err := p.collectionMap(c, spec, ref, mo, busy)
			if err != nil {
				return nil, errors.Wrapf(err, "map %s refers to %s", name, ref)
			}
			ms.Contents[i].Value = inner
		}
	}
	ms, err := withVariables(ms, spec.Variables, name)
	if err != nil {
		return nil, err
	}
	if isDataSection(name) && ms.Type == ebpf.Array {
		// Global data is mappable, as cilium/ebpf creates it on kernels
		// that can (memory.go).
		ms = ms.Copy()
		ms.Flags |= uapi.BPF_F_MMAPABLE
	}
	m, reused, err := p.newMapPinned(ms, mo) // pin.go
	if err != nil {
		return nil, err
	}
	c.Maps[name] = m
	if reused {
		if c.reused == nil {
			c.reused = map[string]bool{}
		}
		c.reused[name] = true
	}
	return m, nil
}
