package mem

// Queries for translation caches kept outside this package, such as the
// instruction-TLB model of jit_arm64/emu: what one entry would cover, and
// when cached entries may have gone stale.

// MappingSize returns the size of the translation that maps addr: PageSize
// for a 4 KiB page entry, HugeSize for a 2 MiB block entry, or 0 if addr is
// not mapped. One TLB entry caches one such translation, so it is the reach
// of an entry filled for addr.
func (s *Space) MappingSize(addr uint64) uint64 {
	if !canonical(addr) {
		return 0
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	pe := s.pmdEntry(addr, false)
	switch {
	case pe == nil:
		return 0
	case pe.huge != nil:
		return HugeSize
	case pe.table != nil && !pe.table.e[pteIndex(addr)].empty():
		return PageSize
	}
	return 0
}

// Generation returns a number that changes whenever a translation may have
// been removed or changed (an unmap, a permission change, a block split).
// A cache of translations that saw a different number must be flushed, as
// TLB.Sync does; mapping new memory does not change it.
func (s *Space) Generation() uint64 { return s.gen.Load() }
