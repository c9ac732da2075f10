package kdiff

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// kernelKfuncCall is a call of the kfunc name of this machine's kernel,
// by its id in the kernel's BTF (ks); the test skips if it has none.
func kernelKfuncCall(tb testing.TB, ks *btf.Spec, name string) asm.Instruction {
	tb.Helper()
	var fn *btf.Func
	if err := ks.TypeByName(name, &fn); err != nil {
		tb.Skipf("skipped: this kernel has no kfunc %s: %v", name, err)
	}
	id, err := ks.TypeID(fn)
	if err != nil {
		tb.Fatal(err)
	}
	return asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call), Src: asm.PseudoKfuncCall, Constant: int64(id)}
}

// simKfuncCall is a call of bpfsim's kfunc name.
func simKfuncCall(tb testing.TB, k *sim.Kernel, name string) asm.Instruction {
	tb.Helper()
	id, ok := k.KfuncID(name)
	if !ok {
		tb.Fatalf("no kfunc %s", name)
	}
	return asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call), Src: asm.PseudoKfuncCall, Constant: int64(id)}
}

// taskOffsets are the offsets of task_struct's fields the programs read,
// in a kernel's BTF.
type taskOffsets map[string]int16

func taskOffsetsIn(t *testing.T, spec *btf.Spec) taskOffsets {
	t.Helper()
	var task *btf.Struct
	if err := spec.TypeByName("task_struct", &task); err != nil {
		t.Skipf("skipped: %v", err)
	}
	offs := taskOffsets{}
	for _, f := range []string{"pid", "tgid", "real_parent", "parent"} {
		off, _, err := memberSpan(task, f)
		if err != nil {
			t.Fatal(err)
		}
		offs[f] = int16(off)
	}
	return offs
}

type kfuncRefCase struct {
	name  string
	insns func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions
}

// fromPid1 puts bpf_task_from_pid(1) in r6 and exits with 0 when it is
// NULL.
func fromPid1(call func(string) asm.Instruction) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R1, 1),
		call("bpf_task_from_pid"),
		asm.Mov.Reg(asm.R6, asm.R0),
		asm.JEq.Imm(asm.R6, 0, "out"),
	}
}

// currentTgid returns the current task's tgid, read through a reference
// bpf_task_acquire took on bpf_get_current_task_btf's task.
func currentTgid(call func(string) asm.Instruction, off taskOffsets) asm.Instructions {
	return append(asm.Instructions{
		asm.FnGetCurrentTaskBtf.Call(),
		asm.Mov.Reg(asm.R1, asm.R0),
		call("bpf_task_acquire"),
		asm.Mov.Reg(asm.R6, asm.R0),
		asm.JEq.Imm(asm.R6, 0, "out"),
		asm.LoadMem(asm.R7, asm.R6, off["tgid"], asm.Word),
		asm.Mov.Reg(asm.R1, asm.R6),
		call("bpf_task_release"),
		asm.Mov.Reg(asm.R0, asm.R7),
		asm.Return(),
	}, out...)
}

var out = asm.Instructions{asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return()}

