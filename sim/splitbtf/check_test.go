package splitbtf

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// checkCase is a small blob of base BTF and what the kernel's verifier
// makes of it: errno 0 for valid, else the errno and the end of its log.
type checkCase struct {
	name  string
	build func(bb builder)
	raw   func(raw []byte) []byte // changes the encoded blob, if set
	errno uapi.Errno
	msg   string
}

// member word with a bitfield size, for kind_flag structs.
func bitfield(size, off uint32) uint32 { return size<<24 | off }

// intBits adds an int of size bytes, with bits bits at bit offset off.
func intBits(bb builder, size, bits, off uint32) uint32 {
	return bb.add(KindInt, "i", false, size, 0, off<<16|bits)
}

func sec(bb builder, name string, size uint32, vsis ...uint32) uint32 {
	return bb.add(KindDatasec, name, false, size, len(vsis)/3, vsis...)
}

func variable(bb builder, name string, typ, linkage uint32) uint32 {
	return bb.add(KindVar, name, false, typ, 0, linkage)
}

// chain adds n consts, each on the next, the last on int (id 1).
func chain(bb builder, n int) {
	for i := 0; i < n; i++ {
		next := bb.b.TypeCount() + 1
		if i == n-1 {
			next = 1
		}
		bb.ref(KindConst, "", next)
	}
}

