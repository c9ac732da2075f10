//go:build linux

package sim_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
)

// Kernel-differential tests of pinned programs and programs opened by id:
// the same moves through this machine's kernel (cilium/ebpf, a BPF
// filesystem) and through bpfsim, every outcome compared.

// progWorld is a kernel with a BPF filesystem, where programs are loaded,
// pinned and opened.
type progWorld interface {
	load(ret int32) (progHandle, error)
	loadPinned(name string, opts *ebpf.LoadPinOptions) (progHandle, error)
	fromID(id uint32) (progHandle, error)
	id(p progHandle) uint32
	run(p progHandle) (uint32, error)
	newMap(spec *ebpf.MapSpec) (userMap, error)
	loadPinnedMap(name string) (userMap, error)
	mkdir(name string) error
	unlink(name string) error
	path(name string) string
}

// progHandle is what *sim.Program and *ebpf.Program share.
type progHandle interface {
	Pin(fileName string) error
	Unpin() error
	IsPinned() bool
	Close() error
}

var retProgram = func(ret int32) *ebpf.ProgramSpec {
	return &ebpf.ProgramSpec{Name: "ret", Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, ret), asm.Return()}}
}

type kernelProgs struct{ dir string }

func (w kernelProgs) load(ret int32) (progHandle, error) { return ebpf.NewProgram(retProgram(ret)) }
func (w kernelProgs) loadPinned(name string, opts *ebpf.LoadPinOptions) (progHandle, error) {
	return ebpf.LoadPinnedProgram(w.path(name), opts)
}
func (w kernelProgs) fromID(id uint32) (progHandle, error) {
	return ebpf.NewProgramFromID(ebpf.ProgramID(id))
}
func (w kernelProgs) id(p progHandle) uint32 {
	info, err := p.(*ebpf.Program).Info()
	if err != nil {
		return 0
	}
	id, _ := info.ID()
	return uint32(id)
}
func (w kernelProgs) run(p progHandle) (uint32, error) {
	return p.(*ebpf.Program).Run(&ebpf.RunOptions{Data: make([]byte, 64)})
}
func (w kernelProgs) newMap(spec *ebpf.MapSpec) (userMap, error) { return ebpf.NewMap(spec) }
func (w kernelProgs) loadPinnedMap(name string) (userMap, error) {
	return ebpf.LoadPinnedMap(w.path(name), nil)
}
func (w kernelProgs) mkdir(name string) error  { return os.Mkdir(w.path(name), 0o700) }
func (w kernelProgs) unlink(name string) error { return removeKernelPin(w.path(name)) }
func (w kernelProgs) path(name string) string  { return filepath.Join(w.dir, name) }

type simProgs struct{ k *sim.Kernel }

func (w simProgs) load(ret int32) (progHandle, error) { return w.k.NewProgram(retProgram(ret)) }
func (w simProgs) loadPinned(name string, opts *ebpf.LoadPinOptions) (progHandle, error) {
	return w.k.LoadPinnedProgram(w.path(name), opts)
}
func (w simProgs) fromID(id uint32) (progHandle, error) { return w.k.NewProgramFromID(id) }
func (w simProgs) id(p progHandle) uint32               { return p.(*sim.Program).ID() }
func (w simProgs) run(p progHandle) (uint32, error) {
	return p.(*sim.Program).Run(&sim.RunOptions{Data: make([]byte, 64)})
}
func (w simProgs) newMap(spec *ebpf.MapSpec) (userMap, error) { return w.k.NewMap(spec) }
func (w simProgs) loadPinnedMap(name string) (userMap, error) {
	return w.k.LoadPinnedMap(w.path(name), nil)
}
func (w simProgs) mkdir(name string) error  { return w.k.BPFFS().Mkdir(w.path(name)) }
func (w simProgs) unlink(name string) error { return w.k.BPFFS().Remove(w.path(name)) }
func (w simProgs) path(name string) string  { return filepath.Join(pinDir, name) }

