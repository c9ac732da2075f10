package sim

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// fentry and fexit programs (BPF_PROG_TYPE_TRACING with BPF_TRACE_FENTRY
// or BPF_TRACE_FEXIT, kernel/bpf/trampoline.c): a program attached to a
// kernel function runs when the function is entered, or when it returns,
// with its arguments (and for fexit its return value) as its context, one
// u64 slot each, typed by the function's BTF as btf_ctx_access types them
// (numbers; pointers to void or integers as numbers; pointers to structs
// as kernel objects, not trusted). Such programs must return 0.
//
// The functions are bpfsim's TracedFuncs: Go functions a simulated
// subsystem declares with a BTF prototype (Kernel.RegisterTracedFunc),
// and the kernel's own test functions bpf_fentry_test1 to
// bpf_fentry_test10 (net/bpf/test_run.c), which a test run of an fentry
// or fexit program calls in order, as bpf_prog_test_run_tracing does:
// the programs attached to them run, the one run need not be.
//
// A link may carry a cookie, which bpf_get_attach_cookie reads in the runs
// through it (attachcookie.go).
//
// Missing: fmod_ret, the helpers that read the trampoline's frame
// (bpf_get_func_arg, _ret, _arg_cnt, _ip), programs attached to other BPF
// programs (freplace, attach_prog_fd), and links as
// fds of a process (a TracingLink is a Go handle).

// TracedFunc is a kernel function fentry and fexit programs attach to.
type TracedFunc struct {
	// Name is the function's name, its BTF name.
	Name string
	// Proto is its prototype; at most 12 parameters.
	Proto *btf.FuncProto
	// Fn is the function: its arguments, one u64 each, give its return
	// value.
	Fn func(args []uint64) uint64

	k  *Kernel
	id btf.TypeID
	// args and ret are the arguments and the return value as programs
	// see them (btf_ctx_access).
	args   []verifier.BTFCtxArg
	ret    verifier.BTFCtxArg
	mu     sync.RWMutex
	fentry []attached // attachcookie.go
	fexit  []attached
}

// tracedFuncs are the kernel's traceable functions, by name and by the
// BTF id of their FUNC.
type tracedFuncs struct {
	once   sync.Once
	mu     sync.RWMutex
	byName map[string]*TracedFunc
	byID   map[btf.TypeID]*TracedFunc
	// scratch is the memory of bpf_prog_test_run_tracing's locals
	// (struct bpf_fentry_test_t arg, u32 retval), made on first use.
	scratch uint64
}

// RegisterTracedFunc makes f a function fentry and fexit programs may
// attach to: a FUNC of the kernel's BTF with f's prototype. Names are
// unique (EEXIST).
func (k *Kernel) RegisterTracedFunc(f *TracedFunc) error {
	k.tracedInit()
	return k.registerTraced(f)
}

func (k *Kernel) registerTraced(f *TracedFunc) error {
	if f == nil || f.Name == "" || f.Proto == nil || f.Fn == nil {
		return errors.Wrap(uapi.EINVAL, "a traced function needs a name, a prototype and a function")
	}
	if len(f.Proto.Params) > 12 {
		return errors.Wrapf(uapi.E2BIG, "%s has %d parameters: at most 12", f.Name, len(f.Proto.Params))
	}
	tf := &k.traced
	tf.mu.Lock()
	defer tf.mu.Unlock()
	if tf.byName[f.Name] != nil {
		return errors.Wrapf(uapi.EEXIST, "traced function %s is already registered", f.Name)
	}
	id, err := k.so.btf.Add(&btf.Func{Name: f.Name, Type: f.Proto, Linkage: btf.StaticFunc})
	if err != nil {
		return err
	}
	f.k, f.id = k, id
	f.args = make([]verifier.BTFCtxArg, len(f.Proto.Params))
	for i, p := range f.Proto.Params {
		if f.args[i], err = k.tracedArg(f.Name, i, p.Type); err != nil {
			return err
		}
	}
	if f.ret, err = k.tracedArg(f.Name, len(f.Proto.Params), f.Proto.Return); err != nil {
		return err
	}
	tf.byName[f.Name], tf.byID[id] = f, f
	return nil
}

// tracedArg is btf_ctx_access's view of a parameter (or the return
// value) of a traced function: a number, or a kernel object, neither
// trusted nor tested for NULL (its loads are probe loads).
func (k *Kernel) tracedArg(fn string, i int, t btf.Type) (verifier.BTFCtxArg, error) {
	st, other := verifier.CtxPointee(t)
	switch {
	case other != "":
		return verifier.BTFCtxArg{Refusal: ctxArgRefusal(fn, i, other)}, nil
	case st == nil:
		return verifier.BTFCtxArg{Kind: verifier.CtxScalar}, nil
	}
	id, err := k.so.btf.Add(st)
	if err != nil {
		return verifier.BTFCtxArg{}, err
	}
	return verifier.BTFCtxArg{Kind: verifier.CtxBTFID, Struct: st,
		Note: ctxArgNote(fn, i, id, st.Name)}, nil
}

