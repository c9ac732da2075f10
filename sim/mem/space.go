package mem

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Space is one simulated kernel virtual address space. It is safe for
// concurrent use.
//
// Locking: mu guards the page table, the areas and the region cursors.
// Executors never hold mu while running a program: they take it for reading
// on a TLB miss only.
type Space struct {
	mu      sync.RWMutex
	pgd     pgdTable
	areas   []*Area // sorted by Start
	cursors [numRegions]uint64
	limit   uint64 // bytes of backing memory the space may hold
	backed  uint64 // bytes of backing memory held now

	// freeTables are empty page tables kept for reuse (every slot empty).
	freeTables []*pteTable

	// hugeFree holds the memory of freed 2 MiB areas by Recycle key.
	hugeFree map[string][][]uint64

	// gen counts changes that can invalidate a cached translation (unmap,
	// permission change). TLBs compare it in Sync.
	gen atomic.Uint64
}

// Region names a part of the address space that areas are carved from.
type Region int

// Regions.
const (
	// RegionVmalloc holds kernel objects: maps, stacks, contexts.
	RegionVmalloc Region = iota
	// RegionModules holds executable images (execmem), as on arm64.
	RegionModules
	numRegions
)

var regionBounds = [numRegions][2]uint64{
	RegionVmalloc: {VmallocStart, VmallocEnd},
	RegionModules: {ModulesStart, ModulesEnd},
}

// DefaultLimit is the backing memory a Space may hold unless told otherwise:
// an allocation past it fails with ENOMEM rather than exhausting the host.
const DefaultLimit = 4 << 30

// New returns an empty address space.
func New() *Space {
	s := &Space{limit: DefaultLimit}
	for r := range s.cursors {
		s.cursors[r] = regionBounds[r][0]
	}
	return s
}

// SetLimit changes how many bytes of backing memory the space may hold.
func (s *Space) SetLimit(bytes uint64) {
	s.mu.Lock()
	s.limit = bytes
	s.mu.Unlock()
}

// Device backs a mapping whose loads and stores are computed instead of read
// from memory, like MMIO. bpfsim uses it for program contexts whose fields
// the kernel rewrites at load time: a 4-byte load of xdp_md->data yields the
// 64-bit packet pointer, just as the verifier's rewritten load of
// xdp_buff->data does.
type Device interface {
	// Load returns the value of a load of size bytes at offset off from the
	// start of the mapping, already extended to 64 bits.
	Load(off uint64, size int, signExtend bool) (uint64, error)
	// Store performs a store of the low size bytes of val at offset off.
	Store(off uint64, size int, val uint64) error
}

// Area is one allocation in the address space, as /proc/vmallocinfo lists
// them.
type Area struct {
	Start uint64
	Size  uint64 // mapped bytes; the guard page after them is not counted
	Perm  Perm   // of all its pages; SetPerm of part of an area leaves it
	Huge  bool   // mapped with 2 MiB block entries
	Name  string // who allocated it ("bpf_stack", "bpf_prog_pack", ...)
	// AliasOf is the start of the area whose pages this one maps again, or 0.
	AliasOf uint64

	backing []uint64 // keeps the pages alive; 8-byte aligned for atomics
	recycle string   // AllocOptions.Recycle
	dev     Device
}

// End returns the first address after the area's mapped pages.
func (a *Area) End() uint64 { return a.Start + a.Size }

// backed is the size of the area's own memory: less than Size when part
// of it is mapped twice (AllocOptions.Mirror).
func (a *Area) backed() uint64 { return uint64(len(a.backing)) * 8 }

// AllocOptions says where and how to map a new area.
type AllocOptions struct {
	Region Region
	Perm   Perm
	// Huge maps the area with 2 MiB block entries; size and start are
	// rounded to 2 MiB.
	Huge bool
	Name string
	// Device, if set, makes the area a device mapping: no backing memory,
	// every access goes through the Device.
	Device Device
	// Recycle lets a 2 MiB huge area take the memory of a freed one
	// allocated with the same Recycle key, as it was left: its owner
	// promises to leave such areas in a state it can use again (JIT
	// packs, every chunk refilled with the illegal instruction when
	// freed). AllocRecycled says whether it did.
	Recycle string
	// Mirror maps the area's last Mirror bytes (whole pages) a second
	// time right after it, so that a ring buffer's record that wraps
	// around the end of its data reads as one contiguous range: the
	// kernel's ring buffer vmaps its data pages twice in a row
	// (bpf_ringbuf_area_alloc). The area's Size counts both mappings.
	Mirror uint64
}

