//go:build linux

package kdiff

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// matchKernelVerdict loads spec in this machine's kernel and in k (and,
// when both accept, in jit): the kernel must still answer what the table
// says (errno, msg), bpfsim the same; programs both accept must xlate and
// verify alike (sameProgram) and return the same on every packet,
// interpreted and JITed. It reports whether both accepted.
func matchKernelVerdict(t *testing.T, k, jit *sim.Kernel, spec *ebpf.ProgramSpec, errno uapi.Errno, msg string, pkts [][]byte) bool {
	t.Helper()
	kp, kerr := ebpf.NewProgramWithOptions(spec, ebpf.ProgramOptions{LogLevel: ebpf.LogLevelBranch, LogSizeStart: 1 << 20})
	if kp != nil {
		defer kp.Close()
	}
	if errno != errnoOf(kerr) || msg != verifierMessage(kerr) {
		t.Errorf("the kernel answers %v: %s; the table says %v: %s", errnoOf(kerr), verifierMessage(kerr), errno, msg)
	}
	sp, serr := k.NewProgram(spec)
	if errnoOf(kerr) != errnoOf(serr) || verifierMessage(kerr) != verifierMessage(serr) {
		t.Fatalf("verdicts differ\nkernel: %v: %s\nbpfsim: %v: %s", errnoOf(kerr), verifierMessage(kerr), errnoOf(serr), verifierMessage(serr))
	}
	if kerr != nil {
		return false
	}
	defer sp.Close()
	sameProgram(t, k, spec.Name, kp, sp)
	jp, err := jit.NewProgram(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer jp.Close()
	for _, pkt := range pkts {
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
				t.Errorf("packet %x: kernel %d, bpfsim %d", pkt[:1], want, uint32(got))
			}
		}
	}
	return true
}
