package sim_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// taskField is the offset of a field of the simulated kernel's
// task_struct.
func taskField(t testing.TB, k *sim.Kernel, name string) int16 {
	t.Helper()
	spec, err := k.KernelBTF()
	if err != nil {
		t.Fatal(err)
	}
	var task *btf.Struct
	if err := spec.TypeByName("task_struct", &task); err != nil {
		t.Fatal(err)
	}
	for _, m := range task.Members {
		if m.Name == name {
			return int16(m.Offset.Bytes())
		}
	}
	t.Fatalf("task_struct has no %s", name)
	return 0
}

// storeSlot stores the u64 at fp+value in element key of the array fd.
func storeSlot(fd int, key int32, value int16) asm.Instructions {
	return append(asm.Instructions{
		asm.Mov.Imm(asm.R1, key),
		asm.StoreMem(asm.RFP, -4, asm.R1, asm.Word),
	}, updateFromStack(fd, value)...)
}

// updateFromStack updates map fd with the key at fp-4 and the value at
// fp+value.
func updateFromStack(fd int, value int16) asm.Instructions {
	return asm.Instructions{
		asm.LoadMapPtr(asm.R1, fd),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, int32(value)),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnMapUpdateElem.Call(),
	}
}

// tpSpec is a tp_btf program of tracepoint tp.
func tpSpec(tp string, insns asm.Instructions) *ebpf.ProgramSpec {
	return &ebpf.ProgramSpec{Name: "tp", Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: tp, License: "GPL", Instructions: insns}
}

// taskEventRecorder records each event in a hash keyed by the task's pid:
// the tracepoint's second argument, and the tgid of the task the program
// runs in shifted up by 32.
func taskEventRecorder(tp string, pidOff int16, fd int) *ebpf.ProgramSpec {
	return tpSpec(tp, append(asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, 0, asm.DWord),
		asm.LoadMem(asm.R2, asm.R2, pidOff, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R2, asm.Word),
		asm.FnGetCurrentPidTgid.Call(),
		asm.RSh.Imm(asm.R0, 32),
		asm.LSh.Imm(asm.R0, 32),
		asm.LoadMem(asm.R1, asm.R6, 8, asm.DWord),
		asm.Or.Reg(asm.R0, asm.R1),
		asm.StoreMem(asm.RFP, -16, asm.R0, asm.DWord),
	}, append(updateFromStack(fd, -16), asm.Mov.Imm(asm.R0, 0), asm.Return())...))
}

// The kernel's task tracepoints fire for the tasks the simulation starts
// and ends: task_newtask in the parent's context with a fork's or a
// thread's clone flags, sched_process_exit in the exiting task with
// group_dead for the last task of its process; none once detached.
func TestTaskTracepointsFireForStartsAndExits(t *testing.T) {
	k := newKernel(t, nil)
	pidOff := taskField(t, k, "pid")
	record := func(tp string) (*sim.Map, *sim.TracingLink) {
		m, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 16})
		if err != nil {
			t.Fatal(err)
		}
		p, err := k.NewProgram(taskEventRecorder(tp, pidOff, m.FD()))
		if err != nil {
			t.Fatal(err)
		}
		l, err := k.AttachTracing(sim.TracingOptions{Program: p})
		if err != nil {
			t.Fatal(err)
		}
		p.Close() // the link holds it
		return m, l
	}
	started, startLink := record("task_newtask")
	exited, exitLink := record("sched_process_exit")

	proc := k.NewProcess()
	pid := uint32(proc.PID())
	thread := &sim.Task{PID: 900, TGID: pid, Comm: "worker"}
	if err := k.AddTask(thread); err != nil {
		t.Fatal(err)
	}
	child := &sim.Task{PID: 901, TGID: 901, Comm: "child", Parent: &sim.Task{PID: pid, TGID: pid}}
	if err := k.AddTask(child); err != nil {
		t.Fatal(err)
	}
	if err := k.ExitTask(900); err != nil {
		t.Fatal(err)
	}
	proc.Close()
	startLink.Close()
	exitLink.Close()
	k.NewProcess().Close() // detached: nothing recorded
	if err := k.TracepointError(); err != nil {
		t.Fatal(err)
	}

	check := func(m *sim.Map, want map[uint32]uint64) {
		t.Helper()
		for key, v := range want {
			var got uint64
			if err := m.Lookup(key, &got); err != nil || got != v {
				t.Errorf("pid %d: %#x, %v; want %#x", key, got, err, v)
			}
		}
		var key uint32
		var val uint64
		n := 0
		for it := m.Iterate(); it.Next(&key, &val); {
			n++
		}
		if n != len(want) {
			t.Errorf("%d events recorded, want %d", n, len(want))
		}
	}
	const fork, pthread = 17, 0x3d0f00
	check(started, map[uint32]uint64{
		pid: 1<<32 | fork,              // from init
		900: uint64(pid)<<32 | pthread, // from its process
		901: uint64(pid)<<32 | fork,    // from its parent
	})
	check(exited, map[uint32]uint64{
		900: uint64(pid) << 32, // its process lives on
		pid: uint64(pid)<<32 | 1,
	})
}

