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

// fdUpdateChecker is the ability of fd maps to check an update before the
// fd is resolved, so that errors come in the kernel's order (flags and
// index before the fd in bpf_fd_array_map_update_elem).
type fdUpdateChecker interface {
	CheckFdUpdate(key []byte, flags uint64) error
}

// updateFd stores the object behind the fd in value under key.
func (h *Map) updateFd(fv maps.FdValues, key, value []byte, flags uint64) error {
	if c, ok := fv.(fdUpdateChecker); ok {
		if err := c.CheckFdUpdate(key, flags); err != nil {
			return err
		}
	}
	fd := int(int32(binary.LittleEndian.Uint32(value)))
	f, err := h.proc.fds.get(fd)
	if err != nil {
		return err
	}
	var o maps.Object
	switch fv.FdKind() {
	case maps.FdPerfEvent:
		e, ok := f.obj.(*perfarray.Event)
		if !ok {
			return errors.Wrapf(uapi.EBADF, "fd %d is not a perf event", fd)
		}
		o = e
	default:
		return errors.Wrapf(uapi.EINVAL, "fd values of kind %d are not simulated yet", fv.FdKind())
	}
	return fv.UpdateObject(key, o, h.file.id, flags)
}
