package sim

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// file is an open file description (struct file) on a BPF object: what an
// fd refers to. Several fds share one after dup (Map.Clone); opening the
// object again (by id) makes another. The kernel acts when the last fd of
// a file closes: a map's map_release hook runs with the file, then the
// file's user reference goes.
type file struct {
	k   *Kernel
	id  maps.File
	obj any // *Map's kernel object (*maps.Map) or a program
	// fds counts the fds that refer to the file, in every process.
	fds atomic.Int64
	// release runs once, when the last fd closes.
	release func(*file)
}

// fdTable is a process's file descriptor table: user-space handles on maps
// and programs are fds in it, and a program refers to a map by fd when it
// is loaded (BPF_PSEUDO_MAP_FD).
type fdTable struct {
	mu     sync.Mutex
	files  map[int]*file
	closed bool
}

// install returns a new fd for f; like the kernel, the lowest free number
// from 3 on (0 to 2 are the standard streams). A closed table refuses
// (EBADF), as a process that has exited has no table.
func (t *fdTable) install(f *file) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return 0, errors.Wrap(uapi.EBADF, "the process has exited")
	}
	if t.files == nil {
		t.files = make(map[int]*file)
	}
	fd := 3
	for ; ; fd++ {
		if _, used := t.files[fd]; !used {
			break
		}
	}
	f.fds.Add(1)
	t.files[fd] = f
	return fd, nil
}

func (t *fdTable) get(fd int) (*file, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.files[fd]
	if !ok {
		return nil, errors.Wrapf(uapi.EBADF, "fd %d is not open", fd)
	}
	return f, nil
}

// close removes fd and, if it was the file's last, releases the file.
func (t *fdTable) close(fd int) error {
	t.mu.Lock()
	f, ok := t.files[fd]
	if ok {
		delete(t.files, fd)
	}
	t.mu.Unlock()
	if !ok {
		return errors.Wrapf(uapi.EBADF, "fd %d is not open", fd)
	}
	putFile(f)
	return nil
}

// closeAll closes every fd, lowest first, and refuses new ones: the exit
// of a process.
func (t *fdTable) closeAll() {
	t.mu.Lock()
	fds := make([]int, 0, len(t.files))
	for fd := range t.files {
		fds = append(fds, fd)
	}
	sort.Ints(fds)
	files := make([]*file, len(fds))
	for i, fd := range fds {
		files[i] = t.files[fd]
	}
	t.files, t.closed = nil, true
	t.mu.Unlock()
	for _, f := range files {
		putFile(f)
	}
}

func (t *fdTable) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// count returns how many fds are open.
func (t *fdTable) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.files)
}

func putFile(f *file) {
	if f.fds.Add(-1) == 0 && f.release != nil {
		f.release(f)
	}
}
