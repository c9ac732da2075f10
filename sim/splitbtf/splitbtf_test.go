package splitbtf

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// kernelType is one type of a synthetic vmlinux, its references by key so
// that a build can number the types in any order.
type kernelType struct {
	key  string
	make func(bb builder, id func(string) uint32) uint32
}

func kernelTypes(skbSize uint32) []kernelType {
	return []kernelType{
		{"int", func(bb builder, _ func(string) uint32) uint32 { return bb.intT("int", 4, true) }},
		{"long", func(bb builder, _ func(string) uint32) uint32 { return bb.intT("long", 8, true) }},
		{"uchar", func(bb builder, _ func(string) uint32) uint32 { return bb.intT("unsigned char", 1, false) }},
		{"uint", func(bb builder, _ func(string) uint32) uint32 { return bb.intT("unsigned int", 4, false) }},
		{"u32", func(bb builder, id func(string) uint32) uint32 { return bb.ref(KindTypedef, "u32", id("uint")) }},
		{"list_head", func(bb builder, id func(string) uint32) uint32 {
			return bb.composite(KindStruct, "list_head", 16, member{"next", id("list_head*"), 0}, member{"prev", id("list_head*"), 64})
		}},
		{"list_head*", func(bb builder, id func(string) uint32) uint32 { return bb.ref(KindPointer, "", id("list_head")) }},
		{"atomic_t", func(bb builder, id func(string) uint32) uint32 { return bb.ref(KindTypedef, "atomic_t", id("atomic")) }},
		{"atomic", func(bb builder, id func(string) uint32) uint32 {
			return bb.composite(KindStruct, "", 4, member{"counter", id("int"), 0})
		}},
		{"sk_buff", func(bb builder, id func(string) uint32) uint32 {
			return bb.composite(KindStruct, "sk_buff", skbSize, member{"len", id("uint"), 0})
		}},
		{"sock", func(bb builder, _ func(string) uint32) uint32 { return bb.add(KindForward, "sock", false, 0, 0) }},
		{"double", func(bb builder, _ func(string) uint32) uint32 { return bb.add(KindFloat, "double", false, 8, 0) }},
		{"tcp_state", func(bb builder, _ func(string) uint32) uint32 {
			return bb.enum("tcp_state", 4, "TCP_ESTABLISHED", "TCP_SYN_SENT")
		}},
		{"big_flags", func(bb builder, _ func(string) uint32) uint32 {
			return bb.add(KindEnum64, "big_flags", false, 8, 1, bb.str("BIG"), 0, 1)
		}},
		{"conn", func(bb builder, id func(string) uint32) uint32 {
			return bb.composite(KindUnion, "conn", 8, member{"a", id("long"), 0})
		}},
		{"u8[8]", func(bb builder, id func(string) uint32) uint32 { return bb.array(id("uchar"), id("int"), 8) }},
		{"rcv_proto", func(bb builder, id func(string) uint32) uint32 {
			return bb.proto(id("int"), member{"skb", id("sk_buff*"), 0})
		}},
		{"sk_buff*", func(bb builder, id func(string) uint32) uint32 { return bb.ref(KindPointer, "", id("sk_buff")) }},
	}
}

// buildKernel makes a synthetic vmlinux BTF: one build of it, its types
// numbered in the order seed shuffles them to, with extra unrelated
// types among them, and sk_buff of size skbSize. It returns the ids.
func buildKernel(t *testing.T, seed int64, extra int, skbSize uint32) (*BTF, map[string]uint32) {
	types := kernelTypes(skbSize)
	rng := rand.New(rand.NewSource(seed))
	rng.Shuffle(len(types), func(i, j int) { types[i], types[j] = types[j], types[i] })
	ids := map[string]uint32{}
	// Number first (BTF may refer forward), leaving gaps for the extras.
	var slots []int // -1: an extra
	for i := range types {
		for e := 0; e < extra && rng.Intn(3) == 0; e++ {
			slots = append(slots, -1)
		}
		slots = append(slots, i)
	}
	for i, s := range slots {
		if s >= 0 {
			ids[types[s].key] = uint32(i + 1)
		}
	}
	b := NewBase()
	bb := builder{t, b}
	lookup := func(key string) uint32 {
		id, ok := ids[key]
		if !ok {
			t.Fatalf("no kernel type %s", key)
		}
		return id
	}
	junk := 0 // builds share the names of their first extras
	for i, s := range slots {
		var got uint32
		if s < 0 {
			got = bb.composite(KindStruct, fmt.Sprintf("junk_%d", junk), 8, member{"x", lookup("long"), 0})
			junk++
		} else {
			got = types[s].make(bb, lookup)
		}
		if got != uint32(i+1) {
			t.Fatalf("type %d got id %d", i+1, got)
		}
	}
	return b, ids
}

