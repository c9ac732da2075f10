package sim

import (
	"fmt"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// funcSignature renders a function's BTF type the way bpftool heads each
// function of an xlated dump (btf_dumper_type_only): "int f(void * ctx)",
// with bpftool's spacing. It returns "" for a type bpftool cannot print,
// and then bpftool prints no heading.
func funcSignature(fn *btf.Func) string {
	var b strings.Builder
	if !writeCType(&b, fn) {
		return ""
	}
	return b.String()
}

// writeCType writes t as C, each type name followed by a space.
func writeCType(b *strings.Builder, t btf.Type) bool {
	switch t := t.(type) {
	case nil, *btf.Void:
		b.WriteString("void ")
	case *btf.Int:
		b.WriteString(t.Name + " ")
	case *btf.Typedef:
		b.WriteString(t.Name + " ")
	case *btf.Float:
		b.WriteString(t.Name + " ")
	case *btf.Struct:
		b.WriteString("struct " + t.Name + " ")
	case *btf.Union:
		b.WriteString("union " + t.Name + " ")
	case *btf.Enum:
		b.WriteString("enum " + t.Name + " ")
	case *btf.Array:
		if !writeCType(b, t.Type) {
			return false
		}
		fmt.Fprintf(b, "[%d]", t.Nelems)
	case *btf.Pointer:
		if !writeCType(b, t.Target) {
			return false
		}
		b.WriteString("* ")
	case *btf.Fwd:
		kind := "struct"
		if t.Kind == btf.FwdUnion {
			kind = "union"
		}
		b.WriteString(kind + " " + t.Name + " ")
	case *btf.Volatile:
		b.WriteString("volatile ")
		return writeCType(b, t.Type)
	case *btf.Const:
		b.WriteString("const ")
		return writeCType(b, t.Type)
	case *btf.Restrict:
		b.WriteString("restrict ")
		return writeCType(b, t.Type)
	case *btf.FuncProto:
		return writeCFunc(b, t, "")
	case *btf.Func:
		proto, ok := t.Type.(*btf.FuncProto)
		return ok && writeCFunc(b, proto, t.Name)
	case *btf.Var:
		if t.Linkage == btf.StaticVar {
			b.WriteString("static ")
		}
		if !writeCType(b, t.Type) {
			return false
		}
		b.WriteString(" " + t.Name)
	case *btf.Datasec:
		fmt.Fprintf(b, "section (\"%s\") ", t.Name)
	default:
		// Type and declaration tags, among others: bpftool gives up.
		return false
	}
	return true
}

// writeCFunc writes a function's return type, name and parameters.
func writeCFunc(b *strings.Builder, proto *btf.FuncProto, name string) bool {
	if !writeCType(b, proto.Return) {
		return false
	}
	b.WriteString(name + "(")
	for i, p := range proto.Params {
		if i > 0 {
			b.WriteString(", ")
		}
		if _, vararg := p.Type.(*btf.Void); vararg || p.Type == nil {
			b.WriteString("...")
			continue
		}
		if !writeCType(b, p.Type) {
			return false
		}
		if p.Name != "" {
			b.WriteString(p.Name)
		} else if s := b.String(); strings.HasSuffix(s, " ") {
			// An unnamed parameter loses the space its type ended with.
			b.Reset()
			b.WriteString(s[:len(s)-1])
		}
	}
	b.WriteString(")")
	return true
}
