package main

import (
	"bytes"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// The same object in this machine's kernel: count, test-run 7 times in
// this thread, makes the thread a value of 7 calls; the task iterator
// lists the thread, alone, with its ids and name and those calls; user
// space reads the same value through a pidfd of the thread. The CO-RE
// relocations find Linux's task_struct as they find bpfsim's.
func TestTheObjectCountsInTheKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object))
	if err != nil {
		t.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	// A raw tracepoint test run runs in the asking thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	for i := 0; i < 7; i++ {
		if _, err := coll.Programs["count"].Run(&ebpf.RunOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	it, err := link.AttachIter(link.IterOptions{Program: coll.Programs["dump"]})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	recs, err := ReadRecords(it.Open)
	if err != nil {
		t.Fatal(err)
	}
	comm, err := os.ReadFile("/proc/thread-self/comm")
	if err != nil {
		t.Fatal(err)
	}
	var mine *Record
	for i := range recs {
		if int(recs[i].PID) == tid {
			mine = &recs[i]
		}
	}
	switch {
	case len(recs) != 1 || mine == nil:
		t.Fatalf("the kernel's iterator lists %d tasks with counters, want this thread (%d) alone: %+v", len(recs), tid, recs)
	case int(mine.TGID) != os.Getpid() || mine.Name() != strings.TrimSpace(string(comm)) || mine.Stats.Calls != 7 || mine.Stats.FirstNs > mine.Stats.LastNs:
		t.Fatalf("this thread's record: %+v (%s), want tgid %d, name %q, 7 calls", *mine, mine.Name(), os.Getpid(), strings.TrimSpace(string(comm)))
	}
	fd, err := unix.PidfdOpen(tid, unix.O_EXCL) // PIDFD_THREAD
	if err != nil {
		t.Skipf("pidfd_open of a thread: %v", err)
	}
	defer unix.Close(fd)
	var st Stats
	if err := coll.Maps["task_stats"].Lookup(uint32(fd), &st); err != nil || st != mine.Stats {
		t.Fatalf("the value through a pidfd: %+v, %v; the iterator's %+v", st, err, mine.Stats)
	}
}
