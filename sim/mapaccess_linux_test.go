//go:build linux

package sim_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Kernel-differential tests of map access modes: the same maps created,
// opened (dup, by id, from a pin with every LoadPinOptions) and used
// through this machine's kernel with cilium/ebpf and through bpfsim, the
// outcome of every operation compared.

// kernelBPFFS returns an empty directory on one of this machine's BPF
// filesystems (kdiff.KernelBPFFS), undone after the test; it skips the
// test if there is none.
func kernelBPFFS(t *testing.T) string {
	t.Helper()
	dir, done, err := kdiff.KernelBPFFS(t.TempDir())
	if err != nil {
		t.Skipf("kernel comparison skipped: %v", err)
	}
	t.Cleanup(func() {
		if err := done(); err != nil {
			t.Error(err)
		}
	})
	return dir
}

// removeKernelPin removes a pin or an empty directory of this machine's
// BPF filesystem, as bpffs.FS.Remove does.
func removeKernelPin(p string) error {
	err := syscall.Unlink(p)
	if errors.Is(err, syscall.EISDIR) {
		err = syscall.Rmdir(p)
	}
	return err
}

// accessWorld is where the maps live: this machine's kernel and BPF
// filesystem, or a simulated kernel.
type accessWorld interface {
	create(spec *ebpf.MapSpec) (userMap, error)
	createPinned(spec *ebpf.MapSpec, opts ebpf.LoadPinOptions) (userMap, error)
	clone(m userMap) (userMap, error)
	fromID(m userMap) (userMap, error)
	load(name string, opts *ebpf.LoadPinOptions) (userMap, error)
	// path is where name is pinned.
	path(name string) string
	// flags are the map's flags as its info gives them.
	flags(m userMap) (uint32, error)
	memory(m userMap) (readOnly bool, err error)
}

type kernelAccess struct{ dir string }

func (w kernelAccess) create(spec *ebpf.MapSpec) (userMap, error) { return ebpf.NewMap(spec) }
func (w kernelAccess) createPinned(spec *ebpf.MapSpec, opts ebpf.LoadPinOptions) (userMap, error) {
	return ebpf.NewMapWithOptions(spec, ebpf.MapOptions{PinPath: w.dir, LoadPinOptions: opts})
}
func (w kernelAccess) clone(m userMap) (userMap, error) { return m.(*ebpf.Map).Clone() }
func (w kernelAccess) fromID(m userMap) (userMap, error) {
	info, err := m.(*ebpf.Map).Info()
	if err != nil {
		return nil, err
	}
	id, _ := info.ID()
	return ebpf.NewMapFromID(id)
}
func (w kernelAccess) load(name string, opts *ebpf.LoadPinOptions) (userMap, error) {
	return ebpf.LoadPinnedMap(w.path(name), opts)
}
func (w kernelAccess) path(name string) string { return filepath.Join(w.dir, name) }
func (w kernelAccess) flags(m userMap) (uint32, error) {
	info, err := m.(*ebpf.Map).Info()
	if err != nil {
		return 0, err
	}
	return info.Flags, nil
}
func (w kernelAccess) memory(m userMap) (bool, error) {
	mm, err := m.(*ebpf.Map).Memory()
	if err != nil {
		return false, err
	}
	return mm.ReadOnly(), nil
}

type simAccess struct {
	k   *sim.Kernel
	dir string
}

func (w simAccess) create(spec *ebpf.MapSpec) (userMap, error) { return w.k.NewMap(spec) }
func (w simAccess) createPinned(spec *ebpf.MapSpec, opts ebpf.LoadPinOptions) (userMap, error) {
	return w.k.NewMapWithOptions(spec, sim.MapOptions{PinPath: w.dir, LoadPinOptions: opts})
}
func (w simAccess) clone(m userMap) (userMap, error) { return m.(*sim.Map).Clone() }
func (w simAccess) fromID(m userMap) (userMap, error) {
	return w.k.NewMapFromID(m.(*sim.Map).ID())
}
func (w simAccess) load(name string, opts *ebpf.LoadPinOptions) (userMap, error) {
	return w.k.LoadPinnedMap(w.path(name), opts)
}
func (w simAccess) path(name string) string         { return filepath.Join(w.dir, name) }
func (w simAccess) flags(m userMap) (uint32, error) { return m.(*sim.Map).Flags(), nil }
func (w simAccess) memory(m userMap) (bool, error) {
	mm, err := m.(*sim.Map).Memory()
	if err != nil {
		return false, err
	}
	return mm.ReadOnly(), nil
}

// accessWorlds returns this machine's kernel, with a directory on a BPF
// filesystem, and a simulated kernel, or skips the test.
func accessWorlds(t *testing.T) (kernel, simulated accessWorld) {
	t.Helper()
	needKernel(t)
	dir := kernelBPFFS(t)
	k := newKernel(t, nil)
	if err := k.BPFFS().Mkdir(pinDir); err != nil {
		t.Fatal(err)
	}
	return kernelAccess{dir}, simAccess{k, pinDir}
}

