package sim

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/kfunc"
)

// The kernel's task reference kfuncs (kernel/bpf/helpers.c):
//
//	struct task_struct *bpf_task_acquire(struct task_struct *p);
//	    KF_ACQUIRE | KF_RCU | KF_RET_NULL
//	void bpf_task_release(struct task_struct *p);  KF_RELEASE
//
// A program takes a reference on a task it holds a trusted or
// RCU-protected pointer to (bpf_get_current_task_btf's, a real_parent
// read out of it) and must give it back. bpfsim's tasks live until they
// exit (tasktable.go), whatever references programs hold, so the
// reference counts nothing: acquire returns the task, release does
// nothing; what the verifier checks is the kernel's. bpf_task_from_pid is
// in tasktable.go.

// taskKfuncTypes are the program types generic_kfunc_set is registered
// for that bpfsim loads, as this machine's kernel offers them.
var taskKfuncTypes = []ebpf.ProgramType{ebpf.TracePoint, ebpf.XDP, ebpf.SchedCLS, ebpf.CGroupSKB,
	ebpf.Syscall, ebpf.PerfEvent, ebpf.CGroupSock, ebpf.Tracing, ebpf.StructOps}

func init() {
	taskPtr := func(typ func(string) btf.Type) btf.Type { return &btf.Pointer{Target: typ("task_struct")} }
	builtinKfuncs["bpf_task_acquire"] = &builtinKfunc{
		flags: kfunc.Acquire | kfunc.RCU | kfunc.RetNull,
		types: taskKfuncTypes,
		proto: func(typ func(string) btf.Type) *btf.FuncProto {
			return &btf.FuncProto{Return: taskPtr(typ), Params: []btf.FuncParam{param("p", taskPtr(typ))}}
		},
		fn: func(*Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			return func(_ *interp.Machine, p, _, _, _, _ uint64) (uint64, error) { return p, nil }
		},
	}
	builtinKfuncs["bpf_task_release"] = &builtinKfunc{
		flags: kfunc.Release,
		types: taskKfuncTypes,
		proto: func(typ func(string) btf.Type) *btf.FuncProto {
			return &btf.FuncProto{Return: (*btf.Void)(nil), Params: []btf.FuncParam{param("p", taskPtr(typ))}}
		},
		fn: func(*Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			return func(*interp.Machine, uint64, uint64, uint64, uint64, uint64) (uint64, error) { return 0, nil }
		},
	}
}
