package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/bpfsim/bpfsim/examples/internal/bpfobj"
	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func TestCommittedObjectIsFresh(t *testing.T) {
	bpfobj.CheckFresh(t, "bpf/taskstats.bpf.c", "taskstats.bpf.o", "go generate ./examples/taskstats")
}

// Each task's calls are counted in its own value, which the iterator
// lists by pid with the task's ids and name, and user space reads through
// a pidfd; a task that exits loses its value, and pidfd_open finds it no
// more. Interpreted and JITed.
func TestEachTaskCountsItsOwnCalls(t *testing.T) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) {
			k, err := sim.NewKernel(&sim.Options{Runtime: rt})
			if err != nil {
				t.Fatal(err)
			}
			s, err := Load(k)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.Run(); err != nil {
				t.Fatal(err)
			}
			recs, err := s.List()
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != len(Tasks) {
				t.Fatalf("%d records, want one per task (%d)", len(recs), len(Tasks))
			}
			for i, r := range recs {
				want := Tasks[i]
				if uint32(r.PID) != want.Task.PID || uint32(r.TGID) != want.Task.TGID || r.Name() != want.Task.Comm ||
					r.Stats.Calls != uint64(want.Calls) || r.Stats.FirstNs > r.Stats.LastNs {
					t.Errorf("record %d: %+v, want task %+v with %d calls", i, r, want.Task, want.Calls)
				}
			}
			// A second round of calls adds to the same values.
			if err := s.Syscalls(&Tasks[0].Task, 2); err != nil {
				t.Fatal(err)
			}
			if st, err := s.Lookup(int(Tasks[0].Task.PID)); err != nil || st.Calls != uint64(Tasks[0].Calls)+2 {
				t.Fatalf("the shell's value through a pidfd: %+v, %v", st, err)
			}
			if err := k.ExitTask(202); err != nil {
				t.Fatal(err)
			}
			if recs, err = s.List(); err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				if r.PID == 202 {
					t.Fatalf("the exited worker is still listed: %+v", r)
				}
			}
			if _, err := s.Lookup(202); !errors.Is(err, uapi.ESRCH) {
				t.Fatalf("pidfd_open of the exited worker: %v", err)
			}
		})
	}
}

// The example prints both lists and the pidfd read.
func TestExampleRuns(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"worker-1       25", "After make and worker-1 exited", "40 calls"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
