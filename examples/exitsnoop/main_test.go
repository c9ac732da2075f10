package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/bpfsim/bpfsim/examples/internal/bpfobj"
	"github.com/bpfsim/bpfsim/sim"
)

// runSession plays the example's session on a kernel made with opts,
// reporting the children of targPPID (0: every task), and returns the
// events.
func runSession(t *testing.T, opts *sim.Options, targPPID uint32) []Event {
	t.Helper()
	k, err := sim.NewKernel(opts)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Load(k, targPPID)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := Run(k, Session); err != nil {
		t.Fatal(err)
	}
	got, err := s.Events()
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestCommittedObjectIsFresh(t *testing.T) {
	bpfobj.CheckFresh(t, "bpf/exitsnoop.bpf.c", "exitsnoop.bpf.o", "go generate ./examples/exitsnoop")
}

// Every task of the session that exits is reported once, in order, with
// its process, parent, age on the kernel's clock and the ticks of the
// configured CONFIG_HZ; a thread's exit is not its process's; a task
// still running is not reported. Interpreted and JITed, at two tick
// rates.
func TestExitsAreReportedWithTheirAges(t *testing.T) {
	type exit struct {
		comm             string
		pid, ppid, tid   uint32
		age              time.Duration
		lastOfItsProcess bool
	}
	want := []exit{
		{"cc", 210, 200, 210, 1500 * time.Millisecond, true},
		{"make-worker", 200, 100, 201, 1850 * time.Millisecond, false},
		{"make", 200, 100, 200, 2200 * time.Millisecond, true},
		{"bash", 100, 1, 100, 5400 * time.Millisecond, true},
	}
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		for _, hz := range []string{"", "1000"} {
			t.Run(rt.String()+"/hz="+hz, func(t *testing.T) {
				opts := &sim.Options{Runtime: rt}
				ticksPerSecond := uint64(250) // the default configuration's
				if hz != "" {
					opts.Config = sim.DefaultConfig()
					opts.Config["CONFIG_HZ"] = hz
					ticksPerSecond = 1000
				}
				got := runSession(t, opts, 0)
				if len(got) != len(want) {
					t.Fatalf("%d events, want %d: %+v", len(got), len(want), got)
				}
				for i, w := range want {
					e := got[i]
					if e.Name() != w.comm || e.PID != w.pid || e.PPID != w.ppid || e.TID != w.tid ||
						time.Duration(e.AgeNs) != w.age || e.AgeTicks != uint64(w.age)*ticksPerSecond/1e9 || (e.Dead == 1) != w.lastOfItsProcess {
						t.Errorf("event %d: %+v (%s), want %+v", i, e, e.Name(), w)
					}
				}
			})
		}
	}
}

// targ_ppid keeps only one process's children.
func TestTargetParentFilters(t *testing.T) {
	if got := runSession(t, nil, 100); len(got) != 2 || got[0].TID != 201 || got[1].TID != 200 {
		t.Errorf("the shell's children: %+v, want make-worker's and make's exits", got)
	}
}

func TestTheExamplePrintsItsReport(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out, []string{"--hz", "100"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CONFIG_HZ=100", "cc              210    200    210     1.50     150", "a thread; its process lives on", "crond (pid 150) is still running"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, out.String())
		}
	}
}
