package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// The same object in this machine's kernel, its .kconfig filled in by
// cilium/ebpf from this kernel's configuration: a child of this process
// that sleeps 50 ms and exits is reported once, as bpfsim reports its
// simulated tasks: its own thread group leader, this process its parent,
// the last task of its process, its name, an age of at least 50 ms and
// the ticks of this kernel's CONFIG_HZ.
func TestTheObjectReportsExitsInTheKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		t.Skipf("kernel-differential test skipped: no /proc/config.gz for the .kconfig extern: %v", err)
	}
	config, err := sim.ParseConfig(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	hz, err := strconv.ParseUint(config["CONFIG_HZ"], 10, 64)
	if err != nil {
		t.Fatalf("CONFIG_HZ=%q: %v", config["CONFIG_HZ"], err)
	}
	spec, err := Spec(uint32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	// Go's first process start forks once more, to probe for pidfds:
	// that one goes before the programs are attached.
	if err := exec.Command("/bin/true").Run(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"handle_newtask", "handle_exit"} {
		l, err := link.AttachTracing(link.TracingOptions{Program: coll.Programs[name]})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
	}
	child := exec.Command("/bin/sleep", "0.05")
	if err := child.Run(); err != nil {
		t.Fatal(err)
	}
	r, err := ringbuf.NewReader(coll.Maps["events"])
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var events []Event
	for {
		r.SetDeadline(time.Now().Add(100 * time.Millisecond))
		rec, err := r.Read()
		if err != nil {
			break
		}
		var e Event
		if err := binary.Read(bytes.NewReader(rec.RawSample), binary.LittleEndian, &e); err != nil {
			t.Fatal(err)
		}
		events = append(events, e)
	}
	if len(events) != 1 {
		t.Fatalf("%d events, want the child's exit alone: %+v", len(events), events)
	}
	e := events[0]
	pid := uint32(child.Process.Pid)
	if e.PID != pid || e.TID != pid || e.PPID != uint32(os.Getpid()) || e.Dead != 1 || e.Name() != "sleep" ||
		e.AgeNs < uint64(50*time.Millisecond) || e.AgeTicks != e.AgeNs*hz/1e9 {
		t.Errorf("the kernel's event: %+v (%s); want pid and tid %d, ppid %d, the last task of its process, sleep, 50 ms or more, %d Hz ticks",
			e, e.Name(), pid, os.Getpid(), hz)
	}
}
