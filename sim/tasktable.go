package sim

import (
	"slices"
	"sort"
	"sync"

	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps/localstorage"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/kfunc"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// The kernel's live tasks, by pid (kernel/pid.c, reduced to a table).
//
// A task is alive from the start of its process (the main thread, whose
// pid is the process's) or from AddTask, until its process closes or
// ExitTask. While alive, pidfd_open finds it, bpf_task_from_pid returns
// it, and the values task storage maps hold for it stay; its exit drops
// them, as bpf_task_storage_free does.
//
// A task a program finds by pid gets a task_struct of its own in
// simulated memory, laid out like a CPU's page of tasks (task.go): the
// task and its ancestors. It is written when first needed and freed an
// RCU grace period after the task exits, so a program that holds it when
// the task goes reads it to the end of its run.

// taskTable is the live tasks.
type taskTable struct {
	mu     sync.Mutex
	pids   map[uint32]*liveTask
	byPage map[uint64]*liveTask // the tasks that have a page of their own
	seq    uint64               // the last task's number
	// The walks' orders: the tasks by pid, by start, and each
	// process's tasks (its main thread too) by start.
	byPID, bySeq []*liveTask
	threads      map[uint32][]*liveTask
}

// liveTask is one task of the table.
type liveTask struct {
	t *Task
	// seq numbers the tasks in the order they started: the kernel's
	// task list and thread lists are in that order.
	seq   uint64
	page  uint64           // its task_struct, once bpf_task_from_pid wanted it
	chain [taskSlots]*Task // the task in each slot of the page
}

// processTask is the main thread of process pid: init for pid 1, as the
// tasks without a parent have it.
func processTask(pid uint32) *Task {
	if pid == initTask.PID {
		return &initTask
	}
	return &Task{PID: pid, TGID: pid, Comm: runnerComm}
}

// AddTask makes t a live task of the kernel, known by its pid: pidfds
// open it (Process.PidfdOpen), bpf_task_from_pid finds it, and task
// storage keeps its values until ExitTask; it starts with none. A pid of 0 (the idle tasks')
// is EINVAL, a pid in use EEXIST.
func (k *Kernel) AddTask(t *Task) error {
	if t == nil || t.PID == 0 {
		return errors.Wrap(uapi.EINVAL, "a task needs a pid other than 0")
	}
	if err := k.tasks.add(t); err != nil {
		return err
	}
	// A new task has no values, whatever runs in an unlisted task of
	// the same pid (a RunOptions.Task) made before.
	k.freeTaskStorage(t.PID)
	k.taskStarted(t) // tracepoint.go
	return nil
}

func (tt *taskTable) add(t *Task) error {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if tt.pids == nil {
		tt.pids, tt.byPage = make(map[uint32]*liveTask), make(map[uint64]*liveTask)
		tt.threads = make(map[uint32][]*liveTask)
	}
	if _, ok := tt.pids[t.PID]; ok {
		return errors.Wrapf(uapi.EEXIST, "pid %d is in use", t.PID)
	}
	tt.seq++
	lt := &liveTask{t: t, seq: tt.seq}
	tt.pids[t.PID] = lt
	i := sort.Search(len(tt.byPID), func(i int) bool { return tt.byPID[i].t.PID > t.PID })
	tt.byPID = slices.Insert(tt.byPID, i, lt)
	tt.bySeq = append(tt.bySeq, lt) // the newest starts last
	tt.threads[t.TGID] = append(tt.threads[t.TGID], lt)
	return nil
}

// remove takes lt out of the table. The caller holds tt.mu.
func (tt *taskTable) remove(lt *liveTask) {
	delete(tt.pids, lt.t.PID)
	tt.byPID = slices.DeleteFunc(tt.byPID, func(x *liveTask) bool { return x == lt })
	tt.bySeq = slices.DeleteFunc(tt.bySeq, func(x *liveTask) bool { return x == lt })
	th := slices.DeleteFunc(tt.threads[lt.t.TGID], func(x *liveTask) bool { return x == lt })
	if len(th) == 0 {
		delete(tt.threads, lt.t.TGID)
	} else {
		tt.threads[lt.t.TGID] = th
	}
}

// startedFrom returns the tasks of list (in start order) from number
// from on.
func startedFrom(list []*liveTask, from uint64) []*liveTask {
	return list[sort.Search(len(list), func(i int) bool { return list[i].seq >= from }):]
}

// lookup returns the live task of pid, nil for none.
func (tt *taskTable) lookup(pid uint32) *liveTask {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	return tt.pids[pid]
}

// next returns the lowest pid of a live task from from on.
func (tt *taskTable) next(from uint64) (uint32, bool) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	i := sort.Search(len(tt.byPID), func(i int) bool { return uint64(tt.byPID[i].t.PID) >= from })
	if i == len(tt.byPID) {
		return 0, false
	}
	return tt.byPID[i].t.PID, true
}

