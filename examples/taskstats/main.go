// Command taskstats counts each task's system calls in task local
// storage and lists them with a task iterator, on the simulated kernel.
//
// A BPF_MAP_TYPE_TASK_STORAGE map holds one value per task, and no key
// a program has to make up: bpf_task_storage_get(map, task, ...) finds
// the task's value, or makes it. When the task exits, its value goes
// with it. The object's two programs (bpf/taskstats.bpf.c):
//
//   - count, a raw tracepoint program, runs at each system call of a
//     task and counts it in the task's value;
//   - dump, a task iterator (SEC("iter/task")), walks every live task
//     and writes a record for each one that has counters.
//
// There are no real tasks here: the example starts simulated tasks,
// processes and threads (Kernel.AddTask), makes "system calls" by
// test-running count in them, ends some (Kernel.ExitTask), and reads the
// iterator, as `cat` reads a pinned one. Read it top to bottom:
//
//  1. load the object (compiled with clang and committed, so no clang is
//     needed) into a simulated kernel;
//  2. run a workload: a shell, a server with two worker threads, a job;
//  3. list the tasks' counters through the iterator, before and after
//     the job and a worker exit, and read one task's value from user
//     space through a pidfd.
package main

import (
	"bytes"
	_ "embed"
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
)

//go:embed taskstats.bpf.o
var object []byte

// Stats is struct stats of bpf/taskstats.bpf.c.
type Stats struct {
	Calls, FirstNs, LastNs uint64
}

// Record is struct record: what dump writes for a task.
type Record struct {
	PID, TGID int32
	Comm      [16]byte
	Stats     Stats
}

// Name is the task's name, without its NUL padding.
func (r *Record) Name() string {
	if i := bytes.IndexByte(r.Comm[:], 0); i >= 0 {
		return string(r.Comm[:i])
	}
	return string(r.Comm[:])
}

// TaskStats is the loaded object: its programs, its map and the
// iterator.
type TaskStats struct {
	k     *sim.Kernel
	coll  *sim.Collection
	count *sim.Program
	iter  *sim.Iter
	stats *sim.Map
}

// Load loads the object into k and attaches the iterator.
func Load(k *sim.Kernel) (*TaskStats, error) {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object))
	if err != nil {
		return nil, err
	}
	coll, err := k.NewCollection(spec)
	if err != nil {
		return nil, err
	}
	it, err := k.AttachIter(sim.IterOptions{Program: coll.Programs["dump"]})
	if err != nil {
		coll.Close()
		return nil, err
	}
	return &TaskStats{k: k, coll: coll, count: coll.Programs["count"], iter: it, stats: coll.Maps["task_stats"]}, nil
}

// Close releases everything Load made.
func (s *TaskStats) Close() {
	s.iter.Close()
	s.coll.Close()
}

// Syscalls makes n system calls in task t: n runs of count.
func (s *TaskStats) Syscalls(t *sim.Task, n int) error {
	for i := 0; i < n; i++ {
		if _, err := s.count.Run(&sim.RunOptions{Task: t}); err != nil {
			return err
		}
	}
	return nil
}

// List reads the iterator: a record for each live task with counters, by
// pid.
func (s *TaskStats) List() ([]Record, error) { return ReadRecords(s.iter.Open) }

// ReadRecords reads a walk of a dump iterator to its end, opened by open
// (bpfsim's Iter.Open, or cilium/ebpf's link.Iter.Open for the kernel's),
// and decodes its records.
func ReadRecords(open func() (io.ReadCloser, error)) ([]Record, error) {
	r, err := open()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	out, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	recs := make([]Record, len(out)/binary.Size(Record{}))
	if err := binary.Read(bytes.NewReader(out), binary.LittleEndian, recs); err != nil {
		return nil, err
	}
	return recs, nil
}

// Lookup reads task pid's counters from user space, through a pidfd as
// the map's key, as libbpf users do.
func (s *TaskStats) Lookup(pid int) (Stats, error) {
	p := s.stats.Process() // the process whose fds the map handle is in
	fd, err := p.PidfdOpen(pid, 0)
	if err != nil {
		return Stats{}, err
	}
	defer p.CloseFD(fd)
	var st Stats
	err = s.stats.Lookup(uint32(fd), &st)
	return st, err
}

// Tasks are the tasks of the example's workload and the system calls
// each makes: a shell, a server and its two worker threads, and a job
// the shell started.
var Tasks = []struct {
	Task  sim.Task
	Calls int
}{
	{sim.Task{PID: 100, TGID: 100, Comm: "sh"}, 3},
	{sim.Task{PID: 200, TGID: 200, Comm: "server"}, 5},
	{sim.Task{PID: 201, TGID: 200, Comm: "worker-0"}, 40},
	{sim.Task{PID: 202, TGID: 200, Comm: "worker-1"}, 25},
	{sim.Task{PID: 300, TGID: 300, Comm: "make"}, 12},
}

// Run starts the workload's tasks and makes their calls.
func (s *TaskStats) Run() error {
	for i := range Tasks {
		t := &Tasks[i].Task
		if err := s.k.AddTask(t); err != nil {
			return err
		}
		if err := s.Syscalls(t, Tasks[i].Calls); err != nil {
			return err
		}
	}
	return nil
}

func printList(out io.Writer, title string, recs []Record) {
	fmt.Fprintf(out, "%s\n  %6s %6s  %-10s %6s\n", title, "PID", "TGID", "COMM", "CALLS")
	for _, r := range recs {
		fmt.Fprintf(out, "  %6d %6d  %-10s %6d\n", r.PID, r.TGID, r.Name(), r.Stats.Calls)
	}
	fmt.Fprintln(out)
}

func run(out io.Writer) error {
	k, err := sim.NewKernel(nil)
	if err != nil {
		return err
	}
	s, err := Load(k)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Run(); err != nil {
		return err
	}
	recs, err := s.List()
	if err != nil {
		return err
	}
	printList(out, "Every task's system calls, from the task iterator:", recs)

	// The job and a worker thread exit: their values go with them.
	for _, pid := range []uint32{300, 202} {
		if err := k.ExitTask(pid); err != nil {
			return err
		}
	}
	if recs, err = s.List(); err != nil {
		return err
	}
	printList(out, "After make and worker-1 exited (their values went with them):", recs)

	st, err := s.Lookup(201)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "worker-0's value, read from user space through a pidfd: %d calls\n", st.Calls)
	return nil
}

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "taskstats:", err)
		os.Exit(1)
	}
}