// tracedInit registers the kernel's test functions, once.
func (k *Kernel) tracedInit() {
	tf := &k.traced
	tf.once.Do(func() {
		tf.byName, tf.byID = map[string]*TracedFunc{}, map[btf.TypeID]*TracedFunc{}
		for _, f := range fentryTestFuncs(k) {
			if err := k.registerTraced(f); err != nil {
				panic(fmt.Sprintf("%s: %v", f.Name, err)) // a bug in the table
			}
		}
	})
}

// BTFID is the id of the function's FUNC in the kernel's BTF, a program's
// attach_btf_id.
func (f *TracedFunc) BTFID() btf.TypeID { return f.id }

// tracedByID finds the traced function whose FUNC has BTF id id.
func (k *Kernel) tracedByID(id btf.TypeID) *TracedFunc {
	k.tracedInit()
	k.traced.mu.RLock()
	defer k.traced.mu.RUnlock()
	return k.traced.byID[id]
}

// TracedFunc returns a registered traced function by name.
func (k *Kernel) TracedFunc(name string) (*TracedFunc, bool) {
	k.tracedInit()
	k.traced.mu.RLock()
	defer k.traced.mu.RUnlock()
	f, ok := k.traced.byName[name]
	return f, ok
}

// fentryTestFuncs are net/bpf/test_run.c's bpf_fentry_test1 to
// bpf_fentry_test10, with the kernel's prototypes and bodies (test8 and
// test9 read through their pointers in simulated memory).
func fentryTestFuncs(k *Kernel) []*TracedFunc {
	i32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	u32 := &btf.Typedef{Name: "u32", Type: &btf.Typedef{Name: "__u32", Type: &btf.Int{Name: "unsigned int", Size: 4}}}
	u64 := &btf.Typedef{Name: "u64", Type: &btf.Typedef{Name: "__u64", Type: &btf.Int{Name: "long long unsigned int", Size: 8}}}
	char := &btf.Int{Name: "char", Size: 1}
	short := &btf.Int{Name: "short int", Size: 2, Encoding: btf.Signed}
	voidp := &btf.Pointer{Target: &btf.Void{}}
	testT := &btf.Struct{Name: "bpf_fentry_test_t", Size: 8}
	testT.Members = []btf.Member{{Name: "a", Type: &btf.Pointer{Target: testT}}}
	p := func(name string, t btf.Type) btf.FuncParam { return btf.FuncParam{Name: name, Type: t} }
	proto := func(ret btf.Type, params ...btf.FuncParam) *btf.FuncProto {
		return &btf.FuncProto{Return: ret, Params: params}
	}
	// The C arithmetic: each argument converted to its parameter's type
	// (char is unsigned on arm64, as BTF describes it), the sum to int.
	s16 := func(v uint64) uint64 { return uint64(int64(int16(v))) }
	s32 := func(v uint64) uint64 { return uint64(int64(int32(v))) }
	ret := func(v uint64) uint64 { return uint64(uint32(v)) }
	load := func(addr uint64, size int) uint64 {
		var b [8]byte
		if k.mem.Read(addr, b[:size]) != nil {
			return 0 // the kernel would oops; its test passes valid pointers
		}
		return binary.LittleEndian.Uint64(b[:])
	}
	return []*TracedFunc{
		{Name: "bpf_fentry_test1", Proto: proto(i32, p("a", i32)),
			Fn: func(a []uint64) uint64 { return ret(s32(a[0]) + 1) }},
		{Name: "bpf_fentry_test2", Proto: proto(i32, p("a", i32), p("b", u64)),
			Fn: func(a []uint64) uint64 { return ret(s32(a[0]) + a[1]) }},
		{Name: "bpf_fentry_test3", Proto: proto(i32, p("a", char), p("b", i32), p("c", u64)),
			Fn: func(a []uint64) uint64 { return ret(uint64(uint8(a[0])) + s32(a[1]) + a[2]) }},
		{Name: "bpf_fentry_test4", Proto: proto(i32, p("a", voidp), p("b", char), p("c", i32), p("d", u64)),
			Fn: func(a []uint64) uint64 { return ret(a[0] + uint64(uint8(a[1])) + s32(a[2]) + a[3]) }},
		{Name: "bpf_fentry_test5", Proto: proto(i32, p("a", u64), p("b", voidp), p("c", short), p("d", i32), p("e", u64)),
			Fn: func(a []uint64) uint64 { return ret(a[0] + a[1] + s16(a[2]) + s32(a[3]) + a[4]) }},
		{Name: "bpf_fentry_test6", Proto: proto(i32, p("a", u64), p("b", voidp), p("c", short), p("d", i32), p("e", voidp), p("f", u64)),
			Fn: func(a []uint64) uint64 { return ret(a[0] + a[1] + s16(a[2]) + s32(a[3]) + a[4] + a[5]) }},
		{Name: "bpf_fentry_test7", Proto: proto(i32, p("arg", &btf.Pointer{Target: testT})),
			Fn: func(a []uint64) uint64 { return ret(a[0]) }},
		{Name: "bpf_fentry_test8", Proto: proto(i32, p("arg", &btf.Pointer{Target: testT})),
			Fn: func(a []uint64) uint64 { return ret(load(a[0], 8)) }},
		{Name: "bpf_fentry_test9", Proto: proto(u32, p("a", &btf.Pointer{Target: u32})),
			Fn: func(a []uint64) uint64 { return load(a[0], 4) }},
		{Name: "bpf_fentry_test10", Proto: proto(i32, p("a", &btf.Pointer{Target: &btf.Const{Type: &btf.Void{}}})),
			Fn: func(a []uint64) uint64 { return ret(a[0]) }},
	}
}

