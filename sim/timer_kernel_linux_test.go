package sim_test

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// kernelTimers is timerTarget for this machine's kernel: its timers fire
// in real time, so a wait sleeps.
type kernelTimers struct{ coll *ebpf.Collection }

func (s *kernelTimers) run(t *testing.T, mapName string, c timerCommand) int32 {
	t.Helper()
	if err := s.coll.Maps["cmd"].Put(uint32(0), c); err != nil {
		t.Fatal(err)
	}
	prog := map[string]string{"arr": "timer_array", "htab": "timer_hash"}[mapName]
	if _, err := s.coll.Programs[prog].Run(&ebpf.RunOptions{Data: make([]byte, 64)}); err != nil {
		t.Fatal(err)
	}
	var rc int32
	if err := s.coll.Maps["results"].Lookup(uint32(0), &rc); err != nil {
		t.Fatal(err)
	}
	return rc
}

func (s *kernelTimers) wait(t *testing.T, d time.Duration) { time.Sleep(d) }

func (s *kernelTimers) put(t *testing.T, mapName string, key uint32, v timerElem) {
	t.Helper()
	if err := s.coll.Maps[mapName].Put(key, v); err != nil {
		t.Fatal(err)
	}
}

func (s *kernelTimers) elems(t *testing.T) map[string]map[uint32]timerElem {
	t.Helper()
	out := map[string]map[uint32]timerElem{}
	for _, name := range []string{"arr", "htab"} {
		out[name] = map[uint32]timerElem{}
		var key uint32
		var v timerElem
		it := s.coll.Maps[name].Iterate()
		for it.Next(&key, &v) {
			if v != (timerElem{}) {
				out[name][key] = v
			}
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// The same program, driven through the same steps, must see the same
// helper results and leave the same values in the kernel, where timers
// fire in real time, and in bpfsim, where they fire as the virtual clock
// is advanced by as much: errnos, cancels, re-arming and self-cancelling
// callbacks, keys passed to callbacks, timers ended with their elements.
func TestTimersAreTheKernels(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	spec, err := ebpf.LoadCollectionSpec("testdata/timer.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	want := runTimerScenario(t, &kernelTimers{coll})
	t.Logf("kernel:\n%s", want)
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) {
			if got := runTimerScenario(t, newSimTimers(t, &sim.Options{Runtime: rt})); got != want {
				t.Errorf("bpfsim:\n%s\nkernel:\n%s", got, want)
			}
		})
	}
}
