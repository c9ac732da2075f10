//go:build linux

package lb

import (
	"errors"
	"testing"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// The whole balancer as the kernel's verifier leaves it: every one of its
// instructions (context loads converted, lookups inlined or called
// directly, dead code removed) is the instruction this machine's kernel
// runs, but for the build-dependent constants SameXlated allows. bpfsim
// runs here with the kernel's own dead code rule: by default it hard-wires
// branches from the verifier's predictions (seed 003), which removes more.
func TestXlatedBalancerIsTheKernels(t *testing.T) {
	kern := loadKernelLB(t, testSeed)
	kx, err := kdiff.KernelXlated(kern.prog)
	if err != nil {
		t.Fatal(err)
	}
	k, err := sim.NewKernel(&sim.Options{CPUs: 1, Seed: 1, HardWire: verifier.HardWireFromSeen})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Load(k, testSeed)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sx := s.Program().Instructions()
	off, err := kdiff.SameXlated(k, kx, sx)
	if errors.Is(err, kdiff.ErrNoKernelSymbols) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d instructions alike; this kernel's offsetof(struct bpf_array, value) is %d", len(sx), off)
}
