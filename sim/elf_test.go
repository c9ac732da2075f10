package sim_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

const progsObject = "testdata/progs.bpf.o"

// The committed objects must be built from the sources next to them:
// scripts/gen-bpf.sh records the source's SHA-256 when it builds one.
func TestCommittedObjectsAreFresh(t *testing.T) {
	sources, err := filepath.Glob("testdata/*.bpf.c")
	if err != nil || len(sources) == 0 {
		t.Fatalf("no sources: %v", err)
	}
	for _, src := range sources {
		text, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		obj := strings.TrimSuffix(src, ".c") + ".o"
		recorded, err := os.ReadFile(obj + ".srcsum")
		if err != nil {
			t.Fatalf("%s has no recorded source sum: build it with go generate ./sim", obj)
		}
		sum := sha256.Sum256(text)
		if got := hex.EncodeToString(sum[:]); got != strings.TrimSpace(string(recorded)) {
			t.Errorf("%s is stale: its source changed since it was built; run go generate ./sim", obj)
		}
	}
}

func loadObject(t *testing.T) *ebpf.CollectionSpec {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(progsObject)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func TestELFProgramsRunLikeInTheKernel(t *testing.T) {
	spec := loadObject(t)
	k := newKernel(t, nil)
	xdp, err := k.NewProgram(spec.Programs["xdp_sum"])
	if err != nil {
		t.Fatal(err)
	}
	pkt := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18}
	ret, err := xdp.Run(&sim.RunOptions{Data: pkt})
	if err != nil {
		t.Fatal(err)
	}
	if ret != 2 { // sum of 1..16 = 136, even: XDP_PASS
		t.Errorf("retval %d, want 2", ret)
	}
	if msgs := k.Trace().Messages(); len(msgs) != 1 || msgs[0] != "sum=136 len=18" {
		t.Errorf("trace %q", msgs)
	}

	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel comparison skipped: this machine cannot load BPF programs: %v", err)
	}
	kprog, err := ebpf.NewProgram(spec.Programs["xdp_sum"])
	if err != nil {
		t.Fatal(err)
	}
	defer kprog.Close()
	for _, in := range [][]byte{pkt, pkt[:14], append(pkt, 1)} {
		want, err := kprog.Run(&ebpf.RunOptions{Data: in})
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := xdp.Run(&sim.RunOptions{Data: in}); got != want {
			t.Errorf("%d-byte packet: kernel %d, bpfsim %d", len(in), want, got)
		}
	}
}

func TestSyscallProgramFromELF(t *testing.T) {
	k := newKernel(t, nil)
	p, err := k.NewProgram(loadObject(t).Programs["double_it"])
	if err != nil {
		t.Fatal(err)
	}
	type args struct{ In, Out uint64 }
	var out args
	if _, err := p.Run(&sim.RunOptions{Context: args{In: 21}, ContextOut: &out}); err != nil || out.Out != 42 {
		t.Errorf("out %+v, err %v", out, err)
	}
}
