package kdiff

import (
	"os"
	"os/exec"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"

	"github.com/bpfsim/bpfsim/sim"
)

// tracepointCase is a tp_btf program of tracepoint tp.
type tracepointCase struct {
	name, tp string
	insns    func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions
}

var tracepointCases = []tracepointCase{
	{"the arguments read", "task_newtask", func(_ func(string) asm.Instruction, off taskOffsets) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.LoadMem(asm.R3, asm.R1, 8, asm.DWord),
			asm.LoadMem(asm.R0, asm.R2, off["pid"], asm.Word),
			asm.Add.Reg(asm.R0, asm.R3),
			asm.Return(),
		}
	}},
	{"the parent read through RCU", "task_newtask", func(_ func(string) asm.Instruction, off taskOffsets) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.LoadMem(asm.R2, asm.R2, off["real_parent"], asm.DWord),
			asm.LoadMem(asm.R0, asm.R2, off["tgid"], asm.Word),
			asm.Return(),
		}
	}},
	{"the task acquired and released", "task_newtask", func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions {
		return append(asm.Instructions{
			asm.LoadMem(asm.R1, asm.R1, 0, asm.DWord),
			call("bpf_task_acquire"),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.LoadMem(asm.R6, asm.R0, off["tgid"], asm.Word),
			asm.Mov.Reg(asm.R1, asm.R0),
			call("bpf_task_release"),
			asm.Mov.Reg(asm.R0, asm.R6),
			asm.Return(),
		}, out...)
	}},
	{"the task released unacquired", "task_newtask", func(call func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R1, asm.R1, 0, asm.DWord),
			call("bpf_task_release"),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
	}},
	{"a third argument", "task_newtask", func(_ func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
		return asm.Instructions{asm.LoadMem(asm.R0, asm.R1, 16, asm.DWord), asm.Return()}
	}},
	{"half an argument", "task_newtask", func(_ func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
		return asm.Instructions{asm.LoadMem(asm.R0, asm.R1, 8, asm.Word), asm.Return()}
	}},
	{"a misaligned argument", "task_newtask", func(_ func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
		return asm.Instructions{asm.LoadMem(asm.R0, asm.R1, 4, asm.Word), asm.Return()}
	}},
	{"a store into the task", "task_newtask", func(_ func(string) asm.Instruction, off taskOffsets) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.StoreImm(asm.R2, off["pid"], 1, asm.Word),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
	}},
	{"a store into the context", "task_newtask", func(_ func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Imm(asm.R2, 1),
			asm.StoreMem(asm.R1, 8, asm.R2, asm.DWord),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
	}},
	{"the attach cookie", "task_newtask", func(_ func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
		return asm.Instructions{asm.FnGetAttachCookie.Call(), asm.Return()}
	}},
	{"the fork's two tasks", "sched_process_fork", func(_ func(string) asm.Instruction, off taskOffsets) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.LoadMem(asm.R3, asm.R1, 8, asm.DWord),
			asm.LoadMem(asm.R0, asm.R2, off["pid"], asm.Word),
			asm.LoadMem(asm.R3, asm.R3, off["tgid"], asm.Word),
			asm.Add.Reg(asm.R0, asm.R3),
			asm.Return(),
		}
	}},
	{"the exit's arguments", "sched_process_exit", func(_ func(string) asm.Instruction, off taskOffsets) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.LoadMem(asm.R0, asm.R1, 8, asm.DWord),
			asm.LoadMem(asm.R3, asm.R2, off["tgid"], asm.Word),
			asm.Add.Reg(asm.R0, asm.R3),
			asm.Return(),
		}
	}},
}

// tp_btf programs of the tracepoints both kernels have give this machine's
// kernel's verdicts and whole level-2 logs: trusted task arguments,
// pointers walked under RCU, kfuncs that want trusted arguments, and the
// refusals of btf_ctx_access.
func TestTracepointProgramsVerifyAsTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	tk := newTaskKernels(t, k)
	for _, c := range tracepointCases {
		t.Run(c.name, func(t *testing.T) {
			spec := func(insns asm.Instructions) *ebpf.ProgramSpec {
				return &ebpf.ProgramSpec{Name: "tp", Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: c.tp, License: "GPL", Instructions: insns}
			}
			tk.sameLogs(t, spec(c.insns(tk.kcall, tk.koff)), spec(c.insns(tk.scall, tk.soff)))
		})
	}
}

