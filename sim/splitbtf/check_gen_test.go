package splitbtf

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"strings"
)

// btfGen makes random BTF that the kernel's verifier accepts: every kind,
// ints of each size and encoding, bitfields, enums signed and unsigned,
// qualifier chains and type tags, structs with pointers to themselves,
// prototypes with varargs, sections of variables, declaration tags.
type btfGen struct {
	rng *rand.Rand
	b   *BTF
	// Pools of the types made so far, by what they can be used for.
	regular   []uint32 // whole ints: array indexes and elements
	irregular []uint32 // ints of fewer bits or an offset: members only
	sized     []uint32 // types with a size (members, elements, variables)
	refable   []uint32 // what a pointer or a qualifier may point to
	tags      []uint32 // type tags (no qualifier may point to one)
	structs   []uint32
	funcs     []uint32
	vars      []uint32
	typedefs  []uint32
	special   []uint32 // string offsets of names the verifier refuses, or may
}

// specialNames are strings every blob carries, for mutations to name
// types with.
var specialNames = []string{"9lives", "a-b", "sp ace", ".dot", "a.b", "_x", "\xc0lat", "\xd7x", "x\xd7",
	"\xf7", "é", "tab\t", "\x7f", "\xa0nbsp", "x\xa0", strings.Repeat("a", ksymNameLen),
	strings.Repeat("b", ksymNameLen+1), "Z", "$", "kptr", ".data", "a b.c"}

func newBTFGen(seed int64) *btfGen {
	g := &btfGen{rng: rand.New(rand.NewSource(seed)), b: NewBase()}
	for _, s := range specialNames {
		g.special = append(g.special, g.str(s))
	}
	return g
}

func (g *btfGen) str(s string) uint32 {
	if s == "" {
		return 0
	}
	off, err := g.b.AddStr(s)
	if err != nil {
		panic(err)
	}
	return off
}

func (g *btfGen) ident(prefix string) uint32 {
	return g.str(fmt.Sprintf("%s%d", prefix, g.rng.Intn(1000)))
}

func (g *btfGen) add(kind Kind, name uint32, kflag bool, sizeType uint32, vlen int, data ...uint32) uint32 {
	return g.b.AddType(Type{NameOff: name, Info: Info(kind, kflag, vlen), SizeType: sizeType, Data: data})
}

func (g *btfGen) pick(pool []uint32) uint32 { return pool[g.rng.Intn(len(pool))] }

// size is the size of a type the generator made with one.
func (g *btfGen) size(id uint32) uint32 {
	for i := 0; i < 40; i++ {
		t := g.b.TypeByID(id)
		switch {
		case t == nil:
			return 0
		case hasSize(t):
			return t.SizeType
		case t.Kind() == KindPointer:
			return 8
		case t.Kind() == KindArray:
			return g.size(t.Data[0]) * t.Data[2]
		case !isModifier(t.Kind()):
			return 0
		}
		id = t.SizeType
	}
	return 0
}

// intType adds an int: a whole one of 1 to 16 bytes, or one of fewer
// bits, perhaps at a bit offset.
func (g *btfGen) intType() uint32 {
	size := []uint32{1, 2, 4, 8, 16}[g.rng.Intn(5)]
	enc := []uint32{0, 1, 2, 4}[g.rng.Intn(4)]
	bits, off := size*8, uint32(0)
	if g.rng.Intn(4) == 0 {
		bits = 1 + uint32(g.rng.Intn(int(size*8-1)))
		off = uint32(g.rng.Intn(int(size*8 - bits + 1)))
	}
	name := g.ident("int")
	if g.rng.Intn(8) == 0 {
		name = g.pick(g.special) // an int's name is not checked
	}
	id := g.add(KindInt, name, false, size, 0, enc<<24|off<<16|bits)
	if !intRegular(g.b.TypeByID(id)) {
		g.irregular = append(g.irregular, id)
	} else {
		g.regular = append(g.regular, id)
		g.sized = append(g.sized, id)
		g.refable = append(g.refable, id)
	}
	return id
}

