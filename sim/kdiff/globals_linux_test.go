//go:build linux

package kdiff

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
)

// Each program with global functions is loaded in this machine's kernel
// and in bpfsim: the same verdict, errno and message; for programs both
// accept, the same xlated code (a global function no code calls is
// removed as dead) and instructions processed, and the same results,
// interpreted and JITed.
func TestGlobalFunctionsMatchKernel(t *testing.T) {
	k := linuxLikeSim(t)
	jit, err := sim.NewKernel(&sim.Options{Runtime: sim.RuntimeJIT})
	if err != nil {
		t.Fatal(err)
	}
	accepted := 0
	for _, c := range globalCases {
		t.Run(c.name, func(t *testing.T) {
			spec := &ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: c.insns}
			kp, kerr := ebpf.NewProgramWithOptions(spec, ebpf.ProgramOptions{LogLevel: ebpf.LogLevelBranch, LogSizeStart: 1 << 20})
			if kp != nil {
				defer kp.Close()
			}
			if c.errno != errnoOf(kerr) || c.msg != verifierMessage(kerr) {
				t.Errorf("the kernel answers %v: %s; the table (TestGlobalFunctionVerdicts) says %v: %s",
					errnoOf(kerr), verifierMessage(kerr), c.errno, c.msg)
			}
			sp, serr := k.NewProgram(spec)
			if errnoOf(kerr) != errnoOf(serr) || verifierMessage(kerr) != verifierMessage(serr) {
				t.Fatalf("verdicts differ\nkernel: %v: %s\nbpfsim: %v: %s", errnoOf(kerr), verifierMessage(kerr), errnoOf(serr), verifierMessage(serr))
			}
			if kerr != nil {
				return
			}
			defer sp.Close()
			accepted++
			sameProgram(t, k, c.name, kp, sp)
			jp, err := jit.NewProgram(spec)
			if err != nil {
				t.Fatal(err)
			}
			defer jp.Close()
			pkt := make([]byte, 14)
			want, err := kp.Run(&ebpf.RunOptions{Data: pkt})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []*sim.Program{sp, jp} {
				got, err := p.Run(&sim.RunOptions{Data: pkt})
				if err != nil {
					t.Fatal(err)
				}
				if uint32(got) != want {
					t.Errorf("kernel %d, bpfsim %d", want, uint32(got))
				}
			}
		})
	}
	t.Logf("%d programs accepted and run by both", accepted)
}