var kfuncRefCases = []kfuncRefCase{
	{"acquired, read and released", func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions {
		return append(append(fromPid1(call),
			asm.LoadMem(asm.R7, asm.R6, off["pid"], asm.Word),
			asm.Mov.Reg(asm.R1, asm.R6),
			call("bpf_task_release"),
		), out...)
	}},
	{"reference leaked", func(call func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Imm(asm.R1, 1),
			call("bpf_task_from_pid"),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
	}},
	{"released untested", func(call func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Imm(asm.R1, 1),
			call("bpf_task_from_pid"),
			asm.Mov.Reg(asm.R1, asm.R0),
			call("bpf_task_release"),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
	}},
	{"released twice", func(call func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
		return append(append(fromPid1(call),
			asm.Mov.Reg(asm.R1, asm.R6),
			call("bpf_task_release"),
			asm.Mov.Reg(asm.R1, asm.R6),
			call("bpf_task_release"),
		), out...)
	}},
	{"acquired again through the reference", func(call func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
		return append(append(fromPid1(call),
			asm.Mov.Reg(asm.R1, asm.R6),
			call("bpf_task_acquire"),
			asm.Mov.Reg(asm.R7, asm.R0),
			asm.Mov.Reg(asm.R1, asm.R6),
			call("bpf_task_release"),
			asm.JEq.Imm(asm.R7, 0, "out"),
			asm.Mov.Reg(asm.R1, asm.R7),
			call("bpf_task_release"),
		), out...)
	}},
	{"number released", func(call func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Imm(asm.R1, 1),
			call("bpf_task_release"),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
	}},
	{"moved reference released", func(call func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
		return append(append(fromPid1(call),
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Add.Imm(asm.R1, 8),
			call("bpf_task_release"),
		), out...)
	}},
	{"read after release", func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions {
		return append(append(fromPid1(call),
			asm.Mov.Reg(asm.R1, asm.R6),
			call("bpf_task_release"),
			asm.LoadMem(asm.R0, asm.R6, off["pid"], asm.Word),
		), out...)
	}},
	{"RCU-protected parent acquired", func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions {
		return append(append(fromPid1(call),
			asm.LoadMem(asm.R1, asm.R6, off["real_parent"], asm.DWord),
			call("bpf_task_acquire"),
			asm.Mov.Reg(asm.R7, asm.R0),
			asm.Mov.Reg(asm.R1, asm.R6),
			call("bpf_task_release"),
			asm.JEq.Imm(asm.R7, 0, "out"),
			asm.LoadMem(asm.R0, asm.R7, off["pid"], asm.Word),
			asm.Mov.Reg(asm.R1, asm.R7),
			call("bpf_task_release"),
		), out...)
	}},
	{"plain parent acquired", func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions {
		return append(append(fromPid1(call),
			asm.LoadMem(asm.R1, asm.R6, off["parent"], asm.DWord),
			call("bpf_task_acquire"),
			asm.Mov.Reg(asm.R1, asm.R6),
			call("bpf_task_release"),
		), out...)
	}},
	{"RCU-protected parent released", func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions {
		return append(append(fromPid1(call),
			asm.LoadMem(asm.R1, asm.R6, off["real_parent"], asm.DWord),
			call("bpf_task_release"),
			asm.Mov.Reg(asm.R1, asm.R6),
			call("bpf_task_release"),
		), out...)
	}},
	{"store into the task", func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions {
		return append(append(fromPid1(call),
			asm.Mov.Imm(asm.R2, 0),
			asm.StoreMem(asm.R6, off["pid"], asm.R2, asm.Word),
			asm.Mov.Reg(asm.R1, asm.R6),
			call("bpf_task_release"),
		), out...)
	}},
	{"context released", func(call func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
		return asm.Instructions{
			call("bpf_task_release"),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
	}},
	{"current task acquired, read and released", func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions {
		return currentTgid(call, off)
	}},
	{"current task's parent read", func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions {
		return asm.Instructions{
			asm.FnGetCurrentTaskBtf.Call(),
			asm.LoadMem(asm.R1, asm.R0, off["real_parent"], asm.DWord),
			asm.LoadMem(asm.R0, asm.R1, off["tgid"], asm.Word),
			asm.Return(),
		}
	}},
	{"current task released unacquired", func(call func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
		return asm.Instructions{
			asm.FnGetCurrentTaskBtf.Call(),
			asm.Mov.Reg(asm.R1, asm.R0),
			call("bpf_task_release"),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}
	}},
	{"reference kept across a branch", func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions {
		return append(append(fromPid1(call),
			asm.LoadMem(asm.R7, asm.R6, off["pid"], asm.Word),
			asm.JGT.Imm(asm.R7, 100, "big"),
			asm.Mov.Reg(asm.R1, asm.R6),
			call("bpf_task_release"),
			asm.Ja.Label("out"),
			asm.Mov.Imm(asm.R0, 1).WithSymbol("big"),
			asm.Return(),
		), out...)
	}},
}

// tc programs calling the kernel's task kfuncs, loaded at log level 2 in
// this machine's kernel and in bpfsim: references acquired, tested for
// NULL, passed on and released, leaked, released twice or moved, used
// after release, RCU-protected and plain pointers read out of a task,
// stores refused: the same verdicts, errnos and whole logs (the
// instructions' field offsets and the kfuncs' BTF ids are each kernel's
// own).
func TestKfuncReferencesAreTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	tk := newTaskKernels(t, k)
	for _, c := range kfuncRefCases {
		t.Run(c.name, func(t *testing.T) {
			spec := func(insns asm.Instructions) *ebpf.ProgramSpec {
				return &ebpf.ProgramSpec{Name: "refs", Type: ebpf.SchedCLS, License: "GPL", Instructions: insns}
			}
			tk.sameLogs(t, spec(c.insns(tk.kcall, tk.koff)), spec(c.insns(tk.scall, tk.soff)))
		})
	}
}

