package vmlinuxbtf

import (
	"bytes"
	"testing"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// The embedded types must be the running kernel's, when it is the kernel
// they were taken from; another release may have changed them (new
// helpers in bpf_func_id, say), which go generate would take in.
func TestTypesAreTheRunningKernels(t *testing.T) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	if r := unix.ByteSliceToString(u.Release[:]); r != KernelRelease {
		t.Skipf("vmlinux.btf comes from Linux %s, this is %s: nothing to compare with (go generate ./sim/vmlinuxbtf takes this kernel's)", KernelRelease, r)
	}
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skipf("this kernel has no BTF: %v", err)
	}
	embedded, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range Names {
		want, err := TypeByName(kernel, name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := TypeByName(embedded, name)
		if err != nil {
			t.Fatal(err)
		}
		if w, g := encode(t, want), encode(t, got); !bytes.Equal(w, g) {
			t.Errorf("%s differs from the kernel's: %v, want %v", name, got, want)
		}
	}
}

// encode is t and what it refers to as BTF, for comparison.
func encode(t *testing.T, typ btf.Type) []byte {
	t.Helper()
	b, err := btf.NewBuilder([]btf.Type{btf.Copy(typ)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
