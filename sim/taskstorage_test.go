package sim_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// taskStorageSpec is a task storage map of u64 values, with the BTF the
// type needs.
func taskStorageSpec() *ebpf.MapSpec {
	return &ebpf.MapSpec{Type: ebpf.TaskStorage, KeySize: 4, ValueSize: 8, Flags: uapi.BPF_F_NO_PREALLOC,
		Key:   &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed},
		Value: &btf.Int{Name: "long long unsigned int", Size: 8}}
}

// taskCounter is a program that adds 5 to its task's value, made from
// 10 (or zeros, if init is false) when the task has none with create, and
// returns 7, or 0 when there is no value.
func taskCounter(fd int, flags int32, init bool) asm.Instructions {
	insns := asm.Instructions{
		asm.FnGetCurrentTaskBtf.Call(),
		asm.Mov.Reg(asm.R2, asm.R0),
		asm.LoadMapPtr(asm.R1, fd),
		asm.Mov.Imm(asm.R3, 0),
	}
	if init {
		insns = append(insns,
			asm.Mov.Imm(asm.R3, 10),
			asm.StoreMem(asm.RFP, -8, asm.R3, asm.DWord),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, -8),
		)
	}
	return append(insns,
		asm.Mov.Imm(asm.R4, flags),
		asm.FnTaskStorageGet.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 5),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 7),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	)
}

func TestTaskStorageHoldsOneValuePerTask(t *testing.T) {
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	proc := k.InitProcess()
	m, err := k.NewMap(taskStorageSpec())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	pfd, err := proc.PidfdOpen(proc.PID(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var v uint64
	if err := m.Lookup(uint32(pfd), &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("lookup before any value: %v", err)
	}
	run := func(flags int32, init bool, task *sim.Task) uint32 {
		t.Helper()
		p, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.RawTracepoint, License: "GPL", Instructions: taskCounter(m.FD(), flags, init)})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		ret, err := p.Run(&sim.RunOptions{Task: task})
		if err != nil {
			t.Fatal(err)
		}
		return ret
	}
	if got := run(0, false, nil); got != 0 {
		t.Fatalf("a get without create found a value: %d", got)
	}
	if got := run(uapi.BPF_LOCAL_STORAGE_GET_F_CREATE, true, nil); got != 7 {
		t.Fatalf("a get with create returned %d", got)
	}
	if err := m.Lookup(uint32(pfd), &v); err != nil || v != 15 {
		t.Fatalf("the task's value: %d, %v; want 10+5", v, err)
	}
	if got := run(uapi.BPF_LOCAL_STORAGE_GET_F_CREATE, true, nil); got != 7 {
		t.Fatalf("the second get returned %d", got)
	}
	if err := m.Lookup(uint32(pfd), &v); err != nil || v != 20 {
		t.Fatalf("the task's value after two runs: %d, %v; want 20", v, err)
	}
	// Another task gets its own value, zeros at first.
	other := &sim.Task{PID: 4242, TGID: 4242, Comm: "other"}
	if err := k.AddTask(other); err != nil {
		t.Fatal(err)
	}
	if got := run(uapi.BPF_LOCAL_STORAGE_GET_F_CREATE, false, other); got != 7 {
		t.Fatalf("the other task's get returned %d", got)
	}
	ofd, err := proc.PidfdOpen(4242, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Lookup(uint32(ofd), &v); err != nil || v != 5 {
		t.Fatalf("the other task's value: %d, %v; want 0+5", v, err)
	}
	// Unknown flags get nothing.
	if got := run(2, true, nil); got != 0 {
		t.Fatalf("a get with flags 2 returned %d", got)
	}
	// The task exits: its value goes, and its pidfd finds no task.
	if err := k.ExitTask(4242); err != nil {
		t.Fatal(err)
	}
	if err := m.Lookup(uint32(ofd), &v); !errors.Is(err, uapi.ENOENT) {
		t.Fatalf("lookup through the exited task's pidfd: %v", err)
	}
	if err := k.AddTask(other); err != nil {
		t.Fatal(err)
	}
	if err := m.Lookup(uint32(ofd), &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("a task of the same pid found a value: %v", err)
	}
	if err := m.Delete(uint32(pfd)); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(uint32(pfd)); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("second delete: %v", err)
	}
}