// taskKernels are this machine's kernel's BTF and a simulated kernel's,
// with the task_struct offsets and kfunc calls of each.
type taskKernels struct {
	k            *sim.Kernel
	ks, ss       *btf.Spec
	koff, soff   taskOffsets
	kcall, scall func(string) asm.Instruction
}

// newTaskKernels returns k's and this machine's kernel's; the test skips
// if this kernel has no BTF.
func newTaskKernels(t *testing.T, k *sim.Kernel) *taskKernels {
	t.Helper()
	ks, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skipf("skipped: no kernel BTF: %v", err)
	}
	ss, err := k.KernelBTF()
	if err != nil {
		t.Fatal(err)
	}
	return &taskKernels{k: k, ks: ks, ss: ss, koff: taskOffsetsIn(t, ks), soff: taskOffsetsIn(t, ss),
		kcall: func(name string) asm.Instruction { return kernelKfuncCall(t, ks, name) },
		scall: func(name string) asm.Instruction { return simKfuncCall(t, k, name) }}
}

// simTaskKernel returns a simulated kernel running programs with rt, its
// kfunc calls and its task_struct offsets.
func simTaskKernel(t *testing.T, rt sim.Runtime) (*sim.Kernel, func(string) asm.Instruction, taskOffsets) {
	t.Helper()
	k, err := sim.NewKernel(&sim.Options{Runtime: rt})
	if err != nil {
		t.Fatal(err)
	}
	ss, err := k.KernelBTF()
	if err != nil {
		t.Fatal(err)
	}
	return k, func(name string) asm.Instruction { return simKfuncCall(t, k, name) }, taskOffsetsIn(t, ss)
}

// sameLogs loads one program, built for each kernel (kspec for this
// machine's, sspec for bpfsim's), at log level 2 in both: the same
// verdict, errno and whole log, but for what each kernel numbers its own
// way (task_struct's field offsets, kfunc and BTF ids).
func (tk *taskKernels) sameLogs(t *testing.T, kspec, sspec *ebpf.ProgramSpec) {
	t.Helper()
	named := func(log string, off taskOffsets) string {
		for f, o := range off {
			log = strings.ReplaceAll(log, fmt.Sprintf(" +%d)", o), " +"+f+")")
		}
		log = kfuncCallID.ReplaceAllString(globalFuncLog(log), "$1#ID")
		return btfIDNote.ReplaceAllString(log, "has btf_id ID type")
	}
	kerr, serr, klog, slog := loadBothLogged(t, tk.k, kspec, sspec)
	kmsg, smsg := kfuncCallID.ReplaceAllString(verifierMessage(kerr), "$1#ID"), kfuncCallID.ReplaceAllString(verifierMessage(serr), "$1#ID")
	if errnoOf(kerr) != errnoOf(serr) || kmsg != smsg {
		t.Fatalf("verdicts differ\nkernel: %v: %s\nbpfsim: %v: %s", errnoOf(kerr), kmsg, errnoOf(serr), smsg)
	}
	if a, b := named(klog, tk.koff), named(slog, tk.soff); a != b {
		t.Errorf("logs differ\nkernel:\n%s\nbpfsim:\n%s", a, b)
	}
	t.Logf("%v %s", errnoOf(kerr), kmsg)
}

