package sim_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// userMap is what *sim.Map and cilium/ebpf's *ebpf.Map share, for the
// tests that do the same through both (mapaccess_linux_test.go).
type userMap interface {
	Lookup(key, valueOut any) error
	Update(key, value any, flags ebpf.MapUpdateFlags) error
	NextKey(key, nextKeyOut any) error
	Delete(key any) error
	LookupAndDelete(key, valueOut any) error
	Freeze() error
	Pin(fileName string) error
	Close() error
}

// accessOps tries each user-space operation once through h and says how
// each ended: "ok" or the errno's name. The map is a hash whose key 0 is
// set; the deletes aim at a missing key, so a handle allowed to delete
// gets ENOENT and changes nothing.
func accessOps(h userMap) string {
	var v, key uint32
	ops := []struct {
		name string
		do   func() error
	}{
		{"lookup", func() error { return h.Lookup(uint32(0), &v) }},
		{"update", func() error { return h.Update(uint32(0), uint32(1), ebpf.UpdateAny) }},
		{"next_key", func() error { return h.NextKey(nil, &key) }},
		{"delete", func() error { return h.Delete(uint32(9)) }},
		{"lookup_and_delete", func() error { return h.LookupAndDelete(uint32(9), &v) }},
	}
	var out []string
	for _, op := range ops {
		out = append(out, op.name+" "+errnoName(op.do()))
	}
	return strings.Join(out, ", ")
}

func errnoName(err error) string {
	if err == nil {
		return "ok"
	}
	if e := errnoOf(err); e != 0 {
		return uapi.Errno(e).Error()
	}
	return "error without errno: " + err.Error()
}

const (
	readWriteOps = "lookup ok, update ok, next_key ok, delete no such file or directory, lookup_and_delete no such file or directory"
	readOnlyOps  = "lookup ok, update operation not permitted, next_key ok, delete operation not permitted, lookup_and_delete operation not permitted"
	writeOnlyOps = "lookup operation not permitted, update ok, next_key operation not permitted, delete no such file or directory, lookup_and_delete operation not permitted"
)

// The access mode belongs to the file a handle is on: BPF_F_RDONLY or
// BPF_F_WRONLY at creation restrict the creating fd and its dups only; a
// map opened by id, or from its pin without options, may be read and
// written; LoadPinOptions restrict the file they open. The map's flags
// never show the mode.
func TestMapAccessModeIsTheFiles(t *testing.T) {
	opens := []struct {
		name string
		open func(k *sim.Kernel, m *sim.Map) (*sim.Map, error)
		// want is the operations' outcome by creation flags; "" means
		// as the creating fd.
		want string
	}{
		{"the creating fd", func(k *sim.Kernel, m *sim.Map) (*sim.Map, error) { return m, nil }, ""},
		{"a dup of it", func(k *sim.Kernel, m *sim.Map) (*sim.Map, error) { return m.Clone() }, ""},
		{"opened by id", func(k *sim.Kernel, m *sim.Map) (*sim.Map, error) { return k.NewMapFromID(m.ID()) }, readWriteOps},
		{"its pin", func(k *sim.Kernel, m *sim.Map) (*sim.Map, error) { return k.LoadPinnedMap(pinDir+"/m", nil) }, readWriteOps},
		{"its pin read-only", func(k *sim.Kernel, m *sim.Map) (*sim.Map, error) {
			return k.LoadPinnedMap(pinDir+"/m", &ebpf.LoadPinOptions{ReadOnly: true})
		}, readOnlyOps},
		{"its pin write-only", func(k *sim.Kernel, m *sim.Map) (*sim.Map, error) {
			return k.LoadPinnedMap(pinDir+"/m", &ebpf.LoadPinOptions{WriteOnly: true})
		}, writeOnlyOps},
		{"its pin by raw flags", func(k *sim.Kernel, m *sim.Map) (*sim.Map, error) {
			return k.LoadPinnedMap(pinDir+"/m", &ebpf.LoadPinOptions{Flags: uapi.BPF_F_RDONLY})
		}, readOnlyOps},
		{"a dup of its read-only pin", func(k *sim.Kernel, m *sim.Map) (*sim.Map, error) {
			h, err := k.LoadPinnedMap(pinDir+"/m", &ebpf.LoadPinOptions{ReadOnly: true})
			if err != nil {
				return nil, err
			}
			return h.Clone()
		}, readOnlyOps},
	}
	creations := []struct {
		name  string
		flags uint32
		ops   string
	}{
		{"read-write", 0, readWriteOps},
		{"BPF_F_RDONLY", uapi.BPF_F_RDONLY, readOnlyOps},
		{"BPF_F_WRONLY", uapi.BPF_F_WRONLY, writeOnlyOps},
		{"BPF_F_RDONLY with BPF_F_NO_PREALLOC", uapi.BPF_F_RDONLY | uapi.BPF_F_NO_PREALLOC, readOnlyOps},
	}
	for _, c := range creations {
		for _, o := range opens {
			t.Run(c.name+"/"+o.name, func(t *testing.T) {
				k := pinKernel(t)
				m := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 4, Flags: c.flags})
				if err := m.Pin(pinDir + "/m"); err != nil {
					t.Fatal(err)
				}
				// Key 0 is set through a file that may write.
				rw, err := k.NewMapFromID(m.ID())
				if err != nil {
					t.Fatal(err)
				}
				if err := rw.Put(uint32(0), uint32(7)); err != nil {
					t.Fatal(err)
				}
				h, err := o.open(k, m)
				if err != nil {
					t.Fatal(err)
				}
				want := o.want
				if want == "" {
					want = c.ops
				}
				if got := accessOps(h); got != want {
					t.Errorf("operations:\n got %s\nwant %s", got, want)
				}
				if want, got := c.flags&^(uapi.BPF_F_RDONLY|uapi.BPF_F_WRONLY), h.Flags(); got != want {
					t.Errorf("Flags() = %#x, want %#x: the access mode is not the map's", got, want)
				}
			})
		}
	}
}

