package sim

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// BTF-typed raw tracepoints: tp_btf programs (SEC("tp_btf/<name>"),
// BPF_PROG_TYPE_TRACING with BPF_TRACE_RAW_TP; kernel/trace/bpf_trace.c's
// bpf_trace_run and the verifier's bpf_check_attach_target). A program
// names its tracepoint by the BTF typedef btf_trace_<name>, a pointer to
// the prototype of the tracepoint's probe: a void *__data, then the
// tracepoint's arguments (TP_PROTO). Each argument is a u64 slot of the
// program's context, typed as btf_ctx_access types it: numbers, and
// pointers to structs as trusted kernel objects (trusted_ptr_, which
// kfuncs taking trusted arguments accept), read field by field with
// loads (probe loads, as the kernel rewrites them), no
// bpf_probe_read_kernel needed. The program may return anything.
//
// Tracepoints are registered (Kernel.RegisterTracepoint) and fired
// (Tracepoint.Fire) by the simulated subsystems. The kernel's own:
//
//   - task_newtask(struct task_struct *task, u64 clone_flags): a task
//     starts, fired by NewProcess for its main thread (clone flags
//     SIGCHLD, a fork) and AddTask (SIGCHLD for a main thread, the flags
//     of glibc's pthread_create for another thread), in the parent's
//     context;
//   - sched_process_fork(struct task_struct *parent, struct task_struct
//     *child): the same starts, after task_newtask, as kernel_clone
//     fires it for processes and threads alike, parent the task that
//     started the child;
//   - sched_process_exit(struct task_struct *p, bool group_dead): a task
//     exits, fired by ExitTask and Process.Close in the exiting task,
//     group_dead when it is the last task of its process.
//
// They run on CPU 0. A test run of a tp_btf program is EFAULT, as in the
// kernel (bpf_prog_test_run_tracing runs fentry, fexit and fmod_ret only).
//
// Missing: the kernel's other tracepoints (sched_switch and the rest: the
// events bpfsim simulates are the ones above), the arguments the kernel
// marks as possibly NULL (raw_tp_null_args: none of the three above), the
// recursion counter (bpf_prog_inc_misses_counter), writable tracepoints
// (BPF_PROG_TYPE_RAW_TRACEPOINT_WRITABLE), raw_tp programs attached by
// name (BPF_RAW_TRACEPOINT_OPEN).

// Tracepoint is a tracepoint tp_btf programs attach to.
type Tracepoint struct {
	// Name is the tracepoint's name: programs attach to
	// SEC("tp_btf/<Name>").
	Name string
	// Proto gives the tracepoint's arguments (TP_PROTO), at most 12,
	// without the probe's leading void *__data.
	Proto *btf.FuncProto

	k *Kernel
	// id is the typedef btf_trace_<Name>'s BTF id.
	id  btf.TypeID
	ctx *verifier.BTFCtxType
	// prog are the attached programs (attachcookie.go), replaced, never
	// changed, under mu: a firing reads them with no lock or copy.
	mu   sync.Mutex
	prog atomic.Pointer[[]attached]
}

// btfTracePrefix starts the names of the typedefs tp_btf programs attach
// to.
const btfTracePrefix = "btf_trace_"

// tracepoints are the kernel's tracepoints, by name and by the BTF id of
// their typedef.
type tracepoints struct {
	once   sync.Once
	mu     sync.RWMutex
	byName map[string]*Tracepoint
	byID   map[btf.TypeID]*Tracepoint
	// err is the first failure of a program the kernel's own events
	// ran (TracepointError).
	err error
	// ready says the tracepoints are registered: until then no
	// program is attached to any, and events need not look.
	ready atomic.Bool
}

// RegisterTracepoint makes tp a tracepoint tp_btf programs may attach to:
// a typedef btf_trace_<Name> of the kernel's BTF. Names are unique
// (EEXIST).
func (k *Kernel) RegisterTracepoint(tp *Tracepoint) error {
	k.tracepointsInit()
	return k.registerTracepoint(tp)
}

