// Package splitbtf simulates split BTF with a distilled base, the
// "resilient split BTF" of Linux 6.11 (seed 002).
//
// A kernel module's BTF is split BTF: its type ids continue those of the
// kernel's vmlinux BTF, and its types refer to vmlinux types by id. Those
// ids change from one kernel build to the next, so a module built outside
// the kernel tree carries a distilled base (the .BTF.base section): just
// enough of each vmlinux type it refers to (a name, a kind, a size) for
// the kernel to find the same type in whatever vmlinux BTF it runs, and
// renumber the module's references at load. That renumbering is Relocate,
// kernel/bpf/btf_relocate.c (the same file as libbpf's
// tools/lib/bpf/btf_relocate.c); making a distilled base is Distill,
// libbpf's btf__distill_base in tools/lib/bpf/btf.c, which pahole's
// distilled_base feature calls when it builds a module.
//
// Before it relocates a module's BTF, the kernel checks it as it checks
// any BTF loaded into it; that is Check, kernel/bpf/btf.c's verifier.
//
// The package works on raw BTF (Parse, Raw), as the kernel does, so that
// its output is byte for byte what the kernel and libbpf make of the same
// input: the type records, their ids and their string offsets.
package splitbtf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Magic is BTF_MAGIC, in the first two bytes of raw BTF in the byte order
// of its producer; bpfsim reads little-endian BTF, as the kernel reads
// only its own order.
const Magic = 0xeB9F

// headerLen is sizeof(struct btf_header).
const headerLen = 24

// maxNameOffset is BTF_MAX_NAME_OFFSET: string offsets have 24 bits.
const maxNameOffset = 0xffffff

// Kind is a BTF kind (BTF_KIND_*).
type Kind uint8

// The kinds, numbered as in include/uapi/linux/btf.h.
const (
	KindUnknown Kind = iota
	KindInt
	KindPointer
	KindArray
	KindStruct
	KindUnion
	KindEnum
	KindForward
	KindTypedef
	KindVolatile
	KindConst
	KindRestrict
	KindFunc
	KindFuncProto
	KindVar
	KindDatasec
	KindFloat
	KindDeclTag
	KindTypeTag
	KindEnum64
	maxKind = KindEnum64
)

var kindNames = [...]string{"UNKNOWN", "INT", "PTR", "ARRAY", "STRUCT", "UNION", "ENUM", "FWD",
	"TYPEDEF", "VOLATILE", "CONST", "RESTRICT", "FUNC", "FUNC_PROTO", "VAR", "DATASEC", "FLOAT",
	"DECL_TAG", "TYPE_TAG", "ENUM64"}

// String is the kind's name as bpftool prints it.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("KIND(%d)", uint8(k))
}

// Type is one raw type record: struct btf_type and the words that follow
// it (an int's encoding, an array's struct btf_array, a struct's members,
// a prototype's parameters...).
type Type struct {
	NameOff uint32
	// Info holds vlen (bits 0-15), the kind (bits 24-28) and kind_flag
	// (bit 31).
	Info uint32
	// SizeType is the union of size and type: the size of an int, enum,
	// struct, union, float or datasec, the type others refer to.
	SizeType uint32
	Data     []uint32
}

// Info packs a type's info word, as BTF_INFO_ENC does.
func Info(kind Kind, kflag bool, vlen int) uint32 {
	i := uint32(kind)<<24 | uint32(vlen)&0xffff
	if kflag {
		i |= 1 << 31
	}
	return i
}

// Kind is the type's kind.
func (t *Type) Kind() Kind { return Kind(t.Info >> 24 & 0x1f) }

// Vlen is the number of members, values, parameters or variables.
func (t *Type) Vlen() int { return int(t.Info & 0xffff) }

// KindFlag is the info word's kind_flag.
func (t *Type) KindFlag() bool { return t.Info>>31 != 0 }

func (t *Type) composite() bool { k := t.Kind(); return k == KindStruct || k == KindUnion }

// dataWords is the number of words after struct btf_type for a record of
// kind k with vlen entries (btf_type_size), or -1 for an unknown kind.
func dataWords(k Kind, vlen int) int {
	switch k {
	case KindInt, KindVar, KindDeclTag:
		return 1
	case KindPointer, KindForward, KindTypedef, KindVolatile, KindConst, KindRestrict,
		KindFunc, KindFloat, KindTypeTag:
		return 0
	case KindArray:
		return 3
	case KindStruct, KindUnion, KindDatasec, KindEnum64:
		return 3 * vlen
	case KindEnum, KindFuncProto:
		return 2 * vlen
	}
	return -1
}

