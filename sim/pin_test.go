package sim_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/bpffs"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

const pinDir = bpffs.Mount + "/test"

func pinKernel(t *testing.T) *sim.Kernel {
	t.Helper()
	k := newKernel(t, nil)
	if err := k.BPFFS().Mkdir(pinDir); err != nil {
		t.Fatal(err)
	}
	return k
}

// A pinned map lives on with its contents after its last fd closes, and
// goes once the pin does.
func TestPinnedMapOutlivesItsFDsUntilUnpinned(t *testing.T) {
	k := pinKernel(t)
	m := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 4})
	if err := m.Put(uint32(1), uint32(42)); err != nil {
		t.Fatal(err)
	}
	id := m.ID()
	if err := m.Pin(pinDir + "/m"); err != nil {
		t.Fatal(err)
	}
	if !m.IsPinned() {
		t.Fatal("IsPinned is false after Pin")
	}
	m.Close()
	k.SynchronizeRCU()
	got, err := k.LoadPinnedMap(pinDir+"/m", nil)
	if err != nil {
		t.Fatal(err)
	}
	var v uint32
	if err := got.Lookup(uint32(1), &v); err != nil || v != 42 || got.ID() != id {
		t.Fatalf("pinned map: id %d (want %d), value %d, %v", got.ID(), id, v, err)
	}
	if err := got.Unpin(); err != nil || got.IsPinned() {
		t.Fatalf("Unpin: %v, still pinned %v", err, got.IsPinned())
	}
	if err := got.Unpin(); err != nil {
		t.Fatalf("second Unpin: %v", err)
	}
	got.Close()
	k.SynchronizeRCU()
	if slices.Contains(k.MapIDs(), id) {
		t.Fatalf("map %d still exists after its pin and fds are gone", id)
	}
	if _, err := k.LoadPinnedMap(pinDir+"/m", nil); !errors.Is(err, uapi.ENOENT) {
		t.Fatalf("loading a removed pin: %v", err)
	}
}

// Pin on a pinned handle moves the pin; the same path is a no-op.
func TestPinAgainMovesThePin(t *testing.T) {
	k := pinKernel(t)
	m := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	for _, p := range []string{pinDir + "/a", pinDir + "/a", pinDir + "/b"} {
		if err := m.Pin(p); err != nil {
			t.Fatalf("Pin(%s): %v", p, err)
		}
	}
	entries, err := k.BPFFS().List(pinDir)
	if err != nil || len(entries) != 1 || entries[0].Name != "b" {
		t.Fatalf("entries %v, %v; want only b", entries, err)
	}
	other := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err := other.Pin(pinDir + "/b"); !errors.Is(err, uapi.EEXIST) {
		t.Fatalf("pinning over another pin: %v", err)
	}
	if err := m.Unpin(); err != nil {
		t.Fatal(err)
	}
}

