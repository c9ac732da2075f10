package jit_arm64

import (
	"testing"

	"github.com/bpfsim/bpfsim/sim/mem"
)

// Every page of a patch gets its own writable alias, mapped only while
// that page is written: one alias at a time, of the right page, and the
// text itself never writable.
func TestPatchMapsOneAliasPerPageAtATime(t *testing.T) {
	s := mem.New()
	base, err := s.Alloc(4*mem.PageSize, mem.AllocOptions{Region: mem.RegionModules, Perm: mem.PermRX, Name: "text"})
	if err != nil {
		t.Fatal(err)
	}
	p := NewPatcher(s)
	var pages, live []uint64
	p.mapped = func(alias, page uint64) {
		pages = append(pages, page)
		n := 0
		for _, a := range s.Areas() {
			if a.AliasOf != 0 {
				n++
				if a.Start != alias || a.AliasOf != page || a.Perm != mem.PermRW || a.Size != mem.PageSize {
					t.Errorf("alias %+v, want one RW page at %#x aliasing %#x", a, alias, page)
				}
			}
		}
		live = append(live, uint64(n))
		if err := s.Write(page, []byte{0}); err == nil {
			t.Error("the text is writable while it is patched")
		}
	}
	src := make([]byte, 2*mem.PageSize+8)
	if _, err := p.InsnCopy(base+mem.PageSize-4, src); err != nil {
		t.Fatal(err)
	}
	want := []uint64{base, base + mem.PageSize, base + 2*mem.PageSize, base + 3*mem.PageSize}
	if len(pages) != len(want) {
		t.Fatalf("patched pages %#x, want %#x", pages, want)
	}
	for i := range want {
		if pages[i] != want[i] || live[i] != 1 {
			t.Errorf("step %d: page %#x with %d aliases mapped, want page %#x with 1", i, pages[i], live[i], want[i])
		}
	}
	for _, a := range s.Areas() {
		if a.AliasOf != 0 {
			t.Errorf("alias left after the patch: %+v", a)
		}
	}
}
