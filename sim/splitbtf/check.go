package splitbtf

import (
	"bytes"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Limits and masks of the kernel's BTF verifier (kernel/bpf/btf.c and
// include/uapi/linux/btf.h).
const (
	maxTypeID       = 0xfffff    // BTF_MAX_TYPE
	maxBTFSize      = 16 << 20   // BTF_MAX_SIZE: BPF_BTF_LOAD refuses more
	ksymNameLen     = 512        // KSYM_NAME_LEN: the longest name
	maxResolveDepth = 32         // MAX_RESOLVE_DEPTH
	infoMask        = 0x9f00ffff // BTF_INFO_MASK: vlen, kind, kind_flag
	intMask         = 0x0fffffff // BTF_INT_MASK: encoding, offset, bits
	bitsPerU128     = 128
)

// Check verifies b as the kernel's BTF verifier does when it loads BTF:
// btf_parse for BPF_BTF_LOAD when b is base BTF, the same rules on b's
// own types (its base's taken as valid) when b is split BTF, as a
// module's. That is the framing (sections tiling the blob, the string
// section), each type's own fields (btf_check_all_metas), the types they
// refer to (btf_check_all_types: the depth-first resolution of every
// type that refers to others, struct members and bitfields, arrays,
// variables and sections, function prototypes), and the order of type
// tags (btf_check_type_tags). The first error found is the kernel's
// first, with its errno and, after the type's id in brackets, the
// message its verifier log ends with.
//
// Check reads b as it is: types added or changed after Parse are checked
// as Raw would encode them.
func (b *BTF) Check() error {
	if err := b.checkFraming(); err != nil {
		return err
	}
	c := newChecker(b)
	for i := range b.Types {
		if err := c.checkMeta(c.start+uint32(i), &b.Types[i]); err != nil {
			return err
		}
	}
	if err := c.checkTypes(); err != nil {
		return err
	}
	return c.checkTypeTags()
}

// checkFraming applies btf_parse_hdr's, btf_check_sec_info's,
// btf_parse_str_sec's and btf_parse_type_sec's rules on the blob's layout
// (Parse applies the others, on its header).
func (b *BTF) checkFraming() error {
	typeLen := uint64(0)
	for i := range b.Types {
		typeLen += 12 + 4*uint64(len(b.Types[i].Data))
	}
	lay := b.layout
	if lay == nil || uint64(lay.typeLen) != typeLen || uint64(lay.strLen) != uint64(len(b.Strings)) {
		// Raw's layout: the header, the types, the strings.
		lay = &rawLayout{size: headerLen + typeLen + uint64(len(b.Strings)), hdrLen: headerLen,
			typeLen: uint32(typeLen), strOff: uint32(typeLen), strLen: uint32(len(b.Strings))}
		if typeLen > 1<<32-1 || lay.size > 1<<32-1 {
			return errors.Wrapf(uapi.E2BIG, "BTF of %d bytes is too large", lay.size)
		}
	}
	isBase := b.Base == nil
	if isBase && lay.size > maxBTFSize {
		return errors.Wrapf(uapi.E2BIG, "BTF of %d bytes is larger than BTF_MAX_SIZE", lay.size)
	}
	size := uint32(lay.size)
	if isBase && size == lay.hdrLen {
		return invalid("No data")
	}
	// The two sections, in order of offset, must tile what follows the
	// header: no gap, no overlap, nothing else.
	secs := [2][2]uint32{{lay.typeOff, lay.typeLen}, {lay.strOff, lay.strLen}}
	cmp := int32(secs[0][0] - secs[1][0])
	if cmp == 0 {
		cmp = int32(secs[0][1] - secs[1][1])
	}
	if cmp > 0 {
		secs[0], secs[1] = secs[1], secs[0]
	}
	want, total := size-lay.hdrLen, uint32(0)
	for _, s := range secs {
		switch {
		case want < s[0]:
			return invalid("Invalid section offset")
		case total < s[0]:
			return invalid("Unsupported section found")
		case total > s[0]:
			return invalid("Section overlap found")
		case want-total < s[1]:
			return invalid("Total section length too long")
		}
		total += s[1]
	}
	if want != total {
		return invalid("Unsupported section found")
	}
	if uint64(lay.hdrLen)+uint64(lay.strOff)+uint64(lay.strLen) != lay.size {
		return invalid("String section is not at the end")
	}
	if isBase || len(b.Strings) > 0 {
		n := len(b.Strings)
		if n == 0 || n-1 > maxNameOffset || b.Strings[n-1] != 0 || isBase && b.Strings[0] != 0 {
			return invalid("Invalid string section")
		}
	}
	if lay.typeOff&3 != 0 {
		return invalid("Unaligned type_off")
	}
	if isBase && lay.typeLen == 0 {
		return invalid("No type found")
	}
	return nil
}

// Visit states of the resolution's depth-first search.
const (
	notVisited uint8 = iota
	visited
	resolved
)

// The resolution's modes: what kind of type started it decides which
// types end a path (env_type_is_resolve_sink).
const (
	modeTBD    = iota // not yet known
	modePtr           // resolving for a pointer
	modeStruct        // resolving for a struct, union or array
)

// vertex is a type on the resolution's stack, and the member (or
// section variable) to go on from.
type vertex struct {
	id   uint32
	t    *Type
	next int
}

// checker holds the verifier's state for one Check.
type checker struct {
	b     *BTF
	start uint32 // the first of b's own ids
	end   uint32 // one past the last id the verifier keeps
	state []uint8
	rid   []uint32 // a resolved type's id as the kernel records it
	rsize []uint32 // and its size (arrays)
	base  map[uint32][2]uint32
	stack []vertex
	mode  int
}

// The sentinels a push returns, which btf_resolve turns into its errors.
var (
	errDepth = errors.New("resolve depth")
	errLoop  = errors.New("resolve loop")
)

// voidType stands for type 0.
var voidType Type

func newChecker(b *BTF) *checker {
	c := &checker{b: b, start: b.StartID(), end: b.TypeCount(), stack: make([]vertex, 0, maxResolveDepth)}
	if b.Base == nil && c.end > maxTypeID {
		// btf_add_type keeps no type from BTF_MAX_TYPE on (and the
		// caller goes on without them).
		c.end = maxTypeID
	}
	n := len(b.Types)
	c.state, c.rid, c.rsize = make([]uint8, n), make([]uint32, n), make([]uint32, n)
	return c
}

func typeErr(errno uapi.Errno, id uint32, format string, args ...any) error {
	return errors.Wrapf(errno, "[%d] "+format, append([]any{id}, args...)...)
}

// typ is btf_type_by_id: void for 0, nil for an id the verifier does not
// have.
func (c *checker) typ(id uint32) *Type {
	if id == 0 {
		return &voidType
	}
	if id >= c.end {
		return nil
	}
	return c.b.TypeByID(id)
}

// str is the string at off, without its NUL; ok is false when off is not
// a valid offset (btf_name_offset_valid).
func (c *checker) str(off uint32) (s []byte, ok bool) {
	if off > maxNameOffset {
		return nil, false
	}
	for b := c.b; b != nil; b = b.Base {
		if start := b.StartStr(); off >= start {
			off -= start
			if off >= uint32(len(b.Strings)) {
				return nil, false
			}
			s := b.Strings[off:]
			if n := bytes.IndexByte(s, 0); n >= 0 {
				s = s[:n]
			}
			return s, true
		}
	}
	return nil, false
}

// The kernel's ctype (lib/ctype.c) reads bytes as Latin-1: 0xc0-0xff
// but for 0xd7 and 0xf7 are letters, 0xa0-0xff are printable.
func kIsAlpha(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= 0xc0 && c != 0xd7 && c != 0xf7
}

func kIsAlnum(c byte) bool { return kIsAlpha(c) || c >= '0' && c <= '9' }

func kIsPrint(c byte) bool { return c >= 0x20 && c <= 0x7e || c >= 0xa0 }

// validIdent is btf_name_valid_identifier: a C identifier, dots allowed,
// of at most KSYM_NAME_LEN characters.
func (c *checker) validIdent(off uint32) bool {
	s, ok := c.str(off)
	if !ok || len(s) == 0 || len(s) > ksymNameLen {
		return false
	}
	for i, ch := range s {
		if !(ch == '_' || ch == '.' || i == 0 && kIsAlpha(ch) || i > 0 && kIsAlnum(ch)) {
			return false
		}
	}
	return true
}

// validSection is btf_name_valid_section: any printable characters.
func (c *checker) validSection(off uint32) bool {
	s, ok := c.str(off)
	if !ok || len(s) == 0 || len(s) > ksymNameLen {
		return false
	}
	for _, ch := range s {
		if !kIsPrint(ch) {
			return false
		}
	}
	return true
}

// word is t's data word i, 0 past its end (a base type edited by hand).
func word(t *Type, i int) uint32 {
	if i < len(t.Data) {
		return t.Data[i]
	}
	return 0
}

// entries is how many of t's vlen entries of stride words it has.
func entries(t *Type, stride int) int { return min(t.Vlen(), len(t.Data)/stride) }

// Kind predicates; void is none of them but nosize.
func isModifier(k Kind) bool {
	return k == KindTypedef || k == KindVolatile || k == KindConst || k == KindRestrict || k == KindTypeTag
}

func isStruct(t *Type) bool { return t.Kind() == KindStruct || t.Kind() == KindUnion }

func isVoid(t *Type) bool { return t == &voidType }

func needsResolve(t *Type) bool {
	if isVoid(t) {
		return false
	}
	switch t.Kind() {
	case KindPointer, KindStruct, KindUnion, KindArray, KindVar, KindFunc, KindDeclTag, KindDatasec:
		return true
	}
	return isModifier(t.Kind())
}

func hasSize(t *Type) bool {
	if isVoid(t) {
		return false
	}
	switch t.Kind() {
	case KindInt, KindStruct, KindUnion, KindEnum, KindDatasec, KindFloat, KindEnum64:
		return true
	}
	return false
}

func noSize(t *Type) bool {
	if t == nil || isVoid(t) {
		return true
	}
	switch t.Kind() {
	case KindForward, KindFunc, KindFuncProto, KindDeclTag:
		return true
	}
	return false
}

func sourceOnly(t *Type) bool {
	if isVoid(t) {
		return false
	}
	k := t.Kind()
	return k == KindVar || k == KindDeclTag || k == KindDatasec
}

// intRegular is btf_type_int_is_regular: a whole 1, 2, 4, 8 or 16 bytes.
func intRegular(t *Type) bool {
	v := word(t, 0)
	bits, off := v&0xff, v>>16&0xff
	n := (bits + 7) / 8
	return bits%8 == 0 && off == 0 && (n == 1 || n == 2 || n == 4 || n == 8 || n == 16)
}

func roundUpBytes(bits uint32) uint32 { return bits>>3 + min(bits&7, 1) }

// checkMeta is btf_check_meta: a type's own fields.
func (c *checker) checkMeta(id uint32, t *Type) error {
	if t.Info&^infoMask != 0 {
		return typeErr(uapi.EINVAL, id, "Invalid btf_info:%x", t.Info)
	}
	k := t.Kind()
	if k == KindUnknown || k > maxKind {
		return typeErr(uapi.EINVAL, id, "Invalid kind:%d", k)
	}
	if n := dataWords(k, t.Vlen()); len(t.Data) != n {
		return typeErr(uapi.EINVAL, id, "meta_left:%d meta_needed:%d", 4*len(t.Data), 4*n)
	}
	if _, ok := c.str(t.NameOff); !ok {
		return typeErr(uapi.EINVAL, id, "Invalid name_offset:%d", t.NameOff)
	}
	fail := func(msg string, args ...any) error { return typeErr(uapi.EINVAL, id, msg, args...) }
	switch k {
	case KindInt:
		v := t.Data[0]
		switch bits := v&0xff + v>>16&0xff; {
		case t.Vlen() != 0:
			return fail("vlen != 0")
		case t.KindFlag():
			return fail("Invalid btf_info kind_flag")
		case v&^intMask != 0:
			return fail("Invalid int_data:%x", v)
		case bits > bitsPerU128:
			return fail("nr_bits exceeds %d", bitsPerU128)
		case roundUpBytes(bits) > t.SizeType:
			return fail("nr_bits exceeds type_size")
		}
		if enc := v >> 24 & 0xf; enc != 0 && enc != 1 && enc != 2 && enc != 4 {
			return typeErr(uapi.ENOTSUPP, id, "Unsupported encoding")
		}
	case KindPointer, KindTypedef, KindVolatile, KindConst, KindRestrict, KindTypeTag:
		switch {
		case t.Vlen() != 0:
			return fail("vlen != 0")
		case t.KindFlag() && k != KindTypeTag:
			return fail("Invalid btf_info kind_flag")
		case t.SizeType > maxTypeID:
			return fail("Invalid type_id")
		}
		switch k {
		case KindTypedef:
			if t.NameOff == 0 || !c.validIdent(t.NameOff) {
				return fail("Invalid name")
			}
		case KindTypeTag:
			if s, _ := c.str(t.NameOff); len(s) == 0 {
				return fail("Invalid name")
			}
		default:
			if t.NameOff != 0 {
				return fail("Invalid name")
			}
		}
	case KindForward:
		switch {
		case t.Vlen() != 0:
			return fail("vlen != 0")
		case t.SizeType != 0:
			return fail("type != 0")
		case t.NameOff == 0 || !c.validIdent(t.NameOff):
			return fail("Invalid name")
		}
	case KindArray:
		switch {
		case t.NameOff != 0:
			return fail("Invalid name")
		case t.Vlen() != 0:
			return fail("vlen != 0")
		case t.KindFlag():
			return fail("Invalid btf_info kind_flag")
		case t.SizeType != 0:
			return fail("size != 0")
		case t.Data[0] == 0 || t.Data[0] > maxTypeID:
			return fail("Invalid elem")
		case t.Data[1] == 0 || t.Data[1] > maxTypeID:
			return fail("Invalid index")
		}
	case KindStruct, KindUnion:
		return c.checkStructMeta(id, t)
	case KindEnum, KindEnum64:
		if s := t.SizeType; s > 8 || s&(s-1) != 0 || s == 0 {
			return fail("Unexpected size")
		}
		if t.NameOff != 0 && !c.validIdent(t.NameOff) {
			return fail("Invalid name")
		}
		stride := 2
		if k == KindEnum64 {
			stride = 3
		}
		for i := 0; i < t.Vlen(); i++ {
			name := t.Data[stride*i]
			if _, ok := c.str(name); !ok {
				return fail("Invalid name_offset:%d", name)
			}
			if name == 0 || !c.validIdent(name) {
				return fail("Invalid name")
			}
		}
	case KindFuncProto:
		switch {
		case t.NameOff != 0:
			return fail("Invalid name")
		case t.KindFlag():
			return fail("Invalid btf_info kind_flag")
		}
	case KindFunc:
		switch {
		case t.NameOff == 0 || !c.validIdent(t.NameOff):
			return fail("Invalid name")
		case t.Vlen() > 1: // BTF_FUNC_GLOBAL; no extern functions
			return fail("Invalid func linkage")
		case t.KindFlag():
			return fail("Invalid btf_info kind_flag")
		}
	case KindVar:
		switch {
		case t.Vlen() != 0:
			return fail("vlen != 0")
		case t.KindFlag():
			return fail("Invalid btf_info kind_flag")
		case t.NameOff == 0 || !c.validIdent(t.NameOff):
			return fail("Invalid name")
		case t.SizeType == 0 || t.SizeType > maxTypeID:
			return fail("Invalid type_id")
		case t.Data[0] > 1: // static or global allocated; no extern
			return fail("Linkage not supported")
		}
	case KindDatasec:
		return c.checkDatasecMeta(id, t)
	case KindFloat:
		switch s := t.SizeType; {
		case t.Vlen() != 0:
			return fail("vlen != 0")
		case t.KindFlag():
			return fail("Invalid btf_info kind_flag")
		case s != 2 && s != 4 && s != 8 && s != 12 && s != 16:
			return fail("Invalid type_size")
		}
	case KindDeclTag:
		switch s, _ := c.str(t.NameOff); {
		case len(s) == 0:
			return fail("Invalid value")
		case t.Vlen() != 0:
			return fail("vlen != 0")
		case int32(t.Data[0]) < -1:
			return fail("Invalid component_idx")
		}
	}
	return nil
}

// memberOffset is a member's bit offset; with kind_flag its low 24 bits,
// the high 8 being the bitfield's size.
func memberOffset(t *Type, off uint32) uint32 {
	if t.KindFlag() {
		return off & 0xffffff
	}
	return off
}

func (c *checker) checkStructMeta(id uint32, t *Type) error {
	if t.NameOff != 0 && !c.validIdent(t.NameOff) {
		return typeErr(uapi.EINVAL, id, "Invalid name")
	}
	last := uint32(0)
	for i := 0; i < t.Vlen(); i++ {
		name, typ, off := t.Data[3*i], t.Data[3*i+1], memberOffset(t, t.Data[3*i+2])
		var msg string
		switch _, ok := c.str(name); {
		case !ok:
			return typeErr(uapi.EINVAL, id, "Invalid member name_offset:%d", name)
		case name != 0 && !c.validIdent(name):
			msg = "Invalid name"
		case typ == 0 || typ > maxTypeID:
			msg = "Invalid type_id"
		case t.Kind() == KindUnion && off != 0, last > off:
			msg = "Invalid member bits_offset"
		case roundUpBytes(off) > t.SizeType:
			msg = "Member bits_offset exceeds its struct size"
		}
		if msg != "" {
			return typeErr(uapi.EINVAL, id, "%s", msg)
		}
		last = off
	}
	return nil
}

func (c *checker) checkDatasecMeta(id uint32, t *Type) error {
	fail := func(msg string) error { return typeErr(uapi.EINVAL, id, "%s", msg) }
	switch {
	case t.SizeType == 0:
		return fail("size == 0")
	case t.KindFlag():
		return fail("Invalid btf_info kind_flag")
	case t.NameOff == 0 || !c.validSection(t.NameOff):
		return fail("Invalid name")
	}
	end, sum := uint64(0), uint64(0)
	for i := 0; i < t.Vlen(); i++ {
		typ, off, size := t.Data[3*i], t.Data[3*i+1], t.Data[3*i+2]
		switch {
		case typ == 0 || typ > maxTypeID:
			return fail("Invalid type_id")
		case uint64(off) < end || off >= t.SizeType:
			return fail("Invalid offset")
		case size == 0 || size > t.SizeType:
			return fail("Invalid size")
		}
		end = uint64(off) + uint64(size)
		if end > uint64(t.SizeType) {
			return fail("Invalid offset+size")
		}
		sum += uint64(size)
	}
	if uint64(t.SizeType) < sum {
		return fail("Invalid btf_info size")
	}
	return nil
}

// checkTypes is btf_check_all_types: resolve every type that refers to
// others, in id order, and check every function prototype.
func (c *checker) checkTypes() error {
	for id := c.start; id < c.end; id++ {
		t := c.typ(id)
		if needsResolve(t) && !c.resolved(id) {
			if err := c.resolve(t, id); err != nil {
				return err
			}
		}
		if t.Kind() == KindFuncProto {
			if err := c.checkProto(id, t); err != nil {
				return err
			}
		}
	}
	return nil
}

// resolved is env_type_is_resolved: a base type is.
func (c *checker) resolved(id uint32) bool {
	if id < c.start {
		return true
	}
	i := id - c.start
	return i < uint32(len(c.state)) && c.state[i] == resolved
}

// resolvedID and resolvedSize are what the resolution recorded of a type
// (btf_resolved_type_id, btf_resolved_type_size): 0 until it has.
func (c *checker) resolvedID(id uint32) uint32 {
	if id < c.start {
		return c.baseResolved(id, 0)[0]
	}
	if i := id - c.start; i < uint32(len(c.rid)) {
		return c.rid[i]
	}
	return 0
}

func (c *checker) resolvedSize(id uint32) uint32 {
	if id < c.start {
		return c.baseResolved(id, 0)[1]
	}
	if i := id - c.start; i < uint32(len(c.rsize)) {
		return c.rsize[i]
	}
	return 0
}

// baseResolved is what a resolution of a base type would have recorded:
// base types are taken as valid, so their chains are followed without
// checks (but with a bound, against hand-made cycles).
func (c *checker) baseResolved(id uint32, depth int) [2]uint32 {
	if r, ok := c.base[id]; ok {
		return r
	}
	var r [2]uint32
	t := c.typ(id)
	if t == nil || depth > maxResolveDepth {
		return r
	}
	skip := func(to uint32) uint32 {
		for i := 0; i < maxResolveDepth; i++ {
			n := c.typ(to)
			if n == nil || isVoid(n) || !isModifier(n.Kind()) {
				if n != nil && n.Kind() == KindFunc {
					return n.SizeType
				}
				return to
			}
			to = n.SizeType
		}
		return to
	}
	switch k := t.Kind(); {
	case isModifier(k), k == KindPointer, k == KindVar:
		r[0] = skip(t.SizeType)
	case k == KindFunc, k == KindDeclTag:
		r[0] = t.SizeType
	case k == KindArray:
		r[0] = skip(word(t, 0))
		var size uint32
		switch e := c.typ(r[0]); {
		case e == nil:
		case hasSize(e):
			size = e.SizeType
		case e.Kind() == KindPointer:
			size = 8
		case e.Kind() == KindArray:
			size = c.baseResolved(r[0], depth+1)[1]
		}
		r[1] = size * word(t, 2)
	}
	if c.base == nil {
		c.base = map[uint32][2]uint32{}
	}
	c.base[id] = r
	return r
}

// idSize is btf_type_id_size: the type id stands for once modifiers and
// variables are resolved, its id and its size; nil for a type without a
// size.
func (c *checker) idSize(id uint32) (*Type, uint32, uint32) {
	t := c.typ(id)
	if noSize(t) {
		return nil, 0, 0
	}
	size := func(t *Type, id uint32) (uint32, bool) {
		switch {
		case hasSize(t):
			return t.SizeType, true
		case t.Kind() == KindArray:
			return c.resolvedSize(id), true
		case t.Kind() == KindPointer:
			return 8, true
		}
		return 0, false
	}
	if s, ok := size(t, id); ok {
		return t, id, s
	}
	if !isModifier(t.Kind()) && t.Kind() != KindVar {
		return nil, 0, 0
	}
	id = c.resolvedID(id)
	t = c.typ(id)
	if noSize(t) {
		return nil, 0, 0
	}
	if s, ok := size(t, id); ok {
		return t, id, s
	}
	return nil, 0, 0
}

// sink is env_type_is_resolve_sink: whether a path of the resolution ends
// at t, in the current mode.
func (c *checker) sink(t *Type) bool {
	k := t.Kind()
	mod := !isVoid(t) && isModifier(k)
	switch c.mode {
	case modePtr:
		return !mod && k != KindPointer
	case modeStruct:
		return isVoid(t) || !mod && k != KindArray && !isStruct(t)
	}
	return !needsResolve(t)
}

func (c *checker) push(t *Type, id uint32) error {
	if len(c.stack) == maxResolveDepth {
		return errDepth
	}
	if id < c.start || c.state[id-c.start] != notVisited {
		return errLoop
	}
	c.state[id-c.start] = visited
	c.stack = append(c.stack, vertex{id: id, t: t})
	if c.mode == modeTBD && !isVoid(t) {
		switch {
		case t.Kind() == KindPointer:
			c.mode = modePtr
		case isStruct(t), t.Kind() == KindArray:
			c.mode = modeStruct
		}
	}
	return nil
}

func (c *checker) pop(rid, rsize uint32) {
	v := c.stack[len(c.stack)-1]
	c.stack = c.stack[:len(c.stack)-1]
	i := v.id - c.start
	c.rid[i], c.rsize[i], c.state[i] = rid, rsize, resolved
}

// resolve is btf_resolve: the depth-first resolution from type id.
func (c *checker) resolve(t *Type, id uint32) error {
	c.mode = modeTBD
	c.stack = c.stack[:0]
	var err error
	if err = c.push(t, id); err == nil {
		for err == nil && len(c.stack) > 0 {
			err = c.resolveTop()
		}
	}
	switch err {
	case nil:
	case errDepth:
		return typeErr(uapi.E2BIG, id, "Exceeded max resolving depth:%d", maxResolveDepth)
	case errLoop:
		return typeErr(uapi.EEXIST, id, "Loop detected")
	default:
		return err
	}
	if !c.resolveValid(t, id) {
		return typeErr(uapi.EINVAL, id, "Invalid resolve state")
	}
	return nil
}

// resolveValid is btf_resolve_valid, the resolution's last check.
func (c *checker) resolveValid(t *Type, id uint32) bool {
	if !c.resolved(id) {
		return false
	}
	switch k := t.Kind(); {
	case isStruct(t), k == KindDatasec:
		return c.resolvedID(id) == 0 && c.resolvedSize(id) == 0
	case k == KindDeclTag, k == KindFunc:
		return c.resolvedID(id) != 0 && c.resolvedSize(id) == 0
	case isModifier(k), k == KindPointer, k == KindVar:
		r := c.typ(c.resolvedID(id))
		return r != nil && (isVoid(r) || !isModifier(r.Kind()) && r.Kind() != KindVar && r.Kind() != KindDatasec)
	case k == KindArray:
		e, _, size := c.idSize(t.Data[0])
		return e != nil && !isModifier(e.Kind()) && t.Data[2]*size == c.resolvedSize(id)
	}
	return false
}

// resolveTop takes one step of the resolution of the type on top of the
// stack: it pushes a type it refers to that is not resolved yet, or
// checks it and pops it.
func (c *checker) resolveTop() error {
	v := &c.stack[len(c.stack)-1]
	t, id := v.t, v.id
	switch k := t.Kind(); {
	case isModifier(k), k == KindPointer, k == KindVar:
		return c.resolveRef(v)
	case k == KindArray:
		return c.resolveArray(v)
	case isStruct(t):
		return c.resolveStruct(v)
	case k == KindDatasec:
		return c.resolveDatasec(v)
	case k == KindFunc:
		if err := c.checkFunc(id, t); err != nil {
			return err
		}
		c.pop(t.SizeType, 0)
		return nil
	case k == KindDeclTag:
		return c.resolveDeclTag(v)
	}
	return typeErr(uapi.EINVAL, id, "Unsupported resolve")
}

// resolveRef resolves a modifier, a pointer or a variable
// (btf_modifier_resolve, btf_ptr_resolve, btf_var_resolve).
func (c *checker) resolveRef(v *vertex) error {
	t, next := v.t, v.t.SizeType
	nt := c.typ(next)
	if nt == nil || sourceOnly(nt) {
		return typeErr(uapi.EINVAL, v.id, "Invalid type_id")
	}
	if !c.sink(nt) && !c.resolved(next) {
		return c.push(nt, next)
	}
	if k := t.Kind(); k != KindPointer && k != KindVar {
		// A modifier: the type it stands for, or void, a forward
		// declaration or a prototype.
		return c.finishRef(v, nt, next)
	}
	if !isVoid(nt) && isModifier(nt.Kind()) {
		// The modifier may have stopped at a pointer, when it was
		// resolved for a struct: go on from that pointer, in case it
		// leads back here.
		rid := c.resolvedID(next)
		if rt := c.typ(rid); rt != nil && !isVoid(rt) && rt.Kind() == KindPointer && !c.sink(rt) && !c.resolved(rid) {
			return c.push(rt, rid)
		}
	}
	if t.Kind() == KindVar {
		// A variable needs a type with a size.
		r, rid, _ := c.idSize(next)
		if r == nil {
			return typeErr(uapi.EINVAL, v.id, "Invalid type_id")
		}
		c.pop(rid, 0)
		return nil
	}
	return c.finishRef(v, nt, next)
}

// finishRef pops a modifier or pointer whose target is resolved: to the
// type with a size it stands for, else to void, a forward declaration or
// a prototype (a function resolves to its prototype).
func (c *checker) finishRef(v *vertex, nt *Type, next uint32) error {
	if r, rid, _ := c.idSize(next); r != nil {
		c.pop(rid, 0)
		return nil
	}
	if c.resolved(next) {
		next = c.resolvedID(next)
		nt = c.typ(next)
	}
	if nt == nil || !isVoid(nt) && nt.Kind() != KindForward && nt.Kind() != KindFuncProto {
		return typeErr(uapi.EINVAL, v.id, "Invalid type_id")
	}
	c.pop(next, 0)
	return nil
}

func (c *checker) resolveArray(v *vertex) error {
	t := v.t
	elem, index, n := t.Data[0], t.Data[1], t.Data[2]
	it := c.typ(index)
	if noSize(it) || sourceOnly(it) {
		return typeErr(uapi.EINVAL, v.id, "Invalid index")
	}
	if !c.sink(it) && !c.resolved(index) {
		return c.push(it, index)
	}
	if r, _, _ := c.idSize(index); r == nil || r.Kind() != KindInt || !intRegular(r) {
		return typeErr(uapi.EINVAL, v.id, "Invalid index")
	}
	et := c.typ(elem)
	if noSize(et) || sourceOnly(et) {
		return typeErr(uapi.EINVAL, v.id, "Invalid elem")
	}
	if !c.sink(et) && !c.resolved(elem) {
		return c.push(et, elem)
	}
	r, rid, size := c.idSize(elem)
	switch {
	case r == nil:
		return typeErr(uapi.EINVAL, v.id, "Invalid elem")
	case r.Kind() == KindInt && !intRegular(r):
		return typeErr(uapi.EINVAL, v.id, "Invalid array of int")
	case n != 0 && size > 0xffffffff/n:
		return typeErr(uapi.EINVAL, v.id, "Array size overflows U32_MAX")
	}
	c.pop(rid, size*n)
	return nil
}

func (c *checker) resolveStruct(v *vertex) error {
	t := v.t
	n := entries(t, 3)
	if v.next > 0 && v.next <= n {
		// The member it stopped at is resolved now: check it.
		mtype := t.Data[3*(v.next-1)+1]
		if !c.resolved(mtype) {
			return typeErr(uapi.EINVAL, v.id, "Invalid member")
		}
		if err := c.checkMember(v.id, t, mtype, t.Data[3*(v.next-1)+2]); err != nil {
			return err
		}
	}
	for i := v.next; i < n; i++ {
		mtype := t.Data[3*i+1]
		mt := c.typ(mtype)
		if noSize(mt) || sourceOnly(mt) {
			return typeErr(uapi.EINVAL, v.id, "Invalid member")
		}
		if !c.sink(mt) && !c.resolved(mtype) {
			v.next = i + 1
			return c.push(mt, mtype)
		}
		if err := c.checkMember(v.id, t, mtype, t.Data[3*i+2]); err != nil {
			return err
		}
	}
	c.pop(0, 0)
	return nil
}

// checkMember checks a member of struct st against the type it is of
// (the kinds' check_member and check_kflag_member).
func (c *checker) checkMember(id uint32, st *Type, mtype, off uint32) error {
	mt := c.typ(mtype)
	fail := func(msg string) error { return typeErr(uapi.EINVAL, id, "%s", msg) }
	kflag := st.KindFlag()
	size := st.SizeType
	k := mt.Kind()
	if isModifier(k) {
		r, rid, _ := c.idSize(mtype)
		if r == nil {
			return fail("Invalid member")
		}
		mt, mtype, k = r, rid, r.Kind()
	}
	switch k {
	case KindInt:
		v := word(mt, 0)
		bits, ioff := v&0xff, v>>16&0xff
		if kflag {
			if !intRegular(mt) {
				return fail("Invalid member base type")
			}
			nr, boff := off>>24, off&0xffffff
			if nr == 0 {
				if boff&7 != 0 {
					return fail("Invalid member offset")
				}
				nr = bits
			} else if nr > bits {
				return fail("Invalid member bitfield_size")
			}
			return memberBytes(size, boff, nr, fail)
		}
		if 0xffffffff-off < ioff {
			return fail("bits_offset exceeds U32_MAX")
		}
		return memberBytes(size, off+ioff, bits, fail)
	case KindEnum, KindEnum64:
		if !kflag {
			return c.memberFits(size, off, mt.SizeType, fail)
		}
		boff, nr := off&0xffffff, off>>24
		if nr == 0 {
			if boff&7 != 0 {
				return fail("Member is not byte aligned")
			}
			nr = 32 // sizeof(int), whatever the enum's size
		} else if nr > 32 {
			return fail("Invalid member bitfield_size")
		}
		if size < roundUpBytes(boff+nr) {
			return fail("Member exceeds struct_size")
		}
		return nil
	case KindPointer, KindArray, KindStruct, KindUnion, KindFloat:
		if kflag && off>>24 != 0 {
			return fail("Invalid member bitfield_size")
		}
		switch k {
		case KindPointer:
			return c.memberFits(size, off, 8, fail)
		case KindArray:
			_, _, asize := c.idSize(mtype)
			return c.memberFits(size, off, asize, fail)
		case KindFloat:
			align := uint64(min(8, mt.SizeType)) * 8
			if align == 0 || uint64(off)%align != 0 {
				return fail("Member is not properly aligned")
			}
			if uint64(off/8)+uint64(mt.SizeType) > uint64(size) {
				return fail("Member exceeds struct_size")
			}
			return nil
		}
		return c.memberFits(size, off, mt.SizeType, fail)
	}
	return typeErr(uapi.EINVAL, id, "Unsupported check_member")
}

// memberFits is the check of a byte-aligned member of msize bytes at bit
// offset off, in a struct of size bytes (with the kernel's unsigned
// arithmetic).
func (c *checker) memberFits(size, off, msize uint32, fail func(string) error) error {
	if off&7 != 0 {
		return fail("Member is not byte aligned")
	}
	if size-off>>3 < msize {
		return fail("Member exceeds struct_size")
	}
	return nil
}

// memberBytes checks that nr bits at bit offset off fit in size bytes.
func memberBytes(size, off, nr uint32, fail func(string) error) error {
	copyBits := nr + off&7
	if copyBits > bitsPerU128 {
		return fail("nr_copy_bits exceeds 128")
	}
	if size < off>>3 || size-off>>3 < roundUpBytes(copyBits) {
		return fail("Member exceeds struct_size")
	}
	return nil
}

func (c *checker) resolveDatasec(v *vertex) error {
	t := v.t
	c.mode = modeTBD
	for i := v.next; i < entries(t, 3); i++ {
		typ, size := t.Data[3*i], t.Data[3*i+2]
		vt := c.typ(typ)
		if vt == nil || isVoid(vt) || vt.Kind() != KindVar {
			return typeErr(uapi.EINVAL, v.id, "Not a VAR kind member")
		}
		if !c.sink(vt) && !c.resolved(typ) {
			// The kernel goes on after this variable once it is
			// resolved: its size is not checked against its type.
			v.next = i + 1
			return c.push(vt, typ)
		}
		r, _, tsize := c.idSize(vt.SizeType)
		if r == nil {
			return typeErr(uapi.EINVAL, v.id, "Invalid type")
		}
		if size < tsize {
			return typeErr(uapi.EINVAL, v.id, "Invalid size")
		}
	}
	c.pop(0, 0)
	return nil
}

func (c *checker) resolveDeclTag(v *vertex) error {
	t, next := v.t, v.t.SizeType
	nt := c.typ(next)
	if nt == nil || isVoid(nt) || !(nt.Kind() == KindFunc || isStruct(nt) || nt.Kind() == KindVar || nt.Kind() == KindTypedef) {
		return typeErr(uapi.EINVAL, v.id, "Invalid type_id")
	}
	if !c.sink(nt) && !c.resolved(next) {
		return c.push(nt, next)
	}
	if idx := int32(word(t, 0)); idx != -1 {
		if nt.Kind() == KindVar || nt.Kind() == KindTypedef {
			return typeErr(uapi.EINVAL, v.id, "Invalid component_idx")
		}
		vlen := 0
		if isStruct(nt) {
			vlen = nt.Vlen()
		} else if proto := c.typ(nt.SizeType); proto != nil {
			vlen = proto.Vlen()
		}
		if uint32(idx) >= uint32(vlen) {
			return typeErr(uapi.EINVAL, v.id, "Invalid component_idx")
		}
	}
	c.pop(next, 0)
	return nil
}

// checkFunc is btf_func_check: a function's type is a prototype whose
// parameters all have names.
func (c *checker) checkFunc(id uint32, t *Type) error {
	proto := c.typ(t.SizeType)
	if proto == nil || isVoid(proto) || proto.Kind() != KindFuncProto {
		return typeErr(uapi.EINVAL, id, "Invalid type_id")
	}
	for i := 0; i < entries(proto, 2); i++ {
		if proto.Data[2*i] == 0 && proto.Data[2*i+1] != 0 {
			return typeErr(uapi.EINVAL, id, "Invalid arg#%d", i+1)
		}
	}
	return nil
}

// checkProto is btf_func_proto_check: the return type and parameters of
// a prototype have sizes (void returns, and a last nameless void
// parameter is "..."), and the parameters' names are identifiers.
func (c *checker) checkProto(id uint32, t *Type) error {
	if ret := t.SizeType; ret != 0 {
		rt := c.typ(ret)
		if rt == nil || sourceOnly(rt) {
			return typeErr(uapi.EINVAL, id, "Invalid return type")
		}
		if needsResolve(rt) && !c.resolved(ret) {
			if err := c.resolve(rt, ret); err != nil {
				return err
			}
		}
		if r, _, _ := c.idSize(ret); r == nil {
			return typeErr(uapi.EINVAL, id, "Invalid return type")
		}
	}
	n := entries(t, 2)
	if n == 0 {
		return nil
	}
	if t.Data[2*n-1] == 0 {
		if t.Data[2*n-2] != 0 {
			return typeErr(uapi.EINVAL, id, "Invalid arg#%d", n)
		}
		n--
	}
	for i := 0; i < n; i++ {
		name, typ := t.Data[2*i], t.Data[2*i+1]
		at := c.typ(typ)
		if at == nil || sourceOnly(at) || name != 0 && !c.validIdent(name) {
			return typeErr(uapi.EINVAL, id, "Invalid arg#%d", i+1)
		}
		if needsResolve(at) && !c.resolved(typ) {
			if err := c.resolve(at, typ); err != nil {
				return err
			}
		}
		if r, _, _ := c.idSize(typ); r == nil {
			return typeErr(uapi.EINVAL, id, "Invalid arg#%d", i+1)
		}
	}
	return nil
}

// checkTypeTags is btf_check_type_tags: in a chain of modifiers, type
// tags come first.
func (c *checker) checkTypeTags() error {
	good := c.start - 1
	for i := c.start; i < c.end; i++ {
		t := c.typ(i)
		if t == nil {
			return invalid("[%d] no such type", i)
		}
		if !isModifier(t.Kind()) {
			continue
		}
		inTags := t.Kind() == KindTypeTag
		for cur, limit := i, maxResolveDepth; !isVoid(t) && isModifier(t.Kind()); limit-- {
			if limit == 0 {
				return errors.Wrap(uapi.ELOOP, "Max chain length or cycle detected")
			}
			if t.Kind() == KindTypeTag {
				if !inTags {
					return invalid("Type tags don't precede modifiers")
				}
			} else {
				inTags = false
			}
			if cur <= good {
				break
			}
			cur = t.SizeType
			if t = c.typ(cur); t == nil {
				return invalid("[%d] no such type", cur)
			}
		}
		good = i
	}
	return nil
}