// idFields returns pointers to the type's fields that hold type ids, in
// the order libbpf's btf_field_iter (BTF_FIELD_ITER_IDS) visits them.
func (t *Type) idFields() []*uint32 {
	switch t.Kind() {
	case KindForward, KindConst, KindVolatile, KindRestrict, KindPointer, KindTypedef,
		KindFunc, KindVar, KindDeclTag, KindTypeTag:
		return []*uint32{&t.SizeType}
	case KindArray:
		return []*uint32{&t.Data[0], &t.Data[1]}
	case KindStruct, KindUnion:
		return strided(nil, t.Data, 3, 1)
	case KindFuncProto:
		return strided([]*uint32{&t.SizeType}, t.Data, 2, 1)
	case KindDatasec:
		return strided(nil, t.Data, 3, 0)
	}
	return nil
}

// strFields returns pointers to the type's string offsets, in the order
// of BTF_FIELD_ITER_STRS.
func (t *Type) strFields() []*uint32 {
	switch t.Kind() {
	case KindEnum, KindFuncProto:
		return strided([]*uint32{&t.NameOff}, t.Data, 2, 0)
	case KindEnum64, KindStruct, KindUnion:
		return strided([]*uint32{&t.NameOff}, t.Data, 3, 0)
	}
	return []*uint32{&t.NameOff}
}

func strided(fields []*uint32, data []uint32, stride, at int) []*uint32 {
	for i := at; i < len(data); i += stride {
		fields = append(fields, &data[i])
	}
	return fields
}

func (t Type) clone() Type {
	t.Data = append([]uint32(nil), t.Data...)
	return t
}

// BTF is one raw BTF blob: its own types and strings, and the BTF it is
// split from, if any. A base's ids start at 1 (0 is void), a split's
// where its base's end; string offsets likewise.
type BTF struct {
	Base    *BTF
	Types   []Type
	Strings []byte
	// index finds strings already in Strings (first occurrence), made
	// on first use.
	index map[string]uint32
	// layout is the framing of the raw BTF that Parse read, for Check's
	// rules on sections (which Parse, like libbpf, does not apply); nil
	// for BTF made in memory, whose framing is Raw's.
	layout *rawLayout
}

// rawLayout is a raw BTF blob's size and its header's section fields.
type rawLayout struct {
	size                                     uint64
	hdrLen, typeOff, typeLen, strOff, strLen uint32
}

// NewBase returns an empty base BTF: no types, the empty string.
func NewBase() *BTF { return &BTF{Strings: []byte{0}} }

// NewSplit returns an empty split BTF on base.
func NewSplit(base *BTF) *BTF { return &BTF{Base: base} }

// StartID is the id of the first of b's own types (btf->start_id).
func (b *BTF) StartID() uint32 {
	if b.Base == nil {
		return 1
	}
	return b.Base.TypeCount()
}

// TypeCount is btf__type_cnt: one more than the largest id.
func (b *BTF) TypeCount() uint32 { return b.StartID() + uint32(len(b.Types)) }

// StartStr is the offset of b's own strings (btf->start_str_off).
func (b *BTF) StartStr() uint32 {
	if b.Base == nil {
		return 0
	}
	return b.Base.StartStr() + uint32(len(b.Base.Strings))
}

// TypeByID returns the type with id, b's own or its bases'; nil for void
// and ids b does not have.
func (b *BTF) TypeByID(id uint32) *Type {
	for ; b != nil; b = b.Base {
		if start := b.StartID(); id >= start {
			if id-start < uint32(len(b.Types)) {
				return &b.Types[id-start]
			}
			return nil
		}
	}
	return nil
}

// Str returns the string at off, in b's strings or its bases'.
func (b *BTF) Str(off uint32) (string, bool) {
	for ; b != nil; b = b.Base {
		if start := b.StartStr(); off >= start {
			off -= start
			if off >= uint32(len(b.Strings)) {
				return "", false
			}
			s := b.Strings[off:]
			return string(s[:bytes.IndexByte(s, 0)]), true
		}
	}
	return "", false
}

// Name is the type's name, "" when it has none.
func (b *BTF) Name(t *Type) string {
	s, _ := b.Str(t.NameOff)
	return s
}

