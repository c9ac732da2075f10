package sim

import (
	"encoding/binary"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/perfarray"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// User-space updates of maps whose values are file descriptors (the fd
// arrays and the hash of maps): the kernel turns the fd into the object it
// refers to (map_fd_get_ptr) and the map stores the object, remembering
// the map file the update came through.

// updateFd stores the object a value names under key. The value is an
// fd of the handle's process, as the kernel takes it, or, as cilium/ebpf
// takes it, the handle itself: a *Map for maps of maps, a *Program for
// prog arrays, a *PerfEvent for perf event arrays.
func (h *Map) updateFd(fv maps.FdValues, key, value any, flags uint64) error {
	k, err := marshal(key, int(h.m.KeySize))
	if err != nil {
		return err
	}
	if c, ok := fv.(maps.FdUpdateChecker); ok {
		if err := c.CheckFdUpdate(k, flags); err != nil {
			return err
		}
	}
	obj, err := h.objectOf(fv.FdKind(), value)
	if err != nil {
		return err
	}
	return fv.UpdateObject(k, obj, h.file.id, flags)
}

// objectOf resolves the value of an update of an fd map to the kernel
// object it names (map_fd_get_ptr).
func (h *Map) objectOf(kind maps.FdKind, value any) (maps.Object, error) {
	switch v := value.(type) {
	case *Map:
		if v == nil || v.k != h.k {
			return nil, errors.Wrap(uapi.EBADF, "the map belongs to another simulated kernel")
		}
		if err := v.check(); err != nil {
			return nil, err
		}
		value = v.fd
		if v.proc != h.proc {
			// Another process's handle: what it names, as if its fd
			// had been passed over.
			return objectOfFile(kind, v.file, v.fd)
		}
	case *Program:
		if v == nil || v.k != h.k || !v.isOpen() || v.file == nil {
			return nil, errors.Wrap(uapi.EBADF, "closed or foreign program")
		}
		value = v.fd
		if v.proc != h.proc {
			return objectOfFile(kind, v.file, v.fd)
		}
	case *PerfEvent:
		if v == nil || v.k != h.k || v.closed.Load() {
			return nil, errors.Wrap(uapi.EBADF, "closed or foreign perf event")
		}
		value = v.fd
		if v.proc != h.proc {
			f, err := v.proc.fds.get(v.fd)
			if err != nil {
				return nil, err
			}
			return objectOfFile(kind, f, v.fd)
		}
	}
	var fd int
	switch v := value.(type) {
	case int:
		fd = v
	case int32:
		fd = int(v)
	case uint32:
		fd = int(int32(v))
	default:
		b, err := marshal(value, 4)
		if err != nil {
			return nil, errors.Wrap(err, "the value of an fd map is an fd or a handle")
		}
		fd = int(int32(binary.LittleEndian.Uint32(b)))
	}
	if fd >= 0 && fd <= 2 {
		// The standard streams: open files, but not BPF objects.
		return objectOfFile(kind, nil, fd)
	}
	f, err := h.proc.fds.get(fd)
	if err != nil {
		return nil, err
	}
	return objectOfFile(kind, f, fd)
}

// progOfFd is the program fd names in the handle's process, or nil.
func (h *Map) progOfFd(fd int) maps.ProgObject {
	f, err := h.proc.fds.get(fd)
	if err != nil {
		return nil
	}
	if p, ok := f.obj.(*Program); ok {
		return &p.obj
	}
	return nil
}

// objectOfFile returns the object of kind behind f (nil: an open file
// that is no BPF object), with the errno the kernel's getters give for
// another kind: bpf_map_get's EINVAL, perf_event_get's EBADF.
func objectOfFile(kind maps.FdKind, f *file, fd int) (maps.Object, error) {
	var obj any
	if f != nil {
		obj = f.obj
	}
	switch kind {
	case maps.FdMap:
		if m, ok := obj.(*maps.Map); ok {
			return m, nil
		}
		return nil, errors.Wrapf(uapi.EINVAL, "fd %d is not a map's", fd)
	case maps.FdProg:
		if p, ok := obj.(*Program); ok {
			return &p.obj, nil
		}
		// bpf_prog_get of an fd that is not a program's.
		return nil, errors.Wrapf(uapi.EINVAL, "fd %d is not a program", fd)
	case maps.FdPerfEvent:
		if e, ok := obj.(*perfarray.Event); ok {
			return e, nil
		}
		return nil, errors.Wrapf(uapi.EBADF, "fd %d is not a perf event", fd)
	}
	return nil, errors.Wrapf(uapi.EINVAL, "fd values of kind %d are not simulated yet", kind)
}
