package kdiff_test

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// bpfsim's xlated dump prints what `bpftool prog dump xlated` prints, for
// the very instructions the kernel holds. The programs avoid cpu v4
// instructions, which older bpftool releases print in an older syntax, and
// bpf-to-bpf calls, which bpftool annotates with the JIT's symbol of the
// callee ("call pc+73#bpf_prog_<tag>_F") once the kernel has JITed them.
func TestDumpMatchesBpftool(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("skipped: this machine cannot load BPF programs: %v", err)
	}
	bpftool, err := exec.LookPath("bpftool")
	if err != nil {
		t.Skip("skipped: bpftool is not installed (Debian package bpftool)")
	}
	opts := kdiff.DefaultGenOptions
	opts.CPUv4 = false
	opts.Calls = false
	compared := 0
	for seed := uint64(0); seed < 30; seed++ {
		p := kdiff.Generate(seed, opts)
		prog, err := ebpf.NewProgram(p.Spec)
		if err != nil {
			continue
		}
		info, err := prog.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info.ID()
		want, err := exec.Command(bpftool, "prog", "dump", "xlated", "id", fmt.Sprint(id)).Output()
		if err != nil {
			t.Fatalf("bpftool: %v", err)
		}
		x, err := info.Instructions()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := insn.FromAsm(x)
		if err != nil {
			t.Fatal(err)
		}
		prog.Close()
		compared++
		if got := insn.Dump(raw, nil); got != string(want) {
			t.Fatalf("seed %d: dump differs from bpftool's:\n%s", seed, lineDiff(string(want), got))
		}
	}
	if compared < 25 {
		t.Fatalf("only %d programs compared", compared)
	}
}

func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "bpftool: %q\nbpfsim:  %q\n", wl, gl)
		}
	}
	return b.String()
}
