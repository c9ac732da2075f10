// Package devmap simulates BPF_MAP_TYPE_DEVMAP and, in hash.go,
// BPF_MAP_TYPE_DEVMAP_HASH (kernel/bpf/devmap.c): an array, or a hash, of
// network devices that XDP programs redirect packets to with
// bpf_redirect_map. A slot holds a struct bpf_devmap_val: the device's
// ifindex and, in 8-byte values, the id of a program to run on it.
//
// A slot must name one of the kernel's network devices (the loopback,
// ifindex 1, and those a test added: maps.NetDevices), as the kernel
// refuses a missing device. A slot's program (bpf_prog.fd) must be an XDP
// program loaded for devmaps; the slot holds it and a lookup reads its
// id. Test runs do not transmit, so it never runs.
// Slots are updated in place rather than swapped under RCU, so a program
// holding a looked-up value sees a later update.
package devmap

import (
	"encoding/binary"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// DevMap is the map type, for a kernel's registry.
var DevMap = &maps.Type{ID: uapi.MapTypeDevmap, Name: "devmap", AllocCheck: allocCheck, Alloc: alloc, MetaEqual: maps.DefaultMetaEqual}

const (
	// createFlags are DEV_CREATE_FLAG_MASK.
	createFlags = uapi.BPF_F_NUMA_NODE | uapi.BPF_F_RDONLY | uapi.BPF_F_WRONLY
)

// XDP verdicts and bpf_redirect_map flags.
const (
	xdpAborted          = 0
	xdpRedirect         = 4
	actionMask          = 3      // XDP_ABORTED | XDP_DROP | XDP_PASS | XDP_TX
	bpfFBroadcast       = 1 << 3 // BPF_F_BROADCAST
	bpfFExcludeIngress  = 1 << 4 // BPF_F_EXCLUDE_INGRESS
	redirectFlagsOfType = bpfFBroadcast | bpfFExcludeIngress
)

// allocCheck is dev_map_init_map's checks: 4-byte keys, values of the
// ifindex alone or with a program, some entries, and only the NUMA and
// user-space access flags.
func allocCheck(attr *maps.Attr) error {
	switch {
	case attr.MaxEntries == 0 || attr.KeySize != 4 || (attr.ValueSize != 4 && attr.ValueSize != 8):
		return errors.Wrapf(uapi.EINVAL, "a devmap has 4-byte keys, 4- or 8-byte values and entries (got %d, %d, %d)",
			attr.KeySize, attr.ValueSize, attr.MaxEntries)
	case attr.Flags&^createFlags != 0:
		return errors.Wrapf(uapi.EINVAL, "devmap map_flags %#x include unsupported flags", attr.Flags)
	}
	return nil
}

// dtab is struct bpf_dtab: which slots hold a device, and their values in
// simulated memory.
type dtab struct {
	m *maps.Map
	*Slots
}

func alloc(k maps.Kernel, m *maps.Map) (maps.Ops, error) {
	// A lookup returns a pointer straight into the slot, so programs may
	// only read it: the kernel adds BPF_F_RDONLY_PROG to the map.
	m.Flags |= uapi.BPF_F_RDONLY_PROG
	s, err := NewSlots(k, m)
	if err != nil {
		return nil, err
	}
	return &dtab{m: m, Slots: s}, nil
}

// LookupElem is dev_map_lookup_elem: the address of the slot's value, or
// 0 for an empty slot or a key past the end.
func (d *dtab) LookupElem(_ int, key []byte) (uint64, error) {
	return d.Lookup(binary.LittleEndian.Uint32(key)), nil
}

// UpdateElem is dev_map_update_elem: ifindex 0 empties the slot, any
// other must be a device; every slot exists, so BPF_NOEXIST fails. A
// program's fd reaches the map through UpdateElemWithProg.
func (d *dtab) UpdateElem(_ int, key, value []byte, flags uint64) error {
	hasFd := len(value) == 8 && int32(binary.LittleEndian.Uint32(value[4:])) > 0
	return d.update(key, value, nil, hasFd, flags)
}

// ProgFdOffset is maps.ProgFdField: 8-byte values hold a program's fd
// after the ifindex.
func (d *dtab) ProgFdOffset() (int, bool) { return 4, d.m.ValueSize == 8 }

// UpdateElemWithProg is dev_map_update_elem for a value with a program:
// an XDP program loaded for devmaps (BPF_XDP_DEVMAP), which the slot then
// holds, its id read back where the fd was.
func (d *dtab) UpdateElemWithProg(key, value []byte, prog maps.ProgObject, flags uint64) error {
	return d.update(key, value, prog, true, flags)
}

// update stores value, whose fd (hasFd) names prog, nil for no program
// or for an fd that came some other way than UpdateElemWithProg.
func (d *dtab) update(key, value []byte, prog maps.ProgObject, hasFd bool, flags uint64) error {
	i := binary.LittleEndian.Uint32(key)
	switch {
	case flags > uapi.BPF_EXIST:
		return errors.Wrapf(uapi.EINVAL, "update flags %#x", flags)
	case i >= d.m.MaxEntries:
		return errors.Wrapf(uapi.E2BIG, "key %d of %d entries", i, d.m.MaxEntries)
	case flags == uapi.BPF_NOEXIST:
		return errors.Wrap(uapi.EEXIST, "every devmap slot exists")
	}
	ifindex := binary.LittleEndian.Uint32(value)
	switch {
	case ifindex == 0 && hasFd:
		return errors.Wrap(uapi.EINVAL, "a program without a device")
	case ifindex != 0 && !maps.NetDeviceExists(d.m.Kernel, ifindex):
		return errors.Wrapf(uapi.EINVAL, "no device with ifindex %d", ifindex)
	case hasFd && !SlotProgramFits(prog, AttachXDPDevmap):
		return errors.Wrap(uapi.EINVAL, "the fd is no XDP program loaded for devmaps (expected attach type BPF_XDP_DEVMAP)")
	}
	v := make([]byte, d.m.ValueSize)
	binary.LittleEndian.PutUint32(v, ifindex)
	if prog != nil {
		prog.Get()
		binary.LittleEndian.PutUint32(v[4:], prog.ObjectID())
	}
	d.StoreProg(i, v, ifindex != 0, prog)
	return nil
}

// DeleteElem is dev_map_delete_elem: any slot within the map may be
// emptied, even an empty one.
func (d *dtab) DeleteElem(_ int, key []byte) error {
	return d.Delete(binary.LittleEndian.Uint32(key))
}

// GetNextKey is dev_map_get_next_key, an array's.
func (d *dtab) GetNextKey(key, next []byte) error { return d.NextKey(key, next) }

// Redirect is dev_map_redirect, bpf_redirect_map's work for a devmap: the
// index is truncated to 32 bits; a slot with a device, or
// BPF_F_BROADCAST, redirects; otherwise the flags' low bits are the
// verdict. Flags besides those and BPF_F_EXCLUDE_INGRESS abort.
func (d *dtab) Redirect(index, flags uint64) uint64 {
	return XDPRedirect(d.IsSet(uint32(index)), flags, redirectFlagsOfType)
}

// XDPRedirect is the verdict of __bpf_xdp_redirect_map, which every
// redirect map type's map_redirect shares, once the type's lookup has
// said whether index names a target: typeFlags are the flags the type
// takes besides the verdict bits (BPF_F_BROADCAST and
// BPF_F_EXCLUDE_INGRESS for devmaps, none for a cpumap); any other flag
// aborts. A missing target gives the flags' low bits as the verdict,
// unless the type takes BPF_F_BROADCAST and it is set.
func XDPRedirect(found bool, flags, typeFlags uint64) uint64 {
	if flags&^(actionMask|typeFlags) != 0 {
		return xdpAborted
	}
	if !found && flags&bpfFBroadcast == 0 {
		return flags & actionMask
	}
	return xdpRedirect
}

// Free releases the values.
func (d *dtab) Free() { d.Slots.Free(d.m.Kernel) }
