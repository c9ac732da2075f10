package kdiff_test

import (
	"testing"

	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// BenchmarkMimScenario plays map-in-map scenarios (seeds 0 to 49 in
// turn: maps created, filled, a program loaded, run and every map dumped
// after each run) on bpfsim, on a kernel booted once, and on this
// machine's kernel. The kernel's figure is mostly its grace period after
// every update of an outer map from user space.
func BenchmarkMimScenario(b *testing.B) {
	scenarios := make([]*kdiff.MimScenario, 50)
	for i := range scenarios {
		scenarios[i] = kdiff.GenerateMim(uint64(i), kdiff.MimCorpusOptions{CPUs: 2})
	}
	b.Run("bpfsim", func(b *testing.B) {
		sm, err := kdiff.NewSimCPUs(2)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			sm.PlayMim(scenarios[i%len(scenarios)])
		}
	})
	b.Run("kernel", func(b *testing.B) {
		k, err := kdiff.OpenKernel()
		if err != nil {
			b.Skipf("skipped: this machine cannot load BPF programs: %v", err)
		}
		if k.PinnableCPUs() < 2 {
			b.Skip("skipped: test runs cannot be pinned to CPUs 0 and 1")
		}
		for i := 0; b.Loop(); i++ {
			k.PlayMim(scenarios[i%len(scenarios)])
		}
	})
}