func (k *Kernel) registerTracepoint(tp *Tracepoint) error {
	if tp == nil || tp.Name == "" || tp.Proto == nil {
		return errors.Wrap(uapi.EINVAL, "a tracepoint needs a name and a prototype")
	}
	if len(tp.Proto.Params) > 12 {
		return errors.Wrapf(uapi.E2BIG, "tracepoint %s has %d arguments: at most 12", tp.Name, len(tp.Proto.Params))
	}
	if _, ok := tp.Proto.Return.(*btf.Void); !ok && tp.Proto.Return != nil {
		return errors.Wrapf(uapi.EINVAL, "tracepoint %s returns %s: tracepoints return void", tp.Name, tp.Proto.Return)
	}
	tps := &k.tracepoints
	tps.mu.Lock()
	defer tps.mu.Unlock()
	if tps.byName[tp.Name] != nil {
		return errors.Wrapf(uapi.EEXIST, "tracepoint %s is already registered", tp.Name)
	}
	// The probe's prototype: void (*)(void *__data, TP_PROTO...), its
	// parameters unnamed as in the kernel's typedef.
	probe := &btf.FuncProto{Return: &btf.Void{}, Params: []btf.FuncParam{{Type: &btf.Pointer{Target: &btf.Void{}}}}}
	for _, p := range tp.Proto.Params {
		probe.Params = append(probe.Params, btf.FuncParam{Type: p.Type})
	}
	id, err := k.so.btf.Add(&btf.Typedef{Name: btfTracePrefix + tp.Name, Type: &btf.Pointer{Target: probe}})
	if err != nil {
		return err
	}
	ctx := &verifier.BTFCtxType{Func: tp.Name, Args: make([]verifier.BTFCtxArg, len(tp.Proto.Params))}
	for i, p := range tp.Proto.Params {
		a, err := k.tracedArg(tp.Name, i, p.Type) // fentry.go
		if err != nil {
			return err
		}
		// prog_args_trusted: a tracepoint's objects are trusted.
		a.Trusted = a.Kind == verifier.CtxBTFID
		ctx.Args[i] = a
	}
	tp.k, tp.id, tp.ctx = k, id, ctx
	tps.byName[tp.Name], tps.byID[id] = tp, tp
	return nil
}

// The kernel's u64 and bool, as its BTF has them.
var (
	tpU64  = &btf.Typedef{Name: "u64", Type: &btf.Typedef{Name: "__u64", Type: &btf.Int{Name: "long long unsigned int", Size: 8}}}
	tpBool = &btf.Typedef{Name: "bool", Type: &btf.Int{Name: "_Bool", Size: 1, Encoding: btf.Bool}}
)

// tracepointsInit registers the kernel's own tracepoints, once: on first
// use, as their BTF is made then.
func (k *Kernel) tracepointsInit() {
	tps := &k.tracepoints
	tps.once.Do(func() {
		defer tps.ready.Store(true)
		tps.byName, tps.byID = map[string]*Tracepoint{}, map[btf.TypeID]*Tracepoint{}
		for _, tp := range []struct {
			name   string
			params func(typ func(string) btf.Type) []btf.FuncParam
		}{
			{"task_newtask", func(typ func(string) btf.Type) []btf.FuncParam {
				return []btf.FuncParam{{Name: "task", Type: &btf.Pointer{Target: typ("task_struct")}}, {Name: "clone_flags", Type: tpU64}}
			}},
			{"sched_process_fork", func(typ func(string) btf.Type) []btf.FuncParam {
				task := &btf.Pointer{Target: typ("task_struct")}
				return []btf.FuncParam{{Name: "parent", Type: task}, {Name: "child", Type: task}}
			}},
			{"sched_process_exit", func(typ func(string) btf.Type) []btf.FuncParam {
				return []btf.FuncParam{{Name: "p", Type: &btf.Pointer{Target: typ("task_struct")}}, {Name: "group_dead", Type: tpBool}}
			}},
		} {
			proto, err := k.so.btf.withTypes(func(typ func(string) btf.Type) *btf.FuncProto {
				return &btf.FuncProto{Return: &btf.Void{}, Params: tp.params(typ)}
			})
			if err == nil {
				err = k.registerTracepoint(&Tracepoint{Name: tp.name, Proto: proto})
			}
			if err != nil {
				panic(fmt.Sprintf("tracepoint %s: %v", tp.name, err)) // a bug in the table
			}
		}
	})
}

