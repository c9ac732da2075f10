package bpffs_test

import (
	"strings"
	"testing"

	"github.com/bpfsim/bpfsim/sim/bpffs"
)

// FuzzOperations runs a script of operations on paths made from the
// input: whatever the paths, no operation panics, and every pin that
// succeeded drops its reference exactly once, when its entry goes (by
// Remove, or at the end, when the test removes everything left).
func FuzzOperations(f *testing.F) {
	f.Add("m a\np a\np a/b\nr a\nn a b\ng b\nm a/c\np a/c/d.e\nr a")
	f.Add("p /tmp/x\nm .\nm ..\np ../a\nm a//b\nn a a/b")
	f.Fuzz(func(t *testing.T, script string) {
		fs := bpffs.New()
		drops := map[int]int{}
		pins := 0
		for _, line := range strings.Split(script, "\n") {
			op, arg, _ := strings.Cut(line, " ")
			from, to, _ := strings.Cut(arg, " ")
			p := bpffs.Mount + "/" + from
			if strings.HasPrefix(from, "/") {
				p = from
			}
			switch op {
			case "m":
				fs.Mkdir(p)
			case "p":
				id := pins
				if fs.Pin(p, bpffs.Map, id, func() { drops[id]++ }) == nil {
					pins++
				}
			case "r":
				fs.Remove(p)
			case "n":
				fs.Rename(p, bpffs.Mount+"/"+to)
			case "g":
				fs.Get(p, func(bpffs.Kind, any) error { return nil })
			case "l":
				fs.List(p)
			}
		}
		// Remove everything, deepest first.
		var sweep func(dir string)
		sweep = func(dir string) {
			entries, err := fs.List(dir)
			if err != nil {
				t.Fatalf("listing %s: %v", dir, err)
			}
			for _, e := range entries {
				child := dir + "/" + e.Name
				if e.Kind == bpffs.Dir {
					sweep(child)
				}
				if err := fs.Remove(child); err != nil {
					t.Fatalf("removing %s: %v", child, err)
				}
			}
		}
		sweep(bpffs.Mount)
		for id := 0; id < pins; id++ {
			if drops[id] != 1 {
				t.Fatalf("pin %d dropped its reference %d times", id, drops[id])
			}
		}
		if len(drops) != pins {
			t.Fatalf("%d references dropped for %d pins", len(drops), pins)
		}
	})
}
