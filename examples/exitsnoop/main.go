// Command exitsnoop reports every task that exits, with its age, on the
// simulated kernel, in the spirit of libbpf-tools' exitsnoop. Its two
// programs (bpf/exitsnoop.bpf.c) are BTF tracepoint programs
// (SEC("tp_btf/...")): one runs when a task starts (task_newtask) and
// notes the time, the other when a task exits (sched_process_exit) and
// sends an event through a ring buffer. Their context is the
// tracepoint's arguments typed by the kernel's BTF: the task is a
// trusted task_struct pointer the programs read directly.
//
// The age is also given in ticks: the program reads CONFIG_HZ from the
// kernel's configuration, as a .kconfig extern the loader fills in. The
// simulated kernel has a configuration of its own (sim.DefaultConfig);
// --hz gives it another tick rate, and the same object reports other
// ticks.
//
// There are no real tasks here: the example starts processes and threads
// (Kernel.AddTask, NewProcess) and ends them (ExitTask, Process.Close),
// which fire the kernel's task tracepoints, with the kernel's clock
// moved between them (AdvanceClock). Read it top to bottom:
//
//  1. load the object (compiled with clang and committed, so no clang is
//     needed) into a simulated kernel, and attach its programs;
//  2. run a session: a shell starts a build, whose compiler runs and
//     whose worker thread ends before it; a daemon lives on;
//  3. read the exits from the ring buffer and print them.
package main

import (
	"bytes"
	_ "embed"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
)

//go:embed exitsnoop.bpf.o
var object []byte

// Event is struct event of bpf/exitsnoop.bpf.c.
type Event struct {
	AgeNs, AgeTicks      uint64
	PID, TID, PPID, Dead uint32
	Comm                 [16]byte
}

// Name is the task's name, without its NUL padding.
func (e *Event) Name() string {
	if i := bytes.IndexByte(e.Comm[:], 0); i >= 0 {
		return string(e.Comm[:i])
	}
	return string(e.Comm[:])
}

// Spec returns the object's collection spec with targ_ppid set: only the
// children of that process are reported (0: every task).
func Spec(targPPID uint32) (*ebpf.CollectionSpec, error) {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object))
	if err != nil {
		return nil, err
	}
	if err := spec.Variables["targ_ppid"].Set(targPPID); err != nil {
		return nil, err
	}
	return spec, nil
}

// Snoop is the loaded object, its programs attached, and a reader of its
// events.
type Snoop struct {
	coll   *sim.Collection
	links  []*sim.TracingLink
	events *sim.RingbufReader
}

// Load loads the object into k and attaches both programs.
func Load(k *sim.Kernel, targPPID uint32) (*Snoop, error) {
	spec, err := Spec(targPPID)
	if err != nil {
		return nil, err
	}
	coll, err := k.NewCollection(spec)
	if err != nil {
		return nil, err
	}
	s := &Snoop{coll: coll}
	for _, name := range []string{"handle_newtask", "handle_exit"} {
		l, err := k.AttachTracing(sim.TracingOptions{Program: coll.Programs[name]})
		if err != nil {
			s.Close()
			return nil, err
		}
		s.links = append(s.links, l)
	}
	if s.events, err = sim.NewRingbufReader(coll.Maps["events"]); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close detaches the programs and releases the object.
func (s *Snoop) Close() {
	for _, l := range s.links {
		l.Close()
	}
	if s.events != nil {
		s.events.Close()
	}
	s.coll.Close()
}

// Events reads every event the ring buffer holds.
func (s *Snoop) Events() ([]Event, error) { return sim.ReadRecords[Event](s.events) }

// Step is one moment of the session: after Wait, a task starts (Start)
// or exits (Exit, a pid).
type Step struct {
	Wait  time.Duration
	Start *sim.Task
	Exit  uint32
}

var (
	shell  = &sim.Task{PID: 100, TGID: 100, Comm: "bash"}
	daemon = &sim.Task{PID: 150, TGID: 150, Comm: "crond"}
	build  = &sim.Task{PID: 200, TGID: 200, Comm: "make", Parent: shell}
)

// Session is the example's: a shell, a daemon, a build the shell starts
// with a worker thread and a compiler it runs.
var Session = []Step{
	{Start: shell},
	{Wait: 200 * time.Millisecond, Start: daemon},
	{Wait: time.Second, Start: build},
	{Wait: 100 * time.Millisecond, Start: &sim.Task{PID: 201, TGID: 200, Comm: "make-worker", Parent: shell}},
	{Wait: 50 * time.Millisecond, Start: &sim.Task{PID: 210, TGID: 210, Comm: "cc", Parent: build}},
	{Wait: 1500 * time.Millisecond, Exit: 210},
	{Wait: 300 * time.Millisecond, Exit: 201},
	{Wait: 250 * time.Millisecond, Exit: 200},
	{Wait: 2 * time.Second, Exit: 100},
}

// Run plays the session on k.
func Run(k *sim.Kernel, steps []Step) error {
	for _, st := range steps {
		if _, err := k.AdvanceClock(st.Wait); err != nil {
			return err
		}
		var err error
		if st.Start != nil {
			err = k.AddTask(st.Start)
		} else {
			err = k.ExitTask(st.Exit)
		}
		if err != nil {
			return err
		}
	}
	return k.TracepointError()
}

func run(out io.Writer, args []string) error {
	fs := flag.NewFlagSet("exitsnoop", flag.ContinueOnError)
	fs.SetOutput(out)
	hz := fs.Int("hz", 0, "the simulated kernel's CONFIG_HZ (default: its configuration's, 250)")
	ppid := fs.Uint("ppid", 0, "report only the children of this process, as exitsnoop --pid does")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts := &sim.Options{}
	if *hz > 0 {
		opts.Config = sim.DefaultConfig()
		opts.Config["CONFIG_HZ"] = strconv.Itoa(*hz)
	}
	k, err := sim.NewKernel(opts)
	if err != nil {
		return err
	}
	s, err := Load(k, uint32(*ppid))
	if err != nil {
		return err
	}
	defer s.Close()
	if err := Run(k, Session); err != nil {
		return err
	}
	events, err := s.Events()
	if err != nil {
		return err
	}
	hzValue, _ := k.Config("CONFIG_HZ")
	fmt.Fprintf(out, "Exits on the simulated kernel %s (CONFIG_HZ=%s, read by the program from .kconfig):\n\n", k.Release(), hzValue)
	fmt.Fprintf(out, "  %-12s %6s %6s %6s %8s %7s  %s\n", "PCOMM", "PID", "PPID", "TID", "AGE(s)", "TICKS", "")
	for _, e := range events {
		what := "last task of its process"
		if e.Dead == 0 {
			what = "a thread; its process lives on"
		}
		fmt.Fprintf(out, "  %-12s %6d %6d %6d %8.2f %7d  %s\n", e.Name(), e.PID, e.PPID, e.TID, float64(e.AgeNs)/1e9, e.AgeTicks, what)
	}
	fmt.Fprintf(out, "\ncrond (pid %d) is still running: no exit to report.\n", daemon.PID)
	return nil
}

func main() {
	if err := run(os.Stdout, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "exitsnoop:", err)
		os.Exit(1)
	}
}