// tracingCtx is the verifier's view of an fentry or fexit program's
// context: f's arguments, and for fexit its return value.
func (f *TracedFunc) tracingCtx(fexit bool) *verifier.BTFCtxType {
	t := &verifier.BTFCtxType{Func: f.Name, Args: f.args, ZeroReturn: true}
	if fexit {
		t.Ret = &f.ret
	}
	return t
}

// TracingOptions name the program a tracing link attaches, as
// cilium/ebpf's link.TracingOptions.
type TracingOptions struct {
	// Program is an fentry, fexit or tp_btf program
	// (SEC("fentry/<function>"), SEC("fexit/<function>"),
	// SEC("tp_btf/<tracepoint>")).
	Program *Program
	// Cookie is what bpf_get_attach_cookie returns in the runs through
	// this link (attachcookie.go).
	Cookie uint64
}

// TracingLink is an fentry or fexit program attached to its function, or
// a tp_btf program to its tracepoint (BPF_LINK_TYPE_TRACING): the program
// runs at each call or event until Close.
type TracingLink struct {
	f      *TracedFunc
	tp     *Tracepoint
	p      *Program
	cookie uint64
	once   sync.Once
}

// AttachTracing attaches an fentry or fexit program to the function it
// was loaded for, or a tp_btf program to its tracepoint, as
// link.AttachTracing does. The link holds the program.
func (k *Kernel) AttachTracing(opts TracingOptions) (*TracingLink, error) {
	p := opts.Program
	if p == nil || !p.isOpen() {
		return nil, errors.Wrap(uapi.EBADF, "no program")
	}
	if p.typ != ebpf.Tracing || (p.trace == nil && p.tp == nil) {
		return nil, errors.Wrapf(uapi.EINVAL, "program %s is no fentry, fexit or tp_btf program", p.name)
	}
	if !p.tryGet() {
		return nil, errors.Wrap(uapi.EBADF, "program is closed")
	}
	l := &TracingLink{p: p, cookie: opts.Cookie}
	if p.tp != nil {
		l.tp = p.tp
		p.tp.attach(l) // tracepoint.go
		return l, nil
	}
	f := p.trace
	l.f = f
	f.mu.Lock()
	if p.attachType == ebpf.AttachTraceFExit {
		f.fexit = append(f.fexit, attached{l, p, l.cookie})
	} else {
		f.fentry = append(f.fentry, attached{l, p, l.cookie})
	}
	f.mu.Unlock()
	return l, nil
}

// Close detaches the program and drops the link's reference on it.
func (l *TracingLink) Close() error {
	l.once.Do(func() {
		if l.tp != nil {
			l.tp.detach(l)
			l.p.put()
			return
		}
		f := l.f
		f.mu.Lock()
		f.fentry = slices.DeleteFunc(f.fentry, func(a attached) bool { return a.l == l })
		f.fexit = slices.DeleteFunc(f.fexit, func(a attached) bool { return a.l == l })
		f.mu.Unlock()
		l.p.put()
	})
	return nil
}

// Call calls the function on CPU cpu with args: the fentry programs
// attached to it run, then the function, then the fexit programs, each
// with the arguments (and the return value) in its context, inside an
// RCU read-side section. It returns what the function returned.
func (f *TracedFunc) Call(cpu int, args ...uint64) (uint64, error) {
	return f.call(cpu, DefaultMaxInsns, args)
}

