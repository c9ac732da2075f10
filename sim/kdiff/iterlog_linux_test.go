package kdiff

import (
	"testing"

	"github.com/cilium/ebpf"
)

// The iterator programs of testdata/mapiter.bpf.o loaded at log level 2
// in this machine's kernel and in bpfsim: the context's trusted pointers,
// the seq_file read out of the trusted meta (trusted too, by the kernel's
// list of such fields), the key and value buffers, the same verdicts and
// whole logs (but for the btf ids in them, each kernel's own). The chunks
// program's log shows a scalar linked to its copy across a 32-bit add of
// a constant ("id=3+0", BPF_ADD_CONST32).
func TestIteratorLogsAreTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	spec, err := ebpf.LoadCollectionSpec("../testdata/mapiter.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"double_values", "chunks"} {
		t.Run(name, func(t *testing.T) {
			p := spec.Programs[name]
			kerr, serr, klog, slog := loadBothLogged(t, k, p.Copy(), p.Copy())
			if kerr != nil || serr != nil {
				t.Fatalf("kernel: %v\nbpfsim: %v", kerr, serr)
			}
			a := btfIDNote.ReplaceAllString(globalFuncLog(klog), "has btf_id ID type")
			b := btfIDNote.ReplaceAllString(globalFuncLog(slog), "has btf_id ID type")
			if a != b {
				t.Errorf("logs differ\nkernel:\n%s\nbpfsim:\n%s", a, b)
			}
		})
	}
}