// Alloc maps a new zeroed area of at least size bytes (rounded up to whole
// pages) followed by an unmapped guard page, and returns its start.
func (s *Space) Alloc(size uint64, o AllocOptions) (uint64, error) {
	o.Recycle = ""
	addr, _, err := s.AllocRecycled(size, o)
	return addr, err
}

// AllocRecycled is Alloc, except that an area with AllocOptions.Recycle
// set may get the memory of a freed area with the same key, unchanged;
// recycled says that it did (the area is zeroed otherwise).
func (s *Space) AllocRecycled(size uint64, o AllocOptions) (addr uint64, recycled bool, err error) {
	if size == 0 {
		return 0, false, errors.Wrap(uapi.EINVAL, "mem: zero-sized allocation")
	}
	if o.Region < 0 || o.Region >= numRegions {
		return 0, false, errors.Wrapf(uapi.EINVAL, "mem: unknown region %d", o.Region)
	}
	if o.Huge && o.Device != nil {
		return 0, false, errors.Wrap(uapi.EINVAL, "mem: a device mapping cannot be huge")
	}
	if o.Mirror != 0 && (o.Huge || o.Device != nil || o.Mirror&pageMask != 0 || o.Mirror > roundUp(size, PageSize)) {
		return 0, false, errors.Wrapf(uapi.EINVAL, "mem: cannot mirror %d bytes of a %d-byte area", o.Mirror, size)
	}
	align := uint64(PageSize)
	if o.Huge {
		align = HugeSize
	}
	if size > regionBounds[o.Region][1]-regionBounds[o.Region][0] {
		return 0, false, errors.Wrapf(uapi.ENOMEM, "mem: %d bytes do not fit the region", size)
	}
	size = roundUp(size, align)

	s.mu.Lock()
	defer s.mu.Unlock()

	if o.Device == nil && s.backed+size > s.limit {
		return 0, false, errors.Wrapf(uapi.ENOMEM, "mem: allocating %d bytes would exceed the %d-byte limit", size, s.limit)
	}
	// mapped is the virtual range the area takes; size its backing.
	mapped := size + o.Mirror
	start := roundUp(s.cursors[o.Region], align)
	end := start + mapped
	// One guard page after every area, as vmalloc leaves one.
	if end+PageSize < start || end+PageSize > regionBounds[o.Region][1] {
		// The cursor reached the region's end: reuse a freed range, as
		// vmalloc does once its lazily freed areas are purged. Until
		// then ranges are not reused, so that stale pointers fault.
		var ok bool
		if start, ok = s.findGap(o.Region, mapped, align); !ok {
			return 0, false, errors.Wrapf(uapi.ENOMEM, "mem: region %d exhausted", o.Region)
		}
		end = start + mapped
	}
	s.cursors[o.Region] = max(s.cursors[o.Region], end+PageSize)

	a := &Area{Start: start, Size: mapped, Perm: o.Perm, Huge: o.Huge, Name: o.Name, dev: o.Device, recycle: o.Recycle}
	if o.Device != nil {
		dm := &devMap{dev: o.Device, base: start}
		for addr := start; addr < end; addr += PageSize {
			s.setPTE(addr, pte{dev: dm, perm: o.Perm})
		}
	} else {
		if blocks := s.hugeFree[o.Recycle]; o.Recycle != "" && o.Huge && size == HugeSize && len(blocks) > 0 {
			a.backing, s.hugeFree[o.Recycle] = blocks[len(blocks)-1], blocks[:len(blocks)-1]
			recycled = true
		} else {
			a.backing = make([]uint64, size/8)
		}
		s.backed += size
		raw := unsafe.Slice((*byte)(unsafe.Pointer(&a.backing[0])), size)
		if o.Huge {
			for off := uint64(0); off < size; off += HugeSize {
				s.setHuge(start+off, (*[HugeSize]byte)(raw[off:off+HugeSize]), o.Perm)
			}
		} else {
			for off := uint64(0); off < size; off += PageSize {
				s.setPTE(start+off, pte{page: (*[PageSize]byte)(raw[off : off+PageSize]), perm: o.Perm})
			}
			for off := uint64(0); off < o.Mirror; off += PageSize {
				from := size - o.Mirror + off
				s.setPTE(start+size+off, pte{page: (*[PageSize]byte)(raw[from : from+PageSize]), perm: o.Perm})
			}
		}
	}
	s.insertArea(a)
	return start, recycled, nil
}

