package kdiff

import (
	"os"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim"
)

// Programs walking tasks with the open-coded task iterator, loaded at log
// level 2 in this machine's kernel and in bpfsim: the same verdicts and
// whole logs (field offsets and kfunc ids are each kernel's own).
func TestTaskIteratorKfuncsVerifyAsTheKernels(t *testing.T) {
	tk := newTaskKernels(t, linuxLikeSim(t))
	for _, c := range []struct {
		name  string
		insns func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions
	}{
		{"every process counted", func(call func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
			return TaskIterLoop(call, 0, false)
		}},
		{"every thread's tgid read", func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions {
			return TaskIterLoop(call, 1, false, asm.LoadMem(asm.R8, asm.R6, off["tgid"], asm.Word))
		}},
		{"the current process's threads", func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions {
			return TaskIterLoop(call, 2, true, asm.LoadMem(asm.R8, asm.R6, off["pid"], asm.Word))
		}},
		{"a task's parent walked", func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions {
			return TaskIterLoop(call, 0, false, asm.LoadMem(asm.R8, asm.R6, off["real_parent"], asm.DWord), asm.LoadMem(asm.R8, asm.R8, off["pid"], asm.Word))
		}},
		{"a task written", func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions {
			return TaskIterLoop(call, 0, false, asm.StoreImm(asm.R6, off["pid"], 0, asm.Word))
		}},
		{"the iterator not destroyed", func(call func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
			p := TaskIterLoop(call, 0, false)
			return append(p[:len(p)-5], asm.Mov.Imm(asm.R0, 0).WithSymbol("done"), asm.Return())
		}},
		{"a task acquired and released", func(call func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
			return TaskIterLoop(call, 1, false,
				asm.Mov.Reg(asm.R1, asm.R6),
				call("bpf_task_acquire"),
				asm.JEq.Imm(asm.R0, 0, "loop"),
				asm.Mov.Reg(asm.R1, asm.R0),
				call("bpf_task_release"),
			)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := func(insns asm.Instructions) *ebpf.ProgramSpec {
				return &ebpf.ProgramSpec{Name: "tasks", Type: ebpf.SchedCLS, License: "GPL", Instructions: insns}
			}
			tk.sameLogs(t, spec(c.insns(tk.kcall, tk.koff)), spec(c.insns(tk.scall, tk.soff)))
		})
	}
}

// The open-coded task iterator walked in this machine's kernel and in
// bpfsim (interpreted and JITed), each with its own tasks: every walk of
// all processes or all threads starts with the idle task (pid 0) and
// lists this process (the kernel's test, bpfsim's process of the run);
// all threads lists the thread that runs the program; the walk of the
// current process's threads starts with the current task.
func TestTaskIteratorKfuncsRunAsTheKernels(t *testing.T) {
	if _, err := OpenKernel(); err != nil {
		t.Skipf("skipped: this machine cannot load BPF programs: %v", err)
	}
	ks, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skipf("skipped: no kernel BTF: %v", err)
	}
	koff := taskOffsetsIn(t, ks)
	kcall := func(name string) asm.Instruction { return kernelKfuncCall(t, ks, name) }
	spec := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 256, MaxEntries: 1}
	km, err := ebpf.NewMap(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	check := func(who string, pids []uint32, n uint32, flags int32, self, thread uint32) {
		t.Helper()
		if n == 0 || pids[0] != n {
			t.Fatalf("%s, flags %d: %d tasks, %d counted", who, flags, n, pids[0])
		}
		pids = pids[1 : 1+min(n, 63)]
		has := func(pid uint32) bool {
			for _, p := range pids {
				if p == pid {
					return true
				}
			}
			return n > 63 // not all recorded
		}
		switch flags {
		case 0, 1:
			if pids[0] != 0 || !has(self) || flags == 1 && !has(thread) {
				t.Errorf("%s, flags %d: %v lacks the idle task first, the process %d or the thread %d", who, flags, pids, self, thread)
			}
		case 2:
			if pids[0] != thread {
				t.Errorf("%s, flags %d: %v does not start with the current task %d", who, flags, pids, thread)
			}
		}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for _, flags := range []int32{0, 1, 2} {
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: TaskIterRecord(kcall, koff["pid"], km.FD(), flags)})
		if err != nil {
			t.Fatal(err)
		}
		n, err := p.Run(&ebpf.RunOptions{Data: make([]byte, 64)})
		p.Close()
		if err != nil {
			t.Fatal(err)
		}
		var v [64]uint32
		if err := km.Lookup(uint32(0), &v); err != nil {
			t.Fatal(err)
		}
		check("kernel", v[:], n, flags, uint32(os.Getpid()), uint32(unix.Gettid()))
	}
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		sk, scall, soff := simTaskKernel(t, rt)
		proc := sk.NewProcess()
		thread := &sim.Task{PID: uint32(proc.PID()) + 10, TGID: uint32(proc.PID())}
		if err := sk.AddTask(thread); err != nil {
			t.Fatal(err)
		}
		sm, err := sk.NewMap(spec)
		if err != nil {
			t.Fatal(err)
		}
		for _, flags := range []int32{0, 1, 2} {
			p, err := sk.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: TaskIterRecord(scall, soff["pid"], sm.FD(), flags)})
			if err != nil {
				t.Fatal(err)
			}
			n, err := p.Run(&sim.RunOptions{Data: make([]byte, 64), Task: thread})
			p.Close()
			if err != nil {
				t.Fatal(err)
			}
			var v [64]uint32
			if err := sm.Lookup(uint32(0), &v); err != nil {
				t.Fatal(err)
			}
			check("bpfsim "+rt.String(), v[:], n, flags, uint32(proc.PID()), thread.PID)
		}
		sm.Close()
	}
}

