package kdiff_test

import (
	"os"
	"strconv"
	"testing"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// jitPair is an interpreter kernel and a JIT kernel that count tail calls
// alike (the JIT counts only those that reach a program).
func jitPair(t testing.TB) (interpreted, jited *kdiff.Sim) {
	t.Helper()
	i, err := kdiff.NewSimWith(&sim.Options{TailCallCount: interp.CountSuccesses})
	if err != nil {
		t.Fatal(err)
	}
	j, err := kdiff.NewSimWith(&sim.Options{TailCallCount: interp.CountSuccesses, Runtime: sim.RuntimeJIT})
	if err != nil {
		t.Fatal(err)
	}
	return i, j
}

// jitPrograms is how many generated programs TestJITMatchesInterpreter
// runs; BPFSIM_JIT_PROGRAMS raises it for a long differential run.
func jitPrograms(t testing.TB, def int) int {
	if v := os.Getenv("BPFSIM_JIT_PROGRAMS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("BPFSIM_JIT_PROGRAMS=%q: %v", v, err)
		}
		return n
	}
	if testing.Short() {
		return def / 10
	}
	return def
}

// TestJITMatchesInterpreter runs generated verified programs, with and
// without maps, in the interpreter and JITed on the A64 emulator: return
// values, packets, map contents and user-space results must agree, and
// every program must be JITed.
func TestJITMatchesInterpreter(t *testing.T) {
	is, js := jitPair(t)
	n := jitPrograms(t, 1500)
	ran := 0
	for seed := uint64(0); seed < uint64(n); seed++ {
		opts := kdiff.DefaultGenOptions
		if seed%3 == 2 {
			opts = kdiff.DefaultMapGenOptions
		}
		p := kdiff.Generate(seed, opts)
		io, jo := is.Run(p), js.Run(p)
		if d := kdiff.Diff(io, jo); d != "" {
			t.Fatalf("seed %d: JIT and interpreter differ: %s\n%s", seed, d, kdiff.Listing(p.Spec))
		}
		if io.Rejected == nil && io.MapErr == nil {
			ran++
		}
	}
	st := js.K.JITStats()
	if st.Fallbacks != 0 || st.Compiled < uint64(ran) {
		t.Fatalf("JIT kernel: %d programs compiled, %d fell back to the interpreter (last: %v), %d ran", st.Compiled, st.Fallbacks, st.LastFallback, ran)
	}
	if ran < n*9/10 {
		t.Fatalf("only %d of %d programs loaded and ran", ran, n)
	}
	t.Logf("%d programs, %d ran in both runtimes with equal results", n, ran)
}
