package mem

import "unsafe"

const (
	tlbBits = 6
	tlbSize = 1 << tlbBits
	tlbMask = tlbSize - 1
	// noVPN never equals a real virtual page number (those fit in 52 bits).
	noVPN = ^uint64(0)
)

type tlbEntry struct {
	vpn  uint64
	page *[PageSize]byte
}

// devEntry is a cached translation of a device page.
type devEntry struct {
	vpn uint64
	e   pte
}

// TLB is one simulated CPU's translation cache: a direct-mapped cache of
// recently used pages, split into a read side and a write side so that a
// hit needs a single compare. It belongs to one CPU and is not safe for
// concurrent use; the Space it caches is.
type TLB struct {
	space *Space
	gen   uint64
	read  [tlbSize]tlbEntry
	write [tlbSize]tlbEntry
	// devRead and devWrite cache the last device page read and written
	// (a program's context, such as xdp_md): device accesses never take
	// the fast path, but need not walk the page table every time.
	devRead, devWrite devEntry
	// Misses counts page-table walks, for the curious and for benchmarks.
	Misses uint64
}

// NewTLB returns an empty TLB for the space.
func (s *Space) NewTLB() *TLB {
	t := &TLB{space: s}
	t.Flush()
	t.gen = s.gen.Load()
	return t
}

// Space returns the address space the TLB translates.
func (t *TLB) Space() *Space { return t.space }

// Flush drops every cached translation.
func (t *TLB) Flush() {
	for i := range t.read {
		t.read[i] = tlbEntry{vpn: noVPN}
		t.write[i] = tlbEntry{vpn: noVPN}
	}
	t.devRead = devEntry{vpn: noVPN}
	t.devWrite = devEntry{vpn: noVPN}
}

// Sync flushes the TLB if the address space changed since it was last
// synced. Executors call it before running a program.
func (t *TLB) Sync() {
	if g := t.space.gen.Load(); g != t.gen {
		t.Flush()
		t.gen = g
	}
}

// Load8 .. Load64 read a little-endian value of 1, 2, 4 or 8 bytes,
// zero-extended. The fast path is a TLB hit on an access within one page.

func (t *TLB) Load8(addr uint64) (uint64, *Fault) {
	if e := &t.read[(addr>>PageShift)&tlbMask]; e.vpn == addr>>PageShift {
		return Load8(e.page, addr), nil
	}
	return t.loadSlow(addr, 1, false)
}

func (t *TLB) Load16(addr uint64) (uint64, *Fault) {
	if e := &t.read[(addr>>PageShift)&tlbMask]; e.vpn == addr>>PageShift && addr&pageMask <= PageSize-2 {
		return Load16(e.page, addr&pageMask), nil
	}
	return t.loadSlow(addr, 2, false)
}

func (t *TLB) Load32(addr uint64) (uint64, *Fault) {
	if e := &t.read[(addr>>PageShift)&tlbMask]; e.vpn == addr>>PageShift && addr&pageMask <= PageSize-4 {
		return Load32(e.page, addr&pageMask), nil
	}
	return t.loadSlow(addr, 4, false)
}

func (t *TLB) Load64(addr uint64) (uint64, *Fault) {
	if e := &t.read[(addr>>PageShift)&tlbMask]; e.vpn == addr>>PageShift && addr&pageMask <= PageSize-8 {
		return Load64(e.page, addr&pageMask), nil
	}
	return t.loadSlow(addr, 8, false)
}

// LoadSigned reads size bytes and sign-extends them to 64 bits (BPF_MEMSX).
func (t *TLB) LoadSigned(addr uint64, size int) (uint64, *Fault) {
	return t.loadSlow(addr, size, true)
}

// Store8 .. Store64 write the low 1, 2, 4 or 8 bytes of v, little-endian.

func (t *TLB) Store8(addr, v uint64) *Fault {
	if e := &t.write[(addr>>PageShift)&tlbMask]; e.vpn == addr>>PageShift {
		Store8(e.page, addr, v)
		return nil
	}
	return t.storeSlow(addr, 1, v)
}

func (t *TLB) Store16(addr, v uint64) *Fault {
	if e := &t.write[(addr>>PageShift)&tlbMask]; e.vpn == addr>>PageShift && addr&pageMask <= PageSize-2 {
		Store16(e.page, addr&pageMask, v)
		return nil
	}
	return t.storeSlow(addr, 2, v)
}