// openings are the ways to get a handle on a map created (and pinned at
// "m") through the handle created.
var openings = []struct {
	name string
	open func(w accessWorld, created userMap) (userMap, error)
}{
	{"the creating fd", func(w accessWorld, m userMap) (userMap, error) { return m, nil }},
	{"a dup", func(w accessWorld, m userMap) (userMap, error) { return w.clone(m) }},
	{"by id", func(w accessWorld, m userMap) (userMap, error) { return w.fromID(m) }},
	{"the pin", func(w accessWorld, m userMap) (userMap, error) { return w.load("m", nil) }},
	{"the pin read-only", func(w accessWorld, m userMap) (userMap, error) {
		return w.load("m", &ebpf.LoadPinOptions{ReadOnly: true})
	}},
	{"the pin write-only", func(w accessWorld, m userMap) (userMap, error) {
		return w.load("m", &ebpf.LoadPinOptions{WriteOnly: true})
	}},
	{"a dup of the pin write-only", func(w accessWorld, m userMap) (userMap, error) {
		h, err := w.load("m", &ebpf.LoadPinOptions{WriteOnly: true})
		if err != nil {
			return nil, err
		}
		defer h.Close()
		return w.clone(h)
	}},
	{"the pin read-only and write-only", func(w accessWorld, m userMap) (userMap, error) {
		return w.load("m", &ebpf.LoadPinOptions{ReadOnly: true, WriteOnly: true})
	}},
	{"the pin with BPF_F_PATH_FD", func(w accessWorld, m userMap) (userMap, error) {
		return w.load("m", &ebpf.LoadPinOptions{Flags: uapi.BPF_F_PATH_FD})
	}},
	{"the pin with flag 1<<2", func(w accessWorld, m userMap) (userMap, error) {
		return w.load("m", &ebpf.LoadPinOptions{Flags: 1 << 2})
	}},
	{"the pin with every flag", func(w accessWorld, m userMap) (userMap, error) {
		return w.load("m", &ebpf.LoadPinOptions{Flags: ^uint32(0)})
	}},
	{"nothing pinned, read-only and write-only", func(w accessWorld, m userMap) (userMap, error) {
		return w.load("none", &ebpf.LoadPinOptions{ReadOnly: true, WriteOnly: true})
	}},
}

// accessCase plays one creation and one opening in w and describes what
// happened: the creation, the pin, every operation through the opened
// handle, the map's flags, a freeze through it, and an update through a
// read-write file afterwards.
func accessCase(w accessWorld, createFlags uint32, opening int) string {
	var out []string
	note := func(what string, err error) { out = append(out, what+" "+errnoName(err)) }
	m, err := w.create(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 4, Flags: createFlags})
	note("create", err)
	if err != nil {
		return strings.Join(out, ", ")
	}
	defer m.Close()
	note("pin", m.Pin(w.path("m")))
	rw, err := w.fromID(m)
	note("open by id", err)
	if err != nil {
		return strings.Join(out, ", ")
	}
	defer rw.Close()
	note("set key 0", rw.Update(uint32(0), uint32(7), ebpf.UpdateAny))
	h, err := openings[opening].open(w, m)
	note("open", err)
	if err != nil {
		return strings.Join(out, ", ")
	}
	if h != m {
		defer h.Close()
	}
	out = append(out, accessOps(h))
	flags, err := w.flags(h)
	out = append(out, fmt.Sprintf("map flags %#x %s", flags, errnoName(err)))
	note("freeze", h.Freeze())
	note("update by id after", rw.Update(uint32(0), uint32(8), ebpf.UpdateAny))
	return strings.Join(out, ", ")
}

// Every operation through files opened every way on maps created with
// and without BPF_F_RDONLY and BPF_F_WRONLY ends as in this machine's
// kernel, and the map's flags never show the access mode.
func TestMapAccessModesMatchKernel(t *testing.T) {
	kw, sw := accessWorlds(t)
	cases := 0
	for _, flags := range []uint32{0, uapi.BPF_F_RDONLY, uapi.BPF_F_WRONLY, uapi.BPF_F_RDONLY | uapi.BPF_F_WRONLY, uapi.BPF_F_RDONLY | uapi.BPF_F_NO_PREALLOC} {
		for i, o := range openings {
			var got [2]string
			for j, w := range []accessWorld{kw, sw} {
				got[j] = accessCase(w, flags, i)
				// Each case pins afresh.
				removePin(t, w, "m")
			}
			cases++
			if got[0] != got[1] {
				t.Errorf("created with flags %#x, opened through %s:\n kernel %s\n bpfsim %s", flags, o.name, got[0], got[1])
			} else {
				t.Logf("flags %#x, %s: %s", flags, o.name, got[0])
			}
		}
	}
	t.Logf("%d cases compared", cases)
}