// findGap returns the lowest start, aligned to align, of a free range of
// size bytes plus a guard page in region r. The caller holds mu.
func (s *Space) findGap(r Region, size, align uint64) (uint64, bool) {
	lo, hi := regionBounds[r][0], regionBounds[r][1]
	start := roundUp(lo, align)
	for _, a := range s.areas {
		if a.End()+PageSize <= start || a.Start >= hi {
			continue
		}
		if a.Start >= start+size+PageSize {
			break
		}
		start = roundUp(a.End()+PageSize, align)
	}
	if start < lo || start+size+PageSize > hi || start+size < start {
		return 0, false
	}
	return start, true
}

// insertArea keeps s.areas sorted. The caller holds mu.
func (s *Space) insertArea(a *Area) {
	i := sort.Search(len(s.areas), func(i int) bool { return s.areas[i].Start >= a.Start })
	s.areas = append(s.areas, nil)
	copy(s.areas[i+1:], s.areas[i:])
	s.areas[i] = a
}

// findArea returns the index of the area containing addr, or -1. The
// caller holds mu.
func (s *Space) findArea(addr uint64) int {
	i := sort.Search(len(s.areas), func(i int) bool { return s.areas[i].End() > addr })
	if i < len(s.areas) && s.areas[i].Start <= addr {
		return i
	}
	return -1
}

// Vmalloc is Alloc in the vmalloc region with plain pages.
func (s *Space) Vmalloc(size uint64, perm Perm, name string) (uint64, error) {
	return s.Alloc(size, AllocOptions{Region: RegionVmalloc, Perm: perm, Name: name})
}

// Free unmaps the area that starts at addr. Its virtual range is not
// reused until its region has been used up to its end, so stale pointers
// into it keep faulting meanwhile.
func (s *Space) Free(addr uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.findArea(addr)
	if i < 0 || s.areas[i].Start != addr {
		return errors.Wrapf(uapi.EINVAL, "mem: no area starts at %#x", addr)
	}
	a := s.areas[i]
	for off := uint64(0); off < a.Size; {
		step := s.clear(a.Start + off)
		off += step
	}
	s.areas = append(s.areas[:i], s.areas[i+1:]...)
	if a.backing != nil {
		s.backed -= a.backed()
		// Keep a few 2 MiB blocks for areas with the same Recycle
		// key: packs come and go with the programs in them.
		if k := a.recycle; k != "" && a.Huge && a.Size == HugeSize && len(s.hugeFree[k]) < maxHugeFree {
			if s.hugeFree == nil {
				s.hugeFree = map[string][][]uint64{}
			}
			s.hugeFree[k] = append(s.hugeFree[k], a.backing)
		}
	}
	s.gen.Add(1)
	return nil
}

// maxHugeFree bounds the freed 2 MiB blocks a Space keeps per key.
const maxHugeFree = 2

