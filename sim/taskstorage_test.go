package sim_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
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
	// A new task of the same pid has no value, and the old pidfd does
	// not name it.
	if err := k.AddTask(other); err != nil {
		t.Fatal(err)
	}
	if err := m.Lookup(uint32(ofd), &v); !errors.Is(err, uapi.ENOENT) {
		t.Fatalf("lookup through the old pidfd: %v", err)
	}
	nfd, err := proc.PidfdOpen(4242, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Lookup(uint32(nfd), &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
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
	off := taskOffsets(t, k)
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
			insns = append(insns, asm.LoadMem(asm.R8, asm.R6, off["real_parent"], asm.DWord).WithSymbol("found"))
		} else {
			insns = append(insns, asm.Mov.Reg(asm.R8, asm.R6).WithSymbol("found"))
		}
		insns = append(insns,
			asm.LoadMem(asm.R7, asm.R8, off["tgid"], asm.Word),
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
	off := taskOffsets(t, k)
	prog, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceIter, AttachTo: "task", License: "GPL",
		Instructions: kdiff.TaskDump(off["pid"], off["tgid"])})
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
		tasks, err := kdiff.ReadTaskDump(it.Open)
		if err != nil {
			t.Fatal(err)
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

// taskStorageModel is what FuzzTaskStorage's steps should have left.
type taskStorageModel struct {
	values map[uint32]uint64 // pid -> value
	live   map[uint32]bool
}

// FuzzTaskStorage runs fuzzed steps on a task storage map, each from a
// few bytes: user-space updates (every flag), deletes and lookups through
// pidfds, programs getting (with and without create, from an initial
// value or zeros, with bad flags) and incrementing or deleting their
// task's value, tasks added and exiting. A model of what each step does
// to the values says what every return value, errno and value read must
// be.
func FuzzTaskStorage(f *testing.F) {
	f.Add([]byte{3, 0, 1, 7, 2, 0, 0, 0, 1, 0, 2, 0})
	f.Add([]byte{5, 2, 0, 3, 2, 1, 9, 0, 0, 2, 5, 5, 2, 2, 0, 0, 4, 1, 0})
	f.Add([]byte{0, 1, 2, 5, 0, 1, 1, 5, 0, 1, 4, 5, 0, 1, 8, 5, 3, 1, 2, 1})
	f.Fuzz(func(t *testing.T, steps []byte) {
		if len(steps) > 400 {
			return
		}
		k, err := sim.NewKernel(nil)
		if err != nil {
			t.Fatal(err)
		}
		m, err := k.NewMap(taskStorageSpec())
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		proc := k.InitProcess()
		model := taskStorageModel{values: map[uint32]uint64{}, live: map[uint32]bool{1: true}}
		pids := []uint32{1, 10, 11, 12}
		pidfds := map[uint32]int{}
		progs := map[[3]int32]*sim.Program{}
		prog := func(flags int32, init bool, del bool) *sim.Program {
			key := [3]int32{flags, 0, 0}
			if init {
				key[1] = 1
			}
			if del {
				key[2] = 1
			}
			if p := progs[key]; p != nil {
				return p
			}
			insns := taskCounter(m.FD(), flags, init)
			if del {
				insns = asm.Instructions{
					asm.FnGetCurrentTaskBtf.Call(),
					asm.Mov.Reg(asm.R2, asm.R0),
					asm.LoadMapPtr(asm.R1, m.FD()),
					asm.FnTaskStorageDelete.Call(),
					asm.Return(),
				}
			}
			p, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.RawTracepoint, License: "GPL", Instructions: insns})
			if err != nil {
				t.Fatal(err)
			}
			progs[key] = p
			return p
		}
		defer func() {
			for _, p := range progs {
				p.Close()
			}
		}()
		next := func() byte {
			if len(steps) == 0 {
				return 0
			}
			b := steps[0]
			steps = steps[1:]
			return b
		}
		for len(steps) > 0 {
			op, pid := next()%6, pids[next()%4]
			arg, v := next(), uint64(next())
			fd, ok := pidfds[pid]
			if !ok && model.live[pid] {
				if fd, err = proc.PidfdOpen(int(pid), 0); err != nil {
					t.Fatal(err)
				}
				pidfds[pid] = fd
			}
			_, has := model.values[pid]
			switch op {
			case 0: // update from user space
				if !model.live[pid] {
					continue
				}
				flags := []ebpf.MapUpdateFlags{ebpf.UpdateAny, ebpf.UpdateNoExist, ebpf.UpdateExist, ebpf.UpdateLock, 8}[arg%5]
				err := m.Update(uint32(fd), v, flags)
				var want error
				switch {
				case flags > ebpf.UpdateExist:
					want = uapi.EINVAL
				case flags == ebpf.UpdateNoExist && has:
					want = uapi.EEXIST
				case flags == ebpf.UpdateExist && !has:
					want = uapi.ENOENT
				default:
					model.values[pid] = v
				}
				if (want == nil) != (err == nil) || want != nil && !errors.Is(err, want) {
					t.Fatalf("update of %d with flags %d: %v, want %v", pid, flags, err, want)
				}
			case 1: // delete from user space
				if !model.live[pid] {
					continue
				}
				err := m.Delete(uint32(fd))
				if has != (err == nil) {
					t.Fatalf("delete of %d: %v with a value: %v", pid, err, has)
				}
				delete(model.values, pid)
			case 2, 3: // a program's get and increment, or delete
				task := &sim.Task{PID: pid, TGID: pid}
				if op == 3 {
					ret, err := prog(0, false, true).Run(&sim.RunOptions{Task: task})
					want := uint32(0)
					if !has {
						e := int32(uapi.ENOENT)
						want = uint32(-e)
					}
					if err != nil || ret != want {
						t.Fatalf("a program's delete for %d: %d, %v; want %d", pid, int32(ret), err, int32(want))
					}
					delete(model.values, pid)
					continue
				}
				flags := []int32{0, uapi.BPF_LOCAL_STORAGE_GET_F_CREATE, 2}[arg%3]
				init := arg&4 != 0
				ret, err := prog(flags, init, false).Run(&sim.RunOptions{Task: task})
				want := uint32(0)
				switch {
				case flags == 2:
				case has:
					model.values[pid] += 5
					want = 7
				case flags != 0:
					model.values[pid] = 5
					if init {
						model.values[pid] = 15
					}
					want = 7
				}
				if err != nil || ret != want {
					t.Fatalf("a program's get for %d with flags %d: %d, %v; want %d", pid, flags, ret, err, want)
				}
			case 4: // a task starts or exits
				if pid == 1 {
					continue
				}
				if model.live[pid] {
					if err := k.ExitTask(pid); err != nil {
						t.Fatal(err)
					}
					delete(model.live, pid)
					delete(model.values, pid)
					// An open pidfd names the task that exited, not
					// a later one of the same pid.
					if fd, ok := pidfds[pid]; ok {
						var got uint64
						if err := m.Lookup(uint32(fd), &got); !errors.Is(err, uapi.ENOENT) {
							t.Fatalf("lookup through the pidfd of exited %d: %v", pid, err)
						}
						if err := proc.CloseFD(fd); err != nil {
							t.Fatal(err)
						}
						delete(pidfds, pid)
					}
				} else {
					if err := k.AddTask(&sim.Task{PID: pid, TGID: pid}); err != nil {
						t.Fatal(err)
					}
					model.live[pid] = true
					delete(model.values, pid) // made while the pid was unlisted
				}
			case 5: // a lookup from user space
				if !ok {
					continue // no pidfd yet: the task never lived
				}
				var got uint64
				err := m.Lookup(uint32(fd), &got)
				switch {
				case !model.live[pid]:
					if !errors.Is(err, uapi.ENOENT) {
						t.Fatalf("lookup of exited %d: %v", pid, err)
					}
				case has:
					if err != nil || got != model.values[pid] {
						t.Fatalf("lookup of %d: %d, %v; want %d", pid, got, err, model.values[pid])
					}
				case !errors.Is(err, ebpf.ErrKeyNotExist):
					t.Fatalf("lookup of %d without a value: %v", pid, err)
				}
			}
		}
		// Every value the model has is the map's.
		for pid, want := range model.values {
			if !model.live[pid] {
				continue
			}
			fd, ok := pidfds[pid]
			if !ok {
				if fd, err = proc.PidfdOpen(int(pid), 0); err != nil {
					t.Fatal(err)
				}
			}
			var got uint64
			if err := m.Lookup(uint32(fd), &got); err != nil || got != want {
				t.Fatalf("at the end, %d: %d, %v; want %d", pid, got, err, want)
			}
		}
	})
}

// taskOffsets returns the offsets of task_struct's fields in k's BTF.
func taskOffsets(t *testing.T, k *sim.Kernel) map[string]int16 {
	t.Helper()
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
	return off
}
