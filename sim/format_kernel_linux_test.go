package sim_test

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
)

// testdata/format.bpf.o's bpf_snprintf and bpf_trace_vprintk calls give
// the same results, and the same text, in this machine's kernel and in
// bpfsim, interpreted and JITed.
func TestSnprintfAndTraceVprintkAreTheKernels(t *testing.T) {
	coll := kernelCollection(t, "testdata/format.bpf.o")
	if _, err := coll.Programs["format"].Run(&ebpf.RunOptions{Data: make([]byte, 64)}); err != nil {
		t.Fatal(err)
	}
	want := formatResultsOf(t, func(key uint32, r *formatResult) error { return coll.Maps["results"].Lookup(key, r) })
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		got := runFormatInSim(t, newKernel(t, &sim.Options{Runtime: rt}))
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s, result %d: bpfsim %s, kernel %s", rt, i, got[i], want[i])
			}
		}
	}
}