// progState is what one world's steps keep between them.
type progState struct {
	a, b   progHandle
	aID    uint32
	bID    uint32
	jmpIDs []uint32
}

// openRun opens a program with open, runs it, closes it and describes
// the outcome.
func openRun(w progWorld, open func() (progHandle, error)) string {
	p, err := open()
	if err != nil {
		return "open " + errnoName(err)
	}
	defer p.Close()
	ret, err := w.run(p)
	return fmt.Sprintf("run %d %s, pinned %v", ret, errnoName(err), p.IsPinned())
}

// The same pins, loads, opens by id and closes of programs on this
// machine's kernel and on bpfsim: every errno, every return value and
// every program's presence must agree.
func TestProgramPinsAndIDsMatchKernel(t *testing.T) {
	needKernel(t)
	dir := kernelBPFFS(t)
	k := newKernel(t, nil)
	if err := k.BPFFS().Mkdir(pinDir); err != nil {
		t.Fatal(err)
	}
	worlds := []progWorld{kernelProgs{dir}, simProgs{k}}
	states := make([]progState, len(worlds))
	steps := []struct {
		name string
		do   func(w progWorld, s *progState) string
	}{
		{"load two programs", func(w progWorld, s *progState) string {
			var err1, err2 error
			s.a, err1 = w.load(2)
			s.b, err2 = w.load(3)
			if err1 == nil && err2 == nil {
				s.aID, s.bID = w.id(s.a), w.id(s.b)
			}
			return errnoName(err1) + " " + errnoName(err2)
		}},
		{"pin a", func(w progWorld, s *progState) string { return errnoName(s.a.Pin(w.path("a"))) }},
		{"pin a again at the same path", func(w progWorld, s *progState) string { return errnoName(s.a.Pin(w.path("a"))) }},
		{"pin b where a is", func(w progWorld, s *progState) string { return errnoName(s.b.Pin(w.path("a"))) }},
		{"pin b in a missing directory", func(w progWorld, s *progState) string { return errnoName(s.b.Pin(w.path("none/b"))) }},
		{"pin b under a pinned program", func(w progWorld, s *progState) string { return errnoName(s.b.Pin(w.path("a/b"))) }},
		{"pin b with a dot in the name", func(w progWorld, s *progState) string { return errnoName(s.b.Pin(w.path("b.1"))) }},
		{"move a's pin to a directory and back", func(w progWorld, s *progState) string {
			return errnoName(w.mkdir("sub")) + " " + errnoName(s.a.Pin(w.path("sub/a"))) + " " +
				errnoName(w.unlink("sub")) + " " + errnoName(s.a.Pin(w.path("a"))) + " " + errnoName(w.unlink("sub"))
		}},
		{"close a, open it by id", func(w progWorld, s *progState) string {
			s.a.Close()
			return openRun(w, func() (progHandle, error) { return w.fromID(s.aID) })
		}},
		{"load a's pin", func(w progWorld, s *progState) string {
			return openRun(w, func() (progHandle, error) { return w.loadPinned("a", nil) })
		}},
		{"load a's pin read-only", func(w progWorld, s *progState) string {
			return openRun(w, func() (progHandle, error) { return w.loadPinned("a", &ebpf.LoadPinOptions{ReadOnly: true}) })
		}},
		{"load a's pin write-only", func(w progWorld, s *progState) string {
			return openRun(w, func() (progHandle, error) { return w.loadPinned("a", &ebpf.LoadPinOptions{WriteOnly: true}) })
		}},
		{"load a's pin read-only and write-only", func(w progWorld, s *progState) string {
			return openRun(w, func() (progHandle, error) {
				return w.loadPinned("a", &ebpf.LoadPinOptions{ReadOnly: true, WriteOnly: true})
			})
		}},
		{"load a's pin with an unknown flag", func(w progWorld, s *progState) string {
			return openRun(w, func() (progHandle, error) { return w.loadPinned("a", &ebpf.LoadPinOptions{Flags: 1 << 2}) })
		}},
		{"load the directory", func(w progWorld, s *progState) string {
			return openRun(w, func() (progHandle, error) { return w.loadPinned("", nil) })
		}},
		{"load nothing", func(w progWorld, s *progState) string {
			return openRun(w, func() (progHandle, error) { return w.loadPinned("none", nil) })
		}},
		// The kernel opens the object of the other kind, which
		// cilium/ebpf refuses without an errno; bpfsim says EINVAL
		// (progpin_test.go). Only the failure is compared.
		{"load a pinned map as a program", func(w progWorld, s *progState) string {
			m, err := w.newMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
			if err != nil {
				return "map " + errnoName(err)
			}
			defer m.Close()
			if err := m.Pin(w.path("m")); err != nil {
				return "pin " + errnoName(err)
			}
			defer w.unlink("m")
			_, err = w.loadPinned("m", nil)
			return fmt.Sprintf("fails %v", err != nil)
		}},
		{"load a pinned program as a map", func(w progWorld, s *progState) string {
			_, err := w.loadPinnedMap("a")
			return fmt.Sprintf("fails %v", err != nil)
		}},
		{"close b, unpinned, and open it by id", func(w progWorld, s *progState) string {
			s.b.Close()
			return openRun(w, func() (progHandle, error) { return w.fromID(s.bID) })
		}},
		{"open id 0", func(w progWorld, s *progState) string {
			return openRun(w, func() (progHandle, error) { return w.fromID(0) })
		}},
		{"a prog array filled through a handle opened by id, pinned, every fd closed", func(w progWorld, s *progState) string {
			jmp, err := w.newMap(&ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
			if err != nil {
				return "map " + errnoName(err)
			}
			h, err := w.fromID(s.aID)
			if err != nil {
				jmp.Close()
				return "open " + errnoName(err)
			}
			put := jmp.Update(uint32(0), h, ebpf.UpdateAny)
			h.Close()
			pin := jmp.Pin(w.path("jmp"))
			jmp.Close()
			return "store " + errnoName(put) + ", pin " + errnoName(pin)
		}},
		{"unpin a through a loaded handle, which stays open", func(w progWorld, s *progState) string {
			p, err := w.loadPinned("a", nil)
			if err != nil {
				return "open " + errnoName(err)
			}
			defer p.Close()
			unpin := p.Unpin()
			ret, err := w.run(p)
			return fmt.Sprintf("unpin %s, pinned %v, run %d %s", errnoName(unpin), p.IsPinned(), ret, errnoName(err))
		}},
		{"a lives on in the pinned prog array's slot", func(w progWorld, s *progState) string {
			return openRun(w, func() (progHandle, error) { return w.fromID(s.aID) })
		}},
		{"remove the prog array's pin; a goes with it", func(w progWorld, s *progState) string {
			jmp, err := w.loadPinnedMap("jmp")
			if err != nil {
				return "open " + errnoName(err)
			}
			var id uint32
			lookup := jmp.Lookup(uint32(0), &id)
			unlink := w.unlink("jmp")
			jmp.Close()
			return fmt.Sprintf("slot holds a %v %s, unlink %s", id == s.aID, errnoName(lookup), errnoName(unlink))
		}},
	}
	for _, st := range steps {
		var got [2]string
		for i, w := range worlds {
			got[i] = st.do(w, &states[i])
		}
		if got[0] != got[1] {
			t.Errorf("%s:\n kernel %s\n bpfsim %s", st.name, got[0], got[1])
		} else {
			t.Logf("%s: %s", st.name, got[0])
		}
	}
	// The prog array's slots go once its last user reference does (at
	// once in bpfsim; the kernel's release work is asynchronous), and a
	// with them.
	if err := k.CheckLeaks(); err != nil {
		t.Errorf("bpfsim: %v", err)
	}
	if _, err := k.NewProgramFromID(states[1].aID); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("bpfsim: a is still open by id after everything holding it went: %v", err)
	}
}