// buildModule makes a module's split BTF on kernel: a struct embedding
// kernel structs, pointers to others, a function and its prototype.
func buildModule(t *testing.T, kernel *BTF, k map[string]uint32) *BTF {
	s := NewSplit(kernel)
	bb := builder{t, s}
	stats := s.TypeCount() + 1 // after its pointer
	ptr := bb.ref(KindPointer, "", stats)
	if got := bb.composite(KindStruct, "mod_stats", 64,
		member{"node", k["list_head"], 0},
		member{"refs", k["atomic_t"], 128},
		member{"flags", k["u32"], 160},
		member{"skb", k["sk_buff*"], 192},
		member{"state", k["tcp_state"], 256},
		member{"tag", k["u8[8]"], 288},
		member{"c", k["conn"], 384},
		member{"self", ptr, 448},
	); got != stats {
		t.Fatalf("mod_stats is %d, want %d", got, stats)
	}
	sockPtr := bb.ref(KindPointer, "", k["sock"])
	proto := bb.proto(k["int"], member{"skb", k["sk_buff*"], 0}, member{"sk", sockPtr, 0}, member{"f", k["big_flags"], 0})
	bb.add(KindFunc, "mod_rcv", false, proto, 1)
	bb.ref(KindPointer, "", k["rcv_proto"])
	bb.ref(KindConst, "", k["double"])
	return s
}

// describe renders type id of b as a tree of kinds, names and sizes, down
// to named structs and unions: what a split type means, whatever the ids.
func describe(b *BTF, id uint32, depth int) string {
	t := b.TypeByID(id)
	if t == nil {
		return fmt.Sprintf("void(%d)", id)
	}
	kind := t.Kind()
	if kind == KindEnum64 {
		kind = KindEnum // a distilled enum stands for both
	}
	s := fmt.Sprintf("%s:%s", kind, b.Name(t))
	switch t.Kind() {
	case KindInt, KindFloat, KindEnum, KindEnum64, KindStruct, KindUnion:
		s += fmt.Sprintf("/%d", t.SizeType)
	}
	if depth == 0 || (t.composite() && t.NameOff != 0) {
		return s
	}
	var parts []string
	for _, f := range t.idFields() {
		if *f != 0 {
			parts = append(parts, describe(b, *f, depth-1))
		}
	}
	return s + "(" + strings.Join(parts, " ") + ")"
}

