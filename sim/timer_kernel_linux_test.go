package sim_test

import (
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
)

// kernelTimers is timerTarget for this machine's kernel: its timers fire
// in real time, so a wait sleeps.
type kernelTimers struct {
	*timerMaps[*ebpf.MapIterator, *ebpf.Map]
}

func (s *kernelTimers) wait(t *testing.T, d time.Duration) { time.Sleep(d) }

// The same program, driven through the same steps, must see the same
// helper results and leave the same values in the kernel, where timers
// fire in real time, and in bpfsim, where they fire as the virtual clock
// is advanced by as much: errnos, cancels, re-arming and self-cancelling
// callbacks, keys passed to callbacks, timers ended with their elements.
func TestTimersAreTheKernels(t *testing.T) {
	var want string
	for attempt := 1; ; attempt++ {
		coll := kernelCollection(t, "testdata/timer.bpf.o")
		run := func(name string) error {
			_, err := coll.Programs[name].Run(&ebpf.RunOptions{Data: make([]byte, 64)})
			return err
		}
		want = runTimerScenario(t, &kernelTimers{&timerMaps[*ebpf.MapIterator, *ebpf.Map]{coll.Maps, run}})
		// bpf_timer_init allocates with GFP_ATOMIC, charged to this
		// process's memory cgroup: under memory pressure (other tests
		// running beside this one) the kernel answers -ENOMEM, which
		// says nothing about timers. Such a run is done again.
		if !strings.Contains(want, ": -12\n") {
			break
		}
		if attempt == 3 {
			t.Fatalf("the kernel's timer allocations failed (-ENOMEM) in three runs: memory pressure on this machine\n%s", want)
		}
		t.Logf("the kernel answered -ENOMEM (memory pressure); running its scenario again")
	}
	t.Logf("kernel:\n%s", want)
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) {
			if got := runTimerScenario(t, newSimTimers(t, &sim.Options{Runtime: rt})); got != want {
				t.Errorf("bpfsim:\n%s\nkernel:\n%s", got, want)
			}
		})
	}
}

// The kernel gives each program of testdata/timer_refused.bpf.o the
// verdict and the message bpfsim gives it.
func TestTimerRefusalsAreTheKernels(t *testing.T) {
	checkRefusalsAreTheKernels(t, "testdata/timer_refused.bpf.o", timerRefusals)
}
