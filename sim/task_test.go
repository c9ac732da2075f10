package sim_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
)

// taskResult is struct result of testdata/task.bpf.c.
type taskResult struct {
	PidTgid, UIDGid uint64
	Comm            [16]byte
	PID, TGID, PPID int32
	UID             uint32
	ParentComm      [16]byte
	ParentCommLen   int64
	ShortLen        int64
	ShortComm       [4]byte
	_               [4]byte
	Fault           int64
	FaultBuf        [8]byte
	UserStr         [16]byte
	UserStrLen      int64
	UserWord        uint64
	UserFault       int64
	UserKernelFault int64
	UserShort       [4]byte
	_               [4]byte
	UserShortLen    int64
	CgroupID        uint64
}

func comm(s string) (c [16]byte) {
	copy(c[:], s)
	return c
}

// userMemory is a task's user memory in TestTracingProgramsSeeTheTaskTheyRunIn,
// and userArgs the raw tracepoint arguments that point into it.
var (
	userMemory = []sim.UserMemory{
		{Addr: 0x10000, Bytes: []byte("hello, world\x00")},
		{Addr: 0x7fff_0000_0000, Bytes: []byte{0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11}},
	}
	userArgs = []byte{0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0x7f, 0, 0}
)

// unpadded is s and its NUL over the 0xff bytes the results map starts
// with: bpf_probe_read_kernel_str writes no padding.
func unpadded(s string) (c [16]byte) {
	for i := range c {
		c[i] = 0xff
	}
	copy(c[:], s+"\x00")
	return c
}

// runTaskIDs runs task_ids of testdata/task.bpf.o in task (nil: the
// default), with ctx as its arguments, on a results map first filled
// with 0xff bytes, and returns what it found.
func runTaskIDs(t *testing.T, k *sim.Kernel, task *sim.Task, ctx []byte) taskResult {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec("testdata/task.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	c, err := k.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Maps["results"].Put(uint32(0), bytes.Repeat([]byte{0xff}, binary.Size(taskResult{}))); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Programs["task_ids"].Test(&sim.RunOptions{Context: ctx, Task: task}); err != nil {
		t.Fatal(err)
	}
	var r taskResult
	if err := c.Maps["results"].Lookup(uint32(0), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestTracingProgramsSeeTheTaskTheyRunIn(t *testing.T) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) { testTaskIDs(t, newKernel(t, &sim.Options{Runtime: rt})) })
	}
}