func TestDistillKeepsNamesAndSizesOfTheBaseTypesASplitNeeds(t *testing.T) {
	kernel, k := buildKernel(t, 1, 0, 232)
	mod := buildModule(t, kernel, k)
	dist, split, err := Distill(mod)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for id := uint32(1); id < dist.TypeCount(); id++ {
		got = append(got, dist.DumpType(id))
	}
	// The named base types split reaches, not through named structs or
	// unions (so not long, conn's member).
	want := map[string]bool{
		"INT 'int' size=4 bits_offset=0 nr_bits=32 encoding=SIGNED":          true,
		"INT 'unsigned char' size=1 bits_offset=0 nr_bits=8 encoding=(none)": true,
		"INT 'unsigned int' size=4 bits_offset=0 nr_bits=32 encoding=(none)": true,
		"STRUCT 'list_head' size=16 vlen=0":                                  true,
		"STRUCT 'sk_buff' size=232 vlen=0":                                   true,
		"FWD 'sock' fwd_kind=struct":                                         true,
		"FLOAT 'double' size=8":                                              true,
		"ENUM 'tcp_state' encoding=UNSIGNED size=4 vlen=0":                   true,
		"ENUM 'big_flags' encoding=UNSIGNED size=8 vlen=0":                   true,
		"UNION 'conn' size=8 vlen=0":                                         true,
	}
	if len(got) != len(want) {
		t.Errorf("distilled base has %d types, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for _, line := range got {
		_, rest, _ := strings.Cut(line, " ")
		if !want[rest] {
			t.Errorf("unexpected distilled type %s", line)
		}
	}
	// Split's own types come first, in their order, meaning the same.
	for i := range mod.Types {
		a, b := describe(mod, mod.StartID()+uint32(i), 6), describe(split, split.StartID()+uint32(i), 6)
		if a != b {
			t.Errorf("split type %d:\n was %s\n now %s", i, a, b)
		}
	}
	if n := len(split.Types) - len(mod.Types); n != 6 {
		// u32, atomic_t, its struct, sk_buff*, u8[8], rcv_proto; not
		// list_head*: only list_head's members, which are left out, use it
		t.Errorf("%d types copied into split, want 6", n)
	}
}

func TestRelocateFindsTheTypesInAnotherBuildOfTheKernel(t *testing.T) {
	built, k := buildKernel(t, 1, 0, 232)
	mod := buildModule(t, built, k)
	_, split, err := Distill(mod)
	if err != nil {
		t.Fatal(err)
	}
	for seed := int64(2); seed < 12; seed++ {
		running, _ := buildKernel(t, seed, 3, 232)
		raw := split.Raw()
		reloc, idMap, err := Relocate(split, running)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if !bytes.Equal(raw, split.Raw()) {
			t.Fatal("Relocate changed its input")
		}
		for i := range split.Types {
			id := split.StartID() + uint32(i)
			if idMap[id] != reloc.StartID()+uint32(i) {
				t.Errorf("seed %d: id %d maps to %d, want %d", seed, id, idMap[id], reloc.StartID()+uint32(i))
			}
			a, b := describe(split, id, 6), describe(reloc, reloc.StartID()+uint32(i), 6)
			if a != b {
				t.Errorf("seed %d: split type %d:\n before %s\n after  %s", seed, i, a, b)
			}
		}
		// The relocated BTF reads back on the running kernel's.
		back, err := Parse(reloc.Raw(), running)
		if err != nil {
			t.Fatalf("seed %d: relocated BTF does not parse on its base: %v", seed, err)
		}
		var sb1, sb2 strings.Builder
		reloc.Dump(&sb1)
		back.Dump(&sb2)
		if sb1.String() != sb2.String() {
			t.Errorf("seed %d: relocated BTF reads back differently", seed)
		}
	}
}

func TestRelocateRefusesWhatTheKernelRefuses(t *testing.T) {
	built, k := buildKernel(t, 1, 0, 232)
	mod := buildModule(t, built, k)
	dist, split, err := Distill(mod)
	if err != nil {
		t.Fatal(err)
	}
	_ = dist
	for _, tc := range []struct {
		name  string
		base  func(t *testing.T) *BTF
		errno unix.Errno
		msg   string
	}{{
		name: "a distilled type the running kernel lacks",
		base: func(t *testing.T) *BTF {
			b, _ := buildKernel(t, 3, 0, 232)
			renameType(t, b, "sk_buff", "sk_buff_renamed")
			return b
		},
		errno: unix.EINVAL,
		msg:   "distilled base BTF type 'sk_buff' [",
	}, {
		name: "an embedded struct whose size changed",
		base: func(t *testing.T) *BTF {
			b, _ := buildKernel(t, 3, 0, 232)
			resizeType(t, b, "list_head", 24)
			return b
		},
		errno: unix.EINVAL,
		msg:   "distilled base BTF type 'list_head' [",
	}, {
		name: "a struct only pointed to may change size",
		base: func(t *testing.T) *BTF {
			b, _ := buildKernel(t, 3, 0, 240)
			return b
		},
	}, {
		name: "two structs of one name and size",
		base: func(t *testing.T) *BTF {
			b, k := buildKernel(t, 3, 0, 232)
			builder{t, b}.composite(KindStruct, "sk_buff", 232, member{"len", k["uint"], 0})
			return b
		},
		errno: unix.EINVAL,
		msg:   "has multiple candidates of the same size",
	}, {
		name: "two structs of one name, sizes tell them apart",
		base: func(t *testing.T) *BTF {
			b, k := buildKernel(t, 3, 0, 232)
			builder{t, b}.composite(KindStruct, "sk_buff", 100, member{"len", k["uint"], 0})
			return b
		},
	}, {
		name: "an int of another size",
		base: func(t *testing.T) *BTF {
			b, _ := buildKernel(t, 3, 0, 232)
			resizeType(t, b, "int", 8)
			return b
		},
		errno: unix.EINVAL,
		msg:   "distilled base BTF type 'int' [",
	}, {
		name: "a forward declaration that became a union",
		base: func(t *testing.T) *BTF {
			b, k := buildKernel(t, 3, 0, 232)
			b.Types[k["sock"]-1] = Type{NameOff: b.Types[k["sock"]-1].NameOff, Info: Info(KindForward, true, 0)}
			return b
		},
		errno: unix.EINVAL,
		msg:   "distilled base BTF type 'sock' [",
	}, {
		name: "a forward declaration that the kernel defines",
		base: func(t *testing.T) *BTF {
			b, k := buildKernel(t, 3, 0, 232)
			b.Types[k["sock"]-1] = Type{NameOff: b.Types[k["sock"]-1].NameOff, Info: Info(KindStruct, false, 1), SizeType: 8, Data: []uint32{0, k["long"], 0}}
			return b
		},
	}, {
		name: "an enum that became an enum64",
		base: func(t *testing.T) *BTF {
			b, k := buildKernel(t, 3, 0, 232)
			e := &b.Types[k["tcp_state"]-1]
			*e = Type{NameOff: e.NameOff, Info: Info(KindEnum64, false, 0), SizeType: 4}
			return b
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Relocate(split, tc.base(t))
			if tc.errno == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tc.errno) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v with %q", err, tc.errno, tc.msg)
			}
		})
	}
}

