package sim_test

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/vmlinuxbtf"
)

// userBTF is raw BTF as a program's loader would load it: an int and a
// struct of it.
func userBTF(t *testing.T) []byte {
	t.Helper()
	i := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	b, err := btf.NewBuilder([]btf.Type{&btf.Struct{Name: "counter", Size: 4, Members: []btf.Member{{Name: "n", Type: i}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestBTFObjectsHaveTheKernelsIDsAndLifetimes(t *testing.T) {
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	// vmlinux's BTF is there from boot, id 1.
	if ids := k.BTFIDs(); !slices.Equal(ids, []btf.ID{1}) {
		t.Fatalf("a new kernel's BTF ids: %v, want [1]", ids)
	}
	vm, err := k.NewBTFHandleFromID(1)
	if err != nil {
		t.Fatal(err)
	}
	info, err := vm.Info()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := k.RawKernelBTF()
	if err != nil {
		t.Fatal(err)
	}
	if !info.IsVmlinux() || info.IsModule() || info.Size != uint32(len(raw)) {
		t.Errorf("id 1: %+v, want vmlinux of %d bytes", info, len(raw))
	}
	vm.Close()
	if _, err := k.NewBTFHandleFromID(1); err != nil {
		t.Errorf("vmlinux's BTF went with a handle: %v", err)
	}

	// BTF from user space: checked, given the next id, gone with its
	// last handle, and its id not reused at once.
	h, err := k.NewBTFHandle(userBTF(t))
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := h.Info(); h.ID() != 2 || info.IsKernel || info.Name != "" || info.Size != uint32(len(userBTF(t))) {
		t.Errorf("user BTF: id %d, %+v", h.ID(), info)
	}
	spec, err := h.Spec(nil)
	if err != nil {
		t.Fatal(err)
	}
	var counter *btf.Struct
	if err := spec.TypeByName("counter", &counter); err != nil {
		t.Errorf("its types read back: %v", err)
	}
	h.Close()
	if _, err := k.NewBTFHandleFromID(2); !errors.Is(err, unix.ENOENT) {
		t.Errorf("id 2 after its last handle closed: %v, want ENOENT", err)
	}
	h, err = k.NewBTFHandle(userBTF(t))
	if err != nil {
		t.Fatal(err)
	}
	if h.ID() != 3 {
		t.Errorf("the next BTF got id %d, want 3", h.ID())
	}
	h.Close()

	// BTF the kernel's checks refuse.
	bad := userBTF(t)
	bad[bytes.Index(bad, []byte("counter"))+6] = '-' // "counte-": no identifier
	if _, err := k.NewBTFHandle(bad); !errors.Is(err, unix.EINVAL) {
		t.Errorf("BTF with an invalid name: %v, want EINVAL", err)
	}

	// A module's BTF: an id of its own, its types split on vmlinux's, kept
	// by a handle after the module is unloaded.
	m, err := k.LoadModule(buildModule(t, vmlinuxbtf.Raw()).spec)
	if err != nil {
		t.Fatal(err)
	}
	if m.BTFID() != 4 {
		t.Errorf("the module's BTF id is %d, want 4", m.BTFID())
	}
	mh, err := k.NewBTFHandleFromID(m.BTFID())
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := mh.Info(); !info.IsModule() || info.Name != "mod" {
		t.Errorf("module BTF: %+v", info)
	}
	ms, err := mh.Spec(nil)
	if err != nil {
		t.Fatal(err)
	}
	var stats *btf.Struct
	if err := ms.TypeByName("mod_stats", &stats); err != nil {
		t.Errorf("the module's types: %v", err)
	}
	if err := k.UnloadModule("mod"); err != nil {
		t.Fatal(err)
	}
	if ids := k.BTFIDs(); !slices.Equal(ids, []btf.ID{1, 4}) {
		t.Errorf("ids with a handle on an unloaded module's BTF: %v, want [1 4]", ids)
	}
	mh.Close()
	if ids := k.BTFIDs(); !slices.Equal(ids, []btf.ID{1}) {
		t.Errorf("ids at the end: %v, want [1]", ids)
	}
}

// A type's id in the kernel's BTF never changes, as vmlinux's does not:
// not when subsystems register their functions, tracepoints and kfuncs
// later, even for types only reached through others (an int under a
// typedef), which the BTF builder numbers after the types it was given.
func TestKernelBTFIDsNeverMove(t *testing.T) {
	k := newKernel(t, nil)
	ids := func() map[string]btf.TypeID {
		t.Helper()
		spec, err := k.KernelBTF()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]btf.TypeID{}
		for typ, err := range spec.All() {
			if err != nil {
				t.Fatal(err)
			}
			if n := typ.TypeName(); n != "" && out[n] == 0 {
				if out[n], err = spec.TypeID(typ); err != nil {
					t.Fatal(err)
				}
			}
		}
		return out
	}
	before := ids()
	k.TracedFunc("bpf_fentry_test1") // registers the test functions
	k.Tracepoint("task_newtask")     // and the task tracepoints
	if err := k.RegisterTracepoint(&sim.Tracepoint{Name: "bpfsim_ids", Proto: &btf.FuncProto{Return: &btf.Void{},
		Params: []btf.FuncParam{{Name: "x", Type: &btf.Int{Name: "short unsigned int", Size: 2}}}}}); err != nil {
		t.Fatal(err)
	}
	after := ids()
	for n, id := range before {
		if after[n] != id {
			t.Errorf("%s moved from id %d to %d", n, id, after[n])
		}
	}
	if len(before) < 50 {
		t.Errorf("only %d named types compared", len(before))
	}
}
