package sim

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// applyCOREFixup reads fixups from their String form, since cilium/ebpf's
// COREFixup.Apply works on Linux only: on Linux, the two must rewrite
// every relocated instruction of the CO-RE test object alike, poisoned
// ones included.
func TestApplyCOREFixupRewritesAsCiliumsApply(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skipf("cilium/ebpf's COREFixup.Apply, the reference, works on Linux only; this is %s", runtime.GOOS)
	}
	spec, err := ebpf.LoadCollectionSpec("testdata/core.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	k, err := NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	target, err := k.KernelBTF()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for name, ps := range spec.Programs {
		var relos []*btf.CORERelocation
		var insns []asm.Instruction
		for _, ins := range ps.Instructions {
			if r := btf.CORERelocationMetadata(&ins); r != nil {
				relos, insns = append(relos, r), append(insns, ins)
			}
		}
		local, _ := btf.NewBuilder(nil, nil)
		fixups, err := btf.CORERelocate(relos, []*btf.Spec{target}, binary.LittleEndian, local.Add)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for i, f := range fixups {
			ours, theirs := insns[i], insns[i]
			if err := applyCOREFixup(&ours, f); err != nil {
				t.Fatalf("%s: %s: %v", name, relos[i], err)
			}
			if err := f.Apply(&theirs); err != nil {
				t.Fatalf("%s: %s: cilium/ebpf: %v", name, relos[i], err)
			}
			var o, th bytes.Buffer
			if _, err := ours.Marshal(&o, binary.LittleEndian); err != nil {
				t.Fatal(err)
			}
			if _, err := theirs.Marshal(&th, binary.LittleEndian); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(o.Bytes(), th.Bytes()) {
				t.Errorf("%s: %s (%s): bpfsim made %v, cilium/ebpf %v", name, relos[i], f.String(), ours, theirs)
			}
			seen[f.String()[:len(f.String())-len(afterEq(f.String()))]] = true
			seen["poison"] = seen["poison"] || afterEq(f.String()) == "poison"
		}
	}
	// The object exercises offsets, sizes, existence, enum values and
	// poison; a rebuilt object that lost some would test less.
	for _, kind := range []string{"byte_off=", "byte_sz=", "field_exists=", "type_exists=", "type_size=", "enumval_exists=", "enumval_value=", "poison"} {
		if !seen[kind] {
			t.Errorf("no %s fixup in the object", kind)
		}
	}
}

func afterEq(s string) string {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '=' {
			return s[i+1:]
		}
	}
	return s
}