// nextProcess returns the first process's main thread (a task whose pid
// is its tgid) to start as task number from or later, and its number.
func (tt *taskTable) nextProcess(from uint64) (*Task, uint64, bool) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	for _, lt := range startedFrom(tt.bySeq, from) {
		if lt.t.PID == lt.t.TGID {
			return lt.t, lt.seq, true
		}
	}
	return nil, 0, false
}

// nextThread returns the first thread of process tgid, other than its
// main thread, to start as task number from or later, and its number.
func (tt *taskTable) nextThread(tgid uint32, from uint64) (*Task, uint64, bool) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	for _, lt := range startedFrom(tt.threads[tgid], from) {
		if lt.t.PID != tgid {
			return lt.t, lt.seq, true
		}
	}
	return nil, 0, false
}

// started returns the number of the live task of pid, 0 for none.
func (tt *taskTable) started(pid uint32) uint64 {
	if lt := tt.lookup(pid); lt != nil {
		return lt.seq
	}
	return 0
}

// ExitTask ends the task with this pid: pidfds on it find no task any
// more (ENOENT from the map syscalls), bpf_task_from_pid finds none, and
// every task storage value it had goes. ESRCH if no live task has the
// pid.
func (k *Kernel) ExitTask(pid uint32) error {
	k.tasks.mu.Lock()
	lt, ok := k.tasks.pids[pid]
	groupDead := ok && len(k.tasks.threads[lt.t.TGID]) == 1
	k.tasks.mu.Unlock()
	if !ok {
		return errors.Wrapf(uapi.ESRCH, "no task has pid %d", pid)
	}
	// do_exit fires sched_process_exit while the task is still alive.
	k.taskExiting(lt.t, groupDead) // tracepoint.go
	k.tasks.mu.Lock()
	if k.tasks.pids[pid] != lt {
		k.tasks.mu.Unlock()
		return errors.Wrapf(uapi.ESRCH, "no task has pid %d", pid) // it exited meanwhile
	}
	k.tasks.remove(lt)
	k.tasks.mu.Unlock()
	if lt.page != 0 {
		k.CallRCU(func() {
			k.tasks.mu.Lock()
			delete(k.tasks.byPage, lt.page)
			k.tasks.mu.Unlock()
			_ = k.mem.Free(lt.page)
		})
	}
	k.freeTaskStorage(pid)
	return nil
}

// freeTaskStorage is bpf_task_storage_free: the task's value in every
// task storage map goes.
func (k *Kernel) freeTaskStorage(pid uint32) {
	k.objs.mu.RLock()
	var owners []localstorage.Storage
	for _, m := range k.objs.maps {
		if s, ok := m.Ops.(localstorage.Storage); ok && m.Attr.Type == uapi.MapTypeTaskStorage {
			owners = append(owners, s)
		}
	}
	k.objs.mu.RUnlock()
	for _, s := range owners {
		s.DeleteOwner(pid)
	}
}

