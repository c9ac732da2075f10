package devmap

import (
	"sync"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Slots are the values of a map whose every index below max_entries is a
// slot, set or empty (a devmap's, a cpumap's): the map object, then the
// values one after the other in simulated memory, and which are set.
type Slots struct {
	m      *maps.Map
	mu     sync.RWMutex // the kernel's update lock
	used   []bool
	values []byte
	base   uint64 // address of slot 0's value
	// progs are the programs the slots hold a reference on (made on the
	// first slot given one).
	progs []maps.ProgObject
}

// valueOffset is where the values start after the map object.
const valueOffset = 256

// NewSlots maps m's object and values, every slot empty.
func NewSlots(k maps.Kernel, m *maps.Map) (*Slots, error) {
	size := uint64(m.MaxEntries) * uint64(m.ValueSize)
	addr, err := k.Memory().Vmalloc(valueOffset+size, mem.PermRW, m.Type.Name)
	if err != nil {
		return nil, err
	}
	s := &Slots{m: m, used: make([]bool, m.MaxEntries), base: addr + valueOffset}
	if s.values, err = k.Memory().Bytes(s.base, size); err != nil {
		k.Memory().Free(addr)
		return nil, err
	}
	m.Addr = addr
	return s, nil
}

// Lookup is the address of slot i's value, or 0 for an empty slot or an
// index past the end.
func (s *Slots) Lookup(i uint32) uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if i >= s.m.MaxEntries || !s.used[i] {
		return 0
	}
	return s.base + uint64(i)*uint64(s.m.ValueSize)
}

// IsSet reports whether slot i exists and is set.
func (s *Slots) IsSet(i uint32) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return i < s.m.MaxEntries && s.used[i]
}

// Store writes slot i's value (value_size bytes; i is within the map) and
// marks it set or empty.
func (s *Slots) Store(i uint32, v []byte, set bool) { s.StoreProg(i, v, set, nil) }

// StoreProg is Store for a value that comes with prog, whose reference
// the slot takes over (nil: none). The program the slot held before is
// put after a grace period, as the kernel frees a replaced entry.
func (s *Slots) StoreProg(i uint32, v []byte, set bool, prog maps.ProgObject) {
	s.mu.Lock()
	off := uint64(i) * uint64(s.m.ValueSize)
	mem.StoreBytes(s.values[off:off+uint64(s.m.ValueSize)], v)
	s.used[i] = set
	var old maps.ProgObject
	if prog != nil && s.progs == nil {
		s.progs = make([]maps.ProgObject, s.m.MaxEntries)
	}
	if s.progs != nil {
		old, s.progs[i] = s.progs[i], prog
	}
	s.mu.Unlock()
	if old != nil {
		s.m.Kernel.CallRCU(old.Put)
	}
}

// Delete empties slot i: any slot within the map may be emptied, an empty
// one too.
func (s *Slots) Delete(i uint32) error {
	if i >= s.m.MaxEntries {
		return errors.Wrapf(uapi.EINVAL, "key %d of %d entries", i, s.m.MaxEntries)
	}
	s.Store(i, make([]byte, s.m.ValueSize), false)
	return nil
}

// NextKey is the maps' get_next_key, an array's.
func (s *Slots) NextKey(key, next []byte) error {
	return maps.IndexNextKey(s.m.MaxEntries, key, next)
}

// Free unmaps the map object and its values, and puts the programs the
// slots held.
func (s *Slots) Free(k maps.Kernel) {
	for _, p := range s.progs {
		if p != nil {
			p.Put()
		}
	}
	s.progs = nil
	k.Memory().Free(s.m.Addr)
}

// Program types and expected attach types of the programs a slot may hold
// (include/uapi/linux/bpf.h).
const (
	progTypeXDP = 6
	// AttachXDPDevmap and AttachXDPCPUMap are BPF_XDP_DEVMAP and
	// BPF_XDP_CPUMAP.
	AttachXDPDevmap = 33
	AttachXDPCPUMap = 35
)

// SlotProgramFits is the check of a program for a slot: an XDP program
// loaded for attachType (dev_map's and cpu_map's
// bpf_prog_get_type_dev and expected_attach_type tests).
func SlotProgramFits(prog maps.ProgObject, attachType uint32) bool {
	if prog == nil || prog.ProgOwner().Type != progTypeXDP {
		return false
	}
	at, ok := prog.(maps.AttachTyped)
	return ok && at.ExpectedAttachType() == attachType
}
