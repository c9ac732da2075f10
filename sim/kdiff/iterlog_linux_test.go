package kdiff

import (
	"io"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim"
)

// The iterator programs of testdata/mapiter.bpf.o loaded at log level 2
// in this machine's kernel and in bpfsim: the context's trusted pointers,
// the seq_file read out of the trusted meta (trusted too, by the kernel's
// list of such fields), the key and value buffers, the same verdicts and
// whole logs (but for the btf ids in them, each kernel's own). The chunks
// program's log shows a scalar linked to its copy across a 32-bit add of
// a constant ("id=3+0", BPF_ADD_CONST32).
func TestIteratorLogsAreTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	spec, err := ebpf.LoadCollectionSpec("../testdata/mapiter.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"double_values", "chunks"} {
		t.Run(name, func(t *testing.T) {
			p := spec.Programs[name]
			kerr, serr, klog, slog := loadBothLogged(t, k, p.Copy(), p.Copy())
			if kerr != nil || serr != nil {
				t.Fatalf("kernel: %v\nbpfsim: %v", kerr, serr)
			}
			a := btfIDNote.ReplaceAllString(globalFuncLog(klog), "has btf_id ID type")
			b := btfIDNote.ReplaceAllString(globalFuncLog(slog), "has btf_id ID type")
			if a != b {
				t.Errorf("logs differ\nkernel:\n%s\nbpfsim:\n%s", a, b)
			}
		})
	}
}

// A task iterator (SEC("iter/task")) reading each task's pid and tgid and
// writing them with bpf_seq_write, and one that reads the task without
// testing it for NULL: in this machine's kernel and in bpfsim, the same
// verdicts and whole level-2 logs (the field offsets and btf ids are each
// kernel's own).
func TestTaskIteratorLogsAreTheKernels(t *testing.T) {
	tk := newTaskKernels(t, linuxLikeSim(t))
	for _, c := range []struct {
		name  string
		insns func(off taskOffsets) asm.Instructions
	}{
		{"pid and tgid written", func(off taskOffsets) asm.Instructions {
			return asm.Instructions{
				asm.LoadMem(asm.R2, asm.R1, 8, asm.DWord),
				asm.LoadMem(asm.R1, asm.R1, 0, asm.DWord),
				asm.LoadMem(asm.R1, asm.R1, 0, asm.DWord),
				asm.JEq.Imm(asm.R2, 0, "out"),
				asm.LoadMem(asm.R3, asm.R2, off["pid"], asm.Word),
				asm.StoreMem(asm.RFP, -8, asm.R3, asm.Word),
				asm.LoadMem(asm.R3, asm.R2, off["tgid"], asm.Word),
				asm.StoreMem(asm.RFP, -4, asm.R3, asm.Word),
				asm.Mov.Reg(asm.R2, asm.RFP),
				asm.Add.Imm(asm.R2, -8),
				asm.Mov.Imm(asm.R3, 8),
				asm.FnSeqWrite.Call(),
				asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
				asm.Return(),
			}
		}},
		{"the task read untested", func(off taskOffsets) asm.Instructions {
			return asm.Instructions{
				asm.LoadMem(asm.R2, asm.R1, 8, asm.DWord),
				asm.LoadMem(asm.R0, asm.R2, off["pid"], asm.Word),
				asm.Mov.Imm(asm.R0, 0),
				asm.Return(),
			}
		}},
		{"the parent walked", func(off taskOffsets) asm.Instructions {
			return asm.Instructions{
				asm.LoadMem(asm.R2, asm.R1, 8, asm.DWord),
				asm.JEq.Imm(asm.R2, 0, "out"),
				asm.LoadMem(asm.R2, asm.R2, off["real_parent"], asm.DWord),
				asm.LoadMem(asm.R0, asm.R2, off["tgid"], asm.Word),
				asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
				asm.Return(),
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := func(insns asm.Instructions) *ebpf.ProgramSpec {
				return &ebpf.ProgramSpec{Name: "tasks", Type: ebpf.Tracing, AttachType: ebpf.AttachTraceIter, AttachTo: "task", License: "GPL", Instructions: insns}
			}
			tk.sameLogs(t, spec(c.insns(tk.koff)), spec(c.insns(tk.soff)))
		})
	}
}

// readTasks reads a task walk through ReadTaskDump and checks that it
// lists its tasks by pid; it returns them, pid to tgid.
func readTasks(t *testing.T, who string, open func() (io.ReadCloser, error)) map[uint32]uint32 {
	t.Helper()
	list, err := ReadTaskDump(open)
	if err != nil {
		t.Fatalf("%s: %v", who, err)
	}
	tasks := map[uint32]uint32{}
	last := int64(-1)
	for _, pt := range list {
		if int64(pt[0]) <= last {
			t.Fatalf("%s: pid %d after %d", who, pt[0], last)
		}
		last, tasks[pt[0]] = int64(pt[0]), pt[1]
	}
	return tasks
}

// A task iterator walked in this machine's kernel and in bpfsim: each
// lists every task once, by pid, threads included with their process's
// tgid (this test's threads in the kernel, a process's added threads in
// bpfsim), and ends with one call for a NULL task.
func TestTaskIteratorWalksAsTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	ks, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skipf("skipped: no kernel BTF: %v", err)
	}
	ss, err := k.KernelBTF()
	if err != nil {
		t.Fatal(err)
	}
	spec := func(insns asm.Instructions) *ebpf.ProgramSpec {
		return &ebpf.ProgramSpec{Name: "tasks", Type: ebpf.Tracing, AttachType: ebpf.AttachTraceIter, AttachTo: "task", License: "GPL", Instructions: insns}
	}
	kp, err := ebpf.NewProgram(spec(TaskDump(taskOffsetsIn(t, ks)["pid"], taskOffsetsIn(t, ks)["tgid"])))
	if err != nil {
		t.Fatal(err)
	}
	defer kp.Close()
	kl, err := link.AttachIter(link.IterOptions{Program: kp})
	if err != nil {
		t.Fatal(err)
	}
	defer kl.Close()
	ktasks := readTasks(t, "kernel", kl.Open)
	self := uint32(os.Getpid())
	if ktasks[self] != self || ktasks[uint32(unix.Gettid())] != self {
		t.Errorf("kernel: this process (%d) or this thread (%d) is missing or has another tgid", self, unix.Gettid())
	}

	proc := k.NewProcess()
	pp := uint32(proc.PID())
	if err := k.AddTask(&sim.Task{PID: pp + 100, TGID: pp, Comm: "thread"}); err != nil {
		t.Fatal(err)
	}
	sp, err := k.NewProgram(spec(TaskDump(taskOffsetsIn(t, ss)["pid"], taskOffsetsIn(t, ss)["tgid"])))
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	it, err := k.AttachIter(sim.IterOptions{Program: sp})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	stasks := readTasks(t, "bpfsim", it.Open)
	if stasks[pp] != pp || stasks[pp+100] != pp {
		t.Errorf("bpfsim: the process (%d) or its thread (%d) is missing or has another tgid: %v", pp, pp+100, stasks)
	}
	t.Logf("kernel: %d tasks, bpfsim: %d", len(ktasks), len(stasks))
}