// removePin removes a pin the case may have left.
func removePin(t *testing.T, w accessWorld, name string) {
	t.Helper()
	var err error
	switch w := w.(type) {
	case kernelAccess:
		err = removeKernelPin(w.path(name))
	case simAccess:
		err = w.k.BPFFS().Remove(w.path(name))
	}
	if err != nil && !errors.Is(err, uapi.ENOENT) {
		t.Fatal(err)
	}
}

// The mappings of a BPF_F_MMAPABLE array through its creating file, by
// its creation flags, as in this machine's kernel with cilium/ebpf.
func TestMapMemoryAccessMatchesKernel(t *testing.T) {
	kw, sw := accessWorlds(t)
	for _, flags := range []uint32{0, uapi.BPF_F_RDONLY, uapi.BPF_F_WRONLY, uapi.BPF_F_RDONLY_PROG, uapi.BPF_F_RDONLY | uapi.BPF_F_RDONLY_PROG} {
		var got [2]string
		for j, w := range []accessWorld{kw, sw} {
			m, err := w.create(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_MMAPABLE | flags})
			if err != nil {
				got[j] = "create " + errnoName(err)
				continue
			}
			ro, err := w.memory(m)
			got[j] = fmt.Sprintf("memory %s, read-only %v", errnoName(err), ro)
			m.Close()
		}
		if got[0] != got[1] {
			t.Errorf("flags %#x: kernel %s, bpfsim %s", flags, got[0], got[1])
		}
	}
}

// Maps pinned by name: a spec asking for BPF_F_RDONLY is not compatible
// with the map it pinned (the map's flags do not show it), and
// MapOptions.LoadPinOptions open a reused pin with their mode.
func TestPinByNameAccessMatchesKernel(t *testing.T) {
	kw, sw := accessWorlds(t)
	hash := &ebpf.MapSpec{Name: "counts", Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 4, Pinning: ebpf.PinByName}
	ro := &ebpf.MapSpec{Name: "ro", Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 4, Flags: uapi.BPF_F_RDONLY, Pinning: ebpf.PinByName}
	steps := []struct {
		name string
		do   func(w accessWorld) string
	}{
		{"a read-only spec, created then reused", func(w accessWorld) string {
			first, err := w.createPinned(ro, ebpf.LoadPinOptions{})
			if err != nil {
				return "create " + errnoName(err)
			}
			defer first.Close()
			again, err := w.createPinned(ro, ebpf.LoadPinOptions{})
			if err == nil {
				again.Close()
			}
			return fmt.Sprintf("%s; reuse: incompatible %v", accessOps(first), errors.Is(err, ebpf.ErrMapIncompatible))
		}},
		{"created, then reused read-only and write-only", func(w accessWorld) string {
			var out []string
			for _, opts := range []ebpf.LoadPinOptions{{ReadOnly: true}, {ReadOnly: true}, {WriteOnly: true}, {ReadOnly: true, WriteOnly: true}} {
				m, err := w.createPinned(hash, opts)
				if err != nil {
					out = append(out, "open "+errnoName(err))
					continue
				}
				out = append(out, accessOps(m))
				m.Close()
			}
			return strings.Join(out, "; ")
		}},
	}
	for _, st := range steps {
		k, s := st.do(kw), st.do(sw)
		if k != s {
			t.Errorf("%s:\n kernel %s\n bpfsim %s", st.name, k, s)
		}
	}
	for _, w := range []accessWorld{kw, sw} {
		removePin(t, w, "ro")
		removePin(t, w, "counts")
	}
}

// Inner maps: the access mode a map or its template was created with is
// not part of what map_meta_equal compares.
func TestInnerMapAccessFlagsMatchKernel(t *testing.T) {
	kw, sw := accessWorlds(t)
	for _, c := range []struct{ template, inner uint32 }{
		{0, uapi.BPF_F_RDONLY},
		{uapi.BPF_F_WRONLY, 0},
		{uapi.BPF_F_RDONLY, uapi.BPF_F_WRONLY},
		{0, uapi.BPF_F_RDONLY_PROG},
	} {
		var got [2]string
		for j, w := range []accessWorld{kw, sw} {
			inner := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: c.template}
			outer, err := w.create(&ebpf.MapSpec{Type: ebpf.ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 1, InnerMap: inner})
			if err != nil {
				got[j] = "create outer " + errnoName(err)
				continue
			}
			spec := inner.Copy()
			spec.Flags = c.inner
			m, err := w.create(spec)
			if err != nil {
				got[j] = "create inner " + errnoName(err)
				outer.Close()
				continue
			}
			got[j] = "store " + errnoName(outer.Update(uint32(0), m, ebpf.UpdateAny))
			m.Close()
			outer.Close()
		}
		if got[0] != got[1] {
			t.Errorf("template flags %#x, inner flags %#x: kernel %s, bpfsim %s", c.template, c.inner, got[0], got[1])
		}
	}
}
