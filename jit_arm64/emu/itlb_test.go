package emu_test

import (
	"errors"
	"testing"

	"github.com/bpfsim/bpfsim/jit_arm64/a64"
	"github.com/bpfsim/bpfsim/jit_arm64/emu"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

const wordsPerPage = mem.PageSize / 4

// pageChain returns code spanning n 4 KiB pages: each page adds one to x0
// and branches to the start of the next; the last returns. Running it
// fetches from n pages, once each.
func pageChain(n int) []uint32 {
	brk := w(a64.Brk(0x100))
	code := make([]uint32, n*wordsPerPage)
	for i := range code {
		code[i] = brk
	}
	for p := 0; p < n; p++ {
		at := p * wordsPerPage
		code[at] = w(a64.AddImm(x0, x0, 1))
		if p == n-1 {
			code[at+1] = ret
		} else {
			code[at+1] = w(a64.B(wordsPerPage - 1))
		}
	}
	return code
}

// hugeText maps code at the start of a 2 MiB block entry, read-execute.
func (e *env) hugeText(t testing.TB, code []uint32) uint64 {
	t.Helper()
	addr, err := e.space.Alloc(mem.HugeSize, mem.AllocOptions{Region: mem.RegionModules, Perm: mem.PermRW, Huge: true, Name: "test_huge_text"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.space.Write(addr, wordsBytes(code)); err != nil {
		t.Fatal(err)
	}
	if err := e.space.SetPerm(addr, mem.HugeSize, mem.PermRX); err != nil {
		t.Fatal(err)
	}
	if got := e.space.MappingSize(addr); got != mem.HugeSize {
		t.Fatalf("text mapped by %d-byte entries, want a 2 MiB block", got)
	}
	return addr
}

func TestITLBCounts(t *testing.T) {
	noL2 := emu.ITLBConfig{L1Entries: 48}
	cases := []struct {
		name   string
		cfg    emu.ITLBConfig
		huge   bool
		pages  int
		rounds int
		want   emu.ITLBStats // Instructions and Accesses are checked apart
	}{
		{"a loop within one 4 KiB page misses once", noL2, false, 1, 100,
			emu.ITLBStats{Lookups: 100, Misses: 1, Walks: 1}},
		{"40 pages fit 48 entries: the first round misses, the rest hit", noL2, false, 40, 10,
			emu.ITLBStats{Lookups: 400, Misses: 40, Walks: 40}},
		{"64 pages thrash 48 LRU entries: every lookup misses and walks", noL2, false, 64, 10,
			emu.ITLBStats{Lookups: 640, Misses: 640, Walks: 640}},
		{"64 pages thrash the L1 but fit the L2: one walk per page", emu.DefaultITLBConfig(), false, 64, 10,
			emu.ITLBStats{Lookups: 640, Misses: 640, Walks: 64}},
		{"64 pages in one 2 MiB block: one entry, one miss", noL2, true, 64, 10,
			emu.ITLBStats{Lookups: 640, Misses: 1, Walks: 1}},
		{"512 pages in one 2 MiB block, with an L2", emu.DefaultITLBConfig(), true, 512, 3,
			emu.ITLBStats{Lookups: 1536, Misses: 1, Walks: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			code := pageChain(tc.pages)
			var entry uint64
			if tc.huge {
				entry = e.hugeText(t, code)
			} else {
				entry = e.text(t, code)
			}
			c := e.cpu
			if err := c.EnableITLB(tc.cfg); err != nil {
				t.Fatal(err)
			}
			retired := c.Retired
			for r := 0; r < tc.rounds; r++ {
				got, err := c.Run(entry, 0)
				if err != nil {
					t.Fatal(err)
				}
				if got != uint64(tc.pages) {
					t.Fatalf("x0 = %d, want %d pages visited", got, tc.pages)
				}
			}
			st := c.ITLBStats()
			if st.Instructions != c.Retired-retired || st.Instructions != uint64(2*tc.pages*tc.rounds) {
				t.Errorf("instructions = %d, want %d (retired %d)", st.Instructions, 2*tc.pages*tc.rounds, c.Retired-retired)
			}
			if st.Accesses != st.Instructions {
				t.Errorf("accesses = %d, want one per instruction (%d)", st.Accesses, st.Instructions)
			}
			st.Instructions, st.Accesses = 0, 0
			if st != tc.want {
				t.Errorf("stats %+v, want %+v", st, tc.want)
			}
		})
	}
}

func TestITLBFlushes(t *testing.T) {
	cases := []struct {
		name       string
		between    func(t *testing.T, e *env)
		misses     uint64 // over both runs
		minFlushes uint64
	}{
		{"nothing in between: the second run hits", func(*testing.T, *env) {}, 1, 0},
		{"FlushITLB: the second run misses again", func(_ *testing.T, e *env) { e.cpu.FlushITLB() }, 2, 1},
		{"an unmap elsewhere in the address space flushes", func(t *testing.T, e *env) {
			a, err := e.space.Vmalloc(mem.PageSize, mem.PermRW, "other")
			if err != nil {
				t.Fatal(err)
			}
			if err := e.space.Free(a); err != nil {
				t.Fatal(err)
			}
		}, 2, 1},
		{"a permission change flushes", func(t *testing.T, e *env) {
			if err := e.space.SetPerm(e.data, mem.PageSize, mem.PermRead); err != nil {
				t.Fatal(err)
			}
		}, 2, 1},
		{"mapping new memory does not flush", func(t *testing.T, e *env) {
			if _, err := e.space.Vmalloc(mem.PageSize, mem.PermRW, "other"); err != nil {
				t.Fatal(err)
			}
		}, 1, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			entry := e.text(t, pageChain(1))
			if err := e.cpu.EnableITLB(emu.DefaultITLBConfig()); err != nil {
				t.Fatal(err)
			}
			if _, err := e.cpu.Run(entry, 0); err != nil {
				t.Fatal(err)
			}
			tc.between(t, e)
			if _, err := e.cpu.Run(entry, 0); err != nil {
				t.Fatal(err)
			}
			st := e.cpu.ITLBStats()
			if st.Misses != tc.misses || st.Walks != tc.misses {
				t.Errorf("misses %d, walks %d; want %d each", st.Misses, st.Walks, tc.misses)
			}
			if st.Flushes != tc.minFlushes {
				t.Errorf("flushes %d, want %d", st.Flushes, tc.minFlushes)
			}
		})
	}
}

func TestITLBResetZeroesCountersAndKeepsEntries(t *testing.T) {
	e := newEnv(t)
	entry := e.text(t, pageChain(3))
	c := e.cpu
	if err := c.EnableITLB(emu.DefaultITLBConfig()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Run(entry, 0); err != nil {
		t.Fatal(err)
	}
	if st := c.ITLBStats(); st.Misses != 3 || st.Instructions != 6 {
		t.Fatalf("warm-up: %+v, want 3 misses over 6 instructions", st)
	}
	c.ResetITLBStats()
	if st := c.ITLBStats(); st != (emu.ITLBStats{}) {
		t.Fatalf("after reset: %+v, want zero", st)
	}
	if _, err := c.Run(entry, 0); err != nil {
		t.Fatal(err)
	}
	if st := c.ITLBStats(); st.Misses != 0 || st.Lookups != 3 || st.Instructions != 6 {
		t.Errorf("warm run after reset: %+v, want 3 lookups, no miss, 6 instructions", st)
	}
	c.DisableITLB()
	if st := c.ITLBStats(); st != (emu.ITLBStats{}) {
		t.Errorf("disabled model reports %+v", st)
	}
}

// TestChargedCodeCompetesForEntries runs a one-page program, then charges
// other code of k distinct 4 KiB pages: with LRU over 48 entries the
// program's entry survives 47 other pages and is evicted by 48.
func TestChargedCodeCompetesForEntries(t *testing.T) {
	const kernelText = 0xffff_8000_8000_0000 // not mapped in the space
	cases := []struct {
		name       string
		pages      uint64
		mapping    uint64
		progMisses bool
	}{
		{"47 other pages leave the program's entry", 47, mem.PageSize, false},
		{"48 other pages evict it", 48, mem.PageSize, true},
		{"400 other pages in 2 MiB blocks take one entry", 400, mem.HugeSize, false},
		{"unmapped text with mapping 0 counts as 4 KiB pages", 48, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			entry := e.text(t, pageChain(1))
			c := e.cpu
			if err := c.EnableITLB(emu.ITLBConfig{L1Entries: 48}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Run(entry, 0); err != nil {
				t.Fatal(err)
			}
			c.ChargeFetch(kernelText, tc.pages*wordsPerPage, tc.mapping)
			before := c.ITLBStats()
			if before.Instructions != 2+tc.pages*wordsPerPage {
				t.Errorf("instructions %d, want %d", before.Instructions, 2+tc.pages*wordsPerPage)
			}
			if lk := before.Lookups - 1; lk != tc.pages {
				t.Errorf("charged lookups %d, want one per page, %d", lk, tc.pages)
			}
			if _, err := c.Run(entry, 0); err != nil {
				t.Fatal(err)
			}
			missed := c.ITLBStats().Misses - before.Misses
			if tc.progMisses != (missed == 1) || missed > 1 {
				t.Errorf("program misses %d after the other code, want miss=%v", missed, tc.progMisses)
			}
		})
	}
}

func TestChargeFetchLooksUpEveryPageTheRangeTouches(t *testing.T) {
	const kernelText = 0xffff_8000_8000_0000
	cases := []struct {
		name    string
		addr    uint64
		insns   uint64
		lookups uint64
	}{
		{"one instruction", kernelText, 1, 1},
		{"a whole page", kernelText, wordsPerPage, 1},
		{"one past a page", kernelText, wordsPerPage + 1, 2},
		{"ten instructions across a boundary", kernelText + mem.PageSize - 20, 10, 2},
		{"ending on the last word of a page", kernelText + mem.PageSize - 20, 5, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newEnv(t).cpu
			if err := c.EnableITLB(emu.DefaultITLBConfig()); err != nil {
				t.Fatal(err)
			}
			c.ChargeFetch(tc.addr, tc.insns, mem.PageSize)
			if st := c.ITLBStats(); st.Lookups != tc.lookups || st.Instructions != tc.insns {
				t.Errorf("%+v, want %d lookups and %d instructions", st, tc.lookups, tc.insns)
			}
		})
	}
}

func TestChargeFetchCountsRetiredWithTheModelOff(t *testing.T) {
	e := newEnv(t)
	r := e.cpu.Retired
	e.cpu.ChargeFetch(0xffff_8000_8000_0000, 100, mem.PageSize)
	if e.cpu.Retired-r != 100 {
		t.Errorf("retired %d, want 100", e.cpu.Retired-r)
	}
	if st := e.cpu.ITLBStats(); st != (emu.ITLBStats{}) {
		t.Errorf("stats %+v with the model off", st)
	}
}

// TestSetAssociativeLevelsConflictBySet uses a direct-mapped two-entry
// L1: pages 0 and 2 share a set and evict each other, pages 0 and 1 do not.
func TestSetAssociativeLevelsConflictBySet(t *testing.T) {
	const base = 0xffff_8000_8000_0000
	cases := []struct {
		name   string
		a, b   uint64 // page numbers alternated
		misses uint64 // over 10 alternations
	}{
		{"pages in different sets keep their entries", 0, 1, 2},
		{"pages in one set evict each other", 0, 2, 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newEnv(t).cpu
			if err := c.EnableITLB(emu.ITLBConfig{L1Entries: 2, L1Ways: 1}); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 10; i++ {
				c.ChargeFetch(base+tc.a*mem.PageSize, 1, mem.PageSize)
				c.ChargeFetch(base+tc.b*mem.PageSize, 1, mem.PageSize)
			}
			if st := c.ITLBStats(); st.Misses != tc.misses {
				t.Errorf("misses %d, want %d", st.Misses, tc.misses)
			}
		})
	}
}

func TestITLBConfigurationsOutOfShapeAreEINVAL(t *testing.T) {
	cases := []struct {
		name string
		cfg  emu.ITLBConfig
	}{
		{"no L1 entries", emu.ITLBConfig{}},
		{"ways do not divide entries", emu.ITLBConfig{L1Entries: 48, L1Ways: 5}},
		{"more ways than entries", emu.ITLBConfig{L1Entries: 4, L1Ways: 8}},
		{"negative L2", emu.ITLBConfig{L1Entries: 48, L2Entries: -1}},
		{"L2 ways do not divide", emu.ITLBConfig{L1Entries: 48, L2Entries: 1280, L2Ways: 3}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newEnv(t).cpu
			if err := c.EnableITLB(tc.cfg); !errors.Is(err, uapi.EINVAL) {
				t.Errorf("EnableITLB(%+v) = %v, want EINVAL", tc.cfg, err)
			}
			if st := c.ITLBStats(); st != (emu.ITLBStats{}) {
				t.Errorf("a refused configuration left a model on: %+v", st)
			}
		})
	}
}

// BenchmarkLoopITLB is BenchmarkLoop with the instruction-TLB model on:
// the loop stays in one page, so the model costs one lookup per run.
func BenchmarkLoopITLB(b *testing.B) {
	e := newEnv(b)
	entry := e.text(b, loopCode())
	c := e.cpu
	c.Limit = 0
	if err := c.EnableITLB(emu.DefaultITLBConfig()); err != nil {
		b.Fatal(err)
	}
	c.SetX(6, uint64(b.N))
	b.ResetTimer()
	if _, err := c.Run(entry, 0, e.data); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(c.ITLBStats().Misses), "misses")
}

// BenchmarkPageChainITLB runs code that changes page at every second
// instruction over 64 pages, the model's worst case: a lookup (and, with
// 48 L1 entries, a miss) every other instruction.
func BenchmarkPageChainITLB(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			e := newEnv(b)
			entry := e.text(b, pageChain(64))
			c := e.cpu
			c.Limit = 0
			if on {
				if err := c.EnableITLB(emu.DefaultITLBConfig()); err != nil {
					b.Fatal(err)
				}
			}
			r := c.Retired
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.Run(entry, 0); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(c.Retired-r), "ns/insn")
		})
	}
}
