package sim

import (
	"encoding/binary"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Maps whose values are file descriptors (maps.FdValues): user space
// writes an fd and reads back the id of the object it referred to
// (bpf_map_update_value and bpf_map_copy_value for fd maps,
// kernel/bpf/syscall.c).

// fdOf turns an update's value into a file descriptor: a *Program or a
// *Map stands for its fd, as cilium/ebpf marshals them; an integer is the
// fd itself.
func fdOf(value any) (int, error) {
	switch v := value.(type) {
	case *Program:
		if v == nil {
			return 0, errors.Wrap(uapi.EBADF, "nil program")
		}
		return v.fd, nil
	case *Map:
		if v == nil {
			return 0, errors.Wrap(uapi.EBADF, "nil map")
		}
		return v.fd, nil
	case int:
		return v, nil
	case int32:
		return int(v), nil
	case uint32:
		return int(int32(v)), nil
	case []byte:
		if len(v) != 4 {
			return 0, errors.Wrapf(uapi.EINVAL, "fd values are 4 bytes, not %d", len(v))
		}
		return int(int32(binary.LittleEndian.Uint32(v))), nil
	}
	return 0, errors.Wrapf(uapi.EINVAL, "%T is not a file descriptor", value)
}

// updateFd stores the object fd refers to under key. The map type may
// refuse key and flags first (maps.FdUpdateChecker), as the kernel's fd
// arrays do before they look at the fd. The update comes through no
// particular open file yet: maps.File(0).
func (h *Map) updateFd(fv maps.FdValues, key []byte, value any, flags uint64) error {
	if c, ok := fv.(maps.FdUpdateChecker); ok {
		if err := c.CheckFdUpdate(key, flags); err != nil {
			return err
		}
	}
	fd, err := fdOf(value)
	if err != nil {
		return err
	}
	obj, err := h.k.objectOfFd(fd, fv.FdKind())
	if err != nil {
		return err
	}
	return fv.UpdateObject(key, obj, maps.File(0), flags)
}

// objectOfFd is map_fd_get_ptr's lookup: the object behind fd, which must
// be of the kind the map holds (bpf_prog_get: EBADF for a closed fd,
// EINVAL for an fd of something else).
func (k *Kernel) objectOfFd(fd int, kind maps.FdKind) (maps.Object, error) {
	f, err := k.fds.get(fd)
	if err != nil {
		return nil, err
	}
	switch kind {
	case maps.FdProg:
		if p, ok := f.(*Program); ok {
			return &p.obj, nil
		}
		return nil, errors.Wrapf(uapi.EINVAL, "fd %d is not a program", fd)
	case maps.FdMap:
		if m, ok := f.(*Map); ok {
			return m.m, nil
		}
		return nil, errors.Wrapf(uapi.EINVAL, "fd %d is not a map", fd)
	}
	return nil, errors.Wrapf(uapi.EINVAL, "fd %d: objects of kind %d are not simulated", fd, kind)
}

// lookupID is the lookup of an fd map from user space: the id of the
// object under key, as 4 bytes.
func lookupID(fv maps.FdValues, key []byte) ([]byte, error) {
	id, err := fv.LookupID(key)
	if err != nil {
		return nil, mapErr(err)
	}
	return binary.LittleEndian.AppendUint32(nil, id), nil
}
