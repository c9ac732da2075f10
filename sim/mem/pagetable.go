package mem

// The page table has arm64's four levels for a 4 KiB granule and 48-bit
// addresses: PGD (bits 47..39), PUD (38..30), PMD (29..21) and PTE (20..12).
// A PMD entry either points to a PTE table or is itself a 2 MiB block.

type pgdTable struct{ e [entriesPerTable]*pudTable }

type pudTable struct{ e [entriesPerTable]*pmdTable }

type pmdTable struct{ e [entriesPerTable]pmdEntry }

type pmdEntry struct {
	table *pteTable
	huge  *[HugeSize]byte
	perm  Perm // of the block, when huge is set
}

type pteTable struct {
	e    [entriesPerTable]pte
	used int
}

// pte is a leaf translation: a plain page, or a device page.
type pte struct {
	page *[PageSize]byte
	dev  *devMap
	perm Perm
}

func (e pte) empty() bool { return e.page == nil && e.dev == nil }

// devMap ties device pages to their Device and the mapping's first address.
type devMap struct {
	dev  Device
	base uint64
}

func pgdIndex(va uint64) uint64 { return (va >> 39) & (entriesPerTable - 1) }
func pudIndex(va uint64) uint64 { return (va >> 30) & (entriesPerTable - 1) }
func pmdIndex(va uint64) uint64 { return (va >> 21) & (entriesPerTable - 1) }
func pteIndex(va uint64) uint64 { return (va >> 12) & (entriesPerTable - 1) }

// walk translates va. The caller holds mu (read or write).
func (s *Space) walk(va uint64) (pte, bool) {
	if !canonical(va) {
		return pte{}, false
	}
	pe := s.pmdEntry(va, false)
	if pe == nil {
		return pte{}, false
	}
	if pe.huge != nil {
		off := va & hugeMask &^ pageMask
		return pte{page: (*[PageSize]byte)(pe.huge[off : off+PageSize]), perm: pe.perm}, true
	}
	if pe.table == nil {
		return pte{}, false
	}
	e := pe.table.e[pteIndex(va)]
	return e, !e.empty()
}

// pmdEntry finds the PMD entry for va, creating the upper tables when
// create is set. The caller holds mu (for writing when create is set).
func (s *Space) pmdEntry(va uint64, create bool) *pmdEntry {
	pud := s.pgd.e[pgdIndex(va)]
	if pud == nil {
		if !create {
			return nil
		}
		pud = new(pudTable)
		s.pgd.e[pgdIndex(va)] = pud
	}
	pmd := pud.e[pudIndex(va)]
	if pmd == nil {
		if !create {
			return nil
		}
		pmd = new(pmdTable)
		pud.e[pudIndex(va)] = pmd
	}
	return &pmd.e[pmdIndex(va)]
}

func (s *Space) setPTE(va uint64, e pte) {
	pe := s.pmdEntry(va, true)
	if pe.table == nil {
		if n := len(s.freeTables); n > 0 {
			pe.table, s.freeTables = s.freeTables[n-1], s.freeTables[:n-1]
		} else {
			pe.table = new(pteTable)
		}
	}
	slot := &pe.table.e[pteIndex(va)]
	if slot.empty() {
		pe.table.used++
	}
	*slot = e
}

// maxFreeTables bounds the empty page tables a Space keeps for reuse.
const maxFreeTables = 8

func (s *Space) setHuge(va uint64, block *[HugeSize]byte, perm Perm) {
	pe := s.pmdEntry(va, true)
	*pe = pmdEntry{huge: block, perm: perm}
}

// clear unmaps the page or block at va and returns how many bytes it
// covered.
func (s *Space) clear(va uint64) uint64 {
	pe := s.pmdEntry(va, false)
	if pe == nil {
		return PageSize
	}
	if pe.huge != nil {
		*pe = pmdEntry{}
		return HugeSize
	}
	if pe.table != nil {
		slot := &pe.table.e[pteIndex(va)]
		if !slot.empty() {
			*slot = pte{}
			pe.table.used--
			if pe.table.used == 0 {
				// Give the empty table back, as free_pte_range does,
				// keeping a few: text patching and JIT buffers map and
				// unmap a page at a time.
				if len(s.freeTables) < maxFreeTables {
					s.freeTables = append(s.freeTables, pe.table)
				}
				pe.table = nil
			}
		}
	}
	return PageSize
}

// splitHuge replaces a block entry by a PTE table mapping the same memory
// with the same permissions.
func splitHuge(pe *pmdEntry) {
	t := new(pteTable)
	for i := range t.e {
		off := uint64(i) * PageSize
		t.e[i] = pte{page: (*[PageSize]byte)(pe.huge[off : off+PageSize]), perm: pe.perm}
	}
	t.used = entriesPerTable
	*pe = pmdEntry{table: t}
}