// taskPage returns the address of the task_struct of the live task pid,
// writing it first if no program asked for it before; 0 if no task has
// the pid.
func (k *Kernel) taskPage(pid uint32, cpu int) (uint64, error) {
	tt := &k.tasks
	tt.mu.Lock()
	defer tt.mu.Unlock()
	lt := tt.pids[pid]
	switch {
	case lt == nil:
		return 0, nil
	case lt.page != 0:
		return lt.page, nil
	}
	t := lt.t
	if t == nil {
		t = processTask(pid)
	}
	page, err := k.mem.Vmalloc(mem.PageSize, mem.PermRW, "task_struct")
	if err != nil {
		return 0, err
	}
	idle := idleTask(cpu)
	if err := k.writeTask(page, idleTaskSlot, cpu, &idle, idleTaskSlot); err != nil {
		_ = k.mem.Free(page)
		return 0, err
	}
	if lt.chain, err = k.writeChain(page, cpu, t); err != nil {
		_ = k.mem.Free(page)
		return 0, err
	}
	lt.page = page
	tt.byPage[page] = lt
	return page, nil
}

// taskAt returns the task whose task_struct is at addr: in the CPU's
// page of tasks as the run wrote it, or in a live task's own page; false
// if addr is no task_struct.
func (k *Kernel) taskAt(c *CPU, addr uint64) (*Task, bool) {
	page, off := addr&^(mem.PageSize-1), addr&(mem.PageSize-1)
	if off >= taskSlots*taskSlot || off%taskSlot != 0 {
		return nil, false
	}
	var t *Task
	switch {
	case c.task.written && page == c.task.page:
		t = c.task.chain[off/taskSlot]
	default:
		k.tasks.mu.Lock()
		lt := k.tasks.byPage[page]
		if lt != nil {
			t = lt.chain[off/taskSlot]
		}
		k.tasks.mu.Unlock()
		if lt == nil {
			return nil, false
		}
	}
	if t == nil {
		idle := idleTask(c.ID)
		return &idle, true
	}
	return t, true
}

// pidfd is an open pidfd: a file naming a task. It keeps naming that
// task, not a later one of the same pid (the kernel's struct pid).
type pidfd struct {
	pid  uint32
	task *liveTask
}

// PidfdOpen is pidfd_open(2): an fd of the process naming the live task
// with this pid, which task storage maps take as their key from user
// space. ESRCH if no task has the pid, EINVAL for a pid below 1 or flags
// other than PIDFD_THREAD (O_EXCL) and PIDFD_NONBLOCK (O_NONBLOCK), which
// change nothing here.
func (p *Process) PidfdOpen(pid int, flags int) (int, error) {
	const pidfdThread, pidfdNonblock = 0o200, 0o4000
	if pid < 1 || pid > 1<<22 || flags&^(pidfdThread|pidfdNonblock) != 0 {
		return 0, errors.Wrapf(uapi.EINVAL, "pidfd_open(%d, %#x)", pid, flags)
	}
	lt := p.k.tasks.lookup(uint32(pid))
	if lt == nil {
		return 0, errors.Wrapf(uapi.ESRCH, "no task has pid %d", pid)
	}
	return p.fds.install(p.k.newFile(pidfd{uint32(pid), lt}, nil))
}

// CloseFD closes one of the process's fds, whatever it refers to.
func (p *Process) CloseFD(fd int) error { return p.fds.close(fd) }

// bpf_task_from_pid (kernel/bpf/helpers.c):
//
//	struct task_struct *bpf_task_from_pid(s32 pid);  KF_ACQUIRE | KF_RET_NULL
//
// finds a live task by pid and takes a reference on it. bpfsim's tasks
// live until ExitTask whatever references programs hold, so the reference
// counts nothing; the page stays an RCU grace period past the exit, which
// covers the run that took it.
func init() {
	builtinKfuncs["bpf_task_from_pid"] = &builtinKfunc{
		flags: kfunc.Acquire | kfunc.RetNull,
		types: taskKfuncTypes,
		proto: func(typ func(string) btf.Type) *btf.FuncProto {
			return &btf.FuncProto{Return: &btf.Pointer{Target: typ("task_struct")}, Params: []btf.FuncParam{param("pid", btfS32)}}
		},
		fn: func(k *Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			return func(m *interp.Machine, pid, _, _, _, _ uint64) (uint64, error) {
				if int32(pid) <= 0 {
					return 0, nil
				}
				return k.taskPage(uint32(pid), k.cpuOf(m).ID)
			}
		},
	}
}

var btfS32 = &btf.Typedef{Name: "s32", Type: &btf.Typedef{Name: "__s32", Type: btfInt}}