// A pin holds a user reference: a prog array keeps its programs while
// pinned, though every fd on it is closed (map_release_uref waits).
func TestPinnedProgArrayKeepsItsPrograms(t *testing.T) {
	k := pinKernel(t)
	pa := newProgArrayMap(t, k, 1)
	target := load(t, k, ebpf.XDP, retProg(7))
	if err := pa.Put(uint32(0), target); err != nil {
		t.Fatal(err)
	}
	if err := pa.Pin(pinDir + "/jmp"); err != nil {
		t.Fatal(err)
	}
	pa.Close()
	got, err := k.LoadPinnedMap(pinDir+"/jmp", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	var id uint32
	if err := got.Lookup(uint32(0), &id); err != nil || id != target.ID() {
		t.Fatalf("slot 0 after the fds closed: id %d, %v; want %d", id, err, target.ID())
	}
	caller := load(t, k, ebpf.XDP, tailCaller(got.FD(), 0, 1))
	if r, err := caller.Run(&sim.RunOptions{Data: make([]byte, 14)}); err != nil || r != 7 {
		t.Fatalf("tail call through the pinned array: %d, %v", r, err)
	}
}

// A collection's maps pinned by name are created and pinned by the first
// load and reused, contents and all, by the next; a pinned map that does
// not match the spec is refused.
func TestCollectionsShareMapsPinnedByName(t *testing.T) {
	k := pinKernel(t)
	spec := func(valueSize uint32) *ebpf.CollectionSpec {
		return &ebpf.CollectionSpec{
			Maps: map[string]*ebpf.MapSpec{
				"counts": {Name: "counts", Type: ebpf.Array, KeySize: 4, ValueSize: valueSize, MaxEntries: 2, Pinning: ebpf.PinByName},
			},
			Programs: map[string]*ebpf.ProgramSpec{
				"count": {Name: "count", Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{
					asm.StoreImm(asm.RFP, -4, 0, asm.Word),
					asm.LoadMapPtr(asm.R1, 0).WithReference("counts"),
					asm.Mov.Reg(asm.R2, asm.RFP),
					asm.Add.Imm(asm.R2, -4),
					asm.FnMapLookupElem.Call(),
					asm.JEq.Imm(asm.R0, 0, "out"),
					asm.Mov.Imm(asm.R1, 1),
					asm.StoreXAdd(asm.R0, asm.R1, asm.Word),
					asm.Mov.Imm(asm.R0, 2).WithSymbol("out"),
					asm.Return(),
				}},
			},
		}
	}
	opts := sim.CollectionOptions{Maps: sim.MapOptions{PinPath: pinDir}}
	run := func() uint32 {
		t.Helper()
		c, err := k.NewCollectionWithOptions(spec(4), opts)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Programs["count"].Run(&sim.RunOptions{Data: make([]byte, 14)}); err != nil {
			t.Fatal(err)
		}
		var n uint32
		if err := c.Maps["counts"].Lookup(uint32(0), &n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if a, b := run(), run(); a != 1 || b != 2 {
		t.Fatalf("counts after two loads: %d then %d, want 1 then 2", a, b)
	}
	_, err := k.NewCollectionWithOptions(spec(8), opts)
	if !errors.Is(err, ebpf.ErrMapIncompatible) || !errors.Is(err, uapi.EINVAL) {
		t.Fatalf("a pinned map of another value size: %v", err)
	}
	if _, err := k.NewCollection(spec(4)); !errors.Is(err, uapi.EINVAL) {
		t.Fatalf("pin by name without a PinPath: %v", err)
	}
	if err := k.BPFFS().Remove(pinDir + "/counts"); err != nil {
		t.Fatal(err)
	}
}

// What a pin path refuses, with the kernel's errnos.
func TestPinErrnos(t *testing.T) {
	k := pinKernel(t)
	m := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	for _, c := range []struct {
		path string
		want error
	}{
		{"", uapi.EINVAL},
		{pinDir + "/missing/m", uapi.ENOENT},
		{pinDir + "/m.1", uapi.EPERM},
		{"/tmp/m", uapi.EPERM},
		{pinDir, uapi.EEXIST},
	} {
		if err := m.Pin(c.path); !errors.Is(err, c.want) {
			t.Errorf("Pin(%q): %v, want %v", c.path, err, c.want)
		}
	}
	if _, err := k.LoadPinnedMap(pinDir, nil); !errors.Is(err, uapi.EACCES) {
		t.Errorf("loading a directory: %v", err)
	}
	// The flags are checked before the path is looked up.
	if _, err := k.LoadPinnedMap(pinDir+"/m", &ebpf.LoadPinOptions{ReadOnly: true, WriteOnly: true}); !errors.Is(err, uapi.EINVAL) {
		t.Errorf("read-only and write-only pin options: %v", err)
	}
	if m.IsPinned() {
		t.Error("a map whose pins all failed says it is pinned")
	}
}