// Sleepable syscall programs with and without RCU read sections
// (bpf_rcu_read_lock, bpf_rcu_read_unlock), loaded at log level 2 in this
// machine's kernel and in bpfsim: a task's parent read inside one is
// RCU-protected, outside one or after the unlock untrusted; an unmatched
// unlock, a section left open at exit, nested sections, and the task
// iterator inside one: the same verdicts and whole logs.
func TestRCUReadSectionsVerifyAsTheKernels(t *testing.T) {
	tk := newTaskKernels(t, linuxLikeSim(t))
	lock := func(call func(string) asm.Instruction) asm.Instruction { return call("bpf_rcu_read_lock") }
	unlock := func(call func(string) asm.Instruction) asm.Instruction { return call("bpf_rcu_read_unlock") }
	parent := func(off taskOffsets) asm.Instructions {
		return asm.Instructions{
			asm.FnGetCurrentTaskBtf.Call(),
			asm.LoadMem(asm.R6, asm.R0, off["real_parent"], asm.DWord),
		}
	}
	ret0 := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	cat := func(parts ...asm.Instructions) asm.Instructions {
		var out asm.Instructions
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	for _, c := range []struct {
		name  string
		insns func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions
	}{
		{"a parent read in a section", func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions {
			return cat(asm.Instructions{lock(call)}, parent(off), asm.Instructions{
				asm.LoadMem(asm.R7, asm.R6, off["pid"], asm.Word), unlock(call)}, ret0)
		}},
		{"a parent read outside one", func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions {
			return cat(parent(off), asm.Instructions{asm.LoadMem(asm.R7, asm.R6, off["pid"], asm.Word)}, ret0)
		}},
		{"a parent acquired in a section", func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions {
			return cat(asm.Instructions{lock(call)}, parent(off), asm.Instructions{
				asm.Mov.Reg(asm.R1, asm.R6),
				call("bpf_task_acquire"),
				asm.Mov.Reg(asm.R8, asm.R0),
				unlock(call),
				asm.JEq.Imm(asm.R8, 0, "out"),
				asm.Mov.Reg(asm.R1, asm.R8),
				call("bpf_task_release"),
				asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
				asm.Return()})
		}},
		{"a parent acquired after the unlock", func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions {
			return cat(asm.Instructions{lock(call)}, parent(off), asm.Instructions{
				unlock(call),
				asm.Mov.Reg(asm.R1, asm.R6),
				call("bpf_task_acquire"),
				asm.JEq.Imm(asm.R0, 0, "out"),
				asm.Mov.Reg(asm.R1, asm.R0),
				call("bpf_task_release"),
				asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
				asm.Return()})
		}},
		{"an unmatched unlock", func(call func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
			return cat(asm.Instructions{unlock(call)}, ret0)
		}},
		{"a section left open", func(call func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
			return cat(asm.Instructions{lock(call)}, ret0)
		}},
		{"nested sections", func(call func(string) asm.Instruction, off taskOffsets) asm.Instructions {
			return cat(asm.Instructions{lock(call), lock(call)}, parent(off), asm.Instructions{
				unlock(call), asm.LoadMem(asm.R7, asm.R6, off["pid"], asm.Word), unlock(call)}, ret0)
		}},
		{"the task iterator in a section", func(call func(string) asm.Instruction, _ taskOffsets) asm.Instructions {
			return cat(asm.Instructions{lock(call)}, TaskIterLoop(call, 0, false)[:len(TaskIterLoop(call, 0, false))-1],
				asm.Instructions{asm.Mov.Reg(asm.R6, asm.R0), unlock(call), asm.Mov.Reg(asm.R0, asm.R6), asm.Return()})
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := func(insns asm.Instructions) *ebpf.ProgramSpec {
				return &ebpf.ProgramSpec{Name: "rcu", Type: ebpf.Syscall, Flags: 1 << 4, License: "GPL", Instructions: insns} // BPF_F_SLEEPABLE
			}
			tk.sameLogs(t, spec(c.insns(tk.kcall, tk.koff)), spec(c.insns(tk.scall, tk.soff)))
		})
	}
}

// A walk of every thread with the open-coded task iterator, counting
// them, in a tc test run: bpfsim (interpreted and JITed, with 150 live
// tasks) and this machine's kernel (its own threads) in the same run,
// reported per task walked.
func BenchmarkTaskIteratorWalk(b *testing.B) {
	pkt := make([]byte, 64)
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		b.Run("bpfsim-"+rt.String(), func(b *testing.B) {
			k, err := sim.NewKernel(&sim.Options{Runtime: rt})
			if err != nil {
				b.Fatal(err)
			}
			for pid := uint32(1000); pid < 1149; pid++ {
				if err := k.AddTask(&sim.Task{PID: pid, TGID: pid - pid%3}); err != nil {
					b.Fatal(err)
				}
			}
			p, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL",
				Instructions: TaskIterLoop(func(name string) asm.Instruction { return simKfuncCall(b, k, name) }, 1, false)})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			b.ResetTimer()
			res, err := p.Test(&sim.RunOptions{Data: pkt, Repeat: uint32(b.N)})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(res.Duration.Nanoseconds())/float64(res.R0), "ns/task")
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
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL",
			Instructions: TaskIterLoop(func(name string) asm.Instruction { return kernelKfuncCall(b, ks, name) }, 1, false)})
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		b.ResetTimer()
		n, d, err := p.Benchmark(pkt, b.N, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(d.Nanoseconds())/float64(n), "ns/task")
	})
}
