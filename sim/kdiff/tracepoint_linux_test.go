package kdiff

import (
	"encoding/binary"
	"os"
	"os/exec"
	"slices"
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

// childRecord ends a recorder program whose r7 is a new task: in the
// map's only value, an array of u64s, it counts such tasks and records of
// the last whether it leads its own thread group and its real parent's
// tgid; more records the program's own slots, with the value in r9.
func childRecord(off taskOffsets, m int, more ...asm.Instruction) asm.Instructions {
	return append(append(asm.Instructions{
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
	}, more...), out...)
}

// newTaskRecorder is a task_newtask program recording (childRecord) the
// tasks the process tgid starts that are no threads, and in a fourth slot
// whether the last one's clone flags say CLONE_THREAD.
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
	}, childRecord(off, m,
		asm.Mov.Reg(asm.R1, asm.R8),
		asm.And.Imm(asm.R1, cloneThread),
		asm.StoreMem(asm.R9, 24, asm.R1, asm.DWord),
	)...)
}

// forkRecorder is a sched_process_fork program recording (childRecord)
// the children the process tgid starts.
func forkRecorder(tgid uint32, off taskOffsets, m int) asm.Instructions {
	return append(asm.Instructions{
		asm.LoadMem(asm.R6, asm.R1, 0, asm.DWord), // parent
		asm.LoadMem(asm.R7, asm.R1, 8, asm.DWord), // child
		asm.LoadMem(asm.R2, asm.R6, off["tgid"], asm.Word),
		asm.JNE.Imm(asm.R2, int32(tgid), "out"),
	}, childRecord(off, m)...)
}

// sameChildRecord attaches a recorder of tracepoint tp, made by record
// for the starting process's tgid with a value of slots u64s, in this
// machine's kernel around a fork of /bin/true by this test, and in bpfsim
// around NewProcess (a child of init), interpreted and JITed. Each must
// see one child, a thread group leader, whose real parent is the starting
// process, and leave the slots past those zero.
func sameChildRecord(t *testing.T, tp string, slots int, record func(tgid uint32, off taskOffsets, m int) asm.Instructions) {
	t.Helper()
	if _, err := OpenKernel(); err != nil {
		t.Skipf("skipped: this machine cannot load BPF programs: %v", err)
	}
	tk := newTaskKernels(t, linuxLikeSim(t))
	arraySpec := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: uint32(8 * slots), MaxEntries: 1}
	spec := func(insns asm.Instructions) *ebpf.ProgramSpec {
		return &ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: tp, License: "GPL", Instructions: insns}
	}
	want := func(parent uint32) []uint64 {
		w := make([]uint64, slots)
		w[0], w[1], w[2] = 1, 1, uint64(parent)
		return w
	}
	values := func(b []byte) []uint64 {
		v := make([]uint64, len(b)/8)
		for i := range v {
			v[i] = binary.LittleEndian.Uint64(b[8*i:])
		}
		return v
	}

	km, err := ebpf.NewMap(arraySpec)
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	kp, err := ebpf.NewProgram(spec(record(uint32(os.Getpid()), tk.koff, km.FD())))
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
	var kv []byte
	if err := km.Lookup(uint32(0), &kv); err != nil {
		t.Fatal(err)
	}
	if got := values(kv); !slices.Equal(got, want(uint32(os.Getpid()))) {
		t.Fatalf("the kernel recorded %v", got)
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
		const initTgid = 1 // NewProcess's processes are init's children
		sp, err := k.NewProgram(spec(record(initTgid, taskOffsetsIn(t, mustKernelBTF(t, k)), sm.FD())))
		if err != nil {
			t.Fatal(err)
		}
		sl, err := k.AttachTracing(sim.TracingOptions{Program: sp})
		if err != nil {
			t.Fatal(err)
		}
		k.NewProcess()
		sl.Close()
		var sv []byte
		if err := sm.Lookup(uint32(0), &sv); err != nil {
			t.Fatal(err)
		}
		if got := values(sv); !slices.Equal(got, want(initTgid)) || k.TracepointError() != nil {
			t.Errorf("%s: bpfsim recorded %v (%v); the kernel %v", rt, got, k.TracepointError(), values(kv))
		}
	}
}

// A task_newtask program attached in this machine's kernel and in bpfsim
// sees a process the test's process starts as the kernel shows it: once,
// a thread group leader whose parent is the starting process, not a
// thread.
func TestTaskNewtaskFiresAsInTheKernel(t *testing.T) {
	sameChildRecord(t, "task_newtask", 4, newTaskRecorder)
}

// A sched_process_fork program sees the same fork in both kernels: one
// child of the starting process, leading its own thread group, its real
// parent the starting process.
func TestSchedProcessForkFiresAsInTheKernel(t *testing.T) {
	sameChildRecord(t, "sched_process_fork", 3, forkRecorder)
}

func mustKernelBTF(t *testing.T, k *sim.Kernel) *btf.Spec {
	t.Helper()
	s, err := k.KernelBTF()
	if err != nil {
		t.Fatal(err)
	}
	return s
}
