package bpffs_test

import (
	"errors"
	"testing"

	"github.com/bpfsim/bpfsim/sim/bpffs"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

const root = bpffs.Mount

// Each operation, in order on one filesystem, with the errno the kernel
// gives.
func TestOperationsGiveTheKernelsErrnos(t *testing.T) {
	fs := bpffs.New()
	released := map[string]int{}
	pin := func(p string) error {
		return fs.Pin(p, bpffs.Map, p, func() { released[p]++ })
	}
	get := func(p string) error { return fs.Get(p, func(bpffs.Kind, any) error { return nil }) }
	for _, c := range []struct {
		name string
		err  error
		want error // nil: success
	}{
		{"mkdir", fs.Mkdir(root + "/d"), nil},
		{"mkdir again", fs.Mkdir(root + "/d"), uapi.EEXIST},
		{"mkdir under a missing directory", fs.Mkdir(root + "/x/y"), uapi.ENOENT},
		{"pin", pin(root + "/d/m"), nil},
		{"pin at a taken name", pin(root + "/d/m"), uapi.EEXIST},
		{"pin over a directory", pin(root + "/d"), uapi.EEXIST},
		{"pin into a missing directory", pin(root + "/x/m"), uapi.ENOENT},
		{"pin under a pinned object", pin(root + "/d/m/n"), uapi.ENOTDIR},
		{"pin with a dot in the name", pin(root + "/d/m.v2"), uapi.EPERM},
		{"pin outside the filesystem", pin("/tmp/m"), uapi.EPERM},
		{"pin at the mount point", pin(root), uapi.EEXIST},
		{"get", get(root + "/d/m"), nil},
		{"get a directory", get(root + "/d"), uapi.EACCES},
		{"get nothing", get(root + "/d/none"), uapi.ENOENT},
		{"remove a directory that is not empty", fs.Remove(root + "/d"), uapi.ENOTEMPTY},
		{"rename onto a taken name", fs.Rename(root+"/d/m", root+"/d"), uapi.EEXIST},
		{"rename", fs.Rename(root+"/d/m", root+"/m"), nil},
		{"get the old name", get(root + "/d/m"), uapi.ENOENT},
		{"get the new name", get(root + "/m"), nil},
		{"remove the directory, now empty", fs.Remove(root + "/d"), nil},
		{"remove the pin", fs.Remove(root + "/m"), nil},
		{"remove it again", fs.Remove(root + "/m"), uapi.ENOENT},
		{"remove the mount point", fs.Remove(root), uapi.EBUSY},
	} {
		if c.want == nil && c.err != nil || c.want != nil && !errors.Is(c.err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.err, c.want)
		}
	}
	// The pin's reference went exactly once, when the pin was removed;
	// the pins that failed never held one.
	if len(released) != 1 || released[root+"/d/m"] != 1 {
		t.Errorf("references dropped: %v, want one for %s/d/m", released, root)
	}
}

func TestListShowsEntriesByName(t *testing.T) {
	fs := bpffs.New()
	if err := fs.Mkdir(root + "/tc"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{root + "/tc/b", root + "/a"} {
		if err := fs.Pin(p, bpffs.Map, 1, func() {}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := fs.List(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []bpffs.Entry{{Name: "a", Kind: bpffs.Map}, {Name: "tc", Kind: bpffs.Dir}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %v, want %v", got, want)
	}
	if _, err := fs.List(root + "/a"); !errors.Is(err, uapi.ENOTDIR) {
		t.Fatalf("listing a pin: %v", err)
	}
}