// A tc program reads the tgid of the task it runs in through a reference
// on bpf_get_current_task_btf's task, in this machine's kernel and in
// bpfsim: each gives the tgid of the task that asked for the test run
// (this process; bpfsim's RunOptions.Task), interpreted and JITed.
func TestCurrentTaskReferencesRunAsTheKernels(t *testing.T) {
	ks, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skipf("skipped: no kernel BTF: %v", err)
	}
	if _, err := OpenKernel(); err != nil {
		t.Skipf("skipped: this machine cannot load BPF programs: %v", err)
	}
	kcall := func(name string) asm.Instruction { return kernelKfuncCall(t, ks, name) }
	kp, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "tgid", Type: ebpf.SchedCLS, License: "GPL", Instructions: currentTgid(kcall, taskOffsetsIn(t, ks))})
	if err != nil {
		t.Fatal(err)
	}
	defer kp.Close()
	kret, err := kp.Run(&ebpf.RunOptions{Data: make([]byte, 64)})
	if err != nil {
		t.Fatal(err)
	}
	if want := uint32(os.Getpid()); kret != want {
		t.Fatalf("kernel: %d, want this process's %d", kret, want)
	}
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		k, scall, soff := simTaskKernel(t, rt)
		sp, err := k.NewProgram(&ebpf.ProgramSpec{Name: "tgid", Type: ebpf.SchedCLS, License: "GPL", Instructions: currentTgid(scall, soff)})
		if err != nil {
			t.Fatal(err)
		}
		res, err := sp.Test(&sim.RunOptions{Data: make([]byte, 64), Task: &sim.Task{PID: 4243, TGID: 4242, Comm: "worker"}})
		if err != nil {
			t.Fatal(err)
		}
		if res.R0 != 4242 {
			t.Errorf("bpfsim %v: %d, want the task's 4242", rt, res.R0)
		}
		sp.Close()
	}
}

// A tc test run finding a live task with bpf_task_from_pid and giving
// the reference back with bpf_task_release, repeated: bpfsim interpreted
// and JITed (its first process's task), and this machine's kernel (this
// process's; it finds no task for pid 1) in the same run. Each run
// returns 1 when it found the task, which the benchmark checks.
func BenchmarkTaskFromPid(b *testing.B) {
	fromPid := func(call func(string) asm.Instruction, pid int32) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Imm(asm.R1, pid),
			call("bpf_task_from_pid"),
			asm.Mov.Reg(asm.R6, asm.R0),
			asm.JEq.Imm(asm.R6, 0, "out"),
			asm.Mov.Reg(asm.R1, asm.R6),
			call("bpf_task_release"),
			asm.Mov.Imm(asm.R0, 1),
			asm.Return(),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
			asm.Return(),
		}
	}
	pkt := make([]byte, 64)
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		b.Run("bpfsim-"+rt.String(), func(b *testing.B) {
			k, err := sim.NewKernel(&sim.Options{Runtime: rt})
			if err != nil {
				b.Fatal(err)
			}
			call := func(name string) asm.Instruction { return simKfuncCall(b, k, name) }
			p, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: fromPid(call, int32(k.InitProcess().PID()))})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			b.ResetTimer()
			res, err := p.Test(&sim.RunOptions{Data: pkt, Repeat: uint32(b.N)})
			if err != nil || res.R0 != 1 {
				b.Fatalf("%d, %v", res.R0, err)
			}
		})
	}
	b.Run("kernel", func(b *testing.B) {
		if _, err := OpenKernel(); err != nil {
			b.Skipf("skipped: this machine cannot load BPF programs: %v", err)
		}
		ks, err := btf.LoadKernelSpec()
		if err != nil {
			b.Skipf("skipped: no kernel BTF: %v", err)
		}
		call := func(name string) asm.Instruction { return kernelKfuncCall(b, ks, name) }
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: fromPid(call, int32(os.Getpid()))})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		b.ResetTimer()
		ret, err := p.Run(&ebpf.RunOptions{Data: pkt, Repeat: uint32(b.N)})
		if err != nil || ret != 1 {
			b.Fatalf("%d, %v", ret, err)
		}
	})
}

