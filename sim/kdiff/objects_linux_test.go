//go:build linux

package kdiff

import (
	"errors"
	"path/filepath"
	"sort"
	"testing"

	"github.com/cilium/ebpf"
)

// Every program of bpfsim's clang-built test objects comes out of the
// verifier's rewrites as the kernel's: each object is loaded whole into
// this machine's kernel and into bpfsim (with the kernel's dead code
// rule), and each program's xlated code compared instruction by
// instruction (SameXlated allows only build-dependent constants).
func TestTestdataObjectsXlateAsTheKernel(t *testing.T) {
	objs, err := filepath.Glob("../testdata/*.bpf.o")
	if err != nil || len(objs) == 0 {
		t.Fatalf("no test objects: %v", err)
	}
	for _, obj := range objs {
		t.Run(filepath.Base(obj), func(t *testing.T) {
			k := linuxLikeSim(t)
			spec, err := ebpf.LoadCollectionSpec(obj)
			if err != nil {
				t.Fatal(err)
			}
			kc, err := ebpf.NewCollection(spec)
			if err != nil {
				t.Fatalf("the kernel refused %s: %v", obj, err)
			}
			defer kc.Close()
			spec, err = ebpf.LoadCollectionSpec(obj)
			if err != nil {
				t.Fatal(err)
			}
			sc, err := k.NewCollection(spec)
			if err != nil {
				t.Fatalf("bpfsim refused %s: %v", obj, err)
			}
			defer sc.Close()
			names := make([]string, 0, len(kc.Programs))
			for name := range kc.Programs {
				names = append(names, name)
			}
			sort.Strings(names)
			for _, name := range names {
				kx, err := KernelXlated(kc.Programs[name])
				if err != nil {
					t.Fatal(err)
				}
				sp := sc.Programs[name]
				if sp == nil {
					t.Fatalf("bpfsim has no program %s", name)
				}
				if _, err := SameXlated(k, kx, sp.Instructions()); err != nil {
					if errors.Is(err, ErrNoKernelSymbols) {
						t.Skip(err)
					}
					t.Errorf("%s: %v", name, err)
				}
			}
			t.Logf("%d programs alike", len(names))
		})
	}
}