// bpf_task_from_pid finds the live tasks: a process's main thread and a
// task added to the kernel, with its tgid and its parent; none for a pid
// no task has, nor for a task that has exited.
func TestTaskFromPidFindsLiveTasks(t *testing.T) {
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := k.KernelBTF()
	if err != nil {
		t.Fatal(err)
	}
	var task *btf.Struct
	if err := ss.TypeByName("task_struct", &task); err != nil {
		t.Fatal(err)
	}
	offsetOf := func(name string) int16 {
		for _, m := range task.Members {
			if m.Name == name {
				return int16(m.Offset / 8)
			}
		}
		t.Fatalf("task_struct has no %s", name)
		return 0
	}
	// tgidOf returns the tgid of task pid (through real_parent with
	// parent), or 0xdead when there is none.
	tgidOf := func(pid int32, parent bool) uint32 {
		t.Helper()
		insns := asm.Instructions{
			asm.Mov.Imm(asm.R1, pid),
			kfuncCall(t, k, "bpf_task_from_pid"),
			asm.Mov.Reg(asm.R6, asm.R0),
			asm.Mov.Reg(asm.R8, asm.R0),
			asm.JNE.Imm(asm.R6, 0, "found"),
			asm.Mov.Imm(asm.R0, 0xdead),
			asm.Return(),
		}
		if parent {
			insns = append(insns, asm.LoadMem(asm.R8, asm.R6, offsetOf("real_parent"), asm.DWord).WithSymbol("found"))
		} else {
			insns = append(insns, asm.Mov.Reg(asm.R8, asm.R6).WithSymbol("found"))
		}
		insns = append(insns,
			asm.LoadMem(asm.R7, asm.R8, offsetOf("tgid"), asm.Word),
			asm.Mov.Reg(asm.R1, asm.R6),
			kfuncCall(t, k, "bpf_task_release"),
			asm.Mov.Reg(asm.R0, asm.R7),
			asm.Return(),
		)
		p, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: insns})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		ret, err := p.Run(&sim.RunOptions{Data: make([]byte, 64)})
		if err != nil {
			t.Fatal(err)
		}
		return ret
	}
	proc := k.NewProcess()
	worker := &sim.Task{PID: 700, TGID: 699, Comm: "worker", Parent: &sim.Task{PID: 650, TGID: 650}}
	if err := k.AddTask(worker); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		pid    int32
		parent bool
		want   uint32
	}{
		{"init", 1, false, 1},
		{"a process", int32(proc.PID()), false, uint32(proc.PID())},
		{"a process's parent, init", int32(proc.PID()), true, 1},
		{"an added task", 700, false, 699},
		{"an added task's parent", 700, true, 650},
		{"a pid no task has", 701, false, 0xdead},
		{"pid 0", 0, false, 0xdead},
		{"a negative pid", -1, false, 0xdead},
	} {
		if got := tgidOf(c.pid, c.parent); got != c.want {
			t.Errorf("%s: %#x, want %#x", c.name, got, c.want)
		}
	}
	if err := k.AddTask(&sim.Task{PID: 700}); !errors.Is(err, uapi.EEXIST) {
		t.Errorf("a second task of pid 700: %v", err)
	}
	if err := k.ExitTask(700); err != nil {
		t.Fatal(err)
	}
	if got := tgidOf(700, false); got != 0xdead {
		t.Errorf("a task that exited was found: %#x", got)
	}
	if err := k.ExitTask(700); !errors.Is(err, uapi.ESRCH) {
		t.Errorf("a second exit: %v", err)
	}
	// A process that closes has exited.
	proc.Close()
	if got := tgidOf(int32(proc.PID()), false); got != 0xdead {
		t.Errorf("a closed process's task was found: %#x", got)
	}
	if _, err := k.InitProcess().PidfdOpen(proc.PID(), 0); !errors.Is(err, uapi.ESRCH) {
		t.Errorf("pidfd_open of a closed process: %v", err)
	}
}

// An iterator over tasks (SEC("iter/task")) writes each live task's pid
// and tgid, by pid: init, the processes' main threads and the tasks
// added, not those that exited; the walk ends with a NULL task.
func TestTaskIteratorWalksTheLiveTasks(t *testing.T) {
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := k.KernelBTF()
	if err != nil {
		t.Fatal(err)
	}
	var task *btf.Struct
	if err := ss.TypeByName("task_struct", &task); err != nil {
		t.Fatal(err)
	}
	off := map[string]int16{}
	for _, m := range task.Members {
		off[m.Name] = int16(m.Offset / 8)
	}
	// ctx: {meta, task}; writes pid and tgid (8 bytes) from fp-8, or
	// "end!" at the NULL task.
	prog, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceIter, AttachTo: "task", License: "GPL",
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 8, asm.DWord),
			asm.LoadMem(asm.R1, asm.R1, 0, asm.DWord),
			asm.LoadMem(asm.R1, asm.R1, 0, asm.DWord),
			asm.JNE.Imm(asm.R2, 0, "task"),
			asm.Mov.Imm(asm.R3, 0x21646e65), // "end!"
			asm.StoreMem(asm.RFP, -8, asm.R3, asm.Word),
			asm.StoreMem(asm.RFP, -4, asm.R3, asm.Word),
			asm.Ja.Label("write"),
			asm.LoadMem(asm.R3, asm.R2, off["pid"], asm.Word).WithSymbol("task"),
			asm.StoreMem(asm.RFP, -8, asm.R3, asm.Word),
			asm.LoadMem(asm.R3, asm.R2, off["tgid"], asm.Word),
			asm.StoreMem(asm.RFP, -4, asm.R3, asm.Word),
			asm.Mov.Reg(asm.R2, asm.RFP).WithSymbol("write"),
			asm.Add.Imm(asm.R2, -8),
			asm.Mov.Imm(asm.R3, 8),
			asm.FnSeqWrite.Call(),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	it, err := k.AttachIter(sim.IterOptions{Program: prog})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	walk := func() [][2]uint32 {
		t.Helper()
		r, err := it.Open()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		out, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) < 8 || string(out[len(out)-8:]) != "end!end!" {
			t.Fatalf("the walk did not end with a NULL task: %q", out)
		}
		var tasks [][2]uint32
		for b := out[:len(out)-8]; len(b) >= 8; b = b[8:] {
			tasks = append(tasks, [2]uint32{binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:])})
		}
		return tasks
	}
	proc := k.NewProcess()
	for _, task := range []*sim.Task{{PID: 90, TGID: 90}, {PID: 91, TGID: 90}, {PID: 30, TGID: 30}} {
		if err := k.AddTask(task); err != nil {
			t.Fatal(err)
		}
	}
	pp := uint32(proc.PID())
	want := [][2]uint32{{1, 1}, {pp, pp}, {30, 30}, {90, 90}, {91, 90}}
	if got := walk(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("tasks %v, want %v", got, want)
	}
	if err := k.ExitTask(90); err != nil {
		t.Fatal(err)
	}
	proc.Close()
	want = [][2]uint32{{1, 1}, {30, 30}, {91, 90}}
	if got := walk(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("tasks after two exits %v, want %v", got, want)
	}
}