// A program taking and giving back a reference on the current task is
// loaded as each program type bpfsim loads, in this machine's kernel and
// in bpfsim: the kfuncs are offered to the same types (the same verdicts,
// errnos and messages).
func TestTaskKfuncsAreOfferedAsTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	ks, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skipf("skipped: no kernel BTF: %v", err)
	}
	ss, err := k.KernelBTF()
	if err != nil {
		t.Fatal(err)
	}
	kcall := func(name string) asm.Instruction { return kernelKfuncCall(t, ks, name) }
	scall := func(name string) asm.Instruction { return simKfuncCall(t, k, name) }
	compared := 0
	for _, typ := range []ebpf.ProgramType{ebpf.SocketFilter, ebpf.Kprobe, ebpf.TracePoint, ebpf.RawTracepoint, ebpf.XDP,
		ebpf.SchedCLS, ebpf.SchedACT, ebpf.CGroupSKB, ebpf.Syscall, ebpf.PerfEvent, ebpf.CGroupSock} {
		spec := func(insns asm.Instructions) *ebpf.ProgramSpec {
			s := &ebpf.ProgramSpec{Name: "task", Type: typ, License: "GPL", Instructions: insns}
			if typ == ebpf.Syscall {
				s.Flags = 1 << 4 // BPF_F_SLEEPABLE
			}
			return s
		}
		// A reference on the current task, a walk of the tasks with
		// the open-coded iterator (which a sleepable program may not
		// make outside an RCU read section), and an empty RCU read
		// section.
		for _, prog := range []func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions{
			currentTgid,
			func(call func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
				return TaskIterLoop(call, 0, false)
			},
			func(call func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
				return asm.Instructions{call("bpf_rcu_read_lock"), call("bpf_rcu_read_unlock"), asm.Mov.Imm(asm.R0, 1), asm.Return()}
			},
		} {
			sp, serr := k.NewProgram(spec(prog(scall, taskOffsetsIn(t, ss))))
			if serr != nil && (strings.Contains(serr.Error(), "not supported by bpfsim") || errors.Is(serr, uapi.ENOTSUPP) && strings.Contains(serr.Error(), "not simulated")) {
				break // a type bpfsim does not load
			}
			if sp != nil {
				sp.Close()
			}
			kp, kerr := ebpf.NewProgram(spec(prog(kcall, taskOffsetsIn(t, ks))))
			if kp != nil {
				kp.Close()
			}
			kmsg, smsg := kfuncCallID.ReplaceAllString(verifierMessage(kerr), "$1#ID"), kfuncCallID.ReplaceAllString(verifierMessage(serr), "$1#ID")
			if errnoOf(kerr) != errnoOf(serr) || kmsg != smsg {
				t.Errorf("%v: kernel %v: %s; bpfsim %v: %s", typ, errnoOf(kerr), kmsg, errnoOf(serr), smsg)
			}
			if kerr != nil {
				t.Logf("%v: %v %s", typ, errnoOf(kerr), kmsg)
			}
			compared++
		}
	}
	t.Logf("%d (program type, program) pairs compared", compared)
}