func (t *TLB) Store32(addr, v uint64) *Fault {
	if e := &t.write[(addr>>PageShift)&tlbMask]; e.vpn == addr>>PageShift && addr&pageMask <= PageSize-4 {
		Store32(e.page, addr&pageMask, v)
		return nil
	}
	return t.storeSlow(addr, 4, v)
}

func (t *TLB) Store64(addr, v uint64) *Fault {
	if e := &t.write[(addr>>PageShift)&tlbMask]; e.vpn == addr>>PageShift && addr&pageMask <= PageSize-8 {
		Store64(e.page, addr&pageMask, v)
		return nil
	}
	return t.storeSlow(addr, 8, v)
}

// Word32 returns the naturally aligned 32-bit word at addr for an atomic
// access: a read-modify-write or store needs read and write permission
// (write set), a load-acquire read permission only. It returns (nil, nil)
// if addr is not 4-byte aligned or not plain memory: the caller decides how
// to perform such an access.
func (t *TLB) Word32(addr uint64, write bool) (*uint32, *Fault) {
	if addr&3 != 0 {
		return nil, nil
	}
	p, f := t.wordPage(addr, 4, write)
	if p == nil {
		return nil, f
	}
	return (*uint32)(unsafe.Add(unsafe.Pointer(p), addr&pageMask)), nil
}

// Word64 is Word32 for an 8-byte aligned 64-bit word.
func (t *TLB) Word64(addr uint64, write bool) (*uint64, *Fault) {
	if addr&7 != 0 {
		return nil, nil
	}
	p, f := t.wordPage(addr, 8, write)
	if p == nil {
		return nil, f
	}
	return (*uint64)(unsafe.Add(unsafe.Pointer(p), addr&pageMask)), nil
}

func (t *TLB) wordPage(addr uint64, size int, write bool) (*[PageSize]byte, *Fault) {
	vpn := addr >> PageShift
	r := &t.read[vpn&tlbMask]
	if !write {
		if r.vpn == vpn {
			return r.page, nil
		}
		e, f := t.fill(addr, size, Read)
		return e.page, f
	}
	if w := &t.write[vpn&tlbMask]; w.vpn == vpn && r.vpn == vpn {
		return w.page, nil
	}
	e, f := t.fill(addr, size, Write)
	if f != nil {
		return nil, f
	}
	if e.perm&PermRead == 0 {
		return nil, newFault(addr, size, Read, reasonPerm)
	}
	if e.page != nil {
		*r = tlbEntry{vpn: vpn, page: e.page}
	}
	return e.page, nil
}

// fill walks the page table for addr, checks the access and caches the
// translation. Device pages are cached apart (devRead, devWrite), so that
// their accesses still reach the slow path, which calls the device.
func (t *TLB) fill(addr uint64, size int, acc Access) (pte, *Fault) {
	vpn := addr >> PageShift
	switch {
	case acc == Read && t.devRead.vpn == vpn:
		return t.devRead.e, nil
	case acc == Write && t.devWrite.vpn == vpn:
		return t.devWrite.e, nil
	}
	t.Misses++
	s := t.space
	s.mu.RLock()
	e, ok := s.walk(addr)
	s.mu.RUnlock()
	if !ok {
		return pte{}, newFault(addr, size, acc, faultReason(addr))
	}
	if e.perm&acc.perm() == 0 {
		return pte{}, newFault(addr, size, acc, reasonPerm)
	}
	switch {
	case e.page != nil && acc == Read:
		t.read[vpn&tlbMask] = tlbEntry{vpn: vpn, page: e.page}
	case e.page != nil && acc == Write:
		t.write[vpn&tlbMask] = tlbEntry{vpn: vpn, page: e.page}
	case e.dev != nil && acc == Read:
		t.devRead = devEntry{vpn: vpn, e: e}
	case e.dev != nil && acc == Write:
		t.devWrite = devEntry{vpn: vpn, e: e}
	}
	return e, nil
}

func (t *TLB) loadSlow(addr uint64, size int, signed bool) (uint64, *Fault) {
	e, f := t.fill(addr, size, Read)
	if f != nil {
		return 0, f
	}
	if e.dev != nil {
		v, err := e.dev.dev.Load(addr-e.dev.base, size, signed)
		if err != nil {
			return 0, &Fault{Addr: addr, Size: size, Access: Read, PC: -1, Reason: err.Error()}
		}
		return v, nil
	}
	var v uint64
	off := addr & pageMask
	if off+uint64(size) <= PageSize {
		v = loadSized(e.page, off, size)
	} else {
		// The access straddles two pages; both must be readable.
		for i := size - 1; i >= 0; i-- {
			b, f := t.Load8(addr + uint64(i))
			if f != nil {
				f.Addr, f.Size = addr, size
				return 0, f
			}
			v = v<<8 | b
		}
	}
	if signed {
		shift := 64 - 8*uint(size)
		v = uint64(int64(v<<shift) >> shift)
	}
	return v, nil
}

