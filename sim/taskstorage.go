package sim

import (
	"encoding/binary"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/localstorage"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// The kernel's live tasks and task local storage (kernel/pid.c,
// kernel/bpf/bpf_task_storage.c).
//
// A task is alive from the start of its process (the main thread, whose
// pid is the process's) or from AddTask, until its process closes or
// ExitTask: while alive, pidfd_open finds it, and the values task storage
// maps hold for it stay. Its exit drops them, as bpf_task_storage_free
// does. A program may make a value for a task bpfsim does not know alive
// (a RunOptions.Task never added); that value stays until deleted or the
// map goes.

// taskTable is the pids of the live tasks.
type taskTable struct {
	mu   sync.Mutex
	pids map[uint32]*Task // nil value: a process's main thread
}

// AddTask makes t a live task of the kernel, known by its pid: pidfds
// open it (Process.PidfdOpen) and task storage keeps its values until
// ExitTask. A pid of 0 (the idle tasks') is EINVAL, a pid in use EEXIST.
func (k *Kernel) AddTask(t *Task) error {
	if t == nil || t.PID == 0 {
		return errors.Wrap(uapi.EINVAL, "a task needs a pid other than 0")
	}
	return k.tasks.add(t.PID, t)
}

func (tt *taskTable) add(pid uint32, t *Task) error {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if tt.pids == nil {
		tt.pids = make(map[uint32]*Task)
	}
	if _, ok := tt.pids[pid]; ok {
		return errors.Wrapf(uapi.EEXIST, "pid %d is in use", pid)
	}
	tt.pids[pid] = t
	return nil
}

func (tt *taskTable) alive(pid uint32) bool {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	_, ok := tt.pids[pid]
	return ok
}

// ExitTask ends the task with this pid: pidfds on it find no task any
// more (ENOENT from the map syscalls), and every task storage value it
// had goes. ESRCH if no live task has the pid.
func (k *Kernel) ExitTask(pid uint32) error {
	k.tasks.mu.Lock()
	_, ok := k.tasks.pids[pid]
	delete(k.tasks.pids, pid)
	k.tasks.mu.Unlock()
	if !ok {
		return errors.Wrapf(uapi.ESRCH, "no task has pid %d", pid)
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

// pidfd is an open pidfd: a file naming a task by its pid.
type pidfd struct{ pid uint32 }

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
	if !p.k.tasks.alive(uint32(pid)) {
		return 0, errors.Wrapf(uapi.ESRCH, "no task has pid %d", pid)
	}
	return p.fds.install(p.k.newFile(pidfd{uint32(pid)}, nil))
}

// CloseFD closes one of the process's fds, whatever it refers to.
func (p *Process) CloseFD(fd int) error { return p.fds.close(fd) }

// taskStorageKey turns a task storage key from user space, a pidfd of
// the process, into the map's key, the task's pid
// (bpf_pid_task_storage_*_elem): EBADF for an fd that is no pidfd,
// ENOENT for a task that has exited.
func (h *Map) taskStorageKey(key []byte) ([]byte, error) {
	fd := int(int32(binary.LittleEndian.Uint32(key)))
	f, err := h.proc.fds.get(fd)
	if err != nil {
		return nil, err
	}
	pf, ok := f.obj.(pidfd)
	if !ok {
		return nil, errors.Wrapf(uapi.EBADF, "fd %d is not a pidfd", fd)
	}
	if !h.k.tasks.alive(pf.pid) {
		return nil, errors.Wrapf(uapi.ENOENT, "the task of pid %d has exited", pf.pid)
	}
	return binary.LittleEndian.AppendUint32(nil, pf.pid), nil
}

// userKey is the key the map type gets for key from user space.
func (h *Map) userKey(key []byte) ([]byte, error) {
	if h.m.Attr.Type == uapi.MapTypeTaskStorage {
		return h.taskStorageKey(key)
	}
	return key, nil
}

// taskAt returns the task whose task_struct is at addr in the CPU's page
// of tasks, as the run wrote it; nil if addr is no task_struct there.
func (k *Kernel) taskAt(c *CPU, addr uint64) (*Task, bool) {
	page := c.task.page
	if !c.task.written || addr < page || addr >= page+taskSlots*taskSlot || (addr-page)%taskSlot != 0 {
		return nil, false
	}
	t := c.task.chain[(addr-page)/taskSlot]
	if t == nil {
		idle := idleTask(c.ID)
		return &idle, true
	}
	return t, true
}

var (
	taskStorageGetProto = &verifier.FuncProto{Ret: verifier.RetPtrToMapValueOrNull,
		Args:      [5]verifier.ArgType{verifier.ArgConstMapPtr, verifier.ArgPtrToBTFIDOrNull, verifier.ArgPtrToMapValueOrNull, verifier.ArgAnything},
		ArgStruct: [5]string{1: "task_struct"}}
	taskStorageDeleteProto = &verifier.FuncProto{
		Args:      [5]verifier.ArgType{verifier.ArgConstMapPtr, verifier.ArgPtrToBTFIDOrNull},
		ArgStruct: [5]string{1: "task_struct"}}
)

func (k *Kernel) registerTaskStorageHelpers() {
	for _, h := range []*Helper{
		{ID: uapi.FuncTaskStorageGet, Proto: taskStorageGetProto, Fn: k.helperTaskStorageGet},
		{ID: uapi.FuncTaskStorageDelete, Proto: taskStorageDeleteProto, Fn: k.helperTaskStorageDelete},
	} {
		if err := k.RegisterHelper(h); err != nil {
			panic(err) // unique ids
		}
	}
}

// taskStorageOf returns the task storage map at addr and the pid of the
// task whose task_struct is at task; ok is false for a NULL or unknown
// task.
func (k *Kernel) taskStorageOf(m *interp.Machine, addr, task uint64) (*maps.Map, localstorage.Storage, uint32, bool, error) {
	mp, ok := k.progMap(m, addr)
	var s localstorage.Storage
	if ok {
		s, ok = mp.Ops.(localstorage.Storage)
	}
	if !ok || mp.Attr.Type != uapi.MapTypeTaskStorage {
		return nil, nil, 0, false, errors.Wrapf(uapi.EFAULT, "pc %d: r1=%#x is no task storage map", m.PC(), addr)
	}
	if task == 0 {
		return mp, s, 0, false, nil
	}
	t, ok := k.taskAt(k.cpuOf(m), task)
	if !ok {
		return mp, s, 0, false, nil
	}
	return mp, s, t.PID, true, nil
}

// helperTaskStorageGet is bpf_task_storage_get: the task's value, or with
// BPF_LOCAL_STORAGE_GET_F_CREATE a new one from value (zeros for NULL);
// NULL for other flags, a NULL task, or a failure. r5 is the gfp_t the
// fix-up passes, which the simulation does not need.
func (k *Kernel) helperTaskStorageGet(m *interp.Machine, addr, task, value, flags, _ uint64) (uint64, error) {
	if flags&^localstorage.GetFCreate != 0 {
		return 0, nil
	}
	mp, s, pid, ok, err := k.taskStorageOf(m, addr, task)
	if err != nil || !ok {
		return 0, err
	}
	var init []byte
	if value != 0 && flags&localstorage.GetFCreate != 0 {
		init = make([]byte, mp.ValueSize)
		if err := m.ReadMem(value, init); err != nil {
			return 0, err
		}
	}
	return s.Get(pid, init, flags&localstorage.GetFCreate != 0), nil
}

// helperTaskStorageDelete is bpf_task_storage_delete: 0, -ENOENT for a
// task without a value, -EINVAL for NULL.
func (k *Kernel) helperTaskStorageDelete(m *interp.Machine, addr, task, _, _, _ uint64) (uint64, error) {
	mp, _, pid, ok, err := k.taskStorageOf(m, addr, task)
	switch {
	case err != nil:
		return 0, err
	case !ok:
		return errnoRet(uapi.EINVAL), nil
	}
	if err := mp.Ops.DeleteElem(0, binary.LittleEndian.AppendUint32(nil, pid)); err != nil {
		return errnoRet(uapi.ENOENT), nil
	}
	return 0, nil
}

// checksRecursion is bpf_prog_check_recur: programs of the types that may
// run inside another program (all but iterators, struct_ops and LSM
// programs) call the _recur variants of the task storage helpers, which
// give up rather than wait when the CPU is already in one. A simulated
// CPU never nests them, so both variants behave alike here; the name of
// the function called shows in xlated code.
func checksRecursion(p *Program) bool {
	switch p.typ {
	case ebpf.Tracing:
		return p.attachType != ebpf.AttachTraceIter
	case ebpf.StructOps, ebpf.LSM:
		return false
	}
	return true
}

// taskStorageFuncs are the kernel functions of the task storage helpers
// for programs that checksRecursion.
var taskStorageRecurFuncs = map[int32]string{
	uapi.FuncTaskStorageGet:    "bpf_task_storage_get_recur",
	uapi.FuncTaskStorageDelete: "bpf_task_storage_delete_recur",
}