func TestRelocateRefusesMalformedDistilledBases(t *testing.T) {
	running, k := buildKernel(t, 2, 0, 232)
	for _, tc := range []struct {
		name string
		dist func(bb builder)
		msg  string
	}{
		{"a pointer", func(bb builder) { bb.ref(KindPointer, "", 0) }, "type [1] in distilled based BTF has unexpected kind [2]"},
		{"an anonymous struct", func(bb builder) { bb.composite(KindStruct, "", 4) }, "type [1], kind [4] is invalid for distilled base BTF; it is anonymous"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dist := NewBase()
			tc.dist(builder{t, dist})
			split := NewSplit(dist)
			builder{t, split}.ref(KindPointer, "", 1)
			_, _, err := Relocate(split, running)
			if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want EINVAL with %q", err, tc.msg)
			}
		})
	}
	_ = k
}

func TestRelocateRefusesSplitStringsNamingNoDistilledType(t *testing.T) {
	running, _ := buildKernel(t, 2, 0, 232)
	dist := NewBase()
	db := builder{t, dist}
	db.intT("int", 4, true)
	spare := db.str("spare") // in the distilled strings, no type's name
	split := NewSplit(dist)
	split.AddType(Type{NameOff: spare, Info: Info(KindTypedef, false, 0), SizeType: 1})
	_, _, err := Relocate(split, running)
	if !errors.Is(err, unix.ENOENT) || !strings.Contains(err.Error(), "is not mapped to base BTF") {
		t.Fatalf("got %v, want ENOENT", err)
	}
}

func renameType(t *testing.T, b *BTF, from, to string) {
	for i := range b.Types {
		if b.Name(&b.Types[i]) == from {
			b.Types[i].NameOff = builder{t, b}.str(to)
			return
		}
	}
	t.Fatalf("no type %s", from)
}

func resizeType(t *testing.T, b *BTF, name string, size uint32) {
	for i := range b.Types {
		if b.Name(&b.Types[i]) == name {
			b.Types[i].SizeType = size
			if b.Types[i].Kind() == KindInt {
				b.Types[i].Data[0] = b.Types[i].Data[0]&^0xff | size*8
			}
			return
		}
	}
	t.Fatalf("no type %s", name)
}
