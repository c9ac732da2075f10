// Command execsnoop traces program executions on the simulated kernel, in
// the spirit of bcc's and libbpf-tools' execsnoop: a tracepoint program
// (bpf/execsnoop.bpf.c) sees every execve and sends an event through a
// ring buffer, with who ran it and what.
//
// There is no real process here: each execve is a test run of the
// tracepoint program in a simulated task (sim.Task: its ids, name,
// parent and user memory), with the tracepoint's record as context. The
// record's filename and argv point into that task's user memory, which
// the program reads with bpf_probe_read_user(_str); the parent's pid
// comes from the task_struct, reached through CO-RE relocations against
// the simulated kernel's BTF. A test can drive the same program through
// any sequence of executions it likes and check what it reports, which
// is the point of the example.
//
// Read it top to bottom:
//
//  1. load the object (compiled with clang and committed, so no clang is
//     needed) into a simulated kernel;
//  2. run a small session: a shell, a build tool it starts, the compilers
//     that one starts;
//  3. read the events from the ring buffer and the per-command counts
//     from the hash map, and print them.
package main

import (
	"bytes"
	_ "embed"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
)

//go:embed execsnoop.bpf.o
var object []byte

// Event is struct event of bpf/execsnoop.bpf.c.
type Event struct {
	PID, PPID, UID uint32
	FilenameLen    int32
	Comm           [16]byte
	Filename       [64]byte
	Arg1           [32]byte
}

// Exec is one execve to simulate: the task that calls it, and its
// arguments.
type Exec struct {
	Task *sim.Task
	Argv []string // Argv[0] is the file executed
}

// Snoop is the loaded program, its maps and a reader of its events.
type Snoop struct {
	prog   *sim.Program
	execs  *sim.Map
	reader *sim.RingbufReader
	coll   *sim.Collection
}

// Load loads execsnoop into k.
func Load(k *sim.Kernel) (*Snoop, error) {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object))
	if err != nil {
		return nil, err
	}
	coll, err := k.NewCollection(spec)
	if err != nil {
		return nil, err
	}
	r, err := sim.NewRingbufReader(coll.Maps["events"])
	if err != nil {
		coll.Close()
		return nil, err
	}
	return &Snoop{prog: coll.Programs["execsnoop"], execs: coll.Maps["execs"], reader: r, coll: coll}, nil
}

// Close releases the program and its maps.
func (s *Snoop) Close() {
	s.reader.Close()
	s.coll.Close()
}

// The user memory layout of a simulated execve: the strings, then argv.
const (
	userStrings = 0x7ffd_f000_0000
	userArgv    = 0x7ffd_f001_0000
)

// Execve runs the tracepoint program as the kernel would on e's execve:
// the record points at the file name and argv, which are put in the
// task's user memory.
func (s *Snoop) Execve(e Exec) error {
	var strs, argv []byte
	for _, a := range e.Argv {
		argv = binary.LittleEndian.AppendUint64(argv, userStrings+uint64(len(strs)))
		strs = append(append(strs, a...), 0)
	}
	argv = binary.LittleEndian.AppendUint64(argv, 0) // argv ends with NULL
	task := *e.Task
	task.Memory = append(task.Memory[:len(task.Memory):len(task.Memory)],
		sim.UserMemory{Addr: userStrings, Bytes: strs}, sim.UserMemory{Addr: userArgv, Bytes: argv})
	record := make([]byte, 40)
	binary.LittleEndian.PutUint32(record[4:], e.Task.TGID)  // common_pid
	binary.LittleEndian.PutUint32(record[8:], 59)           // __syscall_nr: execve on x86-64
	binary.LittleEndian.PutUint64(record[16:], userStrings) // filename: argv[0]
	binary.LittleEndian.PutUint64(record[24:], userArgv)    // argv
	_, err := s.prog.Test(&sim.RunOptions{Context: record, Task: &task})
	return err
}

// Events returns the events the program has sent since the last call.
func (s *Snoop) Events() ([]Event, error) { return sim.ReadRecords[Event](s.reader) }

// Counts returns the executions per calling command.
func (s *Snoop) Counts() (map[string]uint64, error) {
	counts := map[string]uint64{}
	var comm [16]byte
	var n uint64
	it := s.execs.Iterate()
	for it.Next(&comm, &n) {
		counts[cstring(comm[:])] = n
	}
	return counts, it.Err()
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// Session is the simulated work: a login shell starts make, which starts
// the compiler twice and the linker, and the shell runs ls.
func Session() []Exec {
	shell := &sim.Task{PID: 4100, TGID: 4100, UID: 1000, GID: 1000, Comm: "bash",
		Parent: &sim.Task{PID: 900, TGID: 900, Comm: "sshd"}}
	mk := &sim.Task{PID: 4200, TGID: 4200, UID: 1000, GID: 1000, Comm: "make", Parent: shell}
	return []Exec{
		{Task: shell, Argv: []string{"/usr/bin/make", "-j2"}},
		{Task: mk, Argv: []string{"/usr/bin/cc", "-c", "main.c"}},
		{Task: mk, Argv: []string{"/usr/bin/cc", "-c", "util.c"}},
		{Task: mk, Argv: []string{"/usr/bin/ld", "-o", "app", "main.o", "util.o"}},
		{Task: shell, Argv: []string{"/bin/ls"}},
	}
}

func run(w io.Writer) error {
	k, err := sim.NewKernel(nil)
	if err != nil {
		return err
	}
	s, err := Load(k)
	if err != nil {
		return err
	}
	defer s.Close()
	for _, e := range Session() {
		if err := s.Execve(e); err != nil {
			return err
		}
	}
	events, err := s.Events()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%-8s %-6s %-6s %-5s %s\n", "PCOMM", "PID", "PPID", "UID", "FILE ARG1")
	for _, e := range events {
		fmt.Fprintf(w, "%-8s %-6d %-6d %-5d %s %s\n", cstring(e.Comm[:]), e.PID, e.PPID, e.UID, cstring(e.Filename[:]), cstring(e.Arg1[:]))
	}
	counts, err := s.Counts()
	if err != nil {
		return err
	}
	comms := make([]string, 0, len(counts))
	for c := range counts {
		comms = append(comms, c)
	}
	sort.Strings(comms)
	fmt.Fprintln(w, "\nexecutions per command (the execs hash map):")
	for _, c := range comms {
		fmt.Fprintf(w, "  %-8s %d\n", c, counts[c])
	}
	return nil
}

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "execsnoop:", err)
		os.Exit(1)
	}
}