func (g *btfGen) enumType(kind Kind) uint32 {
	size := []uint32{1, 2, 4, 8}[g.rng.Intn(4)]
	n := g.rng.Intn(5)
	var data []uint32
	for i := 0; i < n; i++ {
		data = append(data, g.ident("E"), g.rng.Uint32())
		if kind == KindEnum64 {
			data = append(data, g.rng.Uint32())
		}
	}
	name := uint32(0)
	if g.rng.Intn(3) > 0 {
		name = g.ident("enum")
	}
	id := g.add(kind, name, g.rng.Intn(2) == 0, size, n, data...)
	g.sized = append(g.sized, id)
	g.refable = append(g.refable, id)
	return id
}

func (g *btfGen) floatType() uint32 {
	size := []uint32{2, 4, 8, 12, 16}[g.rng.Intn(5)]
	id := g.add(KindFloat, g.ident("float"), false, size, 0)
	g.sized = append(g.sized, id)
	g.refable = append(g.refable, id)
	return id
}

// qualifier adds a typedef, const, volatile or restrict of a type with a
// size, void, a forward declaration or a prototype.
func (g *btfGen) qualifier() uint32 {
	kind := []Kind{KindTypedef, KindConst, KindVolatile, KindRestrict}[g.rng.Intn(4)]
	to := g.pick(g.refable)
	if g.rng.Intn(6) == 0 {
		to = 0
	}
	name := uint32(0)
	if kind == KindTypedef {
		name = g.ident("td")
	}
	id := g.add(kind, name, false, to, 0)
	if g.size(id) > 0 {
		g.sized = append(g.sized, id)
	}
	g.refable = append(g.refable, id)
	if kind == KindTypedef {
		g.typedefs = append(g.typedefs, id)
	}
	return id
}

// typeTag adds a type tag (kind_flag: an attribute) on a sized type; only
// pointers, members and variables use it, as qualifiers may not.
func (g *btfGen) typeTag() uint32 {
	id := g.add(KindTypeTag, g.ident("tag"), g.rng.Intn(4) == 0, g.pick(g.sized), 0)
	g.tags = append(g.tags, id)
	return id
}

func (g *btfGen) pointer() uint32 {
	var to uint32
	switch r := g.rng.Intn(10); {
	case r == 0:
		to = 0
	case r == 1 && len(g.tags) > 0:
		to = g.pick(g.tags)
	case r == 2:
		to = g.b.TypeCount() + 1 // the next type, made right after
		g.add(KindPointer, 0, false, to, 0)
		g.intType()
		return to - 1
	default:
		to = g.pick(g.refable)
	}
	id := g.add(KindPointer, 0, false, to, 0)
	g.sized = append(g.sized, id)
	g.refable = append(g.refable, id)
	return id
}

func (g *btfGen) array() uint32 {
	elem := g.pick(g.sized)
	if g.rng.Intn(5) == 0 && len(g.tags) > 0 {
		elem = g.pick(g.tags)
	}
	id := g.add(KindArray, 0, false, 0, 0, elem, g.pick(g.regular), uint32(g.rng.Intn(6)))
	g.sized = append(g.sized, id)
	g.refable = append(g.refable, id)
	return id
}