// Tracepoint returns a registered tracepoint by name.
func (k *Kernel) Tracepoint(name string) (*Tracepoint, bool) {
	k.tracepointsInit()
	k.tracepoints.mu.RLock()
	defer k.tracepoints.mu.RUnlock()
	tp, ok := k.tracepoints.byName[name]
	return tp, ok
}

// BTFID is the id of the tracepoint's typedef btf_trace_<Name> in the
// kernel's BTF, a tp_btf program's attach_btf_id.
func (tp *Tracepoint) BTFID() btf.TypeID { return tp.id }

// Fire runs the programs attached to the tracepoint on CPU cpu, in task
// current (nil: the CPU's idle task), with args as the tracepoint's
// arguments, inside an RCU read-side section, as a trace_<name>() call
// in the kernel does. The first program that fails stops the others, and
// its error is returned.
func (tp *Tracepoint) Fire(cpu int, current *Task, args ...uint64) error {
	if len(args) != len(tp.Proto.Params) {
		return errors.Wrapf(uapi.EINVAL, "tracepoint %s takes %d arguments, not %d", tp.Name, len(tp.Proto.Params), len(args))
	}
	if !tp.attached() {
		return nil
	}
	k := tp.k
	c, err := k.cpu(uint32(cpu))
	if err != nil {
		return err
	}
	sc, err := k.structOpsCPU(c.ID)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	k.rcu.readLock(c.ID)
	defer k.rcu.readUnlock(c.ID)
	// Read inside the RCU read section: a program detached meanwhile
	// is freed only after it, as the kernel's links free theirs.
	pp := tp.prog.Load()
	if pp == nil {
		return nil
	}
	c.setCurrent(current)
	defer c.setCurrent(nil)
	if err := k.runAttached(c, *pp, sc.putArgs(0, args), DefaultMaxInsns); err != nil {
		return errors.Wrapf(err, "tracepoint %s", tp.Name)
	}
	return nil
}

// attach adds the program of link l to the tracepoint's programs.
func (tp *Tracepoint) attach(l *TracingLink) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	var progs []attached
	if pp := tp.prog.Load(); pp != nil {
		progs = slices.Clone(*pp)
	}
	progs = append(progs, attached{l, l.p, l.cookie})
	tp.prog.Store(&progs)
}

// detach takes the program of link l out of the tracepoint's programs.
func (tp *Tracepoint) detach(l *TracingLink) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if pp := tp.prog.Load(); pp != nil {
		progs := slices.DeleteFunc(slices.Clone(*pp), func(a attached) bool { return a.l == l })
		tp.prog.Store(&progs)
	}
}

// attached says whether any program is attached, so that the events
// that fire the tracepoint can skip writing its arguments.
func (tp *Tracepoint) attached() bool {
	pp := tp.prog.Load()
	return pp != nil && len(*pp) > 0
}

// tracepointAttachOf finds a tp_btf program spec's tracepoint
// (cilium/ebpf's AttachTo) and sets the load's attach_btf_id to its
// typedef, as cilium/ebpf finds btf_trace_<name> in the kernel's BTF.
func (k *Kernel) tracepointAttachOf(spec *ebpf.ProgramSpec, opts *ProgramOptions) error {
	tp, ok := k.Tracepoint(spec.AttachTo)
	if !ok {
		return errors.Wrapf(uapi.ENOENT, "program %s: attach %s: no tracepoint %s in the simulated kernel (Kernel.RegisterTracepoint)", spec.Name, spec.AttachType, spec.AttachTo)
	}
	opts.AttachBTFID = uint32(tp.id)
	return nil
}

// prepareTracepointLoad is bpf_check_attach_target for a tp_btf program:
// its attach_btf_id must be a typedef btf_trace_<name> of a tracepoint.
func (k *Kernel) prepareTracepointLoad(p *Program, id uint32, vErr func(uapi.Errno, string, ...any) error) error {
	spec, err := k.so.btf.Spec()
	if err != nil {
		return err
	}
	typ, err := spec.TypeByID(btf.TypeID(id))
	if err != nil {
		return vErr(uapi.EINVAL, "attach_btf_id %d is invalid", id)
	}
	td, ok := typ.(*btf.Typedef)
	if !ok {
		return vErr(uapi.EINVAL, "attach_btf_id %d is not a typedef", id)
	}
	if !strings.HasPrefix(td.Name, btfTracePrefix) {
		return vErr(uapi.EINVAL, "attach_btf_id %d points to wrong type name %s", id, td.Name)
	}
	k.tracepoints.mu.RLock()
	tp := k.tracepoints.byID[btf.TypeID(id)]
	k.tracepoints.mu.RUnlock()
	if tp == nil {
		// bpf_get_raw_tracepoint finds none: EINVAL, nothing logged.
		return errors.Wrapf(uapi.EINVAL, "no tracepoint %s", strings.TrimPrefix(td.Name, btfTracePrefix))
	}
	p.tp, p.btfCtx = tp, tp.ctx
	return nil
}

