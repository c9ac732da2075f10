// Package cpumap simulates BPF_MAP_TYPE_CPUMAP (kernel/bpf/cpumap.c): an
// array indexed by CPU number through which XDP programs hand packets to
// another CPU with bpf_redirect_map. A slot holds a struct
// bpf_cpumap_val: the size of the CPU's packet queue and, in 8-byte
// values, a program to run on that CPU (written as an fd, read back as
// its id).
//
// The kernel gives each set slot a queue and a kthread bound to its CPU;
// bpfsim keeps only the value, since its packets stop at the redirect
// verdict. Programs in slots are not simulated: a value naming one
// (bpf_prog.fd > 0) is refused with ENOMEM, the errno the kernel gives
// for every program it cannot attach there. Programs may only redirect
// through a cpumap (the verifier refuses lookups), so slots are updated
// in place rather than replaced under RCU.
//
// Keys are CPU numbers: a key at or past max_entries is E2BIG, one that
// is not a possible CPU of the simulated kernel ENODEV; max_entries past
// NR_CPUS is E2BIG at creation. cilium/ebpf (and so Kernel.NewMap) clamps
// max_entries to the number of possible CPUs before the kernel sees it.
package cpumap

import (
	"encoding/binary"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/devmap"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// CPUMap is the map type, for a kernel's registry.
var CPUMap = &maps.Type{ID: uapi.MapTypeCPUMap, Name: "cpumap", AllocCheck: allocCheck, Alloc: alloc, MetaEqual: maps.DefaultMetaEqual}

// NRCPUs is the simulated kernel's NR_CPUS, the bound on max_entries: 512,
// arm64's default, which sim.MaxCPUs also is. (x86-64 kernels are often
// built with other values; this machine's may differ.)
const NRCPUs = 512

// MaxQueueSize is the largest qsize a slot takes (EOVERFLOW past it).
const MaxQueueSize = 16384

// allocCheck is cpu_map_alloc's checks, made before it allocates
// anything: 4-byte keys, a 4-byte qsize alone or with a program, some
// entries, no flag but BPF_F_NUMA_NODE (so neither access flag), and no
// more entries than NR_CPUS.
func allocCheck(attr *maps.Attr) error {
	switch {
	case attr.MaxEntries == 0 || attr.KeySize != 4 || (attr.ValueSize != 4 && attr.ValueSize != 8):
		return errors.Wrapf(uapi.EINVAL, "a cpumap has 4-byte keys, 4- or 8-byte values and entries (got %d, %d, %d)",
			attr.KeySize, attr.ValueSize, attr.MaxEntries)
	case attr.Flags&^uapi.BPF_F_NUMA_NODE != 0:
		return errors.Wrapf(uapi.EINVAL, "cpumap map_flags %#x include flags other than BPF_F_NUMA_NODE", attr.Flags)
	case attr.MaxEntries > NRCPUs:
		return errors.Wrapf(uapi.E2BIG, "a cpumap has at most NR_CPUS (%d) entries, not %d", NRCPUs, attr.MaxEntries)
	}
	return nil
}

// cmap is struct bpf_cpu_map: which slots are set, and their values
// (struct bpf_cpumap_val as user space reads it back: qsize and, in 8
// bytes, the program id, 0) in simulated memory, from which the syscall
// copies a lookup's result.
type cmap struct {
	m    *maps.Map
	cpus uint32 // num_possible_cpus: CPUs 0 to cpus-1 are possible
	*devmap.Slots
}

func alloc(k maps.Kernel, m *maps.Map) (maps.Ops, error) {
	s, err := devmap.NewSlots(k, m)
	if err != nil {
		return nil, err
	}
	return &cmap{m: m, cpus: uint32(k.NumCPUs()), Slots: s}, nil
}

// LookupElem is cpu_map_lookup_elem, reached only from the syscall (the
// verifier keeps programs from it): the slot's value, or 0.
func (c *cmap) LookupElem(_ int, key []byte) (uint64, error) {
	return c.Lookup(binary.LittleEndian.Uint32(key)), nil
}

// UpdateElem is cpu_map_update_elem, its checks in the kernel's order:
// flags, the key against max_entries, BPF_NOEXIST (every slot exists),
// the queue size, the key against the possible CPUs. A qsize of 0 empties
// the slot.
func (c *cmap) UpdateElem(_ int, key, value []byte, flags uint64) error {
	hasFd := len(value) == 8 && int32(binary.LittleEndian.Uint32(value[4:])) > 0
	return c.update(key, value, nil, hasFd, flags)
}

// ProgFdOffset is maps.ProgFdField: 8-byte values hold a program's fd
// after the queue size.
func (c *cmap) ProgFdOffset() (int, bool) { return 4, c.m.ValueSize == 8 }

// UpdateElemWithProg is cpu_map_update_elem for a value with a program:
// an XDP program loaded for cpumaps (BPF_XDP_CPUMAP), which the slot then
// holds. Any other is ENOMEM, as the kernel's entry allocation fails for
// it.
func (c *cmap) UpdateElemWithProg(key, value []byte, prog maps.ProgObject, flags uint64) error {
	return c.update(key, value, prog, true, flags)
}

func (c *cmap) update(key, value []byte, prog maps.ProgObject, hasFd bool, flags uint64) error {
	i := binary.LittleEndian.Uint32(key)
	qsize := binary.LittleEndian.Uint32(value)
	switch {
	case flags > uapi.BPF_EXIST:
		return errors.Wrapf(uapi.EINVAL, "update flags %#x", flags)
	case i >= c.m.MaxEntries:
		return errors.Wrapf(uapi.E2BIG, "key %d of %d entries", i, c.m.MaxEntries)
	case flags == uapi.BPF_NOEXIST:
		return errors.Wrap(uapi.EEXIST, "every cpumap slot exists")
	case qsize > MaxQueueSize:
		return errors.Wrapf(uapi.EOVERFLOW, "qsize %d is over %d", qsize, MaxQueueSize)
	case i >= c.cpus:
		return errors.Wrapf(uapi.ENODEV, "CPU %d is not possible (%d CPUs)", i, c.cpus)
	case qsize != 0 && hasFd && !devmap.SlotProgramFits(prog, devmap.AttachXDPCPUMap):
		return errors.Wrap(uapi.ENOMEM, "the fd is no XDP program loaded for cpumaps (expected attach type BPF_XDP_CPUMAP)")
	}
	v := make([]byte, c.m.ValueSize)
	binary.LittleEndian.PutUint32(v, qsize)
	if qsize == 0 || !hasFd {
		prog = nil
	}
	if prog != nil {
		prog.Get()
		binary.LittleEndian.PutUint32(v[4:], prog.ObjectID())
	}
	c.StoreProg(i, v, qsize != 0, prog)
	return nil
}

// DeleteElem is cpu_map_delete_elem: any slot within the map may be
// emptied, a CPU that is not possible or an empty slot too.
func (c *cmap) DeleteElem(_ int, key []byte) error {
	return c.Delete(binary.LittleEndian.Uint32(key))
}

// GetNextKey is cpu_map_get_next_key, an array's.
func (c *cmap) GetNextKey(key, next []byte) error { return c.NextKey(key, next) }

// Redirect is cpu_map_redirect: a set slot redirects, an empty one (or
// a key past the end; the key is truncated to 32 bits) gives the flags'
// low bits. A cpumap takes no flags of its own, so BPF_F_BROADCAST
// aborts like any other.
func (c *cmap) Redirect(index, flags uint64) uint64 {
	return devmap.XDPRedirect(c.IsSet(uint32(index)), flags, 0)
}

// Free releases the map object.
func (c *cmap) Free() { c.Slots.Free(c.m.Kernel) }
