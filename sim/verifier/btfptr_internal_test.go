package verifier

import (
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// btfStructWalk finds what a read of a kernel object yields: a scalar
// within a member (nested structs and arrays included), the struct a
// whole pointer member points to, and the kernel's refusals past the
// struct or across a member's edge.
func TestBTFStructWalkFindsTheMemberRead(t *testing.T) {
	u32 := &btf.Int{Name: "unsigned int", Size: 4}
	u64 := &btf.Int{Name: "long long unsigned int", Size: 8}
	char := &btf.Int{Name: "char", Size: 1, Encoding: btf.Char}
	inner := &btf.Struct{Name: "inner", Size: 8, Members: []btf.Member{{Name: "a", Type: u32}, {Name: "b", Type: u32, Offset: 32}}}
	outer := &btf.Struct{Name: "outer", Size: 48}
	outer.Members = []btf.Member{
		{Name: "self", Type: &btf.Pointer{Target: &btf.Typedef{Name: "outer_t", Type: outer}}},
		{Name: "in", Type: inner, Offset: 64},
		{Name: "name", Type: &btf.Array{Index: u32, Type: char, Nelems: 16}, Offset: 128},
		{Name: "v", Type: &btf.Pointer{Target: &btf.Void{}}, Offset: 256},
		{Name: "n", Type: u64, Offset: 320},
		// 44..48: padding
	}
	for _, c := range []struct {
		name      string
		off, size int
		ptr       *btf.Struct // nil: a scalar
		err       string
	}{
		{"pointer to a struct, through a typedef", 0, 8, outer, ""},
		{"half a pointer", 0, 4, nil, "cannot access ptr member self with moff 0 in struct outer"},
		{"nested member", 12, 4, nil, ""},
		{"across nested members", 10, 4, nil, "partially inside struct inner member a"},
		{"array element", 21, 1, nil, ""},
		{"pointer to void", 32, 8, nil, ""},
		{"last member", 40, 8, nil, ""},
		{"padding", 44, 4, nil, ""},
		{"past the end", 44, 8, nil, "access beyond struct outer at off 44 size 8"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, _, err := btfStructWalk(outer, c.off, c.size)
			switch {
			case c.err != "":
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Errorf("error %v, want %q", err, c.err)
				}
			case err != nil:
				t.Errorf("error %v", err)
			case got != c.ptr:
				t.Errorf("yields %v, want %v", got, c.ptr)
			}
		})
	}
}
