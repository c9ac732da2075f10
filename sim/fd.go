package sim

import (
	"sync"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// fdTable is the file descriptor table of the simulated process that uses
// the kernel: user-space handles on maps and programs are fds in it, and a
// program refers to a map by fd when it is loaded (BPF_PSEUDO_MAP_FD).
type fdTable struct {
	mu    sync.Mutex
	next  int
	files map[int]any
}

// install returns a new fd for obj; like the kernel, the lowest free
// number from 3 on (0 to 2 are the standard streams).
func (t *fdTable) install(obj any) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	fd := 3
	for ; ; fd++ {
		if _, used := t.files[fd]; !used {
			break
		}
	}
	t.files[fd] = obj
	return fd
}

func (t *fdTable) get(fd int) (any, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	obj, ok := t.files[fd]
	if !ok {
		return nil, errors.Wrapf(uapi.EBADF, "fd %d is not open", fd)
	}
	return obj, nil
}

func (t *fdTable) close(fd int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.files[fd]; !ok {
		return errors.Wrapf(uapi.EBADF, "fd %d is not open", fd)
	}
	delete(t.files, fd)
	return nil
}