func (t *TLB) storeSlow(addr uint64, size int, v uint64) *Fault {
	e, f := t.fill(addr, size, Write)
	if f != nil {
		return f
	}
	if e.dev != nil {
		if err := e.dev.dev.Store(addr-e.dev.base, size, v); err != nil {
			return &Fault{Addr: addr, Size: size, Access: Write, PC: -1, Reason: err.Error()}
		}
		return nil
	}
	off := addr & pageMask
	if off+uint64(size) <= PageSize {
		storeSized(e.page, off, size, v)
		return nil
	}
	// Straddling store: check both pages before writing anything, so a
	// fault leaves memory untouched.
	if _, f := t.fill(addr+uint64(size)-1, size, Write); f != nil {
		f.Addr, f.Size = addr, size
		return f
	}
	for i := 0; i < size; i++ {
		if f := t.Store8(addr+uint64(i), v>>(8*i)); f != nil {
			return f
		}
	}
	return nil
}

// ReadPage returns the cached page that holds addr if the TLB has a readable
// translation for it, or nil. It is the inlinable first half of a load, for
// executors that want the hit path in their own loop; on nil they call the
// matching Load method, which walks the page table.
func (t *TLB) ReadPage(addr uint64) *[PageSize]byte {
	if e := &t.read[(addr>>PageShift)&tlbMask]; e.vpn == addr>>PageShift {
		return e.page
	}
	return nil
}

// FetchPage translates addr for an instruction fetch: the page must be
// mapped executable, page by page as SetPerm left it, and be plain memory.
// The translation is not cached here: an instruction fetcher keeps its own
// (an iTLB).
func (t *TLB) FetchPage(addr uint64) (*[PageSize]byte, *Fault) {
	e, f := t.fill(addr, 4, Exec)
	if f != nil {
		return nil, f
	}
	if e.page == nil {
		return nil, newFault(addr, 4, Exec, "not plain memory")
	}
	return e.page, nil
}

// WritePage is ReadPage for a writable translation.
func (t *TLB) WritePage(addr uint64) *[PageSize]byte {
	if e := &t.write[(addr>>PageShift)&tlbMask]; e.vpn == addr>>PageShift {
		return e.page
	}
	return nil
}

// Read copies len(p) bytes at addr into p with a program's read
// permission, a page at a time through the TLB. Helpers use it to fetch
// keys and values a program points them at.
func (t *TLB) Read(addr uint64, p []byte) *Fault {
	for done := 0; done < len(p); {
		a := addr + uint64(done)
		pg := t.ReadPage(a)
		if pg == nil {
			e, f := t.fill(a, len(p)-done, Read)
			if f != nil {
				return f
			}
			if e.page == nil { // a device page: byte by byte
				v, f := t.Load8(a)
				if f != nil {
					return f
				}
				p[done] = byte(v)
				done++
				continue
			}
			pg = e.page
		}
		done += LoadBytes(p[done:], pg[a&pageMask:])
	}
	return nil
}

// Write copies p to addr with a program's write permission.
func (t *TLB) Write(addr uint64, p []byte) *Fault {
	// Check every page first, so a fault leaves memory untouched.
	for a := addr &^ pageMask; a < addr+uint64(len(p)); a += PageSize {
		if t.WritePage(a) == nil {
			if _, f := t.fill(max(a, addr), len(p), Write); f != nil {
				return f
			}
		}
	}
	for done := 0; done < len(p); {
		a := addr + uint64(done)
		pg := t.WritePage(a)
		if pg == nil { // a device page
			if f := t.Store8(a, uint64(p[done])); f != nil {
				return f
			}
			done++
			continue
		}
		done += StoreBytes(pg[a&pageMask:], p[done:])
	}
	return nil
}

func loadSized(pg *[PageSize]byte, off uint64, size int) uint64 {
	switch size {
	case 1:
		return Load8(pg, off)
	case 2:
		return Load16(pg, off)
	case 4:
		return Load32(pg, off)
	}
	return Load64(pg, off)
}

func storeSized(pg *[PageSize]byte, off uint64, size int, v uint64) {
	switch size {
	case 1:
		Store8(pg, off, v)
	case 2:
		Store16(pg, off, v)
	case 4:
		Store32(pg, off, v)
	default:
		Store64(pg, off, v)
	}
}
