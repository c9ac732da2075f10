package sim_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// The kernel runs a raw tracepoint's test run in the task that asks for
// it; bpfsim, told that task's ids, names and user memory
// (RunOptions.Task), must find the same with the same program: from the
// helpers, from the task_struct, its parent and its cred, read through
// CO-RE relocations against each kernel's own layout, and from the user
// memory the arguments point at.
func TestTaskHelpersAreTheKernels(t *testing.T) {
	coll := kernelCollection(t, "testdata/task.bpf.o")
	results := coll.Maps["results"]
	if err := results.Put(uint32(0), bytes.Repeat([]byte{0xff}, binary.Size(taskResult{}))); err != nil {
		t.Fatal(err)
	}
	// The arguments point at a string and a word of this process's
	// memory (the heap's objects do not move).
	str, word := []byte("hello from user space\x00"), []byte{1, 2, 3, 4, 5, 6, 7, 8}
	strAddr, wordAddr := uint64(uintptr(unsafe.Pointer(&str[0]))), uint64(uintptr(unsafe.Pointer(&word[0])))
	args := binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, strAddr), wordAddr)
	// The run's task is this goroutine's thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if _, err := coll.Programs["task_ids"].Run(&ebpf.RunOptions{Context: args}); err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(str)
	runtime.KeepAlive(word)
	var want taskResult
	if err := results.Lookup(uint32(0), &want); err != nil {
		t.Fatal(err)
	}
	tid, pid, ppid := unix.Gettid(), os.Getpid(), os.Getppid()
	task := &sim.Task{
		PID: uint32(tid), TGID: uint32(pid), UID: uint32(os.Getuid()), GID: uint32(os.Getgid()),
		Comm:     procComm(t, fmt.Sprintf("/proc/self/task/%d/comm", tid)),
		Parent:   &sim.Task{PID: uint32(ppid), TGID: uint32(ppid), Comm: procComm(t, fmt.Sprintf("/proc/%d/comm", ppid))},
		Memory:   []sim.UserMemory{{Addr: strAddr, Bytes: str}, {Addr: wordAddr, Bytes: word}},
		CgroupID: cgroupID(t),
	}
	if got := runTaskIDs(t, newKernel(t, nil), task, args); got != want {
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

// cgroupID is this process's cgroup v2 id: the inode number of its
// directory in the cgroup2 filesystem (kernfs ids are inode numbers), 0
// if there is none to find.
func cgroupID(t *testing.T) uint64 {
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var path string
	for _, line := range strings.Split(string(self), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			path = p
		}
	}
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[2] == "cgroup2" && path != "" {
			var st unix.Stat_t
			if err := unix.Stat(f[1]+path, &st); err == nil {
				return st.Ino
			}
		}
	}
	return 0
}

// kernelCollection loads the object at path into this machine's kernel,
// closed when the test ends; the test skips, saying so, where the kernel
// cannot load BPF programs.
func kernelCollection(t *testing.T, path string) *ebpf.Collection {
	t.Helper()
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	spec, err := ebpf.LoadCollectionSpec(path)
	if err != nil {
		t.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { coll.Close() })
	return coll
}
