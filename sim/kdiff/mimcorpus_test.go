package kdiff_test

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// mimCorpusSize is the number of map-in-map scenarios compared with the
// kernel: seeds 0 to mimCorpusSize-1.
const mimCorpusSize = 500

func TestMimGeneratorIsDeterministic(t *testing.T) {
	for seed := uint64(0); seed < 20; seed++ {
		a, b := kdiff.GenerateMim(seed, kdiff.MimCorpusOptions{CPUs: 2}), kdiff.GenerateMim(seed, kdiff.MimCorpusOptions{CPUs: 2})
		if a.String() != b.String() {
			t.Fatalf("seed %d gave two scenarios:\n%s\n%s", seed, a, b)
		}
	}
}

// Without a kernel to compare with, bpfsim must still play every scenario
// to its end: every step gives a result with an errno, and nothing is left
// once the scenario has closed its maps and program.
func TestMimCorpusPlaysOnBpfsim(t *testing.T) {
	for seed := uint64(0); seed < 100; seed++ {
		sm, err := kdiff.NewSimCPUs(2)
		if err != nil {
			t.Fatal(err)
		}
		s := kdiff.GenerateMim(seed, kdiff.MimCorpusOptions{CPUs: 2})
		o := sm.PlayMim(s)
		for _, l := range o.Lines {
			if strings.Contains(l, "no errno") || strings.Contains(l, "unknown id") {
				t.Errorf("seed %d: %s", seed, l)
			}
		}
		if err := sm.K.CheckLeaks(); err != nil {
			t.Errorf("seed %d: %v", seed, err)
		}
	}
}

// TestMapInMapCorpusMatchesKernel plays generated map-in-map scenarios
// (mimgen.go) in this machine's kernel and in bpfsim and compares
// everything they show: load verdicts (errno and verifier message), the
// errno of every user-space step, every run's return value and, after
// every run, every map's contents, outer maps as which inner map each slot
// holds. bpfsim must also free everything once a scenario closes its maps.
func TestMapInMapCorpusMatchesKernel(t *testing.T) {
	k, err := kdiff.OpenKernel()
	if err != nil {
		t.Skipf("skipped: this machine cannot load BPF programs: %v", err)
	}
	cpus := min(k.PinnableCPUs(), 2)
	if cpus == 0 {
		t.Skip("skipped: test runs cannot be pinned to CPU 0")
	}
	// The kernel waits for a grace period after every update and delete
	// of a map of maps from user space (maybe_wait_bpf_programs), so
	// scenarios play on the kernel side several at a time: the waits
	// overlap.
	scenarios := make([]*kdiff.MimScenario, mimCorpusSize)
	kernel := make([]kdiff.MimOutcome, mimCorpusSize)
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				kernel[i] = k.PlayMim(scenarios[i])
			}
		}()
	}
	for i := range scenarios {
		scenarios[i] = kdiff.GenerateMim(uint64(i), kdiff.MimCorpusOptions{CPUs: cpus})
		next <- i
	}
	close(next)
	wg.Wait()

	var accepted, runs, changing, lines, failed int
	refused := map[string]int{}
	features := map[string]int{}
	for i, s := range scenarios {
		seed, ko := s.Seed, kernel[i]
		sm, err := kdiff.NewSimCPUs(k.PossibleCPUs())
		if err != nil {
			t.Fatal(err)
		}
		so := sm.PlayMim(s)
		if err := sm.K.CheckLeaks(); err != nil {
			t.Errorf("seed %d: bpfsim after the scenario: %v", seed, err)
		}
		if ko.Verdict != so.Verdict || strings.Join(ko.Lines, "\n") != strings.Join(so.Lines, "\n") {
			failed++
			if failed <= 5 {
				t.Errorf("%s\nkernel: %s\nbpfsim: %s\n%s", s, ko.Verdict, so.Verdict, mimLineDiff(ko.Lines, so.Lines))
			}
			continue
		}
		if ko.Accepted {
			accepted++
		} else {
			refused[ko.Verdict]++
		}
		runs += ko.Runs
		changing += ko.RunsChangingMaps
		lines += len(ko.Lines)
		for _, f := range s.Features {
			features[f]++
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d scenarios differ", failed, mimCorpusSize)
	}
	t.Logf("%d scenarios agree: %d programs accepted, %d refused; %d runs compared (%d changed a map), %d lines of results and map contents",
		mimCorpusSize-failed, accepted, mimCorpusSize-failed-accepted, runs, changing, lines)
	var ks []string
	for v, n := range refused {
		ks = append(ks, fmt.Sprintf("  %3d refused: %s", n, v))
	}
	sort.Strings(ks)
	t.Logf("verdicts:\n%s", strings.Join(ks, "\n"))
	ks = nil
	for f, n := range features {
		ks = append(ks, fmt.Sprintf("  %3d %s", n, f))
	}
	sort.Strings(ks)
	t.Logf("scenarios with:\n%s", strings.Join(ks, "\n"))
}

// mimLineDiff shows the lines of two outcomes side by side, marking those
// that differ.
func mimLineDiff(k, s []string) string {
	var b strings.Builder
	for i := 0; i < max(len(k), len(s)); i++ {
		var kl, sl string
		if i < len(k) {
			kl = k[i]
		}
		if i < len(s) {
			sl = s[i]
		}
		if kl == sl {
			fmt.Fprintf(&b, "    %s\n", kl)
		} else {
			fmt.Fprintf(&b, "  kernel: %s\n  bpfsim: %s\n", kl, sl)
		}
	}
	return b.String()
}