// newTaskRecorder is a task_newtask program that counts the tasks the
// process tgid starts that are no threads, and records of the last one
// whether it leads its own thread group, its parent's tgid and whether
// its clone flags say CLONE_THREAD, in an array of four u64s.
func newTaskRecorder(tgid uint32, off taskOffsets, m int) asm.Instructions {
	const cloneThread = 0x10000
	return append(asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.FnGetCurrentPidTgid.Call(),
		asm.RSh.Imm(asm.R0, 32),
		asm.JNE.Imm(asm.R0, int32(tgid), "out"),
		asm.LoadMem(asm.R7, asm.R6, 0, asm.DWord), // task
		asm.LoadMem(asm.R8, asm.R6, 8, asm.DWord), // clone_flags
		asm.Mov.Reg(asm.R2, asm.R8),
		asm.And.Imm(asm.R2, cloneThread),
		asm.JNE.Imm(asm.R2, 0, "out"),
		// The map's value: count, leader, parent's tgid, thread flag.
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, m),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Reg(asm.R9, asm.R0),
		asm.LoadMem(asm.R1, asm.R9, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R9, 0, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.R7, off["pid"], asm.Word),
		asm.LoadMem(asm.R2, asm.R7, off["tgid"], asm.Word),
		asm.Mov.Imm(asm.R3, 0),
		asm.JNE.Reg(asm.R1, asm.R2, "notleader"),
		asm.Mov.Imm(asm.R3, 1),
		asm.StoreMem(asm.R9, 8, asm.R3, asm.DWord).WithSymbol("notleader"),
		asm.LoadMem(asm.R1, asm.R7, off["real_parent"], asm.DWord),
		asm.LoadMem(asm.R1, asm.R1, off["tgid"], asm.Word),
		asm.StoreMem(asm.R9, 16, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R8),
		asm.And.Imm(asm.R1, cloneThread),
		asm.StoreMem(asm.R9, 24, asm.R1, asm.DWord),
	}, out...)
}

// A task_newtask program attached in this machine's kernel and in bpfsim
// sees a process the test's process starts (a fork, here of /bin/true;
// in bpfsim, a process NewProcess starts from init) as the kernel shows
// it: once, a thread group leader whose parent is the starting process,
// not a thread; interpreted and JITed.
func TestTaskNewtaskFiresAsInTheKernel(t *testing.T) {
	if _, err := OpenKernel(); err != nil {
		t.Skipf("skipped: this machine cannot load BPF programs: %v", err)
	}
	tk := newTaskKernels(t, linuxLikeSim(t))
	arraySpec := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 32, MaxEntries: 1}

	km, err := ebpf.NewMap(arraySpec)
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	kp, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: "task_newtask", License: "GPL",
		Instructions: newTaskRecorder(uint32(os.Getpid()), tk.koff, km.FD())})
	if err != nil {
		t.Fatal(err)
	}
	defer kp.Close()
	// Go's first process start also forks once to probe for pidfd
	// support: that one goes before the program is attached.
	if err := exec.Command("/bin/true").Run(); err != nil {
		t.Fatal(err)
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: kp})
	if err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("/bin/true").Run(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	var want [4]uint64
	if err := km.Lookup(uint32(0), &want); err != nil {
		t.Fatal(err)
	}
	if want != [4]uint64{1, 1, uint64(os.Getpid()), 0} {
		t.Fatalf("the kernel recorded %v", want)
	}

	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		k, err := sim.NewKernel(&sim.Options{Runtime: rt})
		if err != nil {
			t.Fatal(err)
		}
		soff := taskOffsetsIn(t, mustKernelBTF(t, k))
		sm, err := k.NewMap(arraySpec)
		if err != nil {
			t.Fatal(err)
		}
		const initTgid = 1 // NewProcess's processes are init's children
		sp, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: "task_newtask", License: "GPL",
			Instructions: newTaskRecorder(initTgid, soff, sm.FD())})
		if err != nil {
			t.Fatal(err)
		}
		sl, err := k.AttachTracing(sim.TracingOptions{Program: sp})
		if err != nil {
			t.Fatal(err)
		}
		k.NewProcess()
		sl.Close()
		var got [4]uint64
		if err := sm.Lookup(uint32(0), &got); err != nil {
			t.Fatal(err)
		}
		if got != [4]uint64{1, 1, initTgid, 0} || k.TracepointError() != nil {
			t.Errorf("%s: bpfsim recorded %v (%v); the kernel %v", rt, got, k.TracepointError(), want)
		}
	}
}

