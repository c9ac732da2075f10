package sim

import (
	"encoding/binary"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/localstorage"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// Task local storage (kernel/bpf/bpf_task_storage.c): the map type is
// maps/localstorage's; here are the parts that know tasks. User space
// names a task by a pidfd, a program by its task_struct; both become the
// task's pid, the map's key. A value goes with its task (ExitTask). A
// program may make a value for a task bpfsim does not know alive (a
// RunOptions.Task never added); that value stays until deleted or the map
// goes.

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
	if h.k.tasks.lookup(pf.pid) != pf.task {
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