// composite adds a struct or union, with a kind_flag for bitfields, and
// perhaps a pointer to itself.
func (g *btfGen) composite() uint32 {
	kind := KindStruct
	if g.rng.Intn(4) == 0 {
		kind = KindUnion
	}
	kflag := g.rng.Intn(3) == 0
	var self uint32
	if g.rng.Intn(4) == 0 {
		self = g.add(KindPointer, 0, false, g.b.TypeCount()+1, 0)
	}
	n := g.rng.Intn(6)
	var data []uint32
	cursor, size := uint32(0), uint32(0) // in bits, bytes
	for i := 0; i < n; i++ {
		name := uint32(0)
		if g.rng.Intn(5) > 0 {
			name = g.ident("m")
		}
		mtype := g.pick(g.sized)
		switch r := g.rng.Intn(8); {
		case r == 0 && self != 0:
			mtype = self
		case r == 1 && len(g.tags) > 0:
			mtype = g.pick(g.tags)
		case r == 2 && !kflag && len(g.irregular) > 0:
			mtype = g.pick(g.irregular)
		}
		msize := g.size(mtype)
		mt := g.b.TypeByID(mtype)
		for mt != nil && isModifier(mt.Kind()) {
			mt = g.b.TypeByID(mt.SizeType)
		}
		bits := msize * 8
		bitfield := uint32(0)
		if kflag && mt != nil && (mt.Kind() == KindInt || mt.Kind() == KindEnum || mt.Kind() == KindEnum64) {
			max := min(bits, 32)
			if mt.Kind() == KindInt {
				max = bits
			}
			if g.rng.Intn(2) == 0 {
				bitfield = 1 + uint32(g.rng.Intn(int(min(max, 64))))
				bits = bitfield
			} else if mt.Kind() != KindInt {
				bitfield, bits = max, max
			}
		}
		if mt != nil && mt.Kind() == KindInt && !kflag {
			v := mt.Data[0]
			bits = v>>16&0xff + v&0xff
		}
		off := uint32(0)
		if kind == KindStruct {
			align := uint32(8)
			if mt != nil && mt.Kind() == KindFloat {
				align = min(8, mt.SizeType) * 8
			}
			if bitfield == 0 || cursor%8+bits > 64 {
				cursor = (cursor + align - 1) / align * align
			}
			off = cursor
			cursor += bits
		}
		if end := roundUpBytes(off + bits); end > size {
			size = end
		}
		if kind == KindStruct && bitfield == 0 && msize > 0 {
			size = max(size, off/8+msize)
		}
		word := off
		if kflag {
			word |= bitfield << 24
		}
		data = append(data, name, mtype, word)
	}
	size += uint32(g.rng.Intn(3))
	name := uint32(0)
	if g.rng.Intn(3) > 0 {
		name = g.ident("s")
	}
	id := g.add(kind, name, kflag, size, n, data...)
	if self != 0 && id != self+1 {
		panic("self pointer")
	}
	g.sized = append(g.sized, id)
	g.refable = append(g.refable, id)
	g.structs = append(g.structs, id)
	return id
}

// proto adds a prototype; named asks for names on all its parameters, as
// a function's need.
func (g *btfGen) proto(named bool) uint32 {
	ret := uint32(0)
	if g.rng.Intn(3) > 0 {
		ret = g.pick(g.sized)
	}
	n := g.rng.Intn(4)
	var data []uint32
	for i := 0; i < n; i++ {
		name := uint32(0)
		if named || g.rng.Intn(2) == 0 {
			name = g.ident("p")
		}
		data = append(data, name, g.pick(g.sized))
	}
	if g.rng.Intn(4) == 0 {
		data = append(data, 0, 0) // ...
		n++
	}
	id := g.add(KindFuncProto, 0, false, ret, n, data...)
	g.refable = append(g.refable, id)
	return id
}

func (g *btfGen) function() uint32 {
	proto := g.proto(true)
	id := g.add(KindFunc, g.ident("f"), false, proto, g.rng.Intn(2))
	g.funcs = append(g.funcs, id)
	return id
}

func (g *btfGen) variable() uint32 {
	id := g.add(KindVar, g.ident("v"), false, g.pick(g.sized), 0, uint32(g.rng.Intn(2)))
	g.vars = append(g.vars, id)
	return id
}

func (g *btfGen) datasec() uint32 {
	n := 1 + g.rng.Intn(3)
	var vars []uint32
	for i := 0; i < n; i++ {
		vars = append(vars, g.variable())
	}
	var data []uint32
	off := uint32(0)
	for _, v := range vars {
		size := g.size(g.b.TypeByID(v).SizeType)
		if size == 0 {
			size = 1
		}
		size += uint32(g.rng.Intn(2))
		off += uint32(g.rng.Intn(3))
		data = append(data, v, off, size)
		off += size
	}
	name := []string{".data", ".bss", ".rodata", "license", ".data.rel", ".maps", "sec name!", "\xa0x"}[g.rng.Intn(8)]
	return g.add(KindDatasec, g.str(name), false, off+uint32(g.rng.Intn(3)), n, data...)
}

func (g *btfGen) declTag() uint32 {
	idx := int32(-1)
	var target uint32
	switch r := g.rng.Intn(4); {
	case r == 0 && len(g.structs) > 0:
		target = g.pick(g.structs)
		if n := g.b.TypeByID(target).Vlen(); n > 0 && g.rng.Intn(2) == 0 {
			idx = int32(g.rng.Intn(n))
		}
	case r == 1 && len(g.funcs) > 0:
		target = g.pick(g.funcs)
		proto := g.b.TypeByID(g.b.TypeByID(target).SizeType)
		if n := proto.Vlen(); n > 0 && g.rng.Intn(2) == 0 {
			idx = int32(g.rng.Intn(n))
		}
	case r == 2 && len(g.typedefs) > 0:
		target = g.pick(g.typedefs)
	default:
		target = g.variable()
	}
	return g.add(KindDeclTag, g.str(fmt.Sprintf("tag:%d", g.rng.Intn(100))), g.rng.Intn(4) == 0, target, 0, uint32(idx))
}

