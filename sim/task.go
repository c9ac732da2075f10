package sim

import (
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Tasks: the thread a program runs in, what the bpf_get_current_* helpers
// report and bpf_get_current_task points to (include/linux/sched.h's
// struct task_struct, kernel/bpf/helpers.c, kernel/trace/bpf_trace.c).
//
// The kernel's task_struct is thousands of bytes whose layout depends on
// its configuration; programs reach it through CO-RE relocations, which is
// what lets bpfsim lay out a task_struct of its own: the fields tracing
// programs read (pid, tgid, comm, real_parent, parent, cred and its ids),
// described in the kernel's BTF (taskTypes), so that a program built
// against any vmlinux.h relocates to them. thread_info comes first, as on
// arm64 (CONFIG_THREAD_INFO_IN_TASK), where the JIT's inlined
// bpf_get_smp_processor_id reads its cpu.

// Task is a simulated task: a thread of a process.
type Task struct {
	PID  uint32 // the thread's id (task->pid)
	TGID uint32 // its process's id (task->tgid)
	UID  uint32 // its credentials' uid and gid (task->cred)
	GID  uint32
	// Comm is the task's name; the kernel keeps 15 bytes and a NUL
	// (TASK_COMM_LEN).
	Comm string
	// Parent is the task's parent (task->real_parent and ->parent);
	// nil is init (pid 1), whose parent is the idle task (pid 0).
	Parent *Task
	// CgroupID is the id of the task's cgroup in the cgroup v2
	// hierarchy, what bpf_get_current_cgroup_id reports; 0 is the root
	// cgroup, whose id is 1.
	CgroupID uint64
	// Memory is what the task's user address space holds, for
	// bpf_probe_read_user and bpf_probe_read_user_str: a read of any
	// byte outside it faults.
	Memory []UserMemory
}

// UserMemory is bytes at an address of a task's user address space
// (below TASK_SIZE_MAX, 1<<47 - 4096 on x86-64).
type UserMemory struct {
	Addr  uint64
	Bytes []byte
}

// taskSizeMax is x86-64's TASK_SIZE_MAX with 4-level page tables: user
// addresses are below it (access_ok).
const taskSizeMax = 1<<47 - 4096

// readUser copies the task's user memory at addr into p, as
// copy_from_user_nofault does: EFAULT if any byte is not user memory the
// task has.
func (t *Task) readUser(addr uint64, p []byte) uapi.Errno {
	if addr >= taskSizeMax || uint64(len(p)) > taskSizeMax-addr {
		return uapi.EFAULT
	}
	for len(p) > 0 {
		n := 0
		for _, r := range t.Memory {
			if addr >= r.Addr && addr-r.Addr < uint64(len(r.Bytes)) {
				n = copy(p, r.Bytes[addr-r.Addr:])
				break
			}
		}
		if n == 0 {
			return uapi.EFAULT
		}
		p, addr = p[n:], addr+uint64(n)
	}
	return 0
}

// writeUser copies p into the task's user memory at addr, as
// copy_to_user does: EFAULT, and nothing written, if any byte is not user
// memory the task has.
func (t *Task) writeUser(addr uint64, p []byte) uapi.Errno {
	probe := make([]byte, len(p))
	if errno := t.readUser(addr, probe); errno != 0 {
		return errno
	}
	for len(p) > 0 {
		for _, r := range t.Memory {
			if addr >= r.Addr && addr-r.Addr < uint64(len(r.Bytes)) {
				n := copy(r.Bytes[addr-r.Addr:], p)
				p, addr = p[n:], addr+uint64(n)
				break
			}
		}
	}
	return 0
}

// taskCommLen is TASK_COMM_LEN.
const taskCommLen = 16

// struct task_struct and struct cred as bpfsim lays them out.
const (
	taskThreadInfoCPU = 24 // thread_info.cpu (jit_arm64.ThreadInfoCPU)
	taskState         = 32
	taskPID           = 36
	taskTGID          = 40
	taskRealParent    = 48
	taskParent        = 56
	taskCred          = 64
	taskComm          = 72
	taskSize          = 88

	credUsage = 0
	credUID   = 8 // kuid_t uid, then gid, suid, sgid, euid, egid, fsuid, fsgid
	credSize  = 40
)

// A CPU's tasks live in one page: current and its ancestors, one slot
// each, the last slot the idle task, whose parent is itself as init_task's
// is. A task's cred follows it in its slot.
const (
	taskSlot     = 512
	taskSlots    = 4
	taskCredOff  = 256
	idleTaskSlot = taskSlots - 1
)

// initTask is init, the parent of a Task without one.
var initTask = Task{PID: 1, TGID: 1, Comm: "init"}

// cpuTask is a CPU's current task, written into its page when a helper
// first looks at it in a run.
type cpuTask struct {
	page    uint64 // the page of task structs; current's is at its start
	current *Task  // nil: the CPU's idle task
	written bool   // the page holds current
	// chain is the task in each slot of the page once written, current
	// first (nil: the idle task), for helpers given a task_struct.
	chain [taskSlots]*Task
	// runner is the task of a test run that names none.
	runner Task
}

// runnerComm is the name of a test run's task when RunOptions.Task names
// none.
const runnerComm = "bpfsim-test"

// setRunner makes the CPU's next run be in task t, or, if t is nil, in
// the main thread of process pid, as BPF_PROG_TEST_RUN runs a program in
// the task that asked for the run.
func (c *CPU) setRunner(t *Task, pid int) {
	if t == nil {
		c.task.runner = Task{PID: uint32(pid), TGID: uint32(pid), Comm: runnerComm}
		t = &c.task.runner
	}
	c.setCurrent(t)
}

// newTaskPage maps a CPU's page of tasks, with the idle task in every slot
// until a run names one.
func (k *Kernel) newTaskPage(cpu int) (uint64, error) {
	page, err := k.mem.Vmalloc(mem.PageSize, mem.PermRW, "task_struct")
	if err != nil {
		return 0, err
	}
	idle := idleTask(cpu)
	for slot := 0; slot < taskSlots; slot++ {
		if err := k.writeTask(page, slot, cpu, &idle, idleTaskSlot); err != nil {
			return 0, err
		}
	}
	return page, nil
}

// idleTask is CPU cpu's idle task, swapper/cpu.
func idleTask(cpu int) Task { return Task{Comm: fmt.Sprintf("swapper/%d", cpu)} }

// setCurrent makes t the task the CPU's next run is in (nil: its idle
// task). The page is rewritten only if a helper reads it.
func (c *CPU) setCurrent(t *Task) {
	c.task.current, c.task.written = t, false
}

// currentTask returns the task the CPU runs in and the address of its
// task_struct, writing the page if the run has not yet.
func (k *Kernel) currentTask(c *CPU) (*Task, uint64, error) {
	t := c.task.current
	if t == nil {
		idle := idleTask(c.ID)
		t = &idle
	}
	if !c.task.written {
		chain, err := k.writeChain(c.task.page, c.ID, t)
		if err != nil {
			return nil, 0, err
		}
		c.task.chain = chain
		c.task.written = true
	}
	return t, c.task.page, nil
}

// writeChain writes t and its ancestors into a page of task structs, one
// slot each, and returns the task of each slot (nil: the idle task). The
// chain is cut to the slots there are: the oldest one kept has the idle
// task as parent.
func (k *Kernel) writeChain(page uint64, cpu int, t *Task) ([taskSlots]*Task, error) {
	chain := []*Task{t}
	for len(chain) < idleTaskSlot {
		last := chain[len(chain)-1]
		if last.PID == 0 {
			break
		}
		parent := last.Parent
		if parent == nil {
			if last == &initTask {
				break
			}
			parent = &initTask
		}
		chain = append(chain, parent)
	}
	var slots [taskSlots]*Task
	for slot, task := range chain {
		parentSlot := slot + 1
		if parentSlot == len(chain) {
			parentSlot = idleTaskSlot
		}
		if task.PID == 0 {
			parentSlot = slot
		}
		if err := k.writeTask(page, slot, cpu, task, parentSlot); err != nil {
			return slots, err
		}
		slots[slot] = task
	}
	return slots, nil
}

// writeTask writes t's task_struct and cred into slot of page, its
// parents pointing at parentSlot.
func (k *Kernel) writeTask(page uint64, slot, cpu int, t *Task, parentSlot int) error {
	var b [taskSlot]byte
	le := binary.LittleEndian
	le.PutUint32(b[taskThreadInfoCPU:], uint32(cpu))
	le.PutUint32(b[taskPID:], t.PID)
	le.PutUint32(b[taskTGID:], t.TGID)
	parent := page + uint64(parentSlot*taskSlot)
	le.PutUint64(b[taskRealParent:], parent)
	le.PutUint64(b[taskParent:], parent)
	cred := page + uint64(slot*taskSlot+taskCredOff)
	le.PutUint64(b[taskCred:], cred)
	copy(b[taskComm:taskComm+taskCommLen-1], t.Comm)
	c := b[taskCredOff:]
	le.PutUint64(c[credUsage:], 1)
	for i := 0; i < 4; i++ { // uid, gid; suid, sgid; euid, egid; fsuid, fsgid
		le.PutUint32(c[credUID+8*i:], t.UID)
		le.PutUint32(c[credUID+8*i+4:], t.GID)
	}
	return k.mem.Write(page+uint64(slot*taskSlot), b[:])
}

// taskStruct is bpfsim's struct task_struct, in the kernel's BTF: what
// bpf_get_current_task_btf returns and the task kfuncs take.
var taskStruct = newTaskStruct()

// taskTypes are the types of bpfsim's task_struct, for the kernel's BTF.
func taskTypes() []btf.Type { return []btf.Type{taskStruct, iterTaskStruct} }

// iterTaskStruct is struct bpf_iter_task, the open-coded task iterator
// (task_iter_kfuncs.go): 24 opaque bytes.
var iterTaskStruct = &btf.Struct{Name: "bpf_iter_task", Size: 24, Members: []btf.Member{{Name: "__opaque",
	Type: &btf.Array{Index: &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}, Type: &btf.Typedef{Name: "__u64", Type: &btf.Int{Name: "long long unsigned int", Size: 8}}, Nelems: 3}}}}

