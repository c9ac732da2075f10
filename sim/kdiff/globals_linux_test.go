//go:build linux

package kdiff

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
)

// Each program with global functions is loaded in this machine's kernel
// and in bpfsim: the same verdict, errno and message; for programs both
// accept, the same xlated code and instructions processed, and the same
// results, interpreted and JITed.
func TestGlobalFunctionsMatchKernel(t *testing.T) {
	k := linuxLikeSim(t)
	jit, err := sim.NewKernel(&sim.Options{Runtime: sim.RuntimeJIT})
	if err != nil {
		t.Fatal(err)
	}
	accepted := 0
	for _, c := range globalCases {
		t.Run(c.name, func(t *testing.T) {
			spec := &ebpf.ProgramSpec{Name: "globals", Type: ebpf.XDP, License: "GPL", Instructions: c.insns}
			if matchKernelVerdict(t, k, jit, spec, c.errno, c.msg, [][]byte{make([]byte, 14)}) {
				accepted++
			}
		})
	}
	t.Logf("%d programs accepted and run by both", accepted)
}