func mustKernelBTF(t *testing.T, k *sim.Kernel) *btf.Spec {
	t.Helper()
	s, err := k.KernelBTF()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// forkRecorder is a sched_process_fork program that counts the children
// the process tgid starts and records of the last whether it leads its
// own thread group and its real parent's tgid, in an array of three u64s.
func forkRecorder(tgid uint32, off taskOffsets, m int) asm.Instructions {
	return append(asm.Instructions{
		asm.LoadMem(asm.R6, asm.R1, 0, asm.DWord), // parent
		asm.LoadMem(asm.R7, asm.R1, 8, asm.DWord), // child
		asm.LoadMem(asm.R2, asm.R6, off["tgid"], asm.Word),
		asm.JNE.Imm(asm.R2, int32(tgid), "out"),
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, m),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Reg(asm.R9, asm.R0),
		asm.LoadMem(asm.R1, asm.R9, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R9, 0, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.R7, off["pid"], asm.Word),
		asm.LoadMem(asm.R2, asm.R7, off["tgid"], asm.Word),
		asm.Mov.Imm(asm.R3, 0),
		asm.JNE.Reg(asm.R1, asm.R2, "notleader"),
		asm.Mov.Imm(asm.R3, 1),
		asm.StoreMem(asm.R9, 8, asm.R3, asm.DWord).WithSymbol("notleader"),
		asm.LoadMem(asm.R1, asm.R7, off["real_parent"], asm.DWord),
		asm.LoadMem(asm.R1, asm.R1, off["tgid"], asm.Word),
		asm.StoreMem(asm.R9, 16, asm.R1, asm.DWord),
	}, out...)
}

// A sched_process_fork program sees the same fork in both kernels: one
// child of the starting process, leading its own thread group, its real
// parent the starting process (this test's forking /bin/true; in bpfsim,
// NewProcess's child of init); interpreted and JITed.
func TestSchedProcessForkFiresAsInTheKernel(t *testing.T) {
	if _, err := OpenKernel(); err != nil {
		t.Skipf("skipped: this machine cannot load BPF programs: %v", err)
	}
	tk := newTaskKernels(t, linuxLikeSim(t))
	arraySpec := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 24, MaxEntries: 1}
	km, err := ebpf.NewMap(arraySpec)
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	kp, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: "sched_process_fork", License: "GPL",
		Instructions: forkRecorder(uint32(os.Getpid()), tk.koff, km.FD())})
	if err != nil {
		t.Fatal(err)
	}
	defer kp.Close()
	if err := exec.Command("/bin/true").Run(); err != nil { // Go's pidfd probe
		t.Fatal(err)
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: kp})
	if err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("/bin/true").Run(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	var want [3]uint64
	if err := km.Lookup(uint32(0), &want); err != nil {
		t.Fatal(err)
	}
	if want != [3]uint64{1, 1, uint64(os.Getpid())} {
		t.Fatalf("the kernel recorded %v", want)
	}
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		k, err := sim.NewKernel(&sim.Options{Runtime: rt})
		if err != nil {
			t.Fatal(err)
		}
		sm, err := k.NewMap(arraySpec)
		if err != nil {
			t.Fatal(err)
		}
		const initTgid = 1
		sp, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: "sched_process_fork", License: "GPL",
			Instructions: forkRecorder(initTgid, taskOffsetsIn(t, mustKernelBTF(t, k)), sm.FD())})
		if err != nil {
			t.Fatal(err)
		}
		sl, err := k.AttachTracing(sim.TracingOptions{Program: sp})
		if err != nil {
			t.Fatal(err)
		}
		k.NewProcess()
		sl.Close()
		var got [3]uint64
		if err := sm.Lookup(uint32(0), &got); err != nil {
			t.Fatal(err)
		}
		if got != [3]uint64{1, 1, initTgid} || k.TracepointError() != nil {
			t.Errorf("%s: bpfsim recorded %v (%v); the kernel %v", rt, got, k.TracepointError(), want)
		}
	}
}
