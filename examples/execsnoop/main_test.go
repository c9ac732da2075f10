package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/examples/internal/bpfobj"
	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

func TestCommittedObjectIsFresh(t *testing.T) {
	bpfobj.CheckFresh(t, "bpf/execsnoop.bpf.c", "execsnoop.bpf.o", "go generate ./examples/execsnoop")
}

func loadSnoop(t *testing.T) *Snoop {
	t.Helper()
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Load(k)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// Every execution of the session is reported once, in order, with who
// ran it (ids, name, parent) and what, and counted per command.
func TestSessionIsReportedAsItRan(t *testing.T) {
	s := loadSnoop(t)
	session := Session()
	for _, e := range session {
		if err := s.Execve(e); err != nil {
			t.Fatal(err)
		}
	}
	events, err := s.Events()
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != len(session) {
		t.Fatalf("%d events for %d executions", len(events), len(session))
	}
	want := map[string]uint64{}
	for i, e := range session {
		got, arg1 := events[i], ""
		if len(e.Argv) > 1 {
			arg1 = e.Argv[1]
		}
		if got.PID != e.Task.TGID || got.PPID != e.Task.Parent.TGID || got.UID != e.Task.UID ||
			cstring(got.Comm[:]) != e.Task.Comm || cstring(got.Filename[:]) != e.Argv[0] ||
			got.FilenameLen != int32(len(e.Argv[0])+1) || cstring(got.Arg1[:]) != arg1 {
			t.Errorf("event %d: %+v, for %s running %q", i, got, e.Task.Comm, e.Argv)
		}
		want[e.Task.Comm]++
	}
	counts, err := s.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if len(counts) != len(want) || counts["bash"] != want["bash"] || counts["make"] != want["make"] {
		t.Errorf("counts %v, want %v", counts, want)
	}
}

// What the program does at the edges: a name longer than the event's
// buffer is cut and reported with the buffer's length, and a task the
// session does not know (init's child) has init as parent.
func TestExecveEdges(t *testing.T) {
	long := "/opt/" + strings.Repeat("x", 100)
	s := loadSnoop(t)
	task := &sim.Task{PID: 7, TGID: 7, Comm: "cron"}
	if err := s.Execve(Exec{Task: task, Argv: []string{long}}); err != nil {
		t.Fatal(err)
	}
	events, err := s.Events()
	if err != nil || len(events) != 1 {
		t.Fatalf("%d events, %v", len(events), err)
	}
	e := events[0]
	if cstring(e.Filename[:]) != long[:63] || e.FilenameLen != 64 || e.PPID != 1 || cstring(e.Arg1[:]) != "" {
		t.Errorf("%+v", e)
	}
}

// The kernel accepts the same object: its CO-RE relocations find this
// kernel's task_struct as they find bpfsim's. (The kernel cannot
// test-run tracepoint programs, so the comparison stops at the load.)
func TestTheKernelLoadsTheProgram(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object))
	if err != nil {
		t.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatalf("the kernel refuses execsnoop: %v", err)
	}
	coll.Close()
}

func TestRunPrintsTheSession(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"bash     4100   900    1000  /usr/bin/make -j2", "make     4200   4100   1000  /usr/bin/ld -o", "  make     3"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in\n%s", want, out.String())
		}
	}
}