// build makes a valid blob of some types of every kind.
func (g *btfGen) build() *BTF {
	g.b.AddType(Type{NameOff: g.str("int"), Info: Info(KindInt, false, 0), SizeType: 4, Data: []uint32{1<<24 | 32}})
	g.regular = append(g.regular, 1)
	g.sized = append(g.sized, 1)
	g.refable = append(g.refable, 1)
	fwd := g.add(KindForward, g.ident("fwd"), g.rng.Intn(2) == 0, 0, 0)
	g.refable = append(g.refable, fwd)
	makers := []func() uint32{g.intType, g.intType, g.floatType, g.qualifier, g.qualifier, g.pointer, g.pointer,
		g.array, g.composite, g.composite, g.composite, g.typeTag, g.function, g.variable, g.datasec, g.declTag,
		func() uint32 { return g.proto(false) }, func() uint32 { return g.enumType(KindEnum) },
		func() uint32 { return g.enumType(KindEnum64) }}
	for n := 4 + g.rng.Intn(24); n > 0; n-- {
		makers[g.rng.Intn(len(makers))]()
	}
	return g.b
}

// interesting returns a value for a mutated field: a limit, a small
// number, an id, the old value nudged, a bitfield size added.
func (g *btfGen) interesting(old uint32) uint32 {
	switch g.rng.Intn(8) {
	case 0:
		return []uint32{0, 1, 2, 3, 4, 7, 8, 9, 12, 15, 16, 17, 24, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256,
			0x7fffffff, 0x80000000, 0xffffffff, maxTypeID, maxTypeID + 1, 0xffffff, 0x1000000, 0xfffffffe}[g.rng.Intn(32)]
	case 1, 2:
		return uint32(g.rng.Intn(int(g.b.TypeCount()) + 1))
	case 3, 4:
		return old + uint32(g.rng.Intn(17)) - 8
	case 5:
		return old | uint32(1+g.rng.Intn(128))<<24
	case 6:
		return old ^ 1<<g.rng.Intn(32)
	}
	return g.rng.Uint32() >> g.rng.Intn(32)
}

// nameOff returns a string offset for a mutated name: none, one of the
// special names, into the middle of a name or at its end, out of range.
func (g *btfGen) nameOff(old uint32) uint32 {
	strs := g.b.Strings
	switch g.rng.Intn(6) {
	case 0:
		return 0
	case 1, 2:
		return g.pick(g.special)
	case 3:
		return uint32(g.rng.Intn(len(strs))) // anywhere, an empty string at a NUL
	case 4:
		if g.rng.Intn(4) == 0 {
			return uint32(len(strs)) + uint32(g.rng.Intn(3))
		}
		return old + 1
	}
	return g.interesting(old)
}

// resize gives t vlen entries, keeping its data words as far as they go.
func (g *btfGen) resize(t *Type, kind Kind, vlen int) {
	n := dataWords(kind, vlen)
	if n < 0 {
		n = 0
	}
	data := make([]uint32, n)
	for i := range data {
		if i < len(t.Data) {
			data[i] = t.Data[i]
		} else if len(t.Data) > 0 {
			data[i] = t.Data[i%len(t.Data)]
		}
	}
	t.Data = data
}

