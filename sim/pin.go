package sim

import (
	"fmt"
	"path"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/bpffs"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Pinning maps and programs on the simulated BPF filesystem
// (kernel/bpf/inode.c, BPF_OBJ_PIN and BPF_OBJ_GET), with cilium/ebpf's
// API: Pin, Unpin and IsPinned on both, LoadPinnedMap and
// LoadPinnedProgram, and MapSpec.Pinning = PinByName in collections,
// under MapOptions.PinPath (cilium/ebpf pins no programs by name, nor does
// bpfsim). A pin holds a reference on its object, as a file would: a
// user reference on a map, so the map and what its user references keep
// (the programs of a prog array) live on after every fd is closed, and a
// reference on a program, which stays loaded, with its id, until the pin
// is removed. The filesystem itself (directories, listing) is
// Kernel.BPFFS.
//
// Loading a pin opens a new file on the object, with the access mode of
// LoadPinOptions (BPF_OBJ_GET's file_flags): a map opened read-only
// cannot be updated through it, one opened write-only cannot be read
// (map.go's canRead and canWrite). A program's file has no such mode.

// BPFFS returns the kernel's BPF filesystem, mounted at bpffs.Mount.
func (k *Kernel) BPFFS() *bpffs.FS { return k.fs }

// pinAt is BPF_OBJ_PIN for a handle pinned at *pinned (or not, if
// empty), as cilium/ebpf's Pin does it: a handle pinned elsewhere moves
// its pin (with RENAME_NOREPLACE semantics); the same path again does
// nothing. Else a new pin takes a reference (get), which put drops when
// the pin goes. The directory must exist (ENOENT) and the name be free
// (EEXIST).
func pinAt(fs *bpffs.FS, pinned *string, fileName string, kind bpffs.Kind, obj any, get, put func()) error {
	if fileName == "" {
		return errors.Wrap(uapi.EINVAL, "given pinning path cannot be empty")
	}
	if *pinned == fileName {
		return nil
	}
	if *pinned != "" {
		err := fs.Rename(*pinned, fileName)
		if err == nil {
			*pinned = fileName
			return nil
		}
		if !errors.Is(err, uapi.ENOENT) || !isMissing(fs, *pinned) {
			return errors.Wrapf(err, "moving the pin to %s", fileName)
		}
		// Unpinned behind the handle's back: pin afresh.
	}
	get()
	if err := fs.Pin(fileName, kind, obj, put); err != nil {
		put()
		return err
	}
	*pinned = fileName
	return nil
}

// unpinAt removes the pin at *pinned (unlink); a pin already gone is no
// error.
func unpinAt(fs *bpffs.FS, pinned *string) error {
	if *pinned == "" {
		return nil
	}
	if err := fs.Remove(*pinned); err != nil && !errors.Is(err, uapi.ENOENT) {
		return err
	}
	*pinned = ""
	return nil
}

// Pin pins the map at fileName on the simulated BPF filesystem
// (BPF_OBJ_PIN), like cilium/ebpf's Map.Pin: a map pinned elsewhere by
// this handle moves there (with RENAME_NOREPLACE semantics); the same path
// again does nothing. The directory must exist (ENOENT) and the name be
// free (EEXIST).
func (h *Map) Pin(fileName string) error {
	if err := h.check(); err != nil {
		return err
	}
	if err := pinAt(h.k.fs, &h.pinnedPath, fileName, bpffs.Map, h.m, h.m.GetUser, h.m.PutUser); err != nil {
		return mapError{err}
	}
	return nil
}

// isMissing reports whether nothing is at p.
func isMissing(fs *bpffs.FS, p string) bool {
	return errors.Is(fs.Get(p, func(bpffs.Kind, any) error { return nil }), uapi.ENOENT)
}

// Unpin removes the pin this handle made or loaded (unlink), like
// cilium/ebpf's Map.Unpin; a pin already gone is no error.
func (h *Map) Unpin() error {
	if err := unpinAt(h.k.fs, &h.pinnedPath); err != nil {
		return mapError{err}
	}
	return nil
}

// IsPinned reports whether the handle pinned the map or was loaded from a
// pin.
func (h *Map) IsPinned() bool { return h.pinnedPath != "" }

// objGetAccess checks BPF_OBJ_GET's file_flags, as cilium/ebpf makes them
// from LoadPinOptions, and returns the access mode they ask for
// (bpf_obj_get, bpf_get_file_flag): a flag other than BPF_F_RDONLY,
// BPF_F_WRONLY and BPF_F_PATH_FD is EINVAL, and so are the first two
// together, whatever is at the path.
func objGetAccess(opts *ebpf.LoadPinOptions) (fileAccess, error) {
	flags := opts.Marshal()
	if flags&^(uapi.BPF_F_RDONLY|uapi.BPF_F_WRONLY|uapi.BPF_F_PATH_FD) != 0 {
		return 0, errors.Wrapf(uapi.EINVAL, "unknown BPF_OBJ_GET file_flags %#x", flags)
	}
	return fileAccessOf(flags)
}

// LoadPinnedMap opens the map pinned at fileName (BPF_OBJ_GET) in the
// kernel's first process, like cilium/ebpf's LoadPinnedMap.
func (k *Kernel) LoadPinnedMap(fileName string, opts *ebpf.LoadPinOptions) (*Map, error) {
	return k.init.LoadPinnedMap(fileName, opts)
}

// LoadPinnedMap opens the map pinned at fileName as a new file, with a
// new fd of this process. opts.ReadOnly and opts.WriteOnly give the file
// that access mode only (EPERM for the other operations through it). A
// program or link there is EINVAL (the kernel's BPF_OBJ_GET opens it
// all the same, and cilium/ebpf refuses it without an errno), a directory
// EACCES, nothing ENOENT.
func (p *Process) LoadPinnedMap(fileName string, opts *ebpf.LoadPinOptions) (*Map, error) {
	access, err := objGetAccess(opts)
	if err != nil {
		return nil, mapError{err}
	}
	var m *maps.Map
	err = p.k.fs.Get(fileName, func(kind bpffs.Kind, obj any) error {
		if kind != bpffs.Map {
			return errors.Wrapf(uapi.EINVAL, "%s is a pinned %s, not a map", fileName, kind)
		}
		m = obj.(*maps.Map)
		m.GetUser()
		return nil
	})
	if err != nil {
		return nil, mapError{err}
	}
	h, err := p.installMapFile(m, access)
	if err != nil {
		return nil, err
	}
	h.pinnedPath = fileName
	return h, nil
}

// Pin pins the program at fileName on the simulated BPF filesystem
// (BPF_OBJ_PIN), like cilium/ebpf's Program.Pin: the pin holds a
// reference, so the program stays loaded after every fd on it closes,
// until the pin is removed. A program pinned elsewhere by this handle
// moves there; the same path again does nothing. The errnos are those of
// Map.Pin.
func (p *Program) Pin(fileName string) error {
	if !p.isOpen() || p.file == nil {
		return errors.Wrap(uapi.EBADF, "program handle is closed")
	}
	return pinAt(p.k.fs, &p.pinnedPath, fileName, bpffs.Program, p.loader, p.get, p.loader.put)
}

// Unpin removes the pin this handle made or loaded (unlink), like
// cilium/ebpf's Program.Unpin: the program goes if nothing else holds it.
// A pin already gone is no error.
func (p *Program) Unpin() error { return unpinAt(p.k.fs, &p.pinnedPath) }

// IsPinned reports whether the handle pinned the program or was loaded
// from a pin.
func (p *Program) IsPinned() bool { return p.pinnedPath != "" }

// LoadPinnedProgram opens the program pinned at fileName (BPF_OBJ_GET) in
// the kernel's first process, like cilium/ebpf's LoadPinnedProgram.
func (k *Kernel) LoadPinnedProgram(fileName string, opts *ebpf.LoadPinOptions) (*Program, error) {
	return k.init.LoadPinnedProgram(fileName, opts)
}

// LoadPinnedProgram opens the program pinned at fileName as a new file,
// with a new fd of this process, holding a reference of its own. The
// options' flags are checked as for a map (EINVAL), but a program's file
// has no access mode: a read-only one runs as any. A map or link there is
// EINVAL, a directory EACCES, nothing ENOENT.
func (p *Process) LoadPinnedProgram(fileName string, opts *ebpf.LoadPinOptions) (*Program, error) {
	if _, err := objGetAccess(opts); err != nil {
		return nil, err
	}
	var prog *Program
	err := p.k.fs.Get(fileName, func(kind bpffs.Kind, obj any) error {
		if kind != bpffs.Program {
			return errors.Wrapf(uapi.EINVAL, "%s is a pinned %s, not a program", fileName, kind)
		}
		// The pin's reference keeps the count above zero while the
		// entry is there.
		prog = obj.(*Program)
		prog.get()
		return nil
	})
	if err != nil {
		return nil, err
	}
	h, err := p.installProgFile(prog)
	if err != nil {
		return nil, err
	}
	h.pinnedPath = fileName
	return h, nil
}

// MapOptions are what cilium/ebpf's MapOptions hold that bpfsim
// simulates: where maps pinned by name live, and how to open them.
type MapOptions struct {
	// PinPath is the directory on the BPF filesystem of the maps whose
	// spec says PinByName.
	PinPath string
	// LoadPinOptions open a map found pinned by name (read-only,
	// write-only); a map created and pinned is opened for both.
	LoadPinOptions ebpf.LoadPinOptions
}

// NewMapWithOptions is NewMap that honours MapSpec.Pinning, like
// cilium/ebpf's NewMapWithOptions: a map pinned by name is loaded from
// PinPath/Name if it is there (and must match the spec:
// ebpf.ErrMapIncompatible), else created and pinned there.
func (k *Kernel) NewMapWithOptions(spec *ebpf.MapSpec, opts MapOptions) (*Map, error) {
	m, _, err := k.init.newMapPinned(spec, opts)
	return m, err
}

// newMapPinned is NewMapWithOptions for process p; reused says the map
// came from its pin, with its contents as they are.
func (p *Process) newMapPinned(spec *ebpf.MapSpec, opts MapOptions) (m *Map, reused bool, err error) {
	if spec == nil || spec.Pinning == ebpf.PinNone {
		m, err = p.NewMap(spec)
		return m, false, err
	}
	if spec.Pinning != ebpf.PinByName {
		return nil, false, errors.Wrapf(uapi.EINVAL, "map %s: unknown pinning type %d", spec.Name, spec.Pinning)
	}
	switch {
	case spec.Name == "":
		return nil, false, errors.Wrap(uapi.EINVAL, "pin by name: missing Name")
	case opts.PinPath == "":
		return nil, false, errors.Wrapf(uapi.EINVAL, "map %s: pin by name: missing MapOptions.PinPath", spec.Name)
	}
	at := path.Join(opts.PinPath, spec.Name)
	m, err = p.LoadPinnedMap(at, &opts.LoadPinOptions)
	switch {
	case err == nil:
		if err := compatible(spec, m); err != nil {
			m.Close()
			return nil, false, err
		}
		return m, true, nil
	case !errors.Is(err, uapi.ENOENT):
		return nil, false, errors.Wrapf(err, "map %s: loading the pinned map", spec.Name)
	}
	unpinned := spec.Copy()
	unpinned.Pinning = ebpf.PinNone
	if m, err = p.NewMap(unpinned); err != nil {
		return nil, false, err
	}
	if err := m.Pin(at); err != nil {
		m.Close()
		return nil, false, errors.Wrapf(err, "map %s: pinning to %s", spec.Name, at)
	}
	return m, false, nil
}

// compatible is cilium/ebpf's MapSpec.Compatible: a pinned map is used in
// place of a new one only if it is the map the spec describes.
func compatible(spec *ebpf.MapSpec, h *Map) error {
	a := h.m.Attr
	valueSize := mapOfMapsValueSize(spec)
	why := ""
	switch {
	case a.Type != uapi.MapType(spec.Type):
		why = fmt.Sprintf("type %v, the spec says %v", ebpf.MapType(a.Type), spec.Type)
	case a.KeySize != spec.KeySize:
		why = fmt.Sprintf("key size %d, the spec says %d", a.KeySize, spec.KeySize)
	case a.ValueSize != valueSize:
		why = fmt.Sprintf("value size %d, the spec says %d", a.ValueSize, valueSize)
	case !(spec.Type == ebpf.PerfEventArray && spec.MaxEntries == 0) && a.MaxEntries != spec.MaxEntries:
		why = fmt.Sprintf("max entries %d, the spec says %d", a.MaxEntries, spec.MaxEntries)
	case a.Flags != spec.Flags:
		why = fmt.Sprintf("flags %#x, the spec says %#x", a.Flags, spec.Flags)
	default:
		return nil
	}
	return fmt.Errorf("use pinned map %s: %s: %w: %w", spec.Name, why, ebpf.ErrMapIncompatible, uapi.EINVAL)
}
