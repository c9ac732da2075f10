package kdiff_test

import (
	"math/rand/v2"
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

// TestJITMatchesInterpreterOnManyInputs loads generated programs (no maps)
// once into each kernel and runs each on many packets, derived from its
// own by random byte changes: every run must agree. BPFSIM_JIT_PROGRAMS
// and BPFSIM_JIT_INPUTS scale it; the closing figure of issue 7 (10
// million executions) came from this test.
func TestJITMatchesInterpreterOnManyInputs(t *testing.T) {
	is, js := jitPair(t)
	n := jitPrograms(t, 300)
	inputs := 50
	if v := os.Getenv("BPFSIM_JIT_INPUTS"); v != "" {
		var err error
		if inputs, err = strconv.Atoi(v); err != nil {
			t.Fatalf("BPFSIM_JIT_INPUTS=%q: %v", v, err)
		}
	}
	rnd := rand.New(rand.NewPCG(7, 7))
	execs := 0
	for seed := uint64(0); seed < uint64(n); seed++ {
		p := kdiff.Generate(seed, kdiff.DefaultGenOptions)
		ip, err := is.K.NewProgram(p.Spec)
		if err != nil {
			continue // the generator's occasional program the verifier refuses
		}
		jp, err := js.K.NewProgram(p.Spec)
		if err != nil {
			t.Fatalf("seed %d: the JIT kernel refused what the interpreter kernel loaded: %v", seed, err)
		}
		if jp.Runtime() != sim.RuntimeJIT {
			t.Fatalf("seed %d: not JITed: %v", seed, jp.JITError())
		}
		pkt := append([]byte(nil), p.Packet...)
		for i := 0; i < inputs; i++ {
			if i > 0 {
				for j := 0; j < 1+rnd.IntN(8); j++ {
					pkt[rnd.IntN(len(pkt))] = byte(rnd.Uint32())
				}
			}
			ir, ierr := ip.Test(&sim.RunOptions{Data: pkt})
			jr, jerr := jp.Test(&sim.RunOptions{Data: pkt})
			if (ierr == nil) != (jerr == nil) || ierr == nil && (ir.R0 != jr.R0 || string(ir.Data) != string(jr.Data)) {
				t.Fatalf("seed %d input %d (%x): interpreter %v %v, JIT %v %v\n%s", seed, i, pkt, ir, ierr, jr, jerr, kdiff.Listing(p.Spec))
			}
			execs++
		}
		ip.Close()
		jp.Close()
	}
	t.Logf("%d executions of %d programs agree between the interpreter and the JIT", execs, n)
}
