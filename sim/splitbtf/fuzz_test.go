package splitbtf

import (
	"errors"
	"testing"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// FuzzRelocate reads arbitrary bytes as split BTF, on a distilled base of
// a synthetic kernel, and relocates them onto another build of that
// kernel, and distills them: each either fails with an errno or gives
// BTF that reads back as it encodes; neither panics nor changes its input.
func FuzzRelocate(f *testing.F) {
	t := &testing.T{}
	built, k := buildKernel(t, 1, 0, 232)
	running, _ := buildKernel(t, 5, 3, 232)
	dist, split, err := Distill(buildModule(t, built, k))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(split.Raw(), false)
	f.Add(buildModule(t, built, k).Raw(), true)
	f.Fuzz(func(t *testing.T, raw []byte, onBuilt bool) {
		base := dist
		if onBuilt {
			base = built
		}
		s, err := Parse(raw, base)
		if err != nil {
			mustErrno(t, err)
			return
		}
		if back, err := Parse(s.Raw(), base); err != nil || string(back.Raw()) != string(s.Raw()) {
			t.Fatalf("parsed BTF does not read back: %v", err)
		}
		before := string(s.Raw())
		if onBuilt {
			d, ns, err := Distill(s)
			if err != nil {
				mustErrno(t, err)
				return
			}
			if _, err := Parse(ns.Raw(), d); err != nil {
				t.Fatalf("distilled split BTF does not read on its base: %v", err)
			}
		} else {
			r, _, err := Relocate(s, running)
			if err != nil {
				mustErrno(t, err)
				return
			}
			if _, err := Parse(r.Raw(), running); err != nil {
				t.Fatalf("relocated BTF does not read on its base: %v", err)
			}
		}
		if string(s.Raw()) != before {
			t.Fatal("the input changed")
		}
	})
}

func mustErrno(t *testing.T, err error) {
	var errno uapi.Errno
	if !errors.As(err, &errno) {
		t.Fatalf("error without an errno: %v", err)
	}
}
