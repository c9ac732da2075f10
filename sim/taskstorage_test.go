package sim_test

import (
	"errors"
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