// FindStr is btf__find_str: the offset of s in b's bases or b, the first
// one it is at; ok is false when s is in neither.
func (b *BTF) FindStr(s string) (uint32, bool) {
	if b.Base != nil {
		if off, ok := b.Base.FindStr(s); ok {
			return off, true
		}
	}
	if b.index == nil {
		b.index = map[string]uint32{}
		for off := 0; off < len(b.Strings); {
			n := bytes.IndexByte(b.Strings[off:], 0)
			if n < 0 {
				break
			}
			if _, dup := b.index[string(b.Strings[off:off+n])]; !dup {
				b.index[string(b.Strings[off:off+n])] = uint32(off)
			}
			off += n + 1
		}
	}
	off, ok := b.index[s]
	return b.StartStr() + off, ok
}

// AddStr is btf__add_str: s's offset, in a base if one has it, else in
// b's own strings, where it is appended the first time.
func (b *BTF) AddStr(s string) (uint32, error) {
	if off, ok := b.FindStr(s); ok {
		return off, nil
	}
	off := uint32(len(b.Strings))
	if b.StartStr()+off+uint32(len(s)) > maxNameOffset {
		return 0, errors.Wrap(uapi.E2BIG, "BTF string section is full")
	}
	b.Strings = append(append(b.Strings, s...), 0)
	b.index[s] = off
	return b.StartStr() + off, nil
}

// AddType appends t, as it is, and returns its id.
func (b *BTF) AddType(t Type) uint32 {
	b.Types = append(b.Types, t.clone())
	return b.TypeCount() - 1
}

// Parse reads raw BTF, split from base when base is not nil, with the
// checks libbpf and the kernel make of its framing: the header, the
// sections' bounds, the string section's terminators, the records' kinds
// and lengths. Malformed BTF is EINVAL; as for the kernel, an unknown
// version or flags is ENOTSUPP and unknown non-zero header fields E2BIG.
// What the types say (ids and string offsets that resolve, and the
// kernel's other rules) is Check's, in the kernel's words; Distill and
// Relocate check ids and string offsets themselves.
func Parse(raw []byte, base *BTF) (*BTF, error) {
	le := binary.LittleEndian
	// The header's checks come in the kernel's order (btf_parse_hdr), so
	// that a blob wrong in several ways fails with the kernel's errno.
	if len(raw) < 8 {
		return nil, invalid("BTF is %d bytes, shorter than its header", len(raw))
	}
	hdrLen := le.Uint32(raw[4:])
	if uint64(hdrLen) > uint64(len(raw)) {
		return nil, invalid("BTF is %d bytes, shorter than its header (%d bytes)", len(raw), hdrLen)
	}
	if hdrLen > headerLen {
		for _, c := range raw[headerLen:hdrLen] {
			if c != 0 {
				return nil, errors.Wrap(uapi.E2BIG, "BTF header has unknown non-zero fields")
			}
		}
	}
	// A shorter header reads as if the missing fields were zero.
	var hdr [headerLen]byte
	copy(hdr[:], raw[:min(hdrLen, headerLen)])
	if m := le.Uint16(hdr[:]); m != Magic {
		if m == 0x9feb {
			return nil, invalid("BTF is big-endian; bpfsim reads little-endian BTF")
		}
		return nil, invalid("invalid BTF magic %#x", m)
	}
	if hdr[2] != 1 {
		return nil, errors.Wrapf(uapi.ENOTSUPP, "unsupported BTF version %d", hdr[2])
	}
	if hdr[3] != 0 {
		return nil, errors.Wrapf(uapi.ENOTSUPP, "unsupported BTF flags %#x", hdr[3])
	}
	if hdrLen < headerLen {
		return nil, invalid("BTF header length %d is invalid", hdrLen)
	}
	typeOff, typeLen := le.Uint32(raw[8:]), le.Uint32(raw[12:])
	strOff, strLen := le.Uint32(raw[16:]), le.Uint32(raw[20:])
	data := raw[hdrLen:]
	if typeOff%4 != 0 {
		return nil, invalid("BTF type section is not 4-byte aligned")
	}
	if uint64(typeOff)+uint64(typeLen) > uint64(strOff) || uint64(strOff)+uint64(strLen) > uint64(len(data)) {
		return nil, invalid("BTF sections overlap or run past the data")
	}
	b := &BTF{Base: base, Strings: append([]byte(nil), data[strOff:strOff+strLen]...),
		layout: &rawLayout{size: uint64(len(raw)), hdrLen: hdrLen, typeOff: typeOff, typeLen: typeLen, strOff: strOff, strLen: strLen}}
	if base == nil && (strLen == 0 || b.Strings[0] != 0) {
		return nil, invalid("base BTF's strings do not start with the empty string")
	}
	if strLen > 0 && b.Strings[strLen-1] != 0 {
		return nil, invalid("BTF's string section is not NUL-terminated")
	}
	if uint64(b.StartStr())+uint64(strLen) > maxNameOffset+1 {
		return nil, invalid("BTF's string section is too large")
	}
	types := data[typeOff : typeOff+typeLen]
	for len(types) > 0 {
		if len(types) < 12 {
			return nil, invalid("BTF type %d is cut short", b.TypeCount())
		}
		t := Type{NameOff: le.Uint32(types), Info: le.Uint32(types[4:]), SizeType: le.Uint32(types[8:])}
		k := t.Kind()
		n := dataWords(k, t.Vlen())
		if k == KindUnknown || k > maxKind || n < 0 {
			return nil, invalid("BTF type %d has unknown kind %d", b.TypeCount(), k)
		}
		if len(types) < 12+4*n {
			return nil, invalid("BTF type %d is cut short", b.TypeCount())
		}
		if n > 0 {
			t.Data = make([]uint32, n)
			for i := range t.Data {
				t.Data[i] = le.Uint32(types[12+4*i:])
			}
		}
		b.Types = append(b.Types, t)
		types = types[12+4*n:]
	}
	return b, nil
}

