package mem_test

import (
	"testing"

	"github.com/bpfsim/bpfsim/sim/mem"
)

// TestFreedRangesAreReusedOnlyOnceTheRegionIsUsedUp allocates and frees
// 2 MiB huge areas in the 2 GiB modules region many times over its size:
// a freed range is not handed out again while the region has unused
// space, and once it has none, freed ranges are, so allocation never runs
// out while little is live.
func TestFreedRangesAreReusedOnlyOnceTheRegionIsUsedUp(t *testing.T) {
	s := mem.New()
	opts := mem.AllocOptions{Region: mem.RegionModules, Perm: mem.PermRW, Huge: true, Name: "pack"}
	keep, err := s.Alloc(mem.HugeSize, opts)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{keep: true}
	reusedAt := -1
	for i := 0; i < 2000; i++ {
		a, err := s.Alloc(mem.HugeSize, opts)
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if a < mem.ModulesStart || a+mem.HugeSize > mem.ModulesEnd || a%mem.HugeSize != 0 {
			t.Fatalf("allocation %d at %#x: outside the region or misaligned", i, a)
		}
		if a == keep {
			t.Fatalf("allocation %d reuses a live area", i)
		}
		if seen[a] && reusedAt < 0 {
			reusedAt = i
		}
		seen[a] = true
		if err := s.Free(a); err != nil {
			t.Fatal(err)
		}
	}
	// Each area takes 4 MiB of address space (2 MiB, a guard page, then
	// 2 MiB alignment): the region holds about 512 before the first reuse.
	if reusedAt < 500 {
		t.Fatalf("a freed range was reused after %d allocations, before the region was used up", reusedAt)
	}
	if err := s.Read(keep, make([]byte, 8)); err != nil {
		t.Fatalf("the live area was disturbed: %v", err)
	}
}

// TestRecycledMemoryGoesOnlyToTheSameKey: the memory of a freed 2 MiB
// area with a Recycle key comes back, unchanged, only to an allocation
// with the same key; any other allocation is zeroed.
func TestRecycledMemoryGoesOnlyToTheSameKey(t *testing.T) {
	s := mem.New()
	opts := mem.AllocOptions{Region: mem.RegionModules, Perm: mem.PermRW, Huge: true, Name: "pack", Recycle: "packs"}
	a, recycled, err := s.AllocRecycled(mem.HugeSize, opts)
	if err != nil || recycled {
		t.Fatalf("first allocation: recycled %v, %v", recycled, err)
	}
	if err := s.Write(a+100, []byte{0xd4}); err != nil {
		t.Fatal(err)
	}
	if err := s.Free(a); err != nil {
		t.Fatal(err)
	}
	other := opts
	other.Recycle = "other"
	o, recycled, err := s.AllocRecycled(mem.HugeSize, other)
	if err != nil || recycled {
		t.Fatalf("another key: recycled %v, %v", recycled, err)
	}
	plain, err := s.Alloc(mem.HugeSize, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []uint64{o, plain} {
		b := make([]byte, 1)
		if err := s.Read(addr+100, b); err != nil || b[0] != 0 {
			t.Fatalf("a non-recycled area at %#x is not zeroed: %v %v", addr, b, err)
		}
	}
	b, recycled, err := s.AllocRecycled(mem.HugeSize, opts)
	if err != nil || !recycled {
		t.Fatalf("same key: recycled %v, %v", recycled, err)
	}
	got := make([]byte, 1)
	if err := s.Read(b+100, got); err != nil || got[0] != 0xd4 {
		t.Fatalf("recycled memory changed: %v %v", got, err)
	}
}