// Clone flags task_newtask reports: a fork's (SIGCHLD), and those of
// glibc's pthread_create (CLONE_VM | CLONE_FS | CLONE_FILES |
// CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM | CLONE_SETTLS |
// CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID).
const (
	cloneFork   = 17
	cloneThread = 0x3d0f00
)

// taskStarted fires task_newtask and then sched_process_fork for a task
// that just started, in its parent's context: for a process's main thread
// the parent (init if it names none), for another thread its process's
// main thread.
func (k *Kernel) taskStarted(t *Task) {
	if !k.tracepoints.ready.Load() {
		return
	}
	newtask, _ := k.Tracepoint("task_newtask")
	fork, _ := k.Tracepoint("sched_process_fork")
	if !newtask.attached() && !fork.attached() {
		return
	}
	flags, parent := uint64(cloneFork), t.Parent
	if t.PID != t.TGID {
		flags = cloneThread
		k.tasks.mu.Lock()
		if lt := k.tasks.pids[t.TGID]; lt != nil {
			parent = lt.t
		} else {
			parent = processTask(t.TGID)
		}
		k.tasks.mu.Unlock()
	} else if parent == nil {
		parent = &initTask
	}
	if newtask.attached() {
		k.fireTaskEvent(newtask, parent, t, flags)
	}
	if fork.attached() {
		// The parent's task_struct: a live task's own; a parent that
		// is no live task (bpfsim knows it only as a Task) has none,
		// and the event is not fired.
		pa, err := k.TaskStruct(parent.PID)
		if err != nil {
			return
		}
		ca, err := k.TaskStruct(t.PID)
		if err == nil {
			err = fork.Fire(0, parent, pa, ca)
		}
		k.keepTracepointError(err)
	}
}

// taskExiting fires sched_process_exit for a task about to exit, in its
// own context.
func (k *Kernel) taskExiting(t *Task, groupDead bool) {
	if !k.tracepoints.ready.Load() {
		return
	}
	tp, _ := k.Tracepoint("sched_process_exit")
	if !tp.attached() {
		return
	}
	var dead uint64
	if groupDead {
		dead = 1
	}
	k.fireTaskEvent(tp, t, t, dead)
}

// fireTaskEvent fires a task tracepoint on CPU 0 with the task's
// task_struct and arg, keeping the first failure for TracepointError.
func (k *Kernel) fireTaskEvent(tp *Tracepoint, current, t *Task, arg uint64) {
	addr, err := k.TaskStruct(t.PID)
	if err == nil {
		err = tp.Fire(0, current, addr, arg)
	}
	k.keepTracepointError(err)
}

// keepTracepointError keeps the first error of the kernel's own events
// for TracepointError.
func (k *Kernel) keepTracepointError(err error) {
	if err == nil {
		return
	}
	k.tracepoints.mu.Lock()
	if k.tracepoints.err == nil {
		k.tracepoints.err = err
	}
	k.tracepoints.mu.Unlock()
}

// TaskStruct returns the address of the task_struct of the live task
// pid, as the kernel passes tasks to tracepoints: for a subsystem's own
// tracepoints that take one. ESRCH if no live task has the pid.
func (k *Kernel) TaskStruct(pid uint32) (uint64, error) {
	addr, err := k.taskPage(pid, 0)
	if err == nil && addr == 0 {
		err = errors.Wrapf(uapi.ESRCH, "no task has pid %d", pid)
	}
	return addr, err
}

// TracepointError returns the first error of a program that a tracepoint
// fired by the kernel's own events (a task starting or exiting) ran, if
// any: those events happen whatever their programs do.
func (k *Kernel) TracepointError() error {
	k.tracepoints.mu.RLock()
	defer k.tracepoints.mu.RUnlock()
	return k.tracepoints.err
}