// validate checks that b's own types name types and strings that exist
// (libbpf's btf_validate_type does the same).
func (b *BTF) validate() error {
	n := b.TypeCount()
	for i := range b.Types {
		t := &b.Types[i]
		id := b.StartID() + uint32(i)
		if n := dataWords(t.Kind(), t.Vlen()); t.Kind() == KindUnknown || n < 0 || len(t.Data) != n {
			return invalid("BTF type %d: kind %d with %d data words", id, t.Kind(), len(t.Data))
		}
		if t.Kind() == KindForward && t.SizeType != 0 {
			// btf_fwd_check_meta: a forward declaration refers to nothing.
			return invalid("BTF type %d: forward declaration has type %d", id, t.SizeType)
		}
		for _, f := range t.idFields() {
			if *f >= n {
				return invalid("BTF type %d refers to type %d, which does not exist", id, *f)
			}
		}
		for _, f := range t.strFields() {
			if _, ok := b.Str(*f); !ok {
				return invalid("BTF type %d has invalid string offset %d", id, *f)
			}
		}
	}
	return nil
}

// Raw encodes b's own types and strings as raw BTF, in the layout libbpf's
// btf__raw_data writes: the header, the types, then the strings.
func (b *BTF) Raw() []byte {
	le := binary.LittleEndian
	typeLen := 0
	for i := range b.Types {
		typeLen += 12 + 4*len(b.Types[i].Data)
	}
	out := make([]byte, headerLen, headerLen+typeLen+len(b.Strings))
	le.PutUint16(out, Magic)
	out[2] = 1
	le.PutUint32(out[4:], headerLen)
	le.PutUint32(out[12:], uint32(typeLen))
	le.PutUint32(out[16:], uint32(typeLen))
	le.PutUint32(out[20:], uint32(len(b.Strings)))
	for i := range b.Types {
		t := &b.Types[i]
		out = le.AppendUint32(out, t.NameOff)
		out = le.AppendUint32(out, t.Info)
		out = le.AppendUint32(out, t.SizeType)
		for _, w := range t.Data {
			out = le.AppendUint32(out, w)
		}
	}
	return append(out, b.Strings...)
}

func invalid(format string, args ...any) error {
	return errors.Wrapf(uapi.EINVAL, format, args...)
}

// validateAll validates b and its bases.
func (b *BTF) validateAll() error {
	for ; b != nil; b = b.Base {
		if b.Base == nil && (len(b.Strings) == 0 || b.Strings[0] != 0) {
			return invalid("base BTF's strings do not start with the empty string")
		}
		if len(b.Strings) > 0 && b.Strings[len(b.Strings)-1] != 0 {
			return invalid("BTF's string section is not NUL-terminated")
		}
		if err := b.validate(); err != nil {
			return err
		}
	}
	return nil
}

// name is the string at off of a base BTF, "" if off is not in it, without
// a copy: the string shares b.Strings, so it is valid while b's strings
// are not changed (as during one relocation).
func (b *BTF) name(off uint32) string {
	if b.Base != nil || off >= uint32(len(b.Strings)) {
		s, _ := b.Str(off)
		return s
	}
	s := b.Strings[off:]
	n := bytes.IndexByte(s, 0)
	if n <= 0 {
		return ""
	}
	return unsafe.String(&s[0], n)
}
