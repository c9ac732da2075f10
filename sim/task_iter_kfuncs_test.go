package sim_test

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// The open-coded task iterator walks the live tasks in the kernel's
// orders, the order they started: all processes (the idle task, then
// each process's main thread), all threads (the idle task, then each
// process followed by its other threads), or the threads of a process
// from a given task on; an unknown flag yields nothing. Interpreted and
// JITed.
func TestTaskIteratorKfuncsWalkInTheKernelsOrders(t *testing.T) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) {
			k, err := sim.NewKernel(&sim.Options{Runtime: rt})
			if err != nil {
				t.Fatal(err)
			}
			pidOff := taskOffsets(t, k)["pid"]
			// Processes 1 (init) and 2; process 20 with threads 25 and
			// 21, started in that order; process 22; an orphan thread
			// 30 of no live process; process 5, started last.
			p2 := k.NewProcess()
			if p2.PID() != 2 {
				t.Fatalf("the second process has pid %d", p2.PID())
			}
			for _, task := range []sim.Task{{PID: 20, TGID: 20}, {PID: 25, TGID: 20}, {PID: 21, TGID: 20}, {PID: 22, TGID: 22}, {PID: 30, TGID: 29}, {PID: 5, TGID: 5}} {
				task := task
				if err := k.AddTask(&task); err != nil {
					t.Fatal(err)
				}
			}
			m, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 256, MaxEntries: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			call := func(name string) asm.Instruction { return kfuncCall(t, k, name) }
			for _, c := range []struct {
				flags int32
				task  *sim.Task
				want  []uint32
			}{
				{0, nil, []uint32{0, 1, 2, 20, 22, 5}},
				{1, nil, []uint32{0, 1, 2, 20, 25, 21, 22, 5}},
				{2, &sim.Task{PID: 25, TGID: 20}, []uint32{25, 21}},
				{2, &sim.Task{PID: 21, TGID: 20}, []uint32{21}},
				{2, &sim.Task{PID: 20, TGID: 20}, []uint32{20, 25, 21}},
				{3, nil, nil},
			} {
				p, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: kdiff.TaskIterRecord(call, pidOff, m.FD(), c.flags)})
				if err != nil {
					t.Fatal(err)
				}
				n, err := p.Run(&sim.RunOptions{Data: make([]byte, 64), Task: c.task})
				p.Close()
				if err != nil {
					t.Fatal(err)
				}
				var v [64]uint32
				if err := m.Lookup(uint32(0), &v); err != nil {
					t.Fatal(err)
				}
				if got := v[1 : 1+n]; n != v[0] || fmt.Sprint(got) != fmt.Sprint(c.want) && len(c.want)+len(got) > 0 {
					t.Errorf("flags %d from %v: %v (%d counted), want %v", c.flags, c.task, got, v[0], c.want)
				}
			}
		})
	}
}
