package emu

import (
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// The instruction-TLB model counts what the PMU events of the arm64 prog
// pack series count (L1I_TLB, iTLB-load-misses = L1I_TLB_REFILL,
// ITLB_WALK, INST_RETIRED): it only accounts, it never changes what runs.
// Translation itself, with its permission checks, stays with mem.TLB.
//
// Shape. A first level (the L1 instruction TLB) and an optional second one
// (the unified L2 TLB, or "main TLB"); each is set-associative with LRU
// replacement within a set, and fully associative when it has one set. The
// defaults are those of Cortex-A76 and Neoverse N1: a 48-entry fully
// associative L1 iTLB and a 1280-entry 5-way L2 TLB. Fully associative
// with true LRU for the L1 because that is what these cores document for
// it and because a thrash-or-fit answer (more hot pages than entries miss
// every round, fewer never do) is what the experiment is about; a
// pseudo-LRU would blur the edge without changing the comparison.
//
// Entries. An entry caches one translation and covers what it maps: a
// 4 KiB page or a 2 MiB block (mem.Space.MappingSize), as these cores'
// TLBs hold block entries whole. A set-associative level indexes a 4 KiB
// entry by the page number and a 2 MiB one by the block number, and a
// lookup probes both sets. An L1 miss that hits in the L2 refills the L1
// from it; a miss in the last level is a walk and fills every level.
//
// Counting rules:
//   - Instructions (INST_RETIRED) is CPU.Retired since the counters were
//     reset: emulated instructions and those charged with ChargeFetch.
//   - Accesses (L1I_TLB) counts one access per instruction fetched, so it
//     equals Instructions. Hardware looks the iTLB up once per fetch group
//     (up to 16 or 32 bytes), so its L1I_TLB is a fraction of INST_RETIRED
//     (about a quarter in the series' figures); ratios against accesses
//     differ from the hardware's by that constant factor.
//   - A lookup is made whenever the fetch reaches a 4 KiB page other than
//     the last instruction's (and after every Go function call, which may
//     have run other code). Accesses in between hit the entry the lookup
//     just made most recently used, so they cannot miss and are not looked
//     up: the model costs nothing on straight-line code within a page.
//   - Misses (iTLB-load-misses) are lookups that miss in the L1; Walks
//     (ITLB_WALK) are those that also miss in the L2, or every miss when
//     there is no L2.
//
// Invalidation. Every change of the address space that can remove a
// translation (mem.Space.Generation) flushes the whole model at the next
// lookup, like flush_tlb_all; the kernel flushes only the changed range
// for small ranges (__flush_tlb_kernel_range), so a model that runs code
// across unmaps overcounts misses. FlushITLB flushes on request.
//
// Not modelled: ASIDs (every address is one global translation, true for
// kernel text and for the single user text region the experiment
// charges), the data side's use of the unified L2, the contiguous bit,
// micro-TLBs in front of the L1, prefetching of translations, and the
// walk's own cost.

// ITLBConfig sizes the instruction-TLB model.
type ITLBConfig struct {
	// L1Entries is how many translations the L1 instruction TLB holds.
	L1Entries int
	// L1Ways is its associativity; 0 (or L1Entries) makes it fully
	// associative.
	L1Ways int
	// L2Entries is how many translations the second level holds; 0 means
	// no second level: every L1 miss walks.
	L2Entries int
	// L2Ways is its associativity; 0 makes it fully associative.
	L2Ways int
}

// DefaultITLBConfig returns the TLBs of Cortex-A76 and Neoverse N1: a
// 48-entry fully associative L1 instruction TLB and a 1280-entry 5-way
// unified L2 TLB.
func DefaultITLBConfig() ITLBConfig {
	return ITLBConfig{L1Entries: 48, L2Entries: 1280, L2Ways: 5}
}

// ITLBStats are the counters of the instruction-TLB model since they were
// last reset, named after the PMU events they stand for.
type ITLBStats struct {
	// Instructions is INST_RETIRED: CPU.Retired since the reset.
	Instructions uint64
	// Accesses is L1I_TLB: one per instruction fetched.
	Accesses uint64
	// Lookups is how many lookups the model made: one per fetch from a
	// page other than the previous instruction's.
	Lookups uint64
	// Misses is iTLB-load-misses (L1I_TLB_REFILL): lookups that missed in
	// the L1 instruction TLB.
	Misses uint64
	// Walks is ITLB_WALK: lookups that missed in every level and walked
	// the page table.
	Walks uint64
	// Flushes is how many times the whole model was flushed.
	Flushes uint64
}

// MissesPerKilo returns iTLB misses per 1,000 instructions.
func (s ITLBStats) MissesPerKilo() float64 { return perKilo(s.Misses, s.Instructions) }

// WalksPerKilo returns walks per 1,000 instructions.
func (s ITLBStats) WalksPerKilo() float64 { return perKilo(s.Walks, s.Instructions) }

func perKilo(n, insns uint64) float64 {
	if insns == 0 {
		return 0
	}
	return 1000 * float64(n) / float64(insns)
}

// itlb is the model's state, owned by one CPU.
type itlb struct {
	space       *mem.Space
	gen         uint64
	l1, l2      *tlbLevel // l2 is nil without a second level
	stats       ITLBStats // Instructions and Accesses are derived
	retiredBase uint64
}

// itlbEntry caches one translation: the virtual page or block number (tag)
// and the shift that makes it (mem.PageShift or mem.HugeShift). A zero
// shift marks an empty entry.
type itlbEntry struct {
	tag   uint64
	shift uint8
	used  uint64 // LRU stamp
}

// tlbLevel is one set-associative level with LRU replacement per set.
type tlbLevel struct {
	sets, ways int
	e          []itlbEntry // set s holds e[s*ways : (s+1)*ways]
	clock      uint64
}

func newLevel(entries, ways int, name string) (*tlbLevel, error) {
	if ways == 0 {
		ways = entries
	}
	if entries <= 0 || ways <= 0 || ways > entries || entries%ways != 0 {
		return nil, errors.Wrapf(uapi.EINVAL, "emu: %s TLB of %d entries cannot have %d ways", name, entries, ways)
	}
	return &tlbLevel{sets: entries / ways, ways: ways, e: make([]itlbEntry, entries)}, nil
}

// lookup returns the shift of the entry that translates va, or 0 on a
// miss; a hit becomes the most recently used of its set.
func (l *tlbLevel) lookup(va uint64) uint8 {
	if sh := l.probe(l.set(va, mem.PageShift), va); sh != 0 || l.sets == 1 {
		return sh
	}
	return l.probe(l.set(va, mem.HugeShift), va)
}

func (l *tlbLevel) set(va uint64, shift uint8) int {
	return int((va >> shift) % uint64(l.sets))
}

func (l *tlbLevel) probe(set int, va uint64) uint8 {
	ways := l.e[set*l.ways : (set+1)*l.ways]
	for i := range ways {
		if e := &ways[i]; e.shift != 0 && va>>e.shift == e.tag {
			l.clock++
			e.used = l.clock
			return e.shift
		}
	}
	return 0
}

// insert caches the translation of va by an entry of 1<<shift bytes,
// evicting the least recently used entry of its set when it is full.
func (l *tlbLevel) insert(va uint64, shift uint8) {
	set := l.set(va, shift)
	ways := l.e[set*l.ways : (set+1)*l.ways]
	victim := &ways[0]
	for i := range ways {
		e := &ways[i]
		if e.shift == 0 {
			victim = e
			break
		}
		if e.used < victim.used {
			victim = e
		}
	}
	l.clock++
	*victim = itlbEntry{tag: va >> shift, shift: shift, used: l.clock}
}

func (l *tlbLevel) flush() { clear(l.e) }

// access accounts one lookup of va. mapping is the size of the translation
// (PageSize or HugeSize), or 0 to ask the address space on a walk.
func (t *itlb) access(va, mapping uint64) {
	if g := t.space.Generation(); g != t.gen {
		t.flush()
		t.gen = g
	}
	t.stats.Lookups++
	if t.l1.lookup(va) != 0 {
		return
	}
	t.stats.Misses++
	if t.l2 != nil {
		if sh := t.l2.lookup(va); sh != 0 {
			t.l1.insert(va, sh)
			return
		}
	}
	t.stats.Walks++
	if mapping == 0 {
		mapping = t.space.MappingSize(va)
	}
	var sh uint8 = mem.PageShift
	if mapping == mem.HugeSize {
		sh = mem.HugeShift
	}
	if t.l2 != nil {
		t.l2.insert(va, sh)
	}
	t.l1.insert(va, sh)
}

func (t *itlb) flush() {
	t.l1.flush()
	if t.l2 != nil {
		t.l2.flush()
	}
	t.stats.Flushes++
}

// EnableITLB turns the instruction-TLB model on, empty and with zeroed
// counters, replacing any model already on. A configuration whose entries
// do not divide into its ways is EINVAL.
func (c *CPU) EnableITLB(cfg ITLBConfig) error {
	l1, err := newLevel(cfg.L1Entries, cfg.L1Ways, "L1 instruction")
	if err != nil {
		return err
	}
	t := &itlb{space: c.tlb.Space(), l1: l1, retiredBase: c.Retired}
	if cfg.L2Entries != 0 {
		if t.l2, err = newLevel(cfg.L2Entries, cfg.L2Ways, "L2"); err != nil {
			return err
		}
	}
	t.gen = t.space.Generation()
	c.itlb = t
	return nil
}

// DisableITLB turns the model off; its counters are gone.
func (c *CPU) DisableITLB() { c.itlb = nil }

// ITLBStats returns the model's counters, or zero ones when it is off.
func (c *CPU) ITLBStats() ITLBStats {
	t := c.itlb
	if t == nil {
		return ITLBStats{}
	}
	s := t.stats
	s.Instructions = c.Retired - t.retiredBase
	s.Accesses = s.Instructions
	return s
}

// ResetITLBStats zeroes the counters and keeps the cached translations,
// as a perf session started on a warm CPU would.
func (c *CPU) ResetITLBStats() {
	if t := c.itlb; t != nil {
		t.stats = ITLBStats{}
		t.retiredBase = c.Retired
	}
}

// FlushITLB drops every cached translation of the model (TLBI VMALLE1):
// the next fetch from each page misses.
func (c *CPU) FlushITLB() {
	if t := c.itlb; t != nil {
		t.flush()
	}
}

// ChargeFetch accounts for insns instructions executed straight through
// from addr by code that is not emulated: the kernel's own text (the
// syscall path that triggers a program, the Go functions standing for
// helpers) or other tasks' code competing for the iTLB on this CPU. The
// instructions count as retired (CPU.Retired) whether or not the model is
// on, and with the model on, every 4 KiB page the range touches is one
// lookup, as if the code ran here. mapping is the size of the
// translations of that text (mem.PageSize or mem.HugeSize; the arm64
// kernel image is mapped by 2 MiB blocks); 0 asks the address space,
// where an unmapped address counts as a 4 KiB page, so the text need not
// exist in the simulated space.
func (c *CPU) ChargeFetch(addr, insns, mapping uint64) {
	if insns == 0 {
		return
	}
	c.Retired += insns
	t := c.itlb
	if t == nil {
		return
	}
	if mapping == 0 && t.space.MappingSize(addr) == 0 {
		mapping = mem.PageSize
	}
	last := addr + 4*(insns-1) // the last instruction's address
	for va := addr; ; {
		t.access(va, mapping)
		next := (va | (mem.PageSize - 1)) + 1
		if next > last || next < va {
			return
		}
		va = next
	}
}