// A tracepoint a simulated subsystem registers: programs attach to it by
// name, read its arguments, and run in the task and on the CPU Fire
// names; registrations and firings that break its prototype are refused.
func TestRegisteredTracepointsFire(t *testing.T) {
	k := newKernel(t, &sim.Options{CPUs: 4})
	u32 := &btf.Int{Name: "unsigned int", Size: 4}
	s64 := &btf.Int{Name: "long long int", Size: 8, Encoding: btf.Signed}
	tp := &sim.Tracepoint{Name: "bpfsim_packet_drop", Proto: &btf.FuncProto{Return: &btf.Void{},
		Params: []btf.FuncParam{{Name: "reason", Type: u32}, {Name: "len", Type: s64}}}}
	if err := k.RegisterTracepoint(tp); err != nil {
		t.Fatal(err)
	}
	if got, ok := k.Tracepoint("bpfsim_packet_drop"); !ok || got != tp || tp.BTFID() == 0 {
		t.Fatalf("Tracepoint: %v, %v", got, ok)
	}
	m, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	// Stores reason*len, the CPU and the task's pid.
	p, err := k.NewProgram(tpSpec("bpfsim_packet_drop", append(asm.Instructions{
		asm.LoadMem(asm.R6, asm.R1, 0, asm.DWord),
		asm.LoadMem(asm.R7, asm.R1, 8, asm.DWord),
		asm.Mul.Reg(asm.R6, asm.R7),
		asm.FnGetSmpProcessorId.Call(),
		asm.LSh.Imm(asm.R0, 32),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.FnGetCurrentPidTgid.Call(),
		asm.StoreMem(asm.RFP, -16, asm.R6, asm.DWord),
		asm.LSh.Imm(asm.R0, 32),
		asm.RSh.Imm(asm.R0, 32),
		asm.Or.Reg(asm.R0, asm.R7),
		asm.StoreMem(asm.RFP, -24, asm.R0, asm.DWord),
	}, append(append(storeSlot(m.FD(), 0, -16), storeSlot(m.FD(), 1, -24)...),
		asm.Mov.Imm(asm.R0, 42), // tp_btf programs may return anything
		asm.Return(),
	)...)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := tp.Fire(0, nil, 3, 5); err != nil { // nothing attached
		t.Fatal(err)
	}
	l, err := k.AttachTracing(sim.TracingOptions{Program: p})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := tp.Fire(2, &sim.Task{PID: 77, TGID: 70, Comm: "dropper"}, 3, uint64(1<<63)|5); err != nil {
		t.Fatal(err)
	}
	length := uint64(1<<63 | 5)
	wantProduct := 3 * length // wraps, as the program's multiplication
	var product, where uint64
	if err := m.Lookup(uint32(0), &product); err != nil || product != wantProduct {
		t.Errorf("reason*len = %#x, %v", product, err)
	}
	if err := m.Lookup(uint32(1), &where); err != nil || where != 2<<32|77 {
		t.Errorf("CPU and pid = %#x, %v; want CPU 2, pid 77", where, err)
	}

	for _, c := range []struct {
		name  string
		err   error
		errno error
	}{
		{"wrong arguments", tp.Fire(0, nil, 1), uapi.EINVAL},
		{"no CPU 9", tp.Fire(9, nil, 1, 2), uapi.EINVAL},
		{"registered twice", k.RegisterTracepoint(&sim.Tracepoint{Name: "bpfsim_packet_drop", Proto: tp.Proto}), uapi.EEXIST},
		{"no prototype", k.RegisterTracepoint(&sim.Tracepoint{Name: "bpfsim_none"}), uapi.EINVAL},
		{"a return value", k.RegisterTracepoint(&sim.Tracepoint{Name: "bpfsim_ret", Proto: &btf.FuncProto{Return: u32}}), uapi.EINVAL},
		{"13 arguments", k.RegisterTracepoint(&sim.Tracepoint{Name: "bpfsim_long", Proto: &btf.FuncProto{Return: &btf.Void{}, Params: make([]btf.FuncParam, 13)}}), uapi.E2BIG},
	} {
		if !errors.Is(c.err, c.errno) {
			t.Errorf("%s: %v, want %v", c.name, c.err, c.errno)
		}
	}
}

// tp_btf programs load only against a tracepoint, and cannot be
// test-run (the kernel's bpf_prog_test_run_tracing: EFAULT).
func TestTracepointProgramLoadsAndTestRuns(t *testing.T) {
	k := newKernel(t, nil)
	ret0 := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	if _, err := k.NewProgram(tpSpec("no_such_tracepoint", ret0)); !errors.Is(err, uapi.ENOENT) {
		t.Errorf("an unknown tracepoint: %v, want ENOENT", err)
	}
	spec, err := k.KernelBTF()
	if err != nil {
		t.Fatal(err)
	}
	f, _ := k.TracedFunc("bpf_fentry_test1")
	var u64 *btf.Typedef
	if err := spec.TypeByName("__u64", &u64); err != nil {
		t.Fatal(err)
	}
	notTracepoint, err := spec.TypeID(u64)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		id   btf.TypeID
		want string
	}{
		{f.BTFID(), "is not a typedef"},
		{notTracepoint, "points to wrong type name __u"},
		{1 << 30, "is invalid"},
	} {
		_, err := k.NewProgramWithOptions(tpSpec("", ret0), sim.ProgramOptions{AttachBTFID: uint32(c.id)})
		if !errors.Is(err, uapi.EINVAL) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("attach_btf_id %d: %v, want EINVAL, %q", c.id, err, c.want)
		}
	}
	p, err := k.NewProgram(tpSpec("task_newtask", ret0))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Test(&sim.RunOptions{}); !errors.Is(err, uapi.EFAULT) {
		t.Errorf("a test run: %v, want EFAULT", err)
	}
	if _, err := k.TaskStruct(4242); !errors.Is(err, uapi.ESRCH) {
		t.Errorf("the task_struct of no task: %v, want ESRCH", err)
	}
}

