package splitbtf

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkRelocate measures what the kernel does with a module's BTF at
// load: parse the split BTF on its distilled base, and relocate it onto
// vmlinux's (this machine's, else a synthetic one), the bases parsed once.
// libbpf's btf__new_split and btf__relocate, the kernel's code, run the
// same work in the same run when scripts/btfref.sh can build them.
func BenchmarkRelocate(b *testing.B) {
	t := &testing.T{}
	var base *BTF
	if raw, err := os.ReadFile("/sys/kernel/btf/vmlinux"); err == nil {
		if base, err = Parse(raw, nil); err != nil {
			b.Fatal(err)
		}
	} else {
		b.Logf("no vmlinux BTF, a synthetic kernel: %v", err)
		base, _ = buildKernel(t, 1, 3, 232)
	}
	var dist, split *BTF
	for seed := int64(0); dist == nil || len(dist.Types) < 8; seed++ {
		mod := randomModule(t, newRand(seed), base, false)
		var err error
		if dist, split, err = Distill(mod); err != nil {
			dist = nil
		}
	}
	splitRaw := split.Raw()
	b.Logf("a module of %d types on a distilled base of %d, onto %d types", len(split.Types), len(dist.Types), len(base.Types))
	b.Run("bpfsim", func(b *testing.B) {
		for b.Loop() {
			s, err := Parse(splitRaw, dist)
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := Relocate(s, base); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("libbpf", func(b *testing.B) {
		tool := libbpfTool(b)
		dir := b.TempDir()
		var args []string
		for i, raw := range [][]byte{dist.Raw(), splitRaw, base.Raw()} {
			p := filepath.Join(dir, strconv.Itoa(i))
			if err := os.WriteFile(p, raw, 0o644); err != nil {
				b.Fatal(err)
			}
			args = append(args, p)
		}
		// The tool times b.N rounds itself: the figure is its own.
		out, err := exec.Command(tool, append(append([]string{"bench-relocate"}, args...), strconv.Itoa(b.N))...).Output()
		if err != nil {
			b.Fatal(err)
		}
		f := strings.Fields(string(bytes.TrimSpace(out)))
		if len(f) != 2 || f[0] != "ns/op" {
			b.Fatalf("unexpected output %q", out)
		}
		ns, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(ns, "libbpf-ns/op")
	})
}
