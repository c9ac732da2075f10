package vmlinuxbtf

import (
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// WriteHeader writes the named types of spec as a C header, as
// `bpftool btf dump file ... format c` writes vmlinux.h: every struct,
// union, enum and typedef, each after what it needs by value, structs
// only pointed to declared ahead, and all records under
// preserve_access_index, so that a program built against the header
// reaches every field through a CO-RE relocation. Functions, variables
// and data sections are left out, as bpftool leaves them.
//
// The header lays fields out by C's rules; WriteHeader refuses (EINVAL) a
// struct whose BTF offsets those rules would not give, rather than write
// a header that lies about the layout.
func WriteHeader(w io.Writer, spec *btf.Spec) error {
	h := &header{state: map[btf.Type]declState{}, names: map[string]bool{}}
	for t, err := range spec.All() {
		if err != nil {
			return err
		}
		switch v := t.(type) {
		case *btf.Struct, *btf.Union, *btf.Enum, *btf.Typedef:
			if t.TypeName() != "" {
				if err := h.define(t); err != nil {
					return err
				}
			}
		case *btf.Fwd:
			h.forward(v.Name, v.Kind == btf.FwdUnion)
		}
	}
	_, err := io.WriteString(w, headerStart+h.b.String()+headerEnd)
	return err
}

const headerStart = `#ifndef __VMLINUX_H__
#define __VMLINUX_H__

#ifndef BPF_NO_PRESERVE_ACCESS_INDEX
#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)
#endif

`

const headerEnd = `#ifndef BPF_NO_PRESERVE_ACCESS_INDEX
#pragma clang attribute pop
#endif

#endif /* __VMLINUX_H__ */
`

type declState uint8

const (
	undeclared declState = iota
	declared             // a forward declaration was written
	defining             // its dependencies are being written
	defined
)

type header struct {
	b     strings.Builder
	state map[btf.Type]declState
	fwd   map[string]bool
	names map[string]bool // kind and name of the types defined
}

// define writes the definition of the named type t after what it needs.
// A type of the same kind and name as one written already is taken for
// that one: BTF built in pieces (the kernel's, then types registered
// later) may hold a type twice.
func (h *header) define(t btf.Type) error {
	if s := h.state[t]; s == defined || s == defining {
		return nil
	}
	key := fmt.Sprintf("%T %s", t, t.TypeName())
	if h.names[key] {
		h.state[t] = defined
		return nil
	}
	h.names[key] = true
	h.state[t] = defining
	switch v := t.(type) {
	case *btf.Struct:
		if err := h.membersNeeds(v.Members); err != nil {
			return err
		}
		if err := checkLayout(v.Name, v.Size, v.Members, false); err != nil {
			return errors.Wrap(uapi.EINVAL, err.Error())
		}
		fmt.Fprintf(&h.b, "struct %s %s;\n\n", v.Name, h.body(v.Members, false, 0))
	case *btf.Union:
		if err := h.membersNeeds(v.Members); err != nil {
			return err
		}
		if err := checkLayout(v.Name, v.Size, v.Members, true); err != nil {
			return errors.Wrap(uapi.EINVAL, err.Error())
		}
		fmt.Fprintf(&h.b, "union %s %s;\n\n", v.Name, h.body(v.Members, true, 0))
	case *btf.Enum:
		fmt.Fprintf(&h.b, "enum %s %s;\n\n", v.Name, enumBody(v, 0))
	case *btf.Typedef:
		// A typedef of a struct needs only the struct's name.
		if err := h.needsThrough(v.Type); err != nil {
			return err
		}
		fmt.Fprintf(&h.b, "typedef %s;\n\n", h.decl(v.Type, v.Name, 0))
	}
	h.state[t] = defined
	return nil
}

// forward declares a struct or union ahead of its definition.
func (h *header) forward(name string, union bool) {
	kw := "struct"
	if union {
		kw = "union"
	}
	if h.fwd == nil {
		h.fwd = map[string]bool{}
	}
	if !h.fwd[kw+" "+name] {
		h.fwd[kw+" "+name] = true
		fmt.Fprintf(&h.b, "%s %s;\n\n", kw, name)
	}
}

func (h *header) membersNeeds(ms []btf.Member) error {
	for _, m := range ms {
		if err := h.needs(m.Type); err != nil {
			return err
		}
	}
	return nil
}

// record returns the name and members of a struct or union.
func record(t btf.Type) (name string, members []btf.Member, union, ok bool) {
	switch v := t.(type) {
	case *btf.Struct:
		return v.Name, v.Members, false, true
	case *btf.Union:
		return v.Name, v.Members, true, true
	}
	return "", nil, false, false
}

// needs writes what a declaration of type t by value needs first.
func (h *header) needs(t btf.Type) error {
	if name, members, _, ok := record(t); ok {
		if name == "" {
			return h.membersNeeds(members)
		}
		return h.define(t)
	}
	switch v := t.(type) {
	case *btf.Enum:
		if v.Name != "" {
			return h.define(v)
		}
	case *btf.Typedef:
		return h.define(v)
	case *btf.Fwd:
		h.forward(v.Name, v.Kind == btf.FwdUnion)
	case *btf.Array:
		return h.needs(v.Type)
	case *btf.Pointer:
		return h.needsThrough(v.Target)
	case *btf.FuncProto:
		if err := h.needsThrough(v.Return); err != nil {
			return err
		}
		for _, p := range v.Params {
			if err := h.needsThrough(p.Type); err != nil {
				return err
			}
		}
	case *btf.Const, *btf.Volatile, *btf.Restrict, *btf.TypeTag:
		return h.needs(unqualified(v))
	}
	return nil
}

// needsThrough is needs for a type only pointed to (or named by a
// typedef): a named struct or union needs only a declaration.
func (h *header) needsThrough(t btf.Type) error {
	if name, _, union, ok := record(t); ok && name != "" {
		if h.state[t] == undeclared {
			h.forward(name, union)
			h.state[t] = declared
		}
		return nil
	}
	switch t.(type) {
	case *btf.Const, *btf.Volatile, *btf.Restrict, *btf.TypeTag:
		return h.needsThrough(unqualified(t))
	}
	return h.needs(t)
}

// unqualified is the type a qualifier or type tag applies to.
func unqualified(t btf.Type) btf.Type {
	switch v := t.(type) {
	case *btf.Const:
		return v.Type
	case *btf.Volatile:
		return v.Type
	case *btf.Restrict:
		return v.Type
	case *btf.TypeTag:
		return v.Type
	}
	return t
}

// body is a struct or union's braces, members indented one level below
// depth.
func (h *header) body(ms []btf.Member, union bool, depth int) string {
	var b strings.Builder
	b.WriteString("{\n")
	in := strings.Repeat("\t", depth+1)
	var end btf.Bits // where the previous bitfield ended
	for _, m := range ms {
		// BTF has no member for the unnamed bitfields that pad
		// between named ones; C needs them back.
		if !union && m.BitfieldSize != 0 && m.Offset > end && end != 0 {
			fmt.Fprintf(&b, "%s%s: %d;\n", in, h.decl(m.Type, "", depth+1), m.Offset-end)
		}
		end = m.Offset + m.BitfieldSize
		b.WriteString(in + h.decl(m.Type, m.Name, depth+1))
		if m.BitfieldSize != 0 {
			fmt.Fprintf(&b, ": %d", m.BitfieldSize)
		}
		b.WriteString(";\n")
	}
	b.WriteString(strings.Repeat("\t", depth) + "}")
	return b.String()
}

func enumBody(e *btf.Enum, depth int) string {
	var b strings.Builder
	b.WriteString("{\n")
	in := strings.Repeat("\t", depth+1)
	for _, v := range e.Values {
		fmt.Fprintf(&b, "%s%s = %s,\n", in, v.Name, enumValue(e, v.Value))
	}
	b.WriteString(strings.Repeat("\t", depth) + "}")
	return b.String()
}

// enumValue writes an enumerator's value as C reads it back for an enum
// of e's size and signedness.
func enumValue(e *btf.Enum, v uint64) string {
	switch {
	case e.Signed && e.Size == 8:
		return fmt.Sprint(int64(v))
	case e.Signed:
		return fmt.Sprint(int32(v))
	case v > math.MaxUint32:
		return fmt.Sprintf("%dULL", v)
	case v > math.MaxInt32:
		return fmt.Sprintf("%dU", v)
	}
	return fmt.Sprint(v)
}

// decl is the C declaration of name as type t (name may be empty, for an
// abstract declarator, or carry the pointers and array bounds of an outer
// declarator).
func (h *header) decl(t btf.Type, name string, depth int) string {
	join := func(typ string) string {
		if name == "" {
			return typ
		}
		return typ + " " + name
	}
	switch v := t.(type) {
	case nil, *btf.Void:
		return join("void")
	case *btf.Int:
		return join(v.Name)
	case *btf.Float:
		return join(v.Name)
	case *btf.Typedef:
		return join(v.Name)
	case *btf.Fwd:
		if v.Kind == btf.FwdUnion {
			return join("union " + v.Name)
		}
		return join("struct " + v.Name)
	case *btf.Struct:
		if v.Name != "" {
			return join("struct " + v.Name)
		}
		return join("struct " + h.body(v.Members, false, depth))
	case *btf.Union:
		if v.Name != "" {
			return join("union " + v.Name)
		}
		return join("union " + h.body(v.Members, true, depth))
	case *btf.Enum:
		if v.Name != "" {
			return join("enum " + v.Name)
		}
		return join("enum " + enumBody(v, depth))
	case *btf.Const:
		return h.qualified("const", v.Type, name, depth)
	case *btf.Volatile:
		return h.qualified("volatile", v.Type, name, depth)
	case *btf.Restrict:
		return h.qualified("restrict", v.Type, name, depth)
	case *btf.TypeTag:
		return h.decl(v.Type, name, depth)
	case *btf.Pointer:
		inner := "*" + name
		switch btf.QualifiedType(v.Target).(type) {
		case *btf.Array, *btf.FuncProto:
			inner = "(" + inner + ")"
		}
		return h.decl(v.Target, inner, depth)
	case *btf.Array:
		return h.decl(v.Type, fmt.Sprintf("%s[%d]", name, v.Nelems), depth)
	case *btf.FuncProto:
		var params []string
		for i, p := range v.Params {
			if i == len(v.Params)-1 && p.Type == nil || isVoid(p.Type) && i > 0 {
				params = append(params, "...")
				continue
			}
			params = append(params, h.decl(p.Type, p.Name, depth))
		}
		if len(params) == 0 {
			params = []string{"void"}
		}
		return h.decl(v.Return, name+"("+strings.Join(params, ", ")+")", depth)
	}
	return join(fmt.Sprintf("/* %T */ int", t))
}

// qualified places a qualifier: after the star of a qualified pointer
// (int *const p), before any other type (const int x).
func (h *header) qualified(q string, t btf.Type, name string, depth int) string {
	if p, ok := t.(*btf.Pointer); ok {
		inner := "*" + q + " " + name
		switch btf.QualifiedType(p.Target).(type) {
		case *btf.Array, *btf.FuncProto:
			inner = "(" + inner + ")"
		}
		return h.decl(p.Target, inner, depth)
	}
	return q + " " + h.decl(t, name, depth)
}

func isVoid(t btf.Type) bool {
	_, ok := t.(*btf.Void)
	return ok
}

// checkLayout refuses members whose offsets, or a size, C's layout rules
// would not give: the header could not describe such a type faithfully
// without packing or alignment attributes, which it does not write.
func checkLayout(name string, size uint32, ms []btf.Member, union bool) error {
	var off, align uint64 = 0, 1
	for _, m := range ms {
		a := alignOf(m.Type)
		align = max(align, a)
		if union {
			if m.Offset != 0 {
				return errors.Errorf("union %s: member %s at bit %d", name, m.Name, m.Offset)
			}
			continue
		}
		if m.BitfieldSize != 0 {
			// Bitfields pack as the compiler sees fit; only their
			// order is checked.
			if uint64(m.Offset) < off {
				return errors.Errorf("struct %s: bitfield %s overlaps", name, m.Name)
			}
			off = uint64(m.Offset) + uint64(m.BitfieldSize)
			continue
		}
		natural := (off + 8*a - 1) / (8 * a) * (8 * a)
		if uint64(m.Offset) != natural {
			return errors.Errorf("struct %s: member %s is at bit %d, C would place it at %d", name, m.Name, m.Offset, natural)
		}
		sz, err := btf.Sizeof(m.Type)
		if err != nil {
			return errors.Wrapf(err, "struct %s: member %s", name, m.Name)
		}
		off = natural + 8*uint64(sz)
	}
	if union {
		return nil
	}
	if total := (off + 8*align - 1) / (8 * align) * align; total != uint64(size) {
		return errors.Errorf("struct %s is %d bytes, C would make it %d", name, size, total)
	}
	return nil
}

// alignOf is C's alignment of t on BPF targets: a scalar's size, a
// record's largest member alignment.
func alignOf(t btf.Type) uint64 {
	switch v := btf.UnderlyingType(t).(type) {
	case *btf.Array:
		return alignOf(v.Type)
	case *btf.Struct:
		a := uint64(1)
		for _, m := range v.Members {
			a = max(a, alignOf(m.Type))
		}
		return a
	case *btf.Union:
		a := uint64(1)
		for _, m := range v.Members {
			a = max(a, alignOf(m.Type))
		}
		return a
	}
	sz, err := btf.Sizeof(t)
	if err != nil || sz == 0 {
		return 1
	}
	return uint64(min(sz, 8))
}
