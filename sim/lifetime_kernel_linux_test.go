//go:build linux

package sim_test

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Kernel-differential tests of object lifetimes: who holds a map, a
// program or a perf event, and what programs observe as the holders go.
// Each scenario is played in bpfsim and in this machine's kernel through
// the same moves (lifetime_world_linux_test.go), and the records of every
// step must be equal.

// compareLife plays s in bpfsim, checks bpfsim leaks nothing once the
// scenario closed everything, plays s in the kernel and returns the
// records that differ.
func compareLife(t *testing.T, s *lifeScenario) (steps int, diffs []string) {
	t.Helper()
	sw, err := newSimLife()
	if err != nil {
		t.Fatal(err)
	}
	sout, err := s.play(sw, nil)
	if err != nil {
		t.Fatalf("%s: bpfsim: %v", s.name, err)
	}
	if err := sw.k.CheckLeaks(); err != nil {
		diffs = append(diffs, fmt.Sprintf("%s: bpfsim after the scenario: %v", s.name, err))
	}
	kout, err := s.play(newKernLife(), sout)
	if err != nil {
		t.Fatalf("%s: kernel: %v", s.name, err)
	}
	for i := range max(len(sout), len(kout)) {
		var k, b string
		if i < len(kout) {
			k = kout[i]
		}
		if i < len(sout) {
			b = sout[i]
		}
		if k != b {
			diffs = append(diffs, fmt.Sprintf("%s step %d:\n  kernel %s\n  bpfsim %s", s.name, i, k, b))
		}
	}
	return len(kout), diffs
}

// runCorpus compares every scenario and reports the disagreements, at
// most a few in full.
func runCorpus(t *testing.T, scenarios []*lifeScenario) {
	t.Helper()
	steps, bad := 0, 0
	var shown []string
	for _, s := range scenarios {
		n, diffs := compareLife(t, s)
		steps += n
		if len(diffs) > 0 {
			bad++
			if len(shown) < 8 {
				shown = append(shown, diffs...)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d scenarios disagree; first differences:\n%s", bad, len(scenarios), strings.Join(shown, "\n"))
	}
	t.Logf("%d scenarios, %d steps compared, %d agree", len(scenarios), steps, len(scenarios)-bad)
}

// permutations returns every order of xs.
func permutations(xs []string) [][]string {
	if len(xs) <= 1 {
		return [][]string{append([]string(nil), xs...)}
	}
	var out [][]string
	for i := range xs {
		rest := append(append([]string(nil), xs[:i]...), xs[i+1:]...)
		for _, p := range permutations(rest) {
			out = append(out, append([]string{xs[i]}, p...))
		}
	}
	return out
}

func step(name string, do func(w lifeWorld) error) lifeStep {
	return lifeStep{name: name, do: do}
}

func eventualStep(name string, do func(w lifeWorld) error) lifeStep {
	return lifeStep{name: name, do: do, eventually: true}
}

// perfScenario is seed 001's BPF_F_PRESERVE_ELEMS: a perf event array
// with an event per CPU, installed through chosen fds among A (the
// creating fd), A' (its dup), B (opened by id) and B' (B's dup); the fds
// closed in the given order while two raw tracepoint programs hold the
// map; then the map opened again by id (C), an event installed through C,
// C closed; then the programs closed. After each step each program writes
// to its slot from each CPU: 0 where the slot holds the CPU's own event,
// -EOPNOTSUPP where it holds another CPU's, -ENOENT where it is empty.
func perfScenario(flags uint32, install [2]string, order []string, closeEvents bool) *lifeScenario {
	s := &lifeScenario{name: fmt.Sprintf("perf flags %#x install %v close %v events closed %v", flags, install, order, closeEvents)}
	add := func(st lifeStep) { s.steps = append(s.steps, st) }
	add(step("create A", func(w lifeWorld) error {
		return w.newMap("A", &ebpf.MapSpec{Type: ebpf.PerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: 2, Flags: flags})
	}))
	add(step("dup A as A'", func(w lifeWorld) error { return w.dup("A'", "A") }))
	add(step("open A by id as B", func(w lifeWorld) error { return w.openByID("B", "A") }))
	add(step("dup B as B'", func(w lifeWorld) error { return w.dup("B'", "B") }))
	for cpu := range 2 {
		ev := fmt.Sprintf("e%d", cpu)
		add(step("open "+ev, func(w lifeWorld) error { return w.newPerfEvent(ev, cpu) }))
		add(step(fmt.Sprintf("install %s in slot %d through %s", ev, cpu, install[cpu]), func(w lifeWorld) error {
			return w.update(install[cpu], uint32(cpu), ev)
		}))
	}
	for slot := range 2 {
		name := fmt.Sprintf("out%d", slot)
		add(step("load "+name, func(w lifeWorld) error {
			return w.load(name, ebpf.RawTracepoint, func(fd func(string) int) asm.Instructions {
				return outputTo(fd("A"), int32(slot)).Instructions
			})
		}))
	}
	if closeEvents {
		// The slots hold the events' files: their own fds do not matter.
		add(step("close e0 and e1", func(w lifeWorld) error {
			if err := w.closePerfEvent("e0"); err != nil {
				return err
			}
			return w.closePerfEvent("e1")
		}))
	}
	for _, h := range order {
		add(step("close "+h, func(w lifeWorld) error { return w.closeMap(h) }))
	}
	// Every user fd is closed; the programs still hold the map, which can
	// be opened again by id and filled again.
	add(step("open A by id as C", func(w lifeWorld) error { return w.openByID("C", "A") }))
	if !closeEvents {
		add(step("install e0 in slot 0 through C", func(w lifeWorld) error { return w.update("C", 0, "e0") }))
	}
	add(step("close C", func(w lifeWorld) error { return w.closeMap("C") }))
	add(eventualStep("close out0 and out1", func(w lifeWorld) error {
		if err := w.closeProg("out0"); err != nil {
			return err
		}
		return w.closeProg("out1")
	}))
	s.observe = func(w lifeWorld) string {
		var b strings.Builder
		for slot := range 2 {
			prog := fmt.Sprintf("out%d", slot)
			if !w.isOpen(prog) {
				continue
			}
			for cpu := range 2 {
				fmt.Fprintf(&b, "slot %d from cpu %d: %s; ", slot, cpu, lifeErr(w.run(prog, cpu)))
			}
		}
		b.WriteString(listedObjs(w, "A"))
		return b.String()
	}
	return s
}

// TestPerfEventArrayFileOwnershipMatchesKernel plays every order of
// closing A, A', B and B', for every choice of the fds the two events are
// installed through, with and without BPF_F_PRESERVE_ELEMS, with the
// events' own fds open or closed: 768 scenarios.
func TestPerfEventArrayFileOwnershipMatchesKernel(t *testing.T) {
	needKernel(t)
	fds := []string{"A", "A'", "B", "B'"}
	var corpus []*lifeScenario
	n := 0
	for _, flags := range []uint32{0, uapi.BPF_F_PRESERVE_ELEMS} {
		for _, i0 := range fds {
			for _, i1 := range fds {
				for _, order := range permutations(fds) {
					corpus = append(corpus, perfScenario(flags, [2]string{i0, i1}, order, n%2 == 1))
					n++
				}
			}
		}
	}
	if testing.Short() {
		corpus = corpus[:len(corpus)/8]
	}
	runCorpus(t, corpus)
}

var _ = rand.New