var checkCases = []checkCase{
	{name: "valid BTF of every kind", build: func(bb builder) {
		i := bb.intT("int", 4, true)                                    // 1
		c := bb.add(KindInt, "char", false, 1, 0, 2<<24|8)              // 2
		bb.add(KindFloat, "double", false, 8, 0)                        // 3
		bb.add(KindEnum, "e", true, 4, 1, bb.str("NEG"), 0xffffffff)    // 4
		bb.add(KindEnum64, "e64", false, 8, 1, bb.str("BIG"), 0, 1)     // 5
		bb.add(KindForward, "fwd", true, 0, 0)                          // 6
		td := bb.ref(KindTypedef, "u32.t", i)                           // 7
		p := bb.ref(KindPointer, "", 9)                                 // 8
		s := bb.add(KindStruct, "s", true, 16, 4, bb.str("next"), p, 0, // 9
			bb.str("lo"), i, bitfield(3, 64), bb.str("hi"), 4, bitfield(5, 67),
			bb.str("tag"), 17, 96)
		bb.add(KindUnion, "", false, 8, 2, bb.str("a"), td, 0, bb.str("b"), 3, 0)    // 10
		bb.array(c, i, 16)                                                           // 11
		bb.ref(KindVolatile, "", bb.ref(KindConst, "", bb.ref(KindRestrict, "", p))) // 12-14
		proto := bb.proto(i, member{"x", i, 0}, member{"", 0, 0})                    // 15
		bb.add(KindFunc, "f", false, proto, 1)                                       // 16
		bb.add(KindTypeTag, "user", true, i, 0)                                      // 17
		v := variable(bb, "v", s, 1)                                                 // 18
		sec(bb, ".data..percpu", 24, v, 0, 16)                                       // 19
		bb.add(KindDeclTag, "tag:x", false, s, 0, 1)                                 // 20
		bb.add(KindDeclTag, "attr", true, proto+1, 0, 0xffffffff)                    // 21
		bb.ref(KindPointer, "", 0)                                                   // 22
	}},
	{name: "an int's vlen", build: func(bb builder) { bb.add(KindInt, "i", false, 4, 1, 32) },
		errno: uapi.EINVAL, msg: "[1] vlen != 0"},
	{name: "an int's kind_flag", build: func(bb builder) { bb.add(KindInt, "i", true, 4, 0, 32) },
		errno: uapi.EINVAL, msg: "[1] Invalid btf_info kind_flag"},
	{name: "an int's reserved bits", build: func(bb builder) { bb.add(KindInt, "i", false, 4, 0, 1<<28|32) },
		errno: uapi.EINVAL, msg: "[1] Invalid int_data:10000020"},
	{name: "an int of more than 128 bits", build: func(bb builder) { intBits(bb, 16, 120, 9) },
		errno: uapi.EINVAL, msg: "[1] nr_bits exceeds 128"},
	{name: "an int of more bits than bytes", build: func(bb builder) { intBits(bb, 4, 33, 0) },
		errno: uapi.EINVAL, msg: "[1] nr_bits exceeds type_size"},
	{name: "an int of two encodings is not supported", build: func(bb builder) { bb.add(KindInt, "i", false, 4, 0, 3<<24|32) },
		errno: uapi.ENOTSUPP, msg: "[1] Unsupported encoding"},
	{name: "an int of 3 bytes and any name", build: func(bb builder) { bb.add(KindInt, "not a name!", false, 3, 0, 24) }},
	{name: "reserved bits of the info word", build: func(bb builder) {
		bb.b.AddType(Type{Info: Info(KindInt, false, 0) | 1<<20, SizeType: 4, Data: []uint32{32}})
	}, errno: uapi.EINVAL, msg: "[1] Invalid btf_info:1100000"},
	{name: "a const with a name", build: func(bb builder) { bb.ref(KindConst, "c", bb.intT("int", 4, true)) },
		errno: uapi.EINVAL, msg: "[2] Invalid name"},
	{name: "a typedef named as no identifier", build: func(bb builder) { bb.ref(KindTypedef, "9lives", 0) },
		errno: uapi.EINVAL, msg: "[1] Invalid name"},
	{name: "identifiers may hold dots and Latin-1 letters", build: func(bb builder) {
		bb.ref(KindTypedef, ".a.b", 0)
		bb.ref(KindTypedef, "\xc0\xff_9", 0)
		bb.ref(KindTypedef, strings.Repeat("a", 512), 0)
	}},
	{name: "a name with a byte of UTF-8 that is no Latin-1 letter", build: func(bb builder) { bb.ref(KindTypedef, "caf\xc3\xa9", 0) },
		errno: uapi.EINVAL, msg: "[1] Invalid name"},
	{name: "a name longer than KSYM_NAME_LEN", build: func(bb builder) { bb.ref(KindTypedef, strings.Repeat("a", 513), 0) },
		errno: uapi.EINVAL, msg: "[1] Invalid name"},
	{name: "a type tag without a name", build: func(bb builder) { bb.ref(KindTypeTag, "", 0) },
		errno: uapi.EINVAL, msg: "[1] Invalid name"},
	{name: "a pointer's kind_flag", build: func(bb builder) { bb.add(KindPointer, "", true, 0, 0) },
		errno: uapi.EINVAL, msg: "[1] Invalid btf_info kind_flag"},
	{name: "a pointer to nothing there", build: func(bb builder) { bb.ref(KindPointer, "", 0); bb.b.Types[0].SizeType = 2 },
		errno: uapi.EINVAL, msg: "[1] Invalid type_id"},
	{name: "a forward declaration without a name", build: func(bb builder) { bb.add(KindForward, "", false, 0, 0) },
		errno: uapi.EINVAL, msg: "[1] Invalid name"},
	{name: "an array with a size", build: func(bb builder) {
		i := bb.intT("int", 4, true)
		bb.add(KindArray, "", false, 4, 0, i, i, 1)
	}, errno: uapi.EINVAL, msg: "[2] size != 0"},
	{name: "an array of void", build: func(bb builder) { bb.array(0, bb.intT("int", 4, true), 1) },
		errno: uapi.EINVAL, msg: "[2] Invalid elem"},
	{name: "an array indexed by a float", build: func(bb builder) {
		bb.array(bb.intT("int", 4, true), bb.add(KindFloat, "f", false, 4, 0), 1)
	}, errno: uapi.EINVAL, msg: "[3] Invalid index"},
	{name: "an array of bitfield ints", build: func(bb builder) { i := intBits(bb, 4, 31, 0); bb.array(i, i, 2) },
		errno: uapi.EINVAL, msg: "[2] Invalid index"},
	{name: "an array of 3-byte ints", build: func(bb builder) { bb.array(intBits(bb, 4, 24, 0), bb.intT("int", 4, true), 2) },
		errno: uapi.EINVAL, msg: "[3] Invalid array of int"},
	{name: "an array of more than 4 GiB", build: func(bb builder) {
		i := bb.intT("int", 4, true)
		bb.array(i, i, 1<<30)
	}, errno: uapi.EINVAL, msg: "[2] Array size overflows U32_MAX"},
	{name: "struct members in decreasing order", build: func(bb builder) {
		i := bb.intT("int", 4, true)
		bb.composite(KindStruct, "s", 8, member{"a", i, 32}, member{"b", i, 0})
	}, errno: uapi.EINVAL, msg: "[2] Invalid member bits_offset"},
	{name: "a union member at an offset", build: func(bb builder) {
		bb.composite(KindUnion, "u", 8, member{"a", bb.intT("int", 4, true), 32})
	}, errno: uapi.EINVAL, msg: "[2] Invalid member bits_offset"},
	{name: "a member past its struct", build: func(bb builder) {
		bb.composite(KindStruct, "s", 4, member{"a", bb.intT("int", 4, true), 40})
	}, errno: uapi.EINVAL, msg: "[2] Member bits_offset exceeds its struct size"},
	{name: "a member across the end of its struct", build: func(bb builder) {
		bb.composite(KindStruct, "s", 4, member{"a", bb.intT("int", 4, true), 8})
	}, errno: uapi.EINVAL, msg: "[2] Member exceeds struct_size"},
	{name: "a pointer member not at a byte", build: func(bb builder) {
		bb.composite(KindStruct, "s", 16, member{"p", bb.ref(KindPointer, "", 0), 4})
	}, errno: uapi.EINVAL, msg: "[2] Member is not byte aligned"},
	{name: "a bitfield of a pointer", build: func(bb builder) {
		bb.add(KindStruct, "s", true, 16, 1, 0, bb.ref(KindPointer, "", 0), bitfield(3, 0))
	}, errno: uapi.EINVAL, msg: "[2] Invalid member bitfield_size"},
	{name: "a bitfield wider than its int", build: func(bb builder) {
		bb.add(KindStruct, "s", true, 8, 1, 0, bb.intT("int", 4, true), bitfield(33, 0))
	}, errno: uapi.EINVAL, msg: "[2] Invalid member bitfield_size"},
	{name: "a kind_flag member of a bitfield int", build: func(bb builder) {
		bb.add(KindStruct, "s", true, 8, 1, 0, intBits(bb, 4, 3, 0), 0)
	}, errno: uapi.EINVAL, msg: "[2] Invalid member base type"},
	{name: "a kind_flag int member not at a byte", build: func(bb builder) {
		bb.add(KindStruct, "s", true, 8, 1, 0, bb.intT("int", 4, true), 3)
	}, errno: uapi.EINVAL, msg: "[2] Invalid member offset"},
	{name: "a bitfield int member without kind_flag", build: func(bb builder) {
		bb.composite(KindStruct, "s", 1, member{"a", intBits(bb, 4, 3, 2), 3})
	}},
	{name: "a kind_flag enum member takes an int's bits", build: func(bb builder) {
		bb.add(KindStruct, "s", true, 2, 1, 0, bb.enum("e", 1, "A"), 0)
	}, errno: uapi.EINVAL, msg: "[2] Member exceeds struct_size"},
	{name: "a float member not aligned", build: func(bb builder) {
		bb.composite(KindStruct, "s", 16, member{"d", bb.add(KindFloat, "d", false, 8, 0), 32})
	}, errno: uapi.EINVAL, msg: "[2] Member is not properly aligned"},
	{name: "a member of a forward declaration", build: func(bb builder) {
		bb.composite(KindStruct, "s", 8, member{"f", bb.add(KindForward, "f", false, 0, 0), 0})
	}, errno: uapi.EINVAL, msg: "[2] Invalid member"},
	{name: "a member of a typedef of void", build: func(bb builder) {
		bb.composite(KindStruct, "s", 8, member{"f", bb.ref(KindTypedef, "v", 0), 0})
	}, errno: uapi.EINVAL, msg: "[2] Invalid member"},
	{name: "a member without a type", build: func(bb builder) { bb.composite(KindStruct, "s", 8, member{"f", 0, 0}) },
		errno: uapi.EINVAL, msg: "[1] Invalid type_id"},
	{name: "a struct of itself", build: func(bb builder) { bb.composite(KindStruct, "s", 8, member{"s", 1, 0}) },
		errno: uapi.EEXIST, msg: "[1] Loop detected"},
	{name: "a struct with a pointer to itself", build: func(bb builder) {
		bb.composite(KindStruct, "s", 8, member{"s", 2, 0})
		bb.ref(KindPointer, "", 1)
	}},
	{name: "a loop of pointers and consts", build: func(bb builder) {
		bb.ref(KindPointer, "", 2)
		bb.ref(KindConst, "", 1)
	}, errno: uapi.EEXIST, msg: "[1] Loop detected"},
	{name: "32 consts in a row", build: func(bb builder) { bb.intT("int", 4, true); chain(bb, 32) }},
	{name: "33 consts in a row", build: func(bb builder) { bb.intT("int", 4, true); chain(bb, 33) },
		errno: uapi.E2BIG, msg: "[2] Exceeded max resolving depth:32"},
	{name: "an enum of 3 bytes", build: func(bb builder) { bb.enum("e", 3, "A") },
		errno: uapi.EINVAL, msg: "[1] Unexpected size"},
	{name: "an enum value without a name", build: func(bb builder) { bb.add(KindEnum, "e", false, 4, 1, 0, 0) },
		errno: uapi.EINVAL, msg: "[1] Invalid name"},
	{name: "a prototype with a name", build: func(bb builder) { bb.add(KindFuncProto, "p", false, 0, 0) },
		errno: uapi.EINVAL, msg: "[1] Invalid name"},
	{name: "varargs first", build: func(bb builder) {
		i := bb.intT("int", 4, true)
		bb.proto(i, member{"", 0, 0}, member{"x", i, 0})
	}, errno: uapi.EINVAL, msg: "[2] Invalid arg#1"},
	{name: "varargs with a name", build: func(bb builder) { bb.proto(0, member{"rest", 0, 0}) },
		errno: uapi.EINVAL, msg: "[1] Invalid arg#1"},
	{name: "a prototype returning a forward declaration", build: func(bb builder) {
		bb.proto(bb.add(KindForward, "f", false, 0, 0))
	}, errno: uapi.EINVAL, msg: "[2] Invalid return type"},
	{name: "a parameter of a variable", build: func(bb builder) {
		bb.proto(0, member{"x", variable(bb, "v", bb.intT("int", 4, true), 0), 0})
	}, errno: uapi.EINVAL, msg: "[3] Invalid arg#1"},
	{name: "an extern function", build: func(bb builder) { bb.add(KindFunc, "f", false, bb.proto(0), 2) },
		errno: uapi.EINVAL, msg: "[2] Invalid func linkage"},
	{name: "a function of an int", build: func(bb builder) { bb.add(KindFunc, "f", false, bb.intT("int", 4, true), 0) },
		errno: uapi.EINVAL, msg: "[2] Invalid type_id"},
	{name: "a function with a nameless parameter", build: func(bb builder) {
		bb.add(KindFunc, "f", false, bb.proto(0, member{"", bb.intT("int", 4, true), 0}), 0)
	}, errno: uapi.EINVAL, msg: "[3] Invalid arg#1"},
	{name: "an extern variable", build: func(bb builder) { variable(bb, "v", bb.intT("int", 4, true), 2) },
		errno: uapi.EINVAL, msg: "[2] Linkage not supported"},
	{name: "a variable of a forward declaration", build: func(bb builder) {
		variable(bb, "v", bb.add(KindForward, "f", false, 0, 0), 0)
	}, errno: uapi.EINVAL, msg: "[2] Invalid type_id"},
	{name: "a section of no size", build: func(bb builder) { sec(bb, ".bss", 0) },
		errno: uapi.EINVAL, msg: "[1] size == 0"},
	{name: "a section named with printable bytes", build: func(bb builder) { sec(bb, "any name! \xa0\xff", 4) }},
	{name: "a section of an int", build: func(bb builder) { i := bb.intT("int", 4, true); sec(bb, ".data", 4, i, 0, 4) },
		errno: uapi.EINVAL, msg: "[2] Not a VAR kind member"},
	{name: "section variables overlapping", build: func(bb builder) {
		v := variable(bb, "v", bb.intT("int", 4, true), 0)
		sec(bb, ".data", 8, v, 0, 4, v, 2, 4)
	}, errno: uapi.EINVAL, msg: "[3] Invalid offset"},
	{name: "a section variable smaller than its type", build: func(bb builder) {
		v := variable(bb, "v", bb.intT("int", 4, true), 0)
		sec(bb, ".data", 8, v, 0, 2)
	}, errno: uapi.EINVAL, msg: "[3] Invalid size"},
	{name: "a section variable resolved through its section is not sized", build: func(bb builder) {
		i := bb.intT("int", 4, true)
		sec(bb, ".data", 8, 3, 0, 2)
		variable(bb, "v", i, 0)
	}},
	{name: "a float of 3 bytes", build: func(bb builder) { bb.add(KindFloat, "f", false, 3, 0) },
		errno: uapi.EINVAL, msg: "[1] Invalid type_size"},
	{name: "a declaration tag without a value", build: func(bb builder) {
		bb.add(KindDeclTag, "", false, bb.composite(KindStruct, "s", 0), 0, 0xffffffff)
	}, errno: uapi.EINVAL, msg: "[2] Invalid value"},
	{name: "a declaration tag's component below -1", build: func(bb builder) {
		bb.add(KindDeclTag, "t", false, bb.composite(KindStruct, "s", 0), 0, 0xfffffffe)
	}, errno: uapi.EINVAL, msg: "[2] Invalid component_idx"},
	{name: "a declaration tag on a member that is not there", build: func(bb builder) {
		bb.add(KindDeclTag, "t", false, bb.composite(KindStruct, "s", 0), 0, 0)
	}, errno: uapi.EINVAL, msg: "[2] Invalid component_idx"},
	{name: "a declaration tag on an int", build: func(bb builder) {
		bb.add(KindDeclTag, "t", false, bb.intT("int", 4, true), 0, 0xffffffff)
	}, errno: uapi.EINVAL, msg: "[2] Invalid type_id"},
	{name: "a type tag after a const", build: func(bb builder) {
		bb.ref(KindConst, "", bb.ref(KindTypeTag, "t", bb.intT("int", 4, true)))
	}, errno: uapi.EINVAL, msg: "Type tags don't precede modifiers"},
	{name: "a const after a type tag", build: func(bb builder) {
		bb.ref(KindTypeTag, "t", bb.ref(KindConst, "", bb.intT("int", 4, true)))
	}},
	{name: "no types", build: func(bb builder) {}, errno: uapi.EINVAL, msg: "No type found"},
	{name: "a gap between the sections", build: func(bb builder) { bb.intT("int", 4, true) },
		raw: func(raw []byte) []byte {
			le := binary.LittleEndian
			typeLen := le.Uint32(raw[12:])
			out := append(append(append([]byte(nil), raw[:headerLen+typeLen]...), 0, 0, 0, 0), raw[headerLen+typeLen:]...)
			le.PutUint32(out[16:], typeLen+4)
			return out
		}, errno: uapi.EINVAL, msg: "Unsupported section found"},
	{name: "a byte after the strings", build: func(bb builder) { bb.intT("int", 4, true) },
		raw:   func(raw []byte) []byte { return append(raw, 0) },
		errno: uapi.EINVAL, msg: "Unsupported section found"},
	{name: "an unknown version", build: func(bb builder) { bb.intT("int", 4, true) },
		raw:   func(raw []byte) []byte { raw[2] = 2; return raw },
		errno: uapi.ENOTSUPP, msg: "unsupported BTF version 2"},
	{name: "unknown header fields", build: func(bb builder) { bb.intT("int", 4, true) },
		raw: func(raw []byte) []byte {
			out := append(append(append([]byte(nil), raw[:headerLen]...), 0, 1, 0, 0), raw[headerLen:]...)
			binary.LittleEndian.PutUint32(out[4:], headerLen+4)
			return out
		}, errno: uapi.E2BIG, msg: "unknown non-zero fields"},
}

