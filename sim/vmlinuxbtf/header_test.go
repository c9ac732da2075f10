package vmlinuxbtf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// The header, compiled by clang for BPF, must give every struct, union and
// enum the layout and values the BTF it was written from has: a program
// built against it relocates against the simulated kernel truthfully.
func TestHeaderCompilesToTheTypesItWasWrittenFrom(t *testing.T) {
	clang, err := exec.LookPath("clang")
	if err != nil {
		t.Skip("clang is not installed (scripts/test-deps.sh installs it): the header cannot be compiled")
	}
	spec, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	var hdr bytes.Buffer
	if err := WriteHeader(&hdr, spec); err != nil {
		t.Fatal(err)
	}
	// One global of each named type, so that clang emits its BTF.
	var src strings.Builder
	src.WriteString("#include \"vmlinux.h\"\n")
	var want []btf.Type
	for typ, err := range spec.All() {
		if err != nil {
			t.Fatal(err)
		}
		var kw string
		switch typ.(type) {
		case *btf.Struct:
			kw = "struct "
		case *btf.Union:
			kw = "union "
		case *btf.Enum:
			kw = "enum "
		default:
			continue
		}
		if typ.TypeName() == "" {
			continue
		}
		fmt.Fprintf(&src, "%s%s v%d __attribute__((section(\".data\"), used));\n", kw, typ.TypeName(), len(want))
		want = append(want, typ)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{"vmlinux.h": hdr.Bytes(), "all.c": []byte(src.String())} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	obj := filepath.Join(dir, "all.o")
	if out, err := exec.Command(clang, "-g", "-O2", "-target", "bpf", "-Wall", "-Werror", "-c", filepath.Join(dir, "all.c"), "-o", obj).CombinedOutput(); err != nil {
		t.Fatalf("clang: %v\n%s\nheader:\n%s", err, out, hdr.String())
	}
	compiled, err := btf.LoadSpec(obj)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		got, err := TypeByName(compiled, w.TypeName())
		if err != nil {
			t.Errorf("%s: %v", w.TypeName(), err)
			continue
		}
		if g, w := layout(got), layout(w); g != w {
			t.Errorf("compiled from the header:\n%s\nthe BTF it was written from:\n%s", g, w)
		}
	}
	if len(want) < len(Names) {
		t.Fatalf("only %d types compared", len(want))
	}
}

// layout describes what a program sees of t: its size, each member's
// name, offset, bitfield width and size, or each enumerator's value.
func layout(t btf.Type) string {
	var b strings.Builder
	var members []btf.Member
	switch v := t.(type) {
	case *btf.Struct:
		fmt.Fprintf(&b, "struct %s size %d", v.Name, v.Size)
		members = v.Members
	case *btf.Union:
		fmt.Fprintf(&b, "union %s size %d", v.Name, v.Size)
		members = v.Members
	case *btf.Enum:
		fmt.Fprintf(&b, "enum %s size %d", v.Name, v.Size)
		for _, e := range v.Values {
			fmt.Fprintf(&b, "; %s=%d", e.Name, e.Value)
		}
	}
	for _, m := range members {
		sz, _ := btf.Sizeof(m.Type)
		fmt.Fprintf(&b, "; %s@%d:%d size %d", m.Name, m.Offset, m.BitfieldSize, sz)
		if inner := btf.UnderlyingType(m.Type); m.Name == "" {
			fmt.Fprintf(&b, " {%s}", layout(inner))
		}
	}
	return b.String()
}

func TestDeclaratorsReadAsC(t *testing.T) {
	i32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	ch := &btf.Int{Name: "char", Size: 1, Encoding: btf.Char}
	arr := &btf.Array{Index: i32, Type: i32, Nelems: 4}
	fn := &btf.FuncProto{Return: i32, Params: []btf.FuncParam{{Name: "a", Type: i32}, {Name: "s", Type: &btf.Pointer{Target: &btf.Const{Type: ch}}}}}
	s := &btf.Struct{Name: "s", Size: 4, Members: []btf.Member{{Name: "x", Type: i32}}}
	for _, tc := range []struct {
		typ  btf.Type
		want string
	}{
		{i32, "int v"},
		{&btf.Pointer{Target: i32}, "int *v"},
		{&btf.Pointer{Target: &btf.Pointer{Target: ch}}, "char **v"},
		{&btf.Array{Index: i32, Type: &btf.Pointer{Target: ch}, Nelems: 2}, "char *v[2]"},
		{&btf.Pointer{Target: arr}, "int (*v)[4]"},
		{&btf.Array{Index: i32, Type: arr, Nelems: 3}, "int v[3][4]"},
		{&btf.Pointer{Target: fn}, "int (*v)(int a, const char *s)"},
		{&btf.Pointer{Target: &btf.FuncProto{Return: &btf.Void{}}}, "void (*v)(void)"},
		{&btf.Const{Type: &btf.Pointer{Target: i32}}, "int *const v"},
		{&btf.Volatile{Type: i32}, "volatile int v"},
		{&btf.Pointer{Target: s}, "struct s *v"},
		{&btf.Typedef{Name: "u32", Type: i32}, "u32 v"},
	} {
		h := &header{state: map[btf.Type]declState{}, names: map[string]bool{}}
		if got := h.decl(tc.typ, "v", 0); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.typ, got, tc.want)
		}
	}
}

// A struct whose BTF places a member where C would not (packed, or
// aligned by an attribute the BTF does not record) is refused: the header
// would describe another layout.
func TestHeaderRefusesLayoutsCDoesNotGive(t *testing.T) {
	u8 := &btf.Int{Name: "unsigned char", Size: 1}
	u32 := &btf.Int{Name: "unsigned int", Size: 4}
	for name, s := range map[string]*btf.Struct{
		"packed":   {Name: "packed", Size: 5, Members: []btf.Member{{Name: "a", Type: u8}, {Name: "b", Type: u32, Offset: 8}}},
		"overlong": {Name: "overlong", Size: 16, Members: []btf.Member{{Name: "a", Type: u32}}},
	} {
		b, err := btf.NewBuilder([]btf.Type{s}, nil)
		if err != nil {
			t.Fatal(err)
		}
		spec, err := b.Spec()
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteHeader(&bytes.Buffer{}, spec); !errors.Is(err, unix.EINVAL) {
			t.Errorf("%s: %v, want EINVAL", name, err)
		}
	}
}

// Whatever BTF cilium/ebpf parses, WriteHeader writes or refuses with
// an error; it never panics.
func FuzzWriteHeader(f *testing.F) {
	f.Add(raw)
	f.Fuzz(func(t *testing.T, blob []byte) {
		spec, err := btf.LoadSpecFromReader(bytes.NewReader(blob))
		if err != nil {
			return
		}
		_ = WriteHeader(io.Discard, spec)
	})
}
