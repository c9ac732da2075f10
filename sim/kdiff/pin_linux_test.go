//go:build linux

package kdiff

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/bpffs"
)

// pinWorld is a BPF filesystem and the maps on it: this machine's, or
// bpfsim's.
type pinWorld interface {
	newMap(spec *ebpf.MapSpec) (pinMap, error)
	load(path string) (pinMap, error)
	mkdir(path string) error
	remove(path string) error
	// tailTarget loads an XDP program returning 7 and stores it in slot
	// 0 of m; the program's own handle is closed.
	tailTarget(m pinMap) error
}

type pinMap interface {
	Pin(string) error
	Unpin() error
	Close() error
	Lookup(key, value any) error
}

// kernelPins is this machine's BPF filesystem mounted at mnt: the paths
// the test names under bpffs.Mount (bpfsim's) are there.
type kernelPins struct{ mnt string }

func (w kernelPins) path(p string) string {
	rel, err := filepath.Rel(bpffs.Mount, p)
	if err != nil {
		return p
	}
	return filepath.Join(w.mnt, rel)
}

func (w kernelPins) newMap(spec *ebpf.MapSpec) (pinMap, error) {
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, err
	}
	return kernelPinMap{m, w}, nil
}
func (w kernelPins) load(p string) (pinMap, error) {
	m, err := ebpf.LoadPinnedMap(w.path(p), nil)
	if err != nil {
		return nil, err
	}
	return kernelPinMap{m, w}, nil
}
func (w kernelPins) mkdir(p string) error  { return os.Mkdir(w.path(p), 0o700) }
func (w kernelPins) remove(p string) error { return syscall.Rmdir(w.path(p)) }

// kernelPinMap is a kernel map whose pins take bpfsim's paths.
type kernelPinMap struct {
	*ebpf.Map
	w kernelPins
}

func (m kernelPinMap) Pin(p string) error { return m.Map.Pin(m.w.path(p)) }

func (kernelPins) tailTarget(m pinMap) error {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 7), asm.Return()}})
	if err != nil {
		return err
	}
	defer p.Close()
	return m.(kernelPinMap).Put(uint32(0), p)
}

type simPins struct{ k *sim.Kernel }

func (w simPins) newMap(spec *ebpf.MapSpec) (pinMap, error) { return w.k.NewMap(spec) }
func (w simPins) load(p string) (pinMap, error)             { return w.k.LoadPinnedMap(p, nil) }
func (w simPins) mkdir(p string) error                      { return w.k.BPFFS().Mkdir(p) }
func (w simPins) remove(p string) error                     { return w.k.BPFFS().Remove(p) }
func (w simPins) tailTarget(m pinMap) error {
	p, err := w.k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 7), asm.Return()}})
	if err != nil {
		return err
	}
	defer p.Close()
	return m.(*sim.Map).Put(uint32(0), p)
}

