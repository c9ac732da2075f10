package mem_test

import (
	"testing"

	"github.com/bpfsim/bpfsim/sim/mem"
)

func TestMappingSizeTellsPageFromBlock(t *testing.T) {
	s := mem.New()
	page := mustAlloc(t, s, 2*mem.PageSize, mem.AllocOptions{Region: mem.RegionModules, Perm: mem.PermRX, Name: "pages"})
	huge := mustAlloc(t, s, mem.HugeSize, mem.AllocOptions{Region: mem.RegionModules, Perm: mem.PermRX, Huge: true, Name: "block"})
	split := mustAlloc(t, s, mem.HugeSize, mem.AllocOptions{Region: mem.RegionModules, Perm: mem.PermRX, Huge: true, Name: "split"})
	if err := s.SetPerm(split, mem.PageSize, mem.PermRW); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		addr uint64
		want uint64
	}{
		{"first page of a page-mapped area", page, mem.PageSize},
		{"last byte of a page-mapped area", page + 2*mem.PageSize - 1, mem.PageSize},
		{"guard page after it", page + 2*mem.PageSize, 0},
		{"start of a block", huge, mem.HugeSize},
		{"inside a block", huge + mem.HugeSize/2 + 123, mem.HugeSize},
		{"a block split by a partial permission change", split + 5*mem.PageSize, mem.PageSize},
		{"non-canonical address", 0x1000, 0},
		{"never mapped", mem.VmallocEnd - mem.PageSize, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.MappingSize(tc.addr); got != tc.want {
				t.Errorf("MappingSize(%#x) = %d, want %d", tc.addr, got, tc.want)
			}
		})
	}
}

func TestGenerationChangesOnUnmapAndPermissionChangeOnly(t *testing.T) {
	s := mem.New()
	g := s.Generation()
	a := mustAlloc(t, s, mem.PageSize, mem.AllocOptions{Perm: mem.PermRW, Name: "a"})
	if s.Generation() != g {
		t.Errorf("mapping new memory changed the generation")
	}
	if err := s.SetPerm(a, mem.PageSize, mem.PermRead); err != nil {
		t.Fatal(err)
	}
	g2 := s.Generation()
	if g2 == g {
		t.Errorf("a permission change kept the generation")
	}
	if err := s.Free(a); err != nil {
		t.Fatal(err)
	}
	if s.Generation() == g2 {
		t.Errorf("an unmap kept the generation")
	}
}
