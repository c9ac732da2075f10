package sim_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// The kernel runs a raw tracepoint's test run in the task that asks for
// it; bpfsim, told that task's ids and names (RunOptions.Task), must find
// the same with the same program: from the helpers, and from the
// task_struct, its parent and its cred, read through CO-RE relocations
// against each kernel's own layout.
func TestTaskHelpersAreTheKernels(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	spec, err := ebpf.LoadCollectionSpec("testdata/task.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	results := coll.Maps["results"]
	if err := results.Put(uint32(0), bytes.Repeat([]byte{0xff}, binary.Size(taskResult{}))); err != nil {
		t.Fatal(err)
	}
	// The run's task is this goroutine's thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if _, err := coll.Programs["task_ids"].Run(&ebpf.RunOptions{Context: make([]byte, 8)}); err != nil {
		t.Fatal(err)
	}
	var want taskResult
	if err := results.Lookup(uint32(0), &want); err != nil {
		t.Fatal(err)
	}
	tid, pid, ppid := unix.Gettid(), os.Getpid(), os.Getppid()
	task := &sim.Task{
		PID: uint32(tid), TGID: uint32(pid), UID: uint32(os.Getuid()), GID: uint32(os.Getgid()),
		Comm:   procComm(t, fmt.Sprintf("/proc/self/task/%d/comm", tid)),
		Parent: &sim.Task{PID: uint32(ppid), TGID: uint32(ppid), Comm: procComm(t, fmt.Sprintf("/proc/%d/comm", ppid))},
	}
	if got := runTaskIDs(t, newKernel(t, nil), task); got != want {
		t.Errorf("bpfsim %+v\nkernel %+v", got, want)
	}
}

func procComm(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(string(b), "\n")
}