// The same moves on this machine's BPF filesystem and on bpfsim's: every
// errno must agree, and so must what a pinned prog array still holds once
// every fd on it is closed.
func TestPinningMatchesKernel(t *testing.T) {
	if _, err := OpenKernel(); err != nil {
		t.Skipf("kernel comparison skipped: this machine cannot load BPF programs: %v", err)
	}
	kdir, done, err := KernelBPFFS(t.TempDir())
	if err != nil {
		t.Skipf("kernel comparison skipped: %v", err)
	}
	defer func() {
		if err := done(); err != nil {
			t.Error(err)
		}
	}()
	kern := kernelPins{filepath.Dir(kdir)}
	dir := filepath.Join(bpffs.Mount, filepath.Base(kdir)) // the same, as bpfsim names it
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	worlds := []pinWorld{kern, simPins{k}}
	if err := worlds[1].mkdir(dir); err != nil {
		t.Fatal(err)
	}
	array := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}
	progArray := &ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 1}
	type state struct{ a, b, pa pinMap }
	states := make([]state, len(worlds))
	steps := []struct {
		name string
		do   func(w pinWorld, s *state) error
	}{
		{"create two arrays", func(w pinWorld, s *state) (err error) {
			if s.a, err = w.newMap(array); err != nil {
				return err
			}
			s.b, err = w.newMap(array)
			return err
		}},
		{"pin", func(w pinWorld, s *state) error { return s.a.Pin(filepath.Join(dir, "a")) }},
		{"pin another map at the same name", func(w pinWorld, s *state) error { return s.b.Pin(filepath.Join(dir, "a")) }},
		{"pin into a missing directory", func(w pinWorld, s *state) error { return s.b.Pin(filepath.Join(dir, "none", "b")) }},
		{"pin under a pinned map", func(w pinWorld, s *state) error { return s.b.Pin(filepath.Join(dir, "a", "b")) }},
		{"pin with a dot in the name", func(w pinWorld, s *state) error { return s.b.Pin(filepath.Join(dir, "b.1")) }},
		{"make a directory", func(w pinWorld, s *state) error { return w.mkdir(filepath.Join(dir, "sub")) }},
		{"make it again", func(w pinWorld, s *state) error { return w.mkdir(filepath.Join(dir, "sub")) }},
		{"pin into it", func(w pinWorld, s *state) error { return s.b.Pin(filepath.Join(dir, "sub", "b")) }},
		{"remove it while not empty", func(w pinWorld, s *state) error { return w.remove(filepath.Join(dir, "sub")) }},
		{"move the pin out", func(w pinWorld, s *state) error { return s.b.Pin(filepath.Join(dir, "b")) }},
		{"remove it, now empty", func(w pinWorld, s *state) error { return w.remove(filepath.Join(dir, "sub")) }},
		{"load a directory", func(w pinWorld, s *state) error { _, err := w.load(dir); return err }},
		{"load nothing", func(w pinWorld, s *state) error { _, err := w.load(filepath.Join(dir, "none")); return err }},
		{"load the pin", func(w pinWorld, s *state) error {
			m, err := w.load(filepath.Join(dir, "a"))
			if err == nil {
				m.Close()
			}
			return err
		}},
		{"pin a prog array holding a program, close its fd", func(w pinWorld, s *state) (err error) {
			if s.pa, err = w.newMap(progArray); err != nil {
				return err
			}
			if err := w.tailTarget(s.pa); err != nil {
				return err
			}
			if err := s.pa.Pin(filepath.Join(dir, "jmp")); err != nil {
				return err
			}
			return s.pa.Close()
		}},
		{"its slot, through the pin", func(w pinWorld, s *state) error {
			m, err := w.load(filepath.Join(dir, "jmp"))
			if err != nil {
				return err
			}
			defer m.Close()
			var id uint32
			return m.Lookup(uint32(0), &id)
		}},
		{"unpin and close", func(w pinWorld, s *state) error {
			for _, m := range []pinMap{s.a, s.b} {
				if err := m.Unpin(); err != nil {
					return err
				}
				m.Close()
			}
			m, err := w.load(filepath.Join(dir, "jmp"))
			if err != nil {
				return err
			}
			defer m.Close()
			return m.Unpin()
		}},
		{"load the removed pin", func(w pinWorld, s *state) error { _, err := w.load(filepath.Join(dir, "a")); return err }},
	}
	for _, st := range steps {
		var errs [2]error
		for i, w := range worlds {
			errs[i] = st.do(w, &states[i])
		}
		if ke, se := errnoOf(errs[0]), errnoOf(errs[1]); ke != se || (errs[0] == nil) != (errs[1] == nil) {
			t.Errorf("%s: kernel %v, bpfsim %v", st.name, errs[0], errs[1])
		} else {
			t.Logf("%s: %v", st.name, orNil(ke))
		}
	}
}

func orNil(e syscall.Errno) any {
	if e == 0 {
		return "ok"
	}
	return e
}
