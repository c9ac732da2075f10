package sim_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// xdpReturning loads an XDP program returning ret as a fd of p.
func xdpReturning(t testing.TB, p *sim.Process, ret int32) *sim.Program {
	t.Helper()
	prog, err := p.NewProgram(&ebpf.ProgramSpec{Name: "ret", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, ret), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	return prog
}

// A pinned program stays loaded, with its id, after every fd on it is
// closed; loading the pin gives a handle that runs it, and removing the
// pin lets it go.
func TestPinnedProgramOutlivesItsFDsUntilUnpinned(t *testing.T) {
	k := pinKernel(t)
	prog := xdpReturning(t, k.InitProcess(), 2)
	id := prog.ID()
	if err := prog.Pin(pinDir + "/prog"); err != nil {
		t.Fatal(err)
	}
	if !prog.IsPinned() {
		t.Error("a pinned program says it is not pinned")
	}
	prog.Close()
	k.SynchronizeRCU()
	if ids := k.ProgramIDs(); len(ids) != 1 || ids[0] != id {
		t.Fatalf("with only its pin left, the loaded programs are %v, want [%d]", ids, id)
	}
	loaded, err := k.LoadPinnedProgram(pinDir+"/prog", nil)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.ID() != id || !loaded.IsPinned() || loaded.FD() == 0 {
		t.Errorf("the loaded pin: id %d, pinned %v, fd %d; want id %d, pinned, an fd", loaded.ID(), loaded.IsPinned(), loaded.FD(), id)
	}
	if got := runXDP(t, loaded); got != 2 {
		t.Errorf("the program loaded from its pin returns %d, want 2", got)
	}
	if got := loaded.Refs(); got != 2 {
		t.Errorf("pin and loaded handle hold %d references, want 2", got)
	}
	if err := loaded.Unpin(); err != nil {
		t.Fatal(err)
	}
	if got := runXDP(t, loaded); got != 2 {
		t.Errorf("unpinned but still open, the program returns %d, want 2", got)
	}
	loaded.Close()
	if err := k.CheckLeaks(); err != nil {
		t.Fatal(err)
	}
	if _, err := k.LoadPinnedProgram(pinDir+"/prog", nil); !errors.Is(err, uapi.ENOENT) {
		t.Errorf("loading the removed pin: %v, want ENOENT", err)
	}
	if _, err := k.NewProgramFromID(id); !errors.Is(err, uapi.ENOENT) {
		t.Errorf("opening the freed program's id: %v, want ENOENT", err)
	}
}

// Pin moves a handle's pin, and the same path again changes nothing, as
// for maps.
func TestPinProgramAgainMovesThePin(t *testing.T) {
	k := pinKernel(t)
	prog := xdpReturning(t, k.InitProcess(), 1)
	defer prog.Close()
	for _, p := range []string{pinDir + "/a", pinDir + "/a", pinDir + "/b"} {
		if err := prog.Pin(p); err != nil {
			t.Fatalf("Pin(%s): %v", p, err)
		}
	}
	entries, err := k.BPFFS().List(pinDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name != "b" || entries[0].Kind.String() != "program" {
		t.Errorf("after moving the pin, %s holds %v, want the program b alone", pinDir, entries)
	}
	if got := prog.Refs(); got != 2 {
		t.Errorf("a moved pin: %d references, want 2 (the fd's and one pin's)", got)
	}
	if err := prog.Unpin(); err != nil || prog.IsPinned() {
		t.Fatalf("Unpin: %v, pinned %v", err, prog.IsPinned())
	}
	if err := prog.Unpin(); err != nil {
		t.Errorf("unpinning an unpinned program: %v", err)
	}
}

// What pinning and loading a program refuse, with the kernel's errnos
// (progpin_linux_test.go compares them with this machine's).
func TestProgramPinErrnos(t *testing.T) {
	k := pinKernel(t)
	prog := xdpReturning(t, k.InitProcess(), 1)
	defer prog.Close()
	m := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err := m.Pin(pinDir + "/map"); err != nil {
		t.Fatal(err)
	}
	if err := prog.Pin(pinDir + "/prog"); err != nil {
		t.Fatal(err)
	}
	other := xdpReturning(t, k.InitProcess(), 1)
	defer other.Close()
	for _, c := range []struct {
		name string
		do   func() error
		want error
	}{
		{"pin at an empty path", func() error { return other.Pin("") }, uapi.EINVAL},
		{"pin in a missing directory", func() error { return other.Pin(pinDir + "/missing/p") }, uapi.ENOENT},
		{"pin at a name with a dot", func() error { return other.Pin(pinDir + "/p.1") }, uapi.EPERM},
		{"pin outside the filesystem", func() error { return other.Pin("/tmp/p") }, uapi.EPERM},
		{"pin at a taken name", func() error { return other.Pin(pinDir + "/prog") }, uapi.EEXIST},
		{"load a directory", func() error { _, err := k.LoadPinnedProgram(pinDir, nil); return err }, uapi.EACCES},
		{"load nothing", func() error { _, err := k.LoadPinnedProgram(pinDir+"/none", nil); return err }, uapi.ENOENT},
		{"load a map as a program", func() error { _, err := k.LoadPinnedProgram(pinDir+"/map", nil); return err }, uapi.EINVAL},
		{"load a program as a map", func() error { _, err := k.LoadPinnedMap(pinDir+"/prog", nil); return err }, uapi.EINVAL},
		{"load read-only and write-only", func() error {
			_, err := k.LoadPinnedProgram(pinDir+"/prog", &ebpf.LoadPinOptions{ReadOnly: true, WriteOnly: true})
			return err
		}, uapi.EINVAL},
		{"load with an unknown flag", func() error {
			_, err := k.LoadPinnedProgram(pinDir+"/prog", &ebpf.LoadPinOptions{Flags: 1 << 2})
			return err
		}, uapi.EINVAL},
		{"load a missing pin with an unknown flag", func() error {
			_, err := k.LoadPinnedProgram(pinDir+"/none", &ebpf.LoadPinOptions{Flags: 1 << 2})
			return err
		}, uapi.EINVAL},
		{"pin a closed handle", func() error {
			p := xdpReturning(t, k.InitProcess(), 1)
			p.Close()
			return p.Pin(pinDir + "/closed")
		}, uapi.EBADF},
	} {
		if err := c.do(); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if other.IsPinned() {
		t.Error("a program whose pins all failed says it is pinned")
	}
}

// A program's file has no access mode: loaded read-only or write-only, it
// runs as any.
func TestProgramLoadedReadOnlyOrWriteOnlyRuns(t *testing.T) {
	k := pinKernel(t)
	prog := xdpReturning(t, k.InitProcess(), 3)
	if err := prog.Pin(pinDir + "/prog"); err != nil {
		t.Fatal(err)
	}
	prog.Close()
	for _, opts := range []*ebpf.LoadPinOptions{nil, {}, {ReadOnly: true}, {WriteOnly: true}, {Flags: uapi.BPF_F_PATH_FD}} {
		p, err := k.LoadPinnedProgram(pinDir+"/prog", opts)
		if err != nil {
			t.Fatalf("LoadPinnedProgram(%+v): %v", opts, err)
		}
		if got := runXDP(t, p); got != 3 {
			t.Errorf("loaded with %+v, the program returns %d, want 3", opts, got)
		}
		p.Close()
	}
	if err := k.BPFFS().Remove(pinDir + "/prog"); err != nil {
		t.Fatal(err)
	}
	if err := k.CheckLeaks(); err != nil {
		t.Error(err)
	}
}

// NewProgramFromID opens a program as BPF_PROG_GET_FD_BY_ID does: a new
// fd holding a reference of its own, in the process that asks, and
// ENOENT once the program's last reference has gone.
func TestNewProgramFromID(t *testing.T) {
	for _, c := range []struct {
		name string
		// prepare returns the id to open, after doing what the case
		// needs.
		prepare func(k *sim.Kernel, prog *sim.Program) uint32
		want    error
	}{
		{"an id never given", func(k *sim.Kernel, prog *sim.Program) uint32 { return prog.ID() + 100 }, uapi.ENOENT},
		{"id 0", func(k *sim.Kernel, prog *sim.Program) uint32 { return 0 }, uapi.ENOENT},
		{"a loaded program", func(k *sim.Kernel, prog *sim.Program) uint32 { return prog.ID() }, nil},
		// The id goes as the last reference goes, before the grace
		// period ends and the program is freed.
		{"a program whose fd closed", func(k *sim.Kernel, prog *sim.Program) uint32 {
			prog.Close()
			return prog.ID()
		}, uapi.ENOENT},
		{"a program whose loader exited", func(k *sim.Kernel, prog *sim.Program) uint32 {
			prog.Process().Close()
			return prog.ID()
		}, uapi.ENOENT},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := newKernel(t, nil)
			loader := k.NewProcess()
			prog := xdpReturning(t, loader, 5)
			id := c.prepare(k, prog)
			opener := k.NewProcess()
			h, err := opener.NewProgramFromID(id)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("NewProgramFromID(%d): %v, want %v", id, err, c.want)
			}
			if h != nil {
				if h.ID() != id || h.Process() != opener || h.FD() != 3 {
					t.Errorf("the new handle: id %d, fd %d; want id %d, fd 3 of the opening process", h.ID(), h.FD(), id)
				}
				if got := runXDP(t, h); got != 5 {
					t.Errorf("the program opened by id returns %d, want 5", got)
				}
			}
			loader.Close()
			opener.Close()
			if err := k.CheckLeaks(); err != nil {
				t.Error(err)
			}
		})
	}
}