func newTaskStruct() *btf.Struct {
	i32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	u32 := &btf.Int{Name: "unsigned int", Size: 4}
	ulong := &btf.Int{Name: "long unsigned int", Size: 8}
	long := &btf.Int{Name: "long int", Size: 8, Encoding: btf.Signed}
	char := &btf.Int{Name: "char", Size: 1, Encoding: btf.Char}
	pid := &btf.Typedef{Name: "pid_t", Type: &btf.Typedef{Name: "__kernel_pid_t", Type: i32}}
	uid := &btf.Typedef{Name: "uid_t", Type: &btf.Typedef{Name: "__kernel_uid32_t", Type: u32}}
	gid := &btf.Typedef{Name: "gid_t", Type: &btf.Typedef{Name: "__kernel_gid32_t", Type: u32}}
	kuid := &btf.Typedef{Name: "kuid_t", Type: &btf.Struct{Size: 4, Members: []btf.Member{{Name: "val", Type: uid}}}}
	kgid := &btf.Typedef{Name: "kgid_t", Type: &btf.Struct{Size: 4, Members: []btf.Member{{Name: "val", Type: gid}}}}
	threadInfo := &btf.Struct{Name: "thread_info", Size: 32, Members: []btf.Member{
		{Name: "flags", Type: ulong},
		{Name: "ttbr0", Type: ulong, Offset: 64},
		{Name: "preempt_count", Type: ulong, Offset: 128},
		{Name: "cpu", Type: u32, Offset: taskThreadInfoCPU * 8},
	}}
	cred := &btf.Struct{Name: "cred", Size: credSize, Members: []btf.Member{{Name: "usage", Type: long}}}
	for i, name := range []string{"uid", "gid", "suid", "sgid", "euid", "egid", "fsuid", "fsgid"} {
		typ := btf.Type(kuid)
		if i%2 == 1 {
			typ = kgid
		}
		cred.Members = append(cred.Members, btf.Member{Name: name, Type: typ, Offset: btf.Bits(8 * (credUID + 4*i))})
	}
	task := &btf.Struct{Name: "task_struct", Size: taskSize}
	taskPtr := &btf.Pointer{Target: task}
	task.Members = []btf.Member{
		{Name: "thread_info", Type: threadInfo},
		{Name: "__state", Type: u32, Offset: taskState * 8},
		{Name: "pid", Type: pid, Offset: taskPID * 8},
		{Name: "tgid", Type: pid, Offset: taskTGID * 8},
		{Name: "real_parent", Type: taskPtr, Offset: taskRealParent * 8},
		{Name: "parent", Type: taskPtr, Offset: taskParent * 8},
		{Name: "cred", Type: &btf.Pointer{Target: &btf.Const{Type: cred}}, Offset: taskCred * 8},
		{Name: "comm", Type: &btf.Array{Index: i32, Type: char, Nelems: taskCommLen}, Offset: taskComm * 8},
	}
	return task
}

// procPID is the pid of the process that loaded the program.
func (p *Program) procPID() int {
	if p.proc == nil {
		return p.k.init.PID()
	}
	return p.proc.PID()
}
