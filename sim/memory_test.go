package sim_test

import (
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// A BPF_F_MMAPABLE array's memory is its values: writes through either
// side show on the other.
func TestMappedArrayMemoryIsTheValues(t *testing.T) {
	k := newKernel(t, nil)
	m := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 3, Flags: uapi.BPF_F_MMAPABLE})
	mm, err := m.Memory()
	if err != nil {
		t.Fatal(err)
	}
	if mm.Size() != 4096 || mm.ReadOnly() {
		t.Fatalf("size %d, read-only %v; want one writable page", mm.Size(), mm.ReadOnly())
	}
	// Values sit on 8-byte boundaries: element 1 at offset 8.
	if _, err := mm.WriteAt([]byte{7, 0, 0, 0}, 8); err != nil {
		t.Fatal(err)
	}
	var v uint32
	if err := m.Lookup(uint32(1), &v); err != nil || v != 7 {
		t.Fatalf("element 1 after a write to the memory: %d, %v", v, err)
	}
	if err := m.Put(uint32(2), uint32(9)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := mm.ReadAt(b, 16); err != nil || b[0] != 9 {
		t.Fatalf("memory after an update of element 2: %v, %v", b, err)
	}
	if again, _ := m.Memory(); again != mm {
		t.Fatal("a second Memory call mapped again")
	}
	// While mapped writable, the map cannot be frozen.
	if err := m.Freeze(); !errors.Is(err, uapi.EBUSY) {
		t.Fatalf("freezing a map mapped writable: %v", err)
	}
}

func TestMemoryOfMapsThatCannotBeWritten(t *testing.T) {
	k := newKernel(t, nil)
	plain := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if _, err := plain.Memory(); !errors.Is(err, ebpf.ErrNotSupported) || !errors.Is(err, uapi.EINVAL) {
		t.Fatalf("memory of an array made without BPF_F_MMAPABLE: %v", err)
	}
	frozen := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_MMAPABLE})
	if err := frozen.Freeze(); err != nil {
		t.Fatal(err)
	}
	// A frozen map's fds may no longer write, so a second freeze is
	// EPERM (map_get_sys_perms), as in the kernel.
	if err := frozen.Freeze(); !errors.Is(err, uapi.EPERM) {
		t.Fatalf("freezing twice: %v", err)
	}
	rdonly := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_MMAPABLE | uapi.BPF_F_RDONLY_PROG})
	for name, m := range map[string]*sim.Map{"frozen": frozen, "read-only for programs": rdonly} {
		mm, err := m.Memory()
		if err != nil {
			t.Fatal(err)
		}
		if !mm.ReadOnly() {
			t.Errorf("%s: mapped writable", name)
		}
		if _, err := mm.WriteAt([]byte{1}, 0); !errors.Is(err, ebpf.ErrReadOnly) {
			t.Errorf("%s: write: %v", name, err)
		}
	}
	// A read-only mapping does not keep a map from being frozen.
	if err := rdonly.Freeze(); err != nil {
		t.Errorf("freezing a map mapped read-only: %v", err)
	}
}

// A writable mapping lasts until its Memory is garbage collected, as an
// mmap lasts until munmap; then the map can be frozen.
func TestUnmappedMemoryLetsTheMapFreeze(t *testing.T) {
	k := newKernel(t, nil)
	// Not newMap: its cleanup would keep the handle, and so its Memory,
	// reachable.
	m, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_MMAPABLE})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Memory(); err != nil {
		t.Fatal(err)
	}
	clone, err := m.Clone()
	if err != nil {
		t.Fatal(err)
	}
	defer clone.Close()
	if err := clone.Freeze(); !errors.Is(err, uapi.EBUSY) {
		t.Fatalf("freezing while mapped writable: %v", err)
	}
	m.Close()
	m = nil
	for i := 0; i < 100; i++ {
		runtime.GC()
		if err := clone.Freeze(); err == nil {
			return
		}
		time.Sleep(time.Millisecond) // cleanups run on their own goroutine
	}
	t.Fatal("the map stayed mapped writable after its Memory was collected")
}

// The global variables of a collection, read and written in place: .data
// and .bss writable, .rodata read-only; the program sees what user space
// wrote and user space what the program wrote.
func TestCollectionVariables(t *testing.T) {
	k := newKernel(t, nil)
	spec, err := ebpf.LoadCollectionSpec("testdata/maps.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	c, err := k.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	verdict, longest, packets := c.Variables["verdict"], c.Variables["longest"], c.Variables["packets"]
	if verdict == nil || longest == nil || packets == nil {
		t.Fatalf("variables: %v", c.Variables)
	}
	var v uint32
	if err := verdict.Get(&v); err != nil || v != 2 || !verdict.ReadOnly() {
		t.Fatalf("verdict: %d, %v, read-only %v", v, err, verdict.ReadOnly())
	}
	if err := verdict.Set(uint32(1)); !errors.Is(err, ebpf.ErrReadOnly) {
		t.Fatalf("setting a .rodata variable: %v", err)
	}
	if err := longest.Set(uint32(100)); err != nil {
		t.Fatal(err)
	}
	if err := longest.Set(uint64(100)); !errors.Is(err, uapi.EINVAL) {
		t.Fatalf("setting 8 bytes into 4: %v", err)
	}
	for _, n := range []int{60, 120} {
		if _, err := c.Programs["count"].Run(&sim.RunOptions{Data: make([]byte, n)}); err != nil {
			t.Fatal(err)
		}
	}
	var l uint32
	var p uint64
	if err := longest.Get(&l); err != nil || l != 120 {
		t.Fatalf("longest: %d, %v; want 120 (100 set, 60 not longer, 120 longer)", l, err)
	}
	if err := packets.Get(&p); err != nil || p != 2 {
		t.Fatalf("packets: %d, %v; want 2", p, err)
	}
}