// BPF_MAP_FREEZE needs a file that may write; once frozen, no file may.
func TestFreezeNeedsAWritableFile(t *testing.T) {
	for _, c := range []struct {
		name string
		opts *ebpf.LoadPinOptions
		want error
	}{
		{"read-write", nil, nil},
		{"read-only", &ebpf.LoadPinOptions{ReadOnly: true}, uapi.EPERM},
		{"write-only", &ebpf.LoadPinOptions{WriteOnly: true}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := pinKernel(t)
			m := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
			if err := m.Pin(pinDir + "/m"); err != nil {
				t.Fatal(err)
			}
			h, err := k.LoadPinnedMap(pinDir+"/m", c.opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.Freeze(); !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("Freeze: %v, want %v", err, c.want)
			}
			wantUpdate := error(nil)
			if c.want == nil {
				wantUpdate = uapi.EPERM
			}
			if err := m.Put(uint32(0), uint32(1)); !errors.Is(err, wantUpdate) || (wantUpdate == nil) != (err == nil) {
				t.Errorf("an update through the creating fd: %v, want %v", err, wantUpdate)
			}
		})
	}
}

// A map's memory can be mapped only through a file open for reading and
// writing: cilium/ebpf gets EINVAL for a read-only one (its read-only
// retry is refused as not shared) and EACCES for a write-only one.
func TestMemoryNeedsAReadWriteFile(t *testing.T) {
	for _, c := range []struct {
		flags uint32
		want  error
	}{
		{0, nil},
		{uapi.BPF_F_RDONLY, uapi.EINVAL},
		{uapi.BPF_F_WRONLY, uapi.EACCES},
	} {
		t.Run(fmt.Sprintf("flags %#x", c.flags), func(t *testing.T) {
			k := newKernel(t, nil)
			m := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_MMAPABLE | c.flags})
			if _, err := m.Memory(); !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Errorf("Memory: %v, want %v", err, c.want)
			}
		})
	}
}

