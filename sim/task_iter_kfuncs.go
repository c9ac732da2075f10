package sim

import (
	"encoding/binary"

	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/kfunc"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// The open-coded task iterator (kernel/bpf/task_iter.c):
//
//	int bpf_iter_task_new(struct bpf_iter_task *it,
//	        struct task_struct *task__nullable, unsigned int flags);
//	    KF_ITER_NEW | KF_RCU_PROTECTED
//	struct task_struct *bpf_iter_task_next(struct bpf_iter_task *it);
//	    KF_ITER_NEXT | KF_RET_NULL
//	void bpf_iter_task_destroy(struct bpf_iter_task *it);  KF_ITER_DESTROY
//
// for every program type (the kernel's common kfuncs).
//
// flags: BPF_TASK_ITER_ALL_PROCS (the idle task, then each process's
// main thread), BPF_TASK_ITER_ALL_THREADS (the idle task, then each
// process's main thread followed by its other threads) or
// BPF_TASK_ITER_PROC_THREADS (the threads of the given task's process
// that started after it, the given task first). Like the kernel's task
// and thread lists, the walks go in the order the tasks started
// (tasktable.go). A process is a task whose pid is its tgid; a thread
// whose process is not a live task is in no walk but its own process's.
//
// The iterator's 24 bytes hold bpfsim's taskIter.

// Task iterator flags.
const (
	taskIterAllProcs   = 0
	taskIterAllThreads = 1
	taskIterProcThread = 2
	taskIterDone       = 0xffffffff
)

func init() {
	itParam := func(typ func(string) btf.Type) btf.FuncParam {
		return param("it", &btf.Pointer{Target: typ("bpf_iter_task")})
	}
	taskPtr := func(typ func(string) btf.Type) btf.Type { return &btf.Pointer{Target: typ("task_struct")} }
	builtinKfuncs["bpf_iter_task_new"] = &builtinKfunc{
		flags: kfunc.IterNew | kfunc.RCUProtected,
		proto: func(typ func(string) btf.Type) *btf.FuncProto {
			return &btf.FuncProto{Return: btfInt, Params: []btf.FuncParam{
				itParam(typ), param("task__nullable", taskPtr(typ)), param("flags", &btf.Int{Name: "unsigned int", Size: 4})}}
		},
		fn: func(k *Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			return k.kfuncIterTaskNew
		},
	}
	builtinKfuncs["bpf_iter_task_next"] = &builtinKfunc{
		flags: kfunc.IterNext | kfunc.RetNull,
		proto: func(typ func(string) btf.Type) *btf.FuncProto {
			return &btf.FuncProto{Return: taskPtr(typ), Params: []btf.FuncParam{itParam(typ)}}
		},
		fn: func(k *Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			return k.kfuncIterTaskNext
		},
	}
	builtinKfuncs["bpf_iter_task_destroy"] = &builtinKfunc{
		flags: kfunc.IterDestroy,
		proto: func(typ func(string) btf.Type) *btf.FuncProto {
			return &btf.FuncProto{Return: (*btf.Void)(nil), Params: []btf.FuncParam{itParam(typ)}}
		},
		fn: func(k *Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			return func(m *interp.Machine, it, _, _, _, _ uint64) (uint64, error) {
				return 0, taskIterEnded.store(m, it)
			}
		},
	}
}

// taskIter is the state of a walk in the iterator's 24 bytes.
type taskIter struct {
	flags uint32 // taskIterDone once it yields no more
	tgid  uint32 // PROC_THREADS: the process
	// from is the start number (tasktable.go) to look from next; -1
	// before the idle task. In ALL_THREADS, the number of the process
	// being walked (0 before the first).
	from int64
	// next is, for PROC_THREADS, the task to yield first (its address);
	// for ALL_THREADS, the start number to look for the process's next
	// thread from.
	next uint64
}

func (ti *taskIter) store(m *interp.Machine, it uint64) error {
	var b [24]byte
	le := binary.LittleEndian
	le.PutUint32(b[0:], ti.flags)
	le.PutUint32(b[4:], ti.tgid)
	le.PutUint64(b[8:], uint64(ti.from))
	le.PutUint64(b[16:], ti.next)
	return m.WriteMem(it, b[:])
}

func loadTaskIter(m *interp.Machine, it uint64) (taskIter, error) {
	var b [24]byte
	if err := m.ReadMem(it, b[:]); err != nil {
		return taskIter{}, err
	}
	le := binary.LittleEndian
	return taskIter{flags: le.Uint32(b[0:]), tgid: le.Uint32(b[4:]), from: int64(le.Uint64(b[8:])), next: le.Uint64(b[16:])}, nil
}

var taskIterEnded = taskIter{flags: taskIterDone}

// kfuncIterTaskNew is bpf_iter_task_new: -EINVAL for unknown flags or
// PROC_THREADS without a task, leaving a walk that yields nothing.
func (k *Kernel) kfuncIterTaskNew(m *interp.Machine, it, task, flags, _, _ uint64) (uint64, error) {
	switch uint32(flags) {
	case taskIterAllProcs, taskIterAllThreads:
		ti := taskIter{flags: uint32(flags), from: -1}
		return 0, ti.store(m, it)
	case taskIterProcThread:
		if task != 0 {
			if t, ok := k.taskAt(k.cpuOf(m), task); ok {
				ti := taskIter{flags: taskIterProcThread, tgid: t.TGID, from: int64(k.tasks.started(t.PID)) + 1, next: task}
				return 0, ti.store(m, it)
			}
		}
	}
	return errnoRet(uapi.EINVAL), taskIterEnded.store(m, it)
}

// kfuncIterTaskNext is bpf_iter_task_next: the next task of the walk, a
// task_struct of its own (tasktable.go), or NULL once it is done.
func (k *Kernel) kfuncIterTaskNext(m *interp.Machine, it, _, _, _, _ uint64) (uint64, error) {
	ti, err := loadTaskIter(m, it)
	if err != nil || ti.flags == taskIterDone {
		return 0, err
	}
	c := k.cpuOf(m)
	yield := func(t *Task) (uint64, error) {
		addr, err := k.taskPage(t.PID, c.ID)
		if err != nil {
			return 0, err
		}
		return addr, ti.store(m, it)
	}
	switch {
	case ti.flags == taskIterProcThread && ti.next != 0:
		// The task it was made with, as it was given.
		addr := ti.next
		ti.next = 0
		return addr, ti.store(m, it)
	case ti.from < 0:
		// The idle task first, as the walk starts at init_task.
		if _, _, err := k.currentTask(c); err != nil {
			return 0, err
		}
		ti.from = 0
		if ti.flags == taskIterAllProcs {
			ti.from = 1
		}
		return c.task.page + idleTaskSlot*taskSlot, ti.store(m, it)
	}
	for {
		var t *Task
		var seq uint64
		var ok bool
		switch ti.flags {
		case taskIterAllProcs:
			if t, seq, ok = k.tasks.nextProcess(uint64(ti.from)); ok {
				ti.from = int64(seq) + 1
			}
		case taskIterProcThread:
			if t, seq, ok = k.tasks.nextThread(ti.tgid, uint64(ti.from)); ok {
				ti.from = int64(seq) + 1
			}
		case taskIterAllThreads:
			// The process's other threads, then the next process.
			if ti.from > 0 {
				if t, seq, ok = k.tasks.nextThread(ti.tgid, ti.next); ok {
					ti.next = seq + 1
				}
			}
			if !ok {
				if t, seq, ok = k.tasks.nextProcess(uint64(ti.from) + 1); ok {
					ti.from, ti.next, ti.tgid = int64(seq), 0, t.PID
				}
			}
		}
		if !ok {
			return 0, taskIterEnded.store(m, it)
		}
		addr, err := yield(t)
		if addr != 0 || err != nil {
			return addr, err
		}
		// Exited meanwhile: on to the next.
	}
}