// BenchmarkTracepointFire measures a tracepoint firing one tp_btf program
// that reads its task's pid.
func BenchmarkTracepointFire(b *testing.B) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		b.Run(rt.String(), func(b *testing.B) {
			k := newKernel(b, &sim.Options{Runtime: rt})
			p, err := k.NewProgram(tpSpec("task_newtask", asm.Instructions{
				asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
				asm.LoadMem(asm.R0, asm.R2, taskField(b, k, "pid"), asm.Word),
				asm.Return(),
			}))
			if err != nil {
				b.Fatal(err)
			}
			l, err := k.AttachTracing(sim.TracingOptions{Program: p})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			tp, _ := k.Tracepoint("task_newtask")
			task := k.NewProcess()
			defer task.Close()
			addr, err := k.TaskStruct(uint32(task.PID()))
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := tp.Fire(0, nil, addr, 17); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzTracepointPrograms: a fuzzed tp_btf program on one of the kernel's
// task tracepoints is refused with a verifier errno, or fires on a live
// task without a fault (a long loop may run out of its budget).
func FuzzTracepointPrograms(f *testing.F) {
	k := newKernel(f, &sim.Options{CPUs: 2, MemoryLimit: 64 << 20})
	pidOff, parentOff := taskField(f, k, "pid"), taskField(f, k, "real_parent")
	for i, s := range []asm.Instructions{
		{asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord), asm.LoadMem(asm.R0, asm.R2, pidOff, asm.Word), asm.Return()},
		{asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord), asm.LoadMem(asm.R2, asm.R2, parentOff, asm.DWord), asm.LoadMem(asm.R0, asm.R2, pidOff, asm.Word), asm.Return()},
		{asm.LoadMem(asm.R0, asm.R1, 8, asm.DWord), asm.Return()},
		{asm.FnGetAttachCookie.Call(), asm.Return()},
	} {
		code, err := insn.FromAsm(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), insn.Encode(code))
	}
	proc := k.NewProcess()
	task, err := k.TaskStruct(uint32(proc.PID()))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, sel uint8, code []byte) {
		tp, _ := k.Tracepoint([]string{"task_newtask", "sched_process_exit"}[sel&1])
		prog, err := k.LoadBytecodeWithOptions(ebpf.Tracing, "fuzz", code, sim.ProgramOptions{
			AttachBTFID: uint32(tp.BTFID()), ExpectedAttachType: uint32(ebpf.AttachTraceRawTp), License: "GPL"})
		if err != nil {
			if !isVerifierErrno(err) {
				t.Fatalf("load failed without one of the verifier's errnos: %v", err)
			}
			return
		}
		defer prog.Close()
		l, err := k.AttachTracing(sim.TracingOptions{Program: prog, Cookie: uint64(sel)})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if err := tp.Fire(int(sel>>1)&1, nil, task, uint64(sel)); err != nil && !errors.Is(err, uapi.E2BIG) {
			t.Fatalf("a verified program failed: %v\n%s", err, prog.Xlated())
		}
	})
}