// call is Call with each program's run stopped after budget
// instructions.
func (f *TracedFunc) call(cpu int, budget uint64, args []uint64) (uint64, error) {
	if len(args) != len(f.Proto.Params) {
		return 0, errors.Wrapf(uapi.EINVAL, "%s takes %d arguments, not %d", f.Name, len(f.Proto.Params), len(args))
	}
	k := f.k
	c, err := k.cpu(uint32(cpu))
	if err != nil {
		return 0, err
	}
	sc, err := k.structOpsCPU(c.ID)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	k.rcu.readLock(c.ID)
	defer k.rcu.readUnlock(c.ID)
	// Read inside the RCU read section: a program detached meanwhile
	// is freed only after it.
	f.mu.RLock()
	fentry, fexit := slices.Clone(f.fentry), slices.Clone(f.fexit)
	f.mu.RUnlock()
	// The trampoline's frame: the arguments, then the return value.
	slots := append(slices.Clone(args), 0)
	run := func(progs []attached) error {
		return k.runAttached(c, progs, sc.putArgs(0, slots), budget)
	}
	if err := run(fentry); err != nil {
		return 0, err
	}
	r := f.Fn(args)
	slots[len(args)] = r
	if err := run(fexit); err != nil {
		return 0, err
	}
	return r, nil
}

// testRunTracing is bpf_prog_test_run_tracing for fentry and fexit
// programs: no input, flags, CPU or repeat (EINVAL); the kernel's test
// functions called with the kernel's arguments, which runs the programs
// attached to them (each stopped after RunOptions.MaxInsns instructions,
// bpfsim's own bound); 0 for the return value.
func (p *Program) testRunTracing(opts *RunOptions) (*RunResult, error) {
	if opts.Flags != 0 || opts.CPU != 0 || opts.Context != nil || opts.ContextOut != nil || opts.Repeat != 0 {
		return nil, errors.Wrap(uapi.EINVAL, "a test run of an fentry or fexit program takes no context, flags, CPU or repeat")
	}
	k := p.k
	tf := &k.traced
	tf.mu.Lock()
	if tf.scratch == 0 {
		addr, err := k.mem.Vmalloc(mem.PageSize, mem.PermRW, "bpf_prog_test_run_tracing")
		if err != nil {
			tf.mu.Unlock()
			return nil, err
		}
		tf.scratch = addr
	}
	tf.mu.Unlock()
	// struct bpf_fentry_test_t arg = {}; u32 retval = 0;
	arg, retval := tf.scratch, tf.scratch+8
	if err := k.mem.Write(tf.scratch, make([]byte, 16)); err != nil {
		return nil, err
	}
	for _, c := range []struct {
		name string
		args []uint64
		want uint64
	}{
		{"bpf_fentry_test1", []uint64{1}, 2},
		{"bpf_fentry_test2", []uint64{2, 3}, 5},
		{"bpf_fentry_test3", []uint64{4, 5, 6}, 15},
		{"bpf_fentry_test4", []uint64{7, 8, 9, 10}, 34},
		{"bpf_fentry_test5", []uint64{11, 12, 13, 14, 15}, 65},
		{"bpf_fentry_test6", []uint64{16, 17, 18, 19, 20, 21}, 111},
		{"bpf_fentry_test7", []uint64{0}, 0},
		{"bpf_fentry_test8", []uint64{arg}, 0},
		{"bpf_fentry_test9", []uint64{retval}, 0},
		{"bpf_fentry_test10", []uint64{0}, 0},
	} {
		f, _ := k.TracedFunc(c.name)
		budget := opts.MaxInsns
		if budget == 0 {
			budget = DefaultMaxInsns
		}
		r, err := f.call(0, budget, c.args)
		if err != nil {
			return nil, err
		}
		if r != c.want {
			return nil, errors.Wrapf(uapi.EFAULT, "%s returned %d", c.name, r)
		}
	}
	return &RunResult{}, nil
}

// prepareTracingLoad is bpf_check_attach_target for an fentry or fexit
// program: its attach_btf_id must be a function of the kernel's BTF the
// kernel can trace.
func (k *Kernel) prepareTracingLoad(p *Program, id btf.TypeID, fn *btf.Func, vErr func(uapi.Errno, string, ...any) error) error {
	f := k.tracedByID(id)
	if f == nil {
		return vErr(uapi.ENOENT, "The address of function %s cannot be found", fn.Name)
	}
	p.trace, p.btfCtx = f, f.tracingCtx(p.attachType == ebpf.AttachTraceFExit)
	return nil
}
