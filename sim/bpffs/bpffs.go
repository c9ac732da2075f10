// Package bpffs simulates the BPF filesystem (kernel/bpf/inode.c): the
// tree of directories and pinned objects mounted at /sys/fs/bpf, where a
// map, program or link lives on after every file descriptor on it is
// closed, for as long as it stays pinned.
//
// The package keeps the tree and the kernel's errnos; what a pin holds is
// the caller's: Pin stores an object with the function that drops the
// reference the pin took (bpf_any_put), and Get lets the caller take its
// own reference while the entry cannot go away (bpf_obj_do_get holds the
// path meanwhile).
package bpffs

import (
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Mount is where the filesystem is mounted, as on every distribution.
const Mount = "/sys/fs/bpf"

// Kind is what an entry is.
type Kind uint8

const (
	Dir Kind = iota
	Map
	Program
	Link
)

func (k Kind) String() string {
	switch k {
	case Dir:
		return "directory"
	case Map:
		return "map"
	case Program:
		return "program"
	case Link:
		return "link"
	}
	return "unknown"
}

// node is an inode: a directory with its entries, or a pinned object.
type node struct {
	kind    Kind
	entries map[string]*node // directories
	obj     any              // pinned objects
	release func()           // drops the pin's reference
}

// FS is one mounted BPF filesystem. It is safe for concurrent use.
type FS struct {
	mu   sync.Mutex
	root node
}

// New returns an empty filesystem.
func New() *FS {
	return &FS{root: node{kind: Dir, entries: map[string]*node{}}}
}

// Entry is a name in a directory, as List returns it.
type Entry struct {
	Name string
	Kind Kind
}

// split checks that p is a path inside the filesystem and returns its
// components below the mount point. Paths elsewhere are refused with
// EPERM, as a pin into another filesystem is (bpf_obj_do_pin); names
// with a dot are refused with EPERM, as bpf_lookup does (dots are kept for
// future use).
func split(p string) ([]string, error) {
	if !path.IsAbs(p) {
		return nil, errors.Wrapf(uapi.EINVAL, "%q: only absolute paths are simulated", p)
	}
	clean := path.Clean(p)
	if clean != Mount && !strings.HasPrefix(clean, Mount+"/") {
		return nil, errors.Wrapf(uapi.EPERM, "%q is not on the BPF filesystem (mounted at %s)", p, Mount)
	}
	rest := strings.TrimPrefix(strings.TrimPrefix(clean, Mount), "/")
	if rest == "" {
		return nil, nil
	}
	parts := strings.Split(rest, "/")
	for _, c := range parts {
		if strings.Contains(c, ".") {
			return nil, errors.Wrapf(uapi.EPERM, "%q: names on the BPF filesystem cannot contain a dot", p)
		}
	}
	return parts, nil
}

// walk returns the node at parts, or ENOENT; ENOTDIR if a component
// before the last is not a directory.
func (fs *FS) walk(p string, parts []string) (*node, error) {
	n := &fs.root
	for _, c := range parts {
		if n.kind != Dir {
			return nil, errors.Wrapf(uapi.ENOTDIR, "%q: %s is not a directory", p, c)
		}
		next, ok := n.entries[c]
		if !ok {
			return nil, errors.Wrapf(uapi.ENOENT, "%q does not exist", p)
		}
		n = next
	}
	return n, nil
}

// parent returns the directory that holds the last component of p, and
// that component: creating an entry needs an existing directory (ENOENT)
// and a free name (EEXIST).
func (fs *FS) parent(p string) (*node, string, error) {
	parts, err := split(p)
	if err != nil {
		return nil, "", err
	}
	if len(parts) == 0 {
		return nil, "", errors.Wrapf(uapi.EEXIST, "%q is the mount point", p)
	}
	dir, err := fs.walk(p, parts[:len(parts)-1])
	if err != nil {
		return nil, "", err
	}
	if dir.kind != Dir {
		return nil, "", errors.Wrapf(uapi.ENOTDIR, "%q: the parent is not a directory", p)
	}
	name := parts[len(parts)-1]
	if _, ok := dir.entries[name]; ok {
		return nil, "", errors.Wrapf(uapi.EEXIST, "%q exists", p)
	}
	return dir, name, nil
}

// Mkdir creates a directory (mkdir(2) on the filesystem).
func (fs *FS) Mkdir(p string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	dir, name, err := fs.parent(p)
	if err != nil {
		return err
	}
	dir.entries[name] = &node{kind: Dir, entries: map[string]*node{}}
	return nil
}

// Pin makes obj reachable at p (BPF_OBJ_PIN). The caller took the
// reference the pin holds; release drops it when the entry is removed. On
// error the pin was not made and release is not called.
func (fs *FS) Pin(p string, kind Kind, obj any, release func()) error {
	if kind == Dir || obj == nil || release == nil {
		return errors.Wrap(uapi.EINVAL, "only maps, programs and links can be pinned")
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	dir, name, err := fs.parent(p)
	if err != nil {
		return err
	}
	dir.entries[name] = &node{kind: kind, obj: obj, release: release}
	return nil
}

// Get runs take on the object pinned at p (BPF_OBJ_GET), while the entry
// cannot be removed, so that take can get its own reference. A directory
// is EACCES, as bpf_inode_type finds no object behind it.
func (fs *FS) Get(p string, take func(kind Kind, obj any) error) error {
	parts, err := split(p)
	if err != nil {
		return err
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n, err := fs.walk(p, parts)
	if err != nil {
		return err
	}
	if n.kind == Dir {
		return errors.Wrapf(uapi.EACCES, "%q is a directory, not a pinned object", p)
	}
	return take(n.kind, n.obj)
}

// Remove removes the entry at p (unlink(2) or rmdir(2)): a pinned object
// loses the pin's reference, a directory must be empty (ENOTEMPTY).
func (fs *FS) Remove(p string) error {
	parts, err := split(p)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		return errors.Wrapf(uapi.EBUSY, "%q is the mount point", p)
	}
	fs.mu.Lock()
	dir, err := fs.walk(p, parts[:len(parts)-1])
	if err == nil && dir.kind != Dir {
		err = errors.Wrapf(uapi.ENOTDIR, "%q: the parent is not a directory", p)
	}
	var n *node
	if err == nil {
		var ok bool
		if n, ok = dir.entries[parts[len(parts)-1]]; !ok {
			err = errors.Wrapf(uapi.ENOENT, "%q does not exist", p)
		} else if n.kind == Dir && len(n.entries) > 0 {
			err = errors.Wrapf(uapi.ENOTEMPTY, "%q is a directory that is not empty", p)
		}
	}
	if err != nil {
		fs.mu.Unlock()
		return err
	}
	delete(dir.entries, parts[len(parts)-1])
	fs.mu.Unlock()
	// The reference goes outside the lock: dropping the last one frees
	// the object, which may take other locks.
	if n.release != nil {
		n.release()
	}
	return nil
}

// Rename moves the entry at from to to, which must not exist
// (renameat2(2) with RENAME_NOREPLACE, as cilium/ebpf moves a pin).
func (fs *FS) Rename(from, to string) error {
	fromParts, err := split(from)
	if err != nil {
		return err
	}
	if len(fromParts) == 0 {
		return errors.Wrapf(uapi.EBUSY, "%q is the mount point", from)
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	src, err := fs.walk(from, fromParts[:len(fromParts)-1])
	if err != nil {
		return err
	}
	n, ok := src.entries[fromParts[len(fromParts)-1]]
	if !ok {
		return errors.Wrapf(uapi.ENOENT, "%q does not exist", from)
	}
	dir, name, err := fs.parent(to)
	if err != nil {
		return err
	}
	if n.kind == Dir && strings.HasPrefix(path.Clean(to)+"/", path.Clean(from)+"/") {
		return errors.Wrapf(uapi.EINVAL, "%q cannot move into itself", from)
	}
	delete(src.entries, fromParts[len(fromParts)-1])
	dir.entries[name] = n
	return nil
}

// List returns the entries of the directory at p, sorted by name.
func (fs *FS) List(p string) ([]Entry, error) {
	parts, err := split(p)
	if err != nil {
		return nil, err
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n, err := fs.walk(p, parts)
	if err != nil {
		return nil, err
	}
	if n.kind != Dir {
		return nil, errors.Wrapf(uapi.ENOTDIR, "%q is not a directory", p)
	}
	out := make([]Entry, 0, len(n.entries))
	for name, e := range n.entries {
		out = append(out, Entry{Name: name, Kind: e.kind})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