// A handle opened by id holds the program as the loader's does: the
// program lives on when the loader exits, can fill a prog array slot from
// the opening process, and goes when the last holder does.
func TestProgramOpenedByIDOutlivesItsLoader(t *testing.T) {
	k := newKernel(t, nil)
	loader, user := k.NewProcess(), k.NewProcess()
	prog := xdpReturning(t, loader, 4)
	id := prog.ID()
	h, err := user.NewProgramFromID(id)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Refs(); got != 2 {
		t.Errorf("loader and opener hold %d references, want 2", got)
	}
	loader.Close()
	if got := runXDP(t, h); got != 4 {
		t.Errorf("after the loader's exit the program returns %d, want 4", got)
	}
	if _, err := prog.Run(&sim.RunOptions{Data: make([]byte, 64)}); !errors.Is(err, uapi.EBADF) {
		t.Errorf("running through the exited loader's handle: %v, want EBADF", err)
	}
	jmp, err := user.NewMap(&ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := jmp.Put(uint32(0), h); err != nil {
		t.Fatalf("storing the program opened by id in a prog array: %v", err)
	}
	var slot uint32
	if err := jmp.Lookup(uint32(0), &slot); err != nil || slot != id {
		t.Errorf("the prog array slot: id %d, %v; want %d", slot, err, id)
	}
	h.Close()
	if got := prog.Refs(); got != 1 {
		t.Errorf("with only the slot left, %d references, want 1", got)
	}
	if again, err := user.NewProgramFromID(id); err != nil {
		t.Errorf("a program a prog array slot holds cannot be opened by id: %v", err)
	} else {
		again.Close()
	}
	user.Close() // the array's last user reference clears its slots
	if err := k.CheckLeaks(); err != nil {
		t.Error(err)
	}
	if _, err := k.NewProgramFromID(id); !errors.Is(err, uapi.ENOENT) {
		t.Errorf("opening the freed program's id: %v, want ENOENT", err)
	}
}

// Opening a program by id while its last handle closes either gets a
// reference in time or ENOENT, never a program on its way out; nothing
// leaks.
func TestNewProgramFromIDRacesTheLastClose(t *testing.T) {
	k := newKernel(t, nil)
	for range 200 {
		prog := xdpReturning(t, k.InitProcess(), 1)
		id := prog.ID()
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h, err := k.NewProcess().NewProgramFromID(id)
				switch {
				case err == nil:
					if _, err := h.Run(&sim.RunOptions{Data: make([]byte, 64)}); err != nil {
						t.Errorf("a program opened by id does not run: %v", err)
					}
					h.Close()
				case !errors.Is(err, uapi.ENOENT):
					t.Errorf("NewProgramFromID: %v, want success or ENOENT", err)
				}
			}()
		}
		prog.Close()
		wg.Wait()
	}
	if err := k.CheckLeaks(); err != nil {
		t.Error(err)
	}
}
