package bpfobj

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

// fakeT records whether a check failed.
type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Helper()               {}
func (f *fakeT) Errorf(string, ...any) { f.failed = true }
func (f *fakeT) Fatal(...any)          { f.failed = true }
func (f *fakeT) Fatalf(string, ...any) { f.failed = true }

func TestCheckFreshPassesOnlyTheSourcesSum(t *testing.T) {
	dir := t.TempDir()
	src, obj := filepath.Join(dir, "p.bpf.c"), filepath.Join(dir, "p.bpf.o")
	write := func(name, s string) {
		if err := os.WriteFile(name, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(src, "int x;\n")
	sum := sha256.Sum256([]byte("int x;\n"))
	for _, tc := range []struct {
		name   string
		srcsum string // "" for none
		fails  bool
	}{
		{"the source's sum", hex.EncodeToString(sum[:]) + "\n", false},
		{"another sum", hex.EncodeToString(make([]byte, 32)) + "\n", true},
		{"no recorded sum", "", true},
	} {
		os.Remove(obj + ".srcsum")
		if tc.srcsum != "" {
			write(obj+".srcsum", tc.srcsum)
		}
		f := &fakeT{}
		CheckFresh(f, src, obj, "go generate")
		if f.failed != tc.fails {
			t.Errorf("%s: failed=%v, want %v", tc.name, f.failed, tc.fails)
		}
	}
}