// testTaskIDs runs task_ids on k in tasks of every kind. JITed, the
// program's bpf_get_current_task is inlined: current comes from SP_EL0.
func testTaskIDs(t *testing.T, k *sim.Kernel) {
	for _, tc := range []struct {
		name string
		task *sim.Task
		want taskResult
	}{{
		name: "a thread of curl, child of bash",
		task: &sim.Task{PID: 1234, TGID: 1200, UID: 1000, GID: 100, Comm: "curl", Parent: &sim.Task{PID: 77, TGID: 77, Comm: "bash"},
			Memory: userMemory, CgroupID: 4242},
		want: taskResult{PidTgid: 1200<<32 | 1234, UIDGid: 100<<32 | 1000, Comm: comm("curl"), PID: 1234, TGID: 1200, PPID: 77, UID: 1000,
			ParentComm: unpadded("bash"), ParentCommLen: 5, ShortLen: 4, ShortComm: [4]byte{'b', 'a', 's', 0}, Fault: -34,
			UserStr: unpadded("hello, world"), UserStrLen: 13, UserWord: 0x1122334455667788, UserFault: -14, UserKernelFault: -14,
			UserShort: [4]byte{'h', 'e', 'l', 0}, UserShortLen: 4, CgroupID: 4242},
	}, {
		name: "a name longer than TASK_COMM_LEN, child of init",
		task: &sim.Task{PID: 9, TGID: 9, Comm: "a-very-long-task-name"},
		want: taskResult{PidTgid: 9<<32 | 9, Comm: comm("a-very-long-tas"), PID: 9, TGID: 9, PPID: 1,
			ParentComm: unpadded("init"), ParentCommLen: 5, ShortLen: 4, ShortComm: [4]byte{'i', 'n', 'i', 0}, Fault: -34,
			UserStrLen: -14, UserFault: -14, UserKernelFault: -14, UserShortLen: -14, CgroupID: 1},
	}, {
		name: "the default: the loading process's main thread",
		want: taskResult{PidTgid: uint64(k.InitProcess().PID())<<32 | uint64(k.InitProcess().PID()), Comm: comm("bpfsim-test"),
			PID: int32(k.InitProcess().PID()), TGID: int32(k.InitProcess().PID()), PPID: 1,
			ParentComm: unpadded("init"), ParentCommLen: 5, ShortLen: 4, ShortComm: [4]byte{'i', 'n', 'i', 0}, Fault: -34,
			UserStrLen: -14, UserFault: -14, UserKernelFault: -14, UserShortLen: -14, CgroupID: 1},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := runTaskIDs(t, k, tc.task, userArgs); got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// bpf_probe_read_kernel across the end of the current task's page, into
// the unmapped guard page after it, and its string variant from there:
// -EFAULT and a zeroed buffer, as copy_from_kernel_nofault reports a
// fault; from the page's last bytes, a read.
func TestProbeReadKernelReportsFaults(t *testing.T) {
	k := newKernel(t, nil)
	read := func(helper asm.BuiltinFunc, off int32) asm.Instructions {
		return asm.Instructions{
			asm.FnGetCurrentTask.Call(),
			asm.Mov.Reg(asm.R3, asm.R0), asm.Add.Imm(asm.R3, off),
			asm.Mov.Imm(asm.R1, -1), asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
			asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, -8), asm.Mov.Imm(asm.R2, 8),
			helper.Call(),
			asm.LoadMem(asm.R1, asm.RFP, -8, asm.DWord),
			asm.JEq.Imm(asm.R1, 0, "zeroed"),
			asm.Mov.Imm(asm.R0, 1), // the buffer holds something
			asm.Return().WithSymbol("zeroed"),
		}
	}
	for _, tc := range []struct {
		name string
		prog asm.Instructions
		want int64
	}{
		{"8 bytes across into the guard page", read(asm.FnProbeReadKernel, 4092), -14},
		{"8 bytes at the page's end", read(asm.FnProbeReadKernel, 4088), 0},
		{"a string from the guard page", read(asm.FnProbeReadKernelStr, 4096), -14},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := k.NewProgram(testSpec(t, ebpf.Kprobe, tc.prog))
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			res, err := p.Test(&sim.RunOptions{Context: make([]byte, 8)})
			if err != nil {
				t.Fatal(err)
			}
			if int64(res.R0) != tc.want && !(tc.want == 0 && res.R0 == 1) {
				t.Errorf("returned %d, want %d", int64(res.R0), tc.want)
			}
		})
	}
}

// BenchmarkTaskHelpers runs task_ids (three ids helpers, eleven probe
// reads of kernel and user memory, a map lookup) once per iteration, in a
// task with user memory, interpreted and JITed.
func BenchmarkTaskHelpers(b *testing.B) {
	spec, err := ebpf.LoadCollectionSpec("testdata/task.bpf.o")
	if err != nil {
		b.Fatal(err)
	}
	task := &sim.Task{PID: 2, TGID: 2, Comm: "bench", Memory: userMemory}
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		b.Run(rt.String(), func(b *testing.B) {
			k := newKernel(b, &sim.Options{Runtime: rt})
			c, err := k.NewCollection(spec)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			p := c.Programs["task_ids"]
			opts := &sim.RunOptions{Context: userArgs, Task: task}
			for b.Loop() {
				if _, err := p.Test(opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// An unverified program may pass these helpers sizes the verifier would
// refuse (0, or more than any memory): the helper returns or fails the
// run, never panics and never allocates that much.
func TestTaskHelpersTakeAnySizeFromUnverifiedPrograms(t *testing.T) {
	k := newKernel(t, nil)
	for _, size := range []int64{0, 1 << 40, -1} {
		for _, fn := range []asm.BuiltinFunc{asm.FnGetCurrentComm, asm.FnProbeReadKernel, asm.FnProbeReadKernelStr,
			asm.FnProbeReadUser, asm.FnProbeReadUserStr, asm.FnStrncmp} {
			insns := asm.Instructions{
				asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, -16), asm.LoadImm(asm.R2, size, asm.DWord),
				asm.Mov.Reg(asm.R3, asm.RFP), asm.Add.Imm(asm.R3, -16), fn.Call(), asm.Return(),
			}
			p, err := k.NewProgramWithOptions(&ebpf.ProgramSpec{Type: ebpf.Kprobe, License: "GPL", Instructions: insns},
				sim.ProgramOptions{Unverified: true})
			if err != nil {
				t.Fatal(err)
			}
			r, err := p.Run(&sim.RunOptions{Context: make([]byte, 8)})
			p.Close()
			if size != 0 && err == nil {
				t.Errorf("%v with a size of %d: returned %d, want the run to fail", fn, size, int64(r))
			}
		}
	}
}