// SetPerm changes the permissions of the whole pages in [addr, addr+size),
// like set_memory_ro/set_memory_x. A huge mapping that is only partly
// covered is split into 4 KiB pages first, as arm64 splits block entries.
func (s *Space) SetPerm(addr, size uint64, perm Perm) error {
	if addr&pageMask != 0 || size&pageMask != 0 || size == 0 {
		return errors.Wrapf(uapi.EINVAL, "mem: SetPerm(%#x, %d) is not page aligned", addr, size)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for off := uint64(0); off < size; {
		va := addr + off
		pe := s.pmdEntry(va, false)
		if pe == nil || (pe.huge == nil && (pe.table == nil || pe.table.e[pteIndex(va)].empty())) {
			return errors.Wrapf(uapi.EINVAL, "mem: SetPerm: %#x is not mapped", va)
		}
		if pe.huge != nil {
			if va&hugeMask == 0 && size-off >= HugeSize {
				pe.perm = perm
				off += HugeSize
				continue
			}
			splitHuge(pe)
		}
		pe.table.e[pteIndex(va)].perm = perm
		off += PageSize
	}
	// Areas wholly inside the range now have perm, so that Areas and Info
	// show what the page table holds.
	for i := s.findArea(addr); i >= 0 && i < len(s.areas) && s.areas[i].Start < addr+size; i++ {
		if a := s.areas[i]; a.Start >= addr && a.End() <= addr+size {
			a.Perm = perm
		}
	}
	s.gen.Add(1)
	return nil
}

// Alias maps the pages behind [addr, addr+size) a second time at a new
// address with its own permissions and returns that address. The arm64
// kernel patches read-only text this way: it writes through a temporary
// writable alias of the page (patch_map in arch/arm64/kernel/patching.c).
func (s *Space) Alias(addr, size uint64, perm Perm, name string) (uint64, error) {
	if addr&pageMask != 0 || size == 0 {
		return 0, errors.Wrapf(uapi.EINVAL, "mem: Alias(%#x, %d) is not page aligned", addr, size)
	}
	size = roundUp(size, PageSize)
	s.mu.Lock()
	defer s.mu.Unlock()
	pages := make([]pte, 0, size/PageSize)
	for off := uint64(0); off < size; off += PageSize {
		e, ok := s.walk(addr + off)
		if !ok || e.page == nil {
			return 0, errors.Wrapf(uapi.EINVAL, "mem: Alias: %#x is not mapped memory", addr+off)
		}
		pages = append(pages, e)
	}
	start := s.cursors[RegionVmalloc]
	s.cursors[RegionVmalloc] = start + size + PageSize
	for i, e := range pages {
		s.setPTE(start+uint64(i)*PageSize, pte{page: e.page, perm: perm})
	}
	s.insertArea(&Area{Start: start, Size: size, Perm: perm, Name: name, AliasOf: addr})
	return start, nil
}

// Read copies len(p) bytes at addr into p on behalf of the kernel itself
// (a helper, a test-run setup). The pages must be readable.
func (s *Space) Read(addr uint64, p []byte) error {
	return s.copy(addr, p, Read)
}

// Write copies p to addr on behalf of the kernel. The pages must be
// writable: read-only text is changed through an Alias, never directly.
func (s *Space) Write(addr uint64, p []byte) error {
	return s.copy(addr, p, Write)
}

func (s *Space) copy(addr uint64, p []byte, acc Access) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for done := 0; done < len(p); {
		va := addr + uint64(done)
		if va < addr {
			return newFault(va, len(p)-done, acc, reasonNotMapped)
		}
		e, ok := s.walk(va)
		if !ok {
			return newFault(va, len(p)-done, acc, faultReason(va))
		}
		if e.page == nil {
			return newFault(va, len(p)-done, acc, reasonDevice)
		}
		if e.perm&acc.perm() == 0 {
			return newFault(va, len(p)-done, acc, reasonPerm)
		}
		off := va & pageMask
		var n int
		if acc == Write {
			n = StoreBytes(e.page[off:], p[done:])
		} else {
			n = LoadBytes(p[done:], e.page[off:])
		}
		done += n
	}
	return nil
}

// Areas returns a snapshot of the mapped areas in address order.
func (s *Space) Areas() []Area {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Area, 0, len(s.areas))
	for _, a := range s.areas {
		c := *a
		c.backing, c.dev = nil, nil
		out = append(out, c)
	}
	return out
}

// AreaOf returns the area that contains addr.
func (s *Space) AreaOf(addr uint64) (Area, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if i := s.findArea(addr); i >= 0 {
		c := *s.areas[i]
		c.backing, c.dev = nil, nil
		return c, true
	}
	return Area{}, false
}

// Info lists the areas in the format of /proc/vmallocinfo.
func (s *Space) Info() string {
	var b strings.Builder
	for _, a := range s.Areas() {
		kind := "vmalloc"
		switch {
		case a.AliasOf != 0:
			kind = fmt.Sprintf("alias=%#x", a.AliasOf)
		case a.Huge:
			kind = "vmalloc huge"
		}
		fmt.Fprintf(&b, "%#x-%#x %8d %s pages=%d %s %s\n",
			a.Start, a.End()+PageSize, a.Size+PageSize, a.Name, a.Size/PageSize, a.Perm, kind)
	}
	return b.String()
}

// Backed returns how many bytes of backing memory the space holds.
func (s *Space) Backed() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.backed
}

func faultReason(addr uint64) string {
	if !canonical(addr) {
		return reasonNonCanonical
	}
	return reasonNotMapped
}

func roundUp(x, align uint64) uint64 { return (x + align - 1) &^ (align - 1) }

// Bytes returns the backing memory of [addr, addr+size) when the range lies
// inside one plain area. It is the kernel's direct access to its own
// objects (a CPU's stack, a map's values): no permission check, and the
// slice aliases simulated memory.
func (s *Space) Bytes(addr, size uint64) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	i := s.findArea(addr)
	if i < 0 {
		return nil, errors.Wrapf(uapi.EFAULT, "mem: %#x is not mapped", addr)
	}
	a := s.areas[i]
	// A mirrored area's second mapping of its tail is not one range of
	// its memory: only the first mapping is.
	if a.backing == nil || size > a.Start+a.backed()-addr || addr >= a.Start+a.backed() {
		return nil, errors.Wrapf(uapi.EFAULT, "mem: [%#x, +%d) is not plain memory of one area", addr, size)
	}
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&a.backing[0])), a.backed())
	off := addr - a.Start
	return raw[off : off+size : off+size], nil
}