// mutate changes one field of one of the types.
func (g *btfGen) mutate() string {
	i := g.rng.Intn(len(g.b.Types))
	t := &g.b.Types[i]
	id := g.b.StartID() + uint32(i)
	k := t.Kind()
	switch r := g.rng.Intn(16); {
	case r < 3:
		t.NameOff = g.nameOff(t.NameOff)
		return fmt.Sprintf("[%d] %s name", id, k)
	case r == 3:
		t.Info ^= 1 << 31
		return fmt.Sprintf("[%d] %s kind_flag", id, k)
	case r == 4:
		vlen := []int{0, 1, 2, 3, t.Vlen() + 1, t.Vlen() - 1, 0xffff}[g.rng.Intn(7)] & 0xffff
		if vlen == 0xffff && g.rng.Intn(4) > 0 {
			vlen = 5
		}
		g.resize(t, k, vlen)
		t.Info = t.Info&^0xffff | uint32(vlen)
		return fmt.Sprintf("[%d] %s vlen %d", id, k, vlen)
	case r == 5:
		if g.rng.Intn(2) == 0 {
			t.Info |= 1 << (16 + g.rng.Intn(8))
		} else {
			t.Info |= 1 << (29 + g.rng.Intn(2))
		}
		return fmt.Sprintf("[%d] %s reserved info bits", id, k)
	case r == 6:
		nk := Kind(1 + g.rng.Intn(int(maxKind)))
		g.resize(t, nk, t.Vlen())
		t.Info = t.Info&^(0x1f<<24) | uint32(nk)<<24
		return fmt.Sprintf("[%d] %s to kind %s", id, k, nk)
	case r < 10 || len(t.Data) == 0:
		t.SizeType = g.interesting(t.SizeType)
		return fmt.Sprintf("[%d] %s size/type", id, k)
	default:
		w := g.rng.Intn(len(t.Data))
		if g.rng.Intn(4) == 0 && (k == KindStruct || k == KindUnion || k == KindEnum || k == KindEnum64 || k == KindFuncProto) {
			stride := 2
			if k != KindEnum && k != KindFuncProto {
				stride = 3
			}
			w -= w % stride
			t.Data[w] = g.nameOff(t.Data[w])
		} else {
			t.Data[w] = g.interesting(t.Data[w])
		}
		return fmt.Sprintf("[%d] %s data word %d", id, k, w)
	}
}

// mutateRaw changes the framing of raw BTF: the header, the sections.
func (g *btfGen) mutateRaw(raw []byte) ([]byte, string) {
	le := binary.LittleEndian
	raw = append([]byte(nil), raw...)
	switch g.rng.Intn(9) {
	case 0:
		raw[2] = byte(g.rng.Intn(3))
		return raw, "version"
	case 1:
		raw[3] = byte(1 << g.rng.Intn(8))
		return raw, "flags"
	case 2:
		// A longer header, zero or not past the known fields.
		ext := make([]byte, 4)
		if g.rng.Intn(2) == 0 {
			ext[g.rng.Intn(4)] = 1
		}
		out := append(append(append([]byte(nil), raw[:headerLen]...), ext...), raw[headerLen:]...)
		le.PutUint32(out[4:], headerLen+4)
		return out, "header length"
	case 3:
		return append(raw, 0), "trailing byte"
	case 4:
		// The strings first, then the types.
		typeLen, strLen := le.Uint32(raw[12:]), le.Uint32(raw[20:])
		body := raw[headerLen:]
		out := append(append(append([]byte(nil), raw[:headerLen]...), body[typeLen:]...), body[:typeLen]...)
		le.PutUint32(out[8:], strLen)
		le.PutUint32(out[16:], 0)
		return out, "strings first"
	case 5:
		// A gap between the sections.
		typeLen := le.Uint32(raw[12:])
		out := append(append(append([]byte(nil), raw[:headerLen+typeLen]...), 0, 0, 0, 0), raw[headerLen+typeLen:]...)
		le.PutUint32(out[16:], typeLen+4)
		return out, "gap"
	case 6:
		le.PutUint32(raw[20:], le.Uint32(raw[20:])-uint32(1+g.rng.Intn(2)))
		return raw[:len(raw)-1], "strings cut"
	case 7:
		raw[len(raw)-1] = 'x'
		return raw, "last string unterminated"
	}
	raw[headerLen+le.Uint32(raw[16:])] = 'x'
	return raw, "first string not empty"
}

// mutateAgain changes a second field, unless Parse then refuses the
// blob: Parse checks every type's references before Check's rules, in
// the kernel's order, so of two faults, one Parse finds and one the
// kernel finds first with another errno (a loop, an unsupported int
// encoding), Parse's would be reported.
func (g *btfGen) mutateAgain(what string) string {
	saved := make([]Type, len(g.b.Types))
	for i := range g.b.Types {
		saved[i] = g.b.Types[i].clone()
	}
	second := g.mutate()
	if _, err := Parse(g.b.Raw(), nil); err != nil {
		g.b.Types = saved
		return what
	}
	return what + "; " + second
}