// BPF_OBJ_GET's flags are checked before the path: an unknown one, or
// read-only with write-only, is EINVAL even where nothing is pinned.
// BPF_F_PATH_FD is accepted: an absolute path ignores the directory fd.
func TestLoadPinOptionsFlags(t *testing.T) {
	k := pinKernel(t)
	m := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err := m.Pin(pinDir + "/m"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		opts ebpf.LoadPinOptions
		want error
	}{
		{"/m", ebpf.LoadPinOptions{ReadOnly: true, WriteOnly: true}, uapi.EINVAL},
		{"/none", ebpf.LoadPinOptions{ReadOnly: true, WriteOnly: true}, uapi.EINVAL},
		{"/m", ebpf.LoadPinOptions{Flags: 1 << 2}, uapi.EINVAL},
		{"/none", ebpf.LoadPinOptions{Flags: 1 << 15}, uapi.EINVAL},
		{"/m", ebpf.LoadPinOptions{Flags: ^uint32(0)}, uapi.EINVAL},
		{"/m", ebpf.LoadPinOptions{Flags: uapi.BPF_F_PATH_FD}, nil},
		{"/none", ebpf.LoadPinOptions{Flags: uapi.BPF_F_PATH_FD}, uapi.ENOENT},
	} {
		h, err := k.LoadPinnedMap(pinDir+c.path, &c.opts)
		if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("LoadPinnedMap(%s, %+v): %v, want %v", c.path, c.opts, err, c.want)
		}
		if h != nil {
			h.Close()
		}
	}
}

// A collection's maps pinned by name are opened with
// MapOptions.LoadPinOptions; a map created there is opened for both.
func TestPinByNameOpensWithLoadPinOptions(t *testing.T) {
	k := pinKernel(t)
	spec := &ebpf.MapSpec{Name: "counts", Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 4, Pinning: ebpf.PinByName}
	ro := sim.MapOptions{PinPath: pinDir, LoadPinOptions: ebpf.LoadPinOptions{ReadOnly: true}}
	created, err := k.NewMapWithOptions(spec, ro)
	if err != nil {
		t.Fatal(err)
	}
	defer created.Close()
	if err := created.Put(uint32(1), uint32(2)); err != nil {
		t.Errorf("the map created and pinned cannot be written: %v", err)
	}
	reused, err := k.NewMapWithOptions(spec, ro)
	if err != nil {
		t.Fatal(err)
	}
	defer reused.Close()
	if got := accessOps(reused); got != strings.Replace(readOnlyOps, "lookup ok", "lookup no such file or directory", 1) {
		t.Errorf("the map reused read-only: %s", got)
	}
	if _, err := k.NewMapWithOptions(spec, sim.MapOptions{PinPath: pinDir, LoadPinOptions: ebpf.LoadPinOptions{Flags: ^uint32(0)}}); !errors.Is(err, uapi.EINVAL) {
		t.Errorf("unknown load flags: %v, want EINVAL", err)
	}
}

// A spec asking for BPF_F_RDONLY describes a map whose flags never show
// it, so its pin is not reused: cilium/ebpf's Compatible compares the
// spec's flags with the map's (mapaccess_linux_test.go checks the
// kernel and cilium/ebpf agree).
func TestPinByNameOfAReadOnlySpecIsIncompatible(t *testing.T) {
	k := pinKernel(t)
	spec := &ebpf.MapSpec{Name: "ro", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_RDONLY, Pinning: ebpf.PinByName}
	m, err := k.NewMapWithOptions(spec, sim.MapOptions{PinPath: pinDir})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := k.NewMapWithOptions(spec, sim.MapOptions{PinPath: pinDir}); !errors.Is(err, ebpf.ErrMapIncompatible) {
		t.Errorf("reusing the pin: %v, want ErrMapIncompatible", err)
	}
}

// An inner map's access mode is not part of what map_meta_equal
// compares: a map created BPF_F_RDONLY fits a template created without.
func TestReadOnlyCreatedInnerMapMatchesItsTemplate(t *testing.T) {
	k := newKernel(t, nil)
	inner := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}
	outer := newMap(t, k, &ebpf.MapSpec{Type: ebpf.ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 1, InnerMap: inner})
	ro := inner.Copy()
	ro.Flags = uapi.BPF_F_RDONLY
	m := newMap(t, k, ro)
	if err := outer.Put(uint32(0), m); err != nil {
		t.Errorf("storing an inner map created read-only: %v", err)
	}
}