// sched_process_fork fires for every task started, after task_newtask,
// with the starting task as parent: a process's parent, a thread's
// process; none for a parent bpfsim does not list.
func TestSchedProcessForkNamesParentAndChild(t *testing.T) {
	k := newKernel(t, nil)
	pidOff, tgidOff := taskField(t, k, "pid"), taskField(t, k, "tgid")
	m, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 16})
	if err != nil {
		t.Fatal(err)
	}
	// children[child's pid] = parent's tgid.
	p, err := k.NewProgram(tpSpec("sched_process_fork", append(asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
		asm.LoadMem(asm.R3, asm.R1, 8, asm.DWord),
		asm.LoadMem(asm.R2, asm.R2, tgidOff, asm.Word),
		asm.StoreMem(asm.RFP, -16, asm.R2, asm.DWord),
		asm.LoadMem(asm.R3, asm.R3, pidOff, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R3, asm.Word),
	}, append(updateFromStack(m.FD(), -16), asm.Mov.Imm(asm.R0, 0), asm.Return())...)))
	if err != nil {
		t.Fatal(err)
	}
	l, err := k.AttachTracing(sim.TracingOptions{Program: p})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pid := uint32(k.NewProcess().PID())
	for _, task := range []*sim.Task{
		{PID: 900, TGID: pid},
		{PID: 901, TGID: 901, Parent: &sim.Task{PID: pid, TGID: pid}},
		{PID: 902, TGID: 902, Parent: &sim.Task{PID: 4000, TGID: 4000}}, // no such task
	} {
		if err := k.AddTask(task); err != nil {
			t.Fatal(err)
		}
	}
	if err := k.TracepointError(); err != nil {
		t.Fatal(err)
	}
	for child, parent := range map[uint32]uint64{pid: 1, 900: uint64(pid), 901: uint64(pid)} {
		var got uint64
		if err := m.Lookup(child, &got); err != nil || got != parent {
			t.Errorf("the child %d's parent: %d, %v; want %d", child, got, err, parent)
		}
	}
	var got uint64
	if err := m.Lookup(uint32(902), &got); err == nil {
		t.Errorf("a child of an unlisted parent fired the fork with parent %d", got)
	}
}
