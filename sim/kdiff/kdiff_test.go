package kdiff_test

import (
	"bytes"
	"sort"
	"strings"
	"testing"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

func TestGeneratorIsDeterministic(t *testing.T) {
	a := kdiff.Generate(42, kdiff.DefaultGenOptions)
	b := kdiff.Generate(42, kdiff.DefaultGenOptions)
	if kdiff.Listing(a.Spec) != kdiff.Listing(b.Spec) || string(a.Packet) != string(b.Packet) {
		t.Fatal("the same seed gave two programs")
	}
	if kdiff.Listing(a.Spec) == kdiff.Listing(kdiff.Generate(43, kdiff.DefaultGenOptions).Spec) {
		t.Fatal("two seeds gave the same program")
	}
}

// The acceptance corpus: programs the kernel accepts must give the same
// return value and output packet on bpfsim.
const (
	differentialPrograms = 2600
	minAccepted          = 2000
)

func TestInterpreterMatchesKernel(t *testing.T) {
	s, err := kdiff.NewSimWith(&sim.Options{Runtime: sim.RuntimeInterpreter})
	if err != nil {
		t.Fatal(err)
	}
	matchesKernel(t, s)
}

// TestJITMatchesKernel is the same corpus JITed to arm64 and run on the
// A64 emulator: the kernel (x86-64 JIT) and bpfsim's arm64 code must give
// the same results.
func TestJITMatchesKernel(t *testing.T) {
	s, err := kdiff.NewSimWith(&sim.Options{Runtime: sim.RuntimeJIT})
	if err != nil {
		t.Fatal(err)
	}
	matchesKernel(t, s)
	if st := s.K.JITStats(); st.Compiled < minAccepted || st.Fallbacks != 0 {
		t.Errorf("JIT: %d programs compiled, %d run interpreted (%v)", st.Compiled, st.Fallbacks, st.LastFallback)
	}
}

func matchesKernel(t *testing.T, s *kdiff.Sim) {
	k, err := kdiff.OpenKernel()
	if err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	accepted, ranThrough, rejected := 0, 0, map[string]int{}
	var kernelRewrites []uint64
	for seed := uint64(0); seed < differentialPrograms; seed++ {
		p := kdiff.Generate(seed, kdiff.DefaultGenOptions)
		ko := k.Run(p)
		if ko.Rejected != nil {
			rejected[lastLine(ko.Rejected.Error())]++
			continue
		}
		accepted++
		if !bytes.Equal(ko.Packet, p.Packet) {
			ranThrough++ // the epilogue wrote results into the packet
		}
		// The kernel's own xlated code (ctx rewrites, division guards
		// using AX, dead code removed) must run the same on bpfsim.
		if ko.XlatedErr != nil {
			t.Fatalf("seed %d: reading the kernel's xlated program: %v", seed, ko.XlatedErr)
		}
		if d := kdiff.Diff(ko, s.RunXlated(p, ko.Xlated)); d != "" {
			t.Errorf("seed %d: the kernel's xlated code runs differently on bpfsim: %s", seed, d)
		}
		so := s.Run(p)
		d := kdiff.Diff(ko, so)
		if d == "" {
			continue
		}
		// Is it the kernel's rewrite that changed the program? Then
		// bpfsim running the kernel's xlated code gives the kernel's
		// result.
		if kdiff.Diff(ko, s.RunXlated(p, ko.Xlated)) == "" {
			kernelRewrites = append(kernelRewrites, seed)
			t.Logf("seed %d: the kernel's verifier rewrote the program into one that computes something else; "+
				"bpfsim running the kernel's xlated code agrees with the kernel (%s)", seed, d)
			continue
		}
		t.Errorf("seed %d: %s\n%s", seed, d, kdiff.Listing(p.Spec))
		if t.Failed() && accepted > 50 {
			break
		}
	}
	t.Logf("%d programs generated, %d accepted by the kernel and compared, %d ran to their epilogue",
		differentialPrograms, accepted, ranThrough)
	reasons := make([]string, 0, len(rejected))
	for r := range rejected {
		reasons = append(reasons, r)
	}
	sort.Slice(reasons, func(i, j int) bool { return rejected[reasons[i]] > rejected[reasons[j]] })
	for _, r := range reasons {
		t.Logf("kernel rejected %d: %s", rejected[r], r)
	}
	// A kernel rewrite that changes a program's result is a kernel bug;
	// they are rare, and each is logged above. More would point at the
	// classification, not the kernel.
	if len(kernelRewrites) > accepted/100 {
		t.Errorf("%d programs blamed on kernel rewrites (seeds %v): too many to be kernel bugs", len(kernelRewrites), kernelRewrites)
	}
	if ranThrough < accepted*99/100 {
		t.Errorf("only %d of %d programs ran to the end: the comparison is weak", ranThrough, accepted)
	}
	if accepted < minAccepted {
		t.Errorf("only %d programs accepted by the kernel, want at least %d", accepted, minAccepted)
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}