func runCheckCase(t *testing.T, c checkCase) ([]byte, error) {
	b := NewBase()
	c.build(builder{t, b})
	raw := b.Raw()
	if c.raw != nil {
		raw = c.raw(raw)
	}
	p, err := Parse(raw, nil)
	if err == nil {
		err = p.Check()
	}
	return raw, err
}

func TestCheck(t *testing.T) {
	for _, c := range checkCases {
		t.Run(c.name, func(t *testing.T) {
			_, err := runCheckCase(t, c)
			if c.errno == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, c.errno) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v; want %q (%v)", err, c.msg, c.errno)
			}
		})
	}
}

func TestCheckAcceptsRandomValidBTF(t *testing.T) {
	for seed := int64(0); seed < 300; seed++ {
		g := newBTFGen(seed)
		if err := g.build().Check(); err != nil {
			var sb strings.Builder
			g.b.Dump(&sb)
			t.Fatalf("seed %d: %v\n%s", seed, err, sb.String())
		}
	}
}

func TestCheckAcceptsSyntheticKernelsAndModules(t *testing.T) {
	for seed := int64(1); seed <= 5; seed++ {
		k, ids := buildKernel(t, seed, 3, 232)
		if err := k.Check(); err != nil {
			t.Fatalf("kernel %d: %v", seed, err)
		}
		if err := buildModule(t, k, ids).Check(); err != nil {
			t.Fatalf("module on kernel %d: %v", seed, err)
		}
		back, err := Parse(k.Raw(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := back.Check(); err != nil {
			t.Fatalf("kernel %d, parsed: %v", seed, err)
		}
	}
}

// A module's split BTF is checked on its own: its base's types are taken
// as valid, and its errors name its own ids.
func TestCheckSplitChecksItsOwnTypes(t *testing.T) {
	base := NewBase()
	bb := builder{t, base}
	i := bb.intT("int", 4, true)
	bad := bb.add(KindInt, "bad", false, 4, 0, 3<<24|32) // two encodings
	s := bb.composite(KindStruct, "s", 8, member{"a", i, 0}, member{"b", bad, 32})
	if err := base.Check(); !errors.Is(err, uapi.ENOTSUPP) {
		t.Fatalf("the base: %v", err)
	}
	split := NewSplit(base)
	sb := builder{t, split}
	p := sb.ref(KindPointer, "", s)
	sb.composite(KindStruct, "m", 16, member{"s", s, 0}, member{"p", p, 64})
	if err := split.Check(); err != nil {
		t.Fatalf("the split: %v", err)
	}
	sb.composite(KindStruct, "n", 4, member{"s", s, 0})
	if err := split.Check(); !errors.Is(err, uapi.EINVAL) || !strings.Contains(err.Error(), "[6] Member exceeds struct_size") {
		t.Fatalf("a split struct too small for a base one: %v", err)
	}
	back, err := Parse(split.Raw(), base)
	if err != nil {
		t.Fatal(err)
	}
	if err := back.Check(); err == nil || !strings.Contains(err.Error(), "[6] Member exceeds struct_size") {
		t.Fatalf("parsed: %v", err)
	}
}

func TestCheckHandMadeTypesDoNotPanic(t *testing.T) {
	b := NewBase()
	b.AddType(Type{Info: Info(KindStruct, false, 3), SizeType: 8, Data: []uint32{0, 1}})
	if err := b.Check(); !errors.Is(err, uapi.EINVAL) || !strings.Contains(err.Error(), "meta_left") {
		t.Fatalf("a struct short of its members: %v", err)
	}
	// A base edited by hand under a split: too short, unterminated.
	base := NewBase()
	base.AddType(Type{Info: Info(KindArray, false, 0)})
	base.AddType(Type{Info: Info(KindStruct, false, 2), SizeType: 4})
	base.Strings = append(base.Strings, 'x')
	split := NewSplit(base)
	builder{t, split}.composite(KindStruct, "s", 8, member{"", 1, 0}, member{"", 2, 0})
	_ = split.Check()
}

func TestCheckTooLarge(t *testing.T) {
	b := NewBase()
	data := make([]uint32, 3*0xffff)
	for b.TypeCount() < 24 {
		b.AddType(Type{Info: Info(KindStruct, false, 0xffff), Data: data})
	}
	if err := b.Check(); !errors.Is(err, uapi.E2BIG) {
		t.Fatalf("BTF of more than 16 MiB: %v", err)
	}
}
