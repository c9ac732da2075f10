package sim

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
	"github.com/bpfsim/bpfsim/structops"
)

// The kernel side of struct_ops (kernel/bpf/bpf_struct_ops.c, package
// structops): registering types, loading BPF_PROG_TYPE_STRUCT_OPS
// programs against a member, updating struct_ops maps with program fds,
// struct_ops links, running a member's program, and the association of
// programs with struct_ops maps (BPF_PROG_ASSOC_STRUCT_OPS).

// structOpsState is the kernel's struct_ops and kfunc state, made on first
// use so that kernels without struct_ops pay nothing.
type structOpsState struct {
	once   sync.Once
	reg    *structops.Registry
	btf    kernelBTF
	kfuncs kfuncTable
	aux    auxTable

	// mu guards cpus, the per-CPU areas member calls use.
	mu   sync.Mutex
	cpus []*structOpsCPU
}

// structOps returns the kernel's struct_ops state; the first call
// registers BPF_MAP_TYPE_STRUCT_OPS.
func (k *Kernel) structOps() *structOpsState {
	st := &k.so
	st.once.Do(func() {
		st.reg = structops.NewRegistry(&st.btf)
		// The map type number is free in every kernel: nothing else
		// registers 26.
		_ = k.RegisterMapType(st.reg.MapType())
		// The kernel's own test type (dummyops.go).
		if _, err := st.reg.Register(dummyOpsType); err != nil {
			panic(fmt.Sprintf("bpf_dummy_ops: %v", err)) // a bug in its declaration
		}
	})
	return st
}

// RegisterStructOps adds a struct_ops type a simulated subsystem declares,
// with its kfuncs. Maps of it can then be created from a MapSpec whose
// value is a struct of the same name (as cilium/ebpf's ELF loader makes
// for .struct_ops.link), and programs loaded against its members.
func (k *Kernel) RegisterStructOps(t *structops.Type) (*structops.Desc, error) {
	st := k.structOps()
	if t == nil || t.Struct == nil {
		return nil, errors.Wrap(uapi.EINVAL, "nil struct_ops type")
	}
	if _, ok := st.reg.ByName(t.Struct.Name); ok {
		return nil, errors.Wrapf(uapi.EEXIST, "struct_ops %s is already registered", t.Struct.Name)
	}
	for _, f := range t.Kfuncs {
		if err := k.RegisterKfunc(f); err != nil {
			return nil, errors.Wrapf(err, "struct_ops %s", t.Struct.Name)
		}
	}
	return st.reg.Register(t)
}

// StructOpsType returns a registered struct_ops type by name.
func (k *Kernel) StructOpsType(name string) (*structops.Desc, bool) {
	return k.structOps().reg.ByName(name)
}

// progStructOps is what a program holds for struct_ops: the member a
// struct_ops program implements, and any program's association with a
// struct_ops map (prog->aux->st_ops_assoc and its mutex).
type progStructOps struct {
	attachBTFID btf.TypeID
	member      uint32
	nargs       int
	desc        *structops.Desc

	assocMu sync.Mutex
	assoc   atomic.Pointer[maps.Map]
	// aux is the address of the program's struct bpf_prog_aux, given on
	// first use (kfunc.go).
	aux uint64
	// ctx is the verifier's view of a struct_ops program's context.
	ctx verifier.ProgType
}

// assocPoison is BPF_PTR_POISON: the association of a struct_ops program
// used in more than one map.
var assocPoison = new(maps.Map)

// structOpsAttachOf sets a struct_ops program's attach_btf_id and
// expected_attach_type from cilium/ebpf's AttachTo ("<struct>:<member>"),
// as cilium/ebpf does against the kernel's BTF.
func (k *Kernel) structOpsAttachOf(spec *ebpf.ProgramSpec, opts *ProgramOptions) error {
	if spec.Type != ebpf.StructOps || opts.AttachBTFID != 0 {
		return nil
	}
	name, member, ok := strings.Cut(spec.AttachTo, ":")
	if !ok || member == "" {
		return errors.Wrapf(uapi.EINVAL, "program %s: struct_ops: AttachTo must be '<ops>:<member>' (got %q)", spec.Name, spec.AttachTo)
	}
	d, ok := k.structOps().reg.ByName(name)
	if !ok {
		return errors.Wrapf(uapi.ENOTSUPP, "program %s: struct_ops %s is not simulated (no subsystem registered it)", spec.Name, name)
	}
	m, ok := d.MemberByName(member)
	if !ok {
		return errors.Wrapf(uapi.EINVAL, "program %s: member %q not found in %s", spec.Name, member, name)
	}
	opts.AttachBTFID, opts.ExpectedAttachType = uint32(d.TypeID), uint32(m.Index)
	return nil
}

// prepareStructOpsLoad is check_struct_ops_btf_id for a struct_ops
// program, and refuses kfunc calls in programs that will not be verified.
func (k *Kernel) prepareStructOpsLoad(p *Program, insns []insn.Insn, opts ProgramOptions) error {
	if opts.Unverified || p.typ == ebpf.UnspecifiedProgram {
		return checkNoKfuncCalls(insns)
	}
	if p.typ != ebpf.StructOps {
		return nil
	}
	vErr := func(errno uapi.Errno, msg string) error { return p.attachRefusal(opts, errno, msg) }
	license := opts.License
	if license == "" {
		license = "GPL"
	}
	if !gplCompatible(license) {
		return vErr(uapi.EINVAL, "struct ops programs must have a GPL compatible license")
	}
	if opts.AttachBTFID == 0 {
		return vErr(uapi.ENOTSUPP, "struct_ops programs need attach_btf_id")
	}
	d, ok := k.structOps().reg.ByTypeID(btf.TypeID(opts.AttachBTFID))
	if !ok {
		return vErr(uapi.ENOTSUPP, "attach_btf_id "+itoa(opts.AttachBTFID)+" is not a supported struct")
	}
	m, ok := d.Member(int(opts.ExpectedAttachType))
	if !ok {
		return vErr(uapi.EINVAL, "attach to invalid member idx "+itoa(opts.ExpectedAttachType)+" of struct "+d.Type.Name())
	}
	if m.Func == nil {
		return vErr(uapi.EINVAL, "attach to invalid member "+m.Name+"(@idx "+itoa(opts.ExpectedAttachType)+") of struct "+d.Type.Name())
	}
	if d.Type.CheckMember != nil {
		if err := d.Type.CheckMember(m, structops.ProgInfo{Name: p.name, Type: p.typ, Sleepable: p.sleepable}); err != nil {
			var errno uapi.Errno
			if !errors.As(err, &errno) {
				errno = uapi.EINVAL
			}
			return vErr(errno, "attach to unsupported member "+m.Name+" of struct "+d.Type.Name())
		}
	}
	p.so.attachBTFID, p.so.member, p.so.nargs, p.so.desc = d.TypeID, uint32(m.Index), len(m.Func.Params), d
	_, void := m.Func.Return.(*btf.Void)
	c := structOpsCtx{btfCtx: structOpsArgs(d, m), write: d.Type.StructWrite, void: void || m.Func.Return == nil}
	p.so.ctx = c
	if c.write != nil {
		p.so.ctx = structOpsWriter{c}
	}
	return nil
}

// ctxArgRefusal is btf_ctx_access's refusal of a pointer argument to
// what is not a struct, or bpfsim's of one to a union.
func ctxArgRefusal(fn string, i int, other string) string {
	if other == "UNION" {
		return "func '" + fn + "' arg" + strconv.Itoa(i) + ": pointers to unions are not simulated"
	}
	return "func '" + fn + "' arg" + strconv.Itoa(i) + " type " + other + " is not a struct"
}

// ctxArgNote is btf_ctx_access's line on reading a pointer to a struct.
func ctxArgNote(fn string, i int, id btf.TypeID, st string) string {
	return fmt.Sprintf("func '%s' arg%d has btf_id %d type STRUCT '%s'", fn, i, id, st)
}

// structOpsArgs is btf_ctx_access's view of a member's arguments: numbers,
// and trusted pointers to the structs the prototype names (or the
// subsystem promotes them to); nullable ones are described by the type,
// as the kernel's ctx_arg_info describes them, and so get no note.
func structOpsArgs(d *structops.Desc, m structops.Member) *verifier.BTFCtxType {
	t := &verifier.BTFCtxType{Func: m.Name, Args: make([]verifier.BTFCtxArg, len(m.Args))}
	for i, a := range m.Args {
		switch {
		case a.Other != "":
			t.Args[i].Refusal = ctxArgRefusal(m.Name, i, a.Other)
		case a.Struct != nil:
			st := a.Struct
			if d.Type.PromoteArg != nil {
				if p := d.Type.PromoteArg(m, i, st); p != nil {
					st = p
				}
			}
			t.Args[i] = verifier.BTFCtxArg{Kind: verifier.CtxBTFID, Struct: st, Trusted: true, MaybeNull: a.Nullable}
			if !a.Nullable {
				t.Args[i].Note = ctxArgNote(m.Name, i, a.StructID, a.Struct.Name)
			}
		}
	}
	return t
}

// attachRefusal is a load refused by check_attach_btf_id, which comes
// after the kernel has found the program's functions: at log level 2 the
// log lists them before the message.
func (p *Program) attachRefusal(opts ProgramOptions, errno uapi.Errno, msg string) error {
	var log strings.Builder
	if opts.LogLevel&ebpf.LogLevelBranch != 0 {
		for i, s := range p.subprogs {
			fmt.Fprintf(&log, "func#%d @%d\n", i, s.Start)
		}
	}
	if opts.LogLevel != 0 {
		log.WriteString(msg + "\n")
	}
	return errors.WithStack(&verifier.Error{Errno: errno, Msg: msg, Log: log.String()})
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

// progTypeFor is the verifier's view of p's type: a struct_ops program's
// context is the u64 array of its member's arguments.
func (k *Kernel) progTypeFor(p *Program) (verifier.ProgType, bool) {
	if p.typ == ebpf.StructOps {
		return p.so.ctx, p.so.desc != nil
	}
	if p.typ == ebpf.Tracing {
		return p.btfCtx, p.btfCtx != nil
	}
	return verifier.ProgTypeFor(p.typ, p.attachType)
}

// structOpsCtx is a struct_ops program's context: the u64 array of its
// member's arguments, read as btf_ctx_access allows, pointers to kernel
// objects among them; stores into those objects are the subsystem's to
// allow (its btf_struct_access).
type structOpsCtx struct {
	btfCtx *verifier.BTFCtxType
	write  func(s *btf.Struct, off, size int) error
	// void: the member returns nothing, so R0 is not looked at.
	void bool
}

func (c structOpsCtx) ReturnsVoid() bool { return c.void }

func (c structOpsCtx) ValidAccess(off, size int, write, ldsx bool) (verifier.CtxField, bool) {
	return c.btfCtx.ValidAccess(off, size, write, ldsx)
}

func (structOpsCtx) DirectPacketAccess(bool) bool { return false }

// structOpsWriter is a struct_ops context whose type allows some stores.
type structOpsWriter struct{ structOpsCtx }

func (c structOpsWriter) BTFStructWrite(s *btf.Struct, off, size int) error {
	return c.write(s, off, size)
}

// structOpsProg is a *Program as struct_ops maps see it.
type structOpsProg struct{ p *Program }

var _ structops.Prog = structOpsProg{}

func (o structOpsProg) Get()             { o.p.get() }
func (o structOpsProg) Put()             { o.p.put() }
func (o structOpsProg) ObjectID() uint32 { return o.p.id }
func (o structOpsProg) Name() string     { return o.p.name }

func (o structOpsProg) StructOpsTarget() (btf.TypeID, uint32, bool) {
	if o.p.typ != ebpf.StructOps || o.p.so.desc == nil {
		return 0, 0, false
	}
	return o.p.so.attachBTFID, o.p.so.member, true
}

func (o structOpsProg) AssocStructOps(m *maps.Map) error { return o.p.assocStructOps(m) }
func (o structOpsProg) DisassocStructOps()               { o.p.disassocStructOps() }

func (o structOpsProg) Run(caller *interp.Machine, cpu int, args []uint64) (uint64, error) {
	return o.p.k.runStructOps(o.p, caller, cpu, args)
}

// assocStructOps is bpf_prog_assoc_struct_ops.
func (p *Program) assocStructOps(m *maps.Map) error {
	p.so.assocMu.Lock()
	defer p.so.assocMu.Unlock()
	cur := p.so.assoc.Load()
	switch {
	case cur == m:
		return nil // once per program, however often asked
	case cur != nil && p.typ != ebpf.StructOps:
		return errors.Wrapf(uapi.EBUSY, "program %s is associated with struct_ops map %d for good", p.name, cur.ID)
	case cur != nil:
		// A struct_ops program in two maps: ambiguous.
		p.so.assoc.Store(assocPoison)
		return nil
	}
	// A struct_ops map does not track the other programs associated with
	// it: they hold a reference. Its own programs are tracked by the map,
	// which drops their association when it is freed.
	if p.typ != ebpf.StructOps {
		m.Get()
	}
	p.so.assoc.Store(m)
	return nil
}

// disassocStructOps is bpf_prog_disassoc_struct_ops.
func (p *Program) disassocStructOps() {
	p.so.assocMu.Lock()
	defer p.so.assocMu.Unlock()
	cur := p.so.assoc.Load()
	if cur == nil || cur == assocPoison {
		return
	}
	if p.typ != ebpf.StructOps {
		cur.Put()
	}
	p.so.assoc.Store(nil)
}

// releaseStructOps is the struct_ops part of freeing a program
// (bpf_prog_free_deferred): its association goes, and its aux address.
func (p *Program) releaseStructOps() {
	p.disassocStructOps()
	p.k.freeAux(p)
}

// AssocStructOps is the association as user space can see it: the id of
// the map the program is associated with, whether the association is
// poisoned, and whether there is one.
type AssocStructOps struct {
	MapID    uint32
	Poisoned bool
}

// StructOpsAssoc returns the program's association (st_ops_assoc), for
// inspection: ok is false when it has none.
func (p *Program) StructOpsAssoc() (a AssocStructOps, ok bool) {
	cur := p.so.assoc.Load()
	switch cur {
	case nil:
		return AssocStructOps{}, false
	case assocPoison:
		return AssocStructOps{Poisoned: true}, true
	}
	return AssocStructOps{MapID: cur.ID}, true
}

// ProgAssocStructOps is the BPF_PROG_ASSOC_STRUCT_OPS command: it
// associates the program progFD refers to with the struct_ops map mapFD
// refers to, both fds of this process. A struct_ops program may not be
// associated this way (its maps associate it); flags must be 0.
func (p *Process) ProgAssocStructOps(progFD, mapFD int, flags uint32) error {
	if flags != 0 {
		return errors.Wrapf(uapi.EINVAL, "BPF_PROG_ASSOC_STRUCT_OPS takes no flags (%#x)", flags)
	}
	f, err := p.fds.get(progFD)
	if err != nil {
		return err
	}
	prog, ok := f.obj.(*Program)
	if !ok {
		return errors.Wrapf(uapi.EINVAL, "fd %d is not a program", progFD)
	}
	if !prog.tryGet() {
		return errors.Wrapf(uapi.EBADF, "fd %d: the program is gone", progFD)
	}
	defer prog.put()
	if prog.typ == ebpf.StructOps {
		return errors.Wrap(uapi.EINVAL, "struct_ops programs are associated by the maps that use them")
	}
	m, _, err := p.mapFromFD(mapFD)
	if err != nil {
		return err
	}
	m.Get()
	defer m.Put()
	if m.Attr.Type != uapi.MapTypeStructOps {
		return errors.Wrapf(uapi.EINVAL, "map %d is a %s map, not struct_ops", m.ID, m.Attr.Type)
	}
	return prog.assocStructOps(m)
}

// AssocStructOps is libbpf's bpf_program__assoc_struct_ops: it associates
// the program with the struct_ops map m, whose handle must be in the
// program's process. Like libbpf it refuses, before the command, a program
// that is not loaded, a struct_ops program and a map that is not a
// struct_ops map (EINVAL).
func (prog *Program) AssocStructOps(m *Map) error {
	switch {
	case prog.file == nil || !prog.isOpen():
		return errors.Wrap(uapi.EINVAL, "program is not loaded")
	case prog.typ == ebpf.StructOps:
		return errors.Wrap(uapi.EINVAL, "cannot associate a struct_ops program explicitly")
	case m == nil || m.closed.Load():
		return errors.Wrap(uapi.EINVAL, "map is not created")
	case m.Type() != ebpf.StructOpsMap:
		return errors.Wrapf(uapi.EINVAL, "map %s is not a struct_ops map", m.Name())
	case m.proc != prog.proc:
		return errors.Wrap(uapi.EBADF, "the map's fd belongs to another process than the program's")
	}
	return prog.proc.ProgAssocStructOps(prog.fd, m.fd, 0)
}

// ProgGetAssocStructOps is bpf_prog_get_assoc_struct_ops: given a
// program's aux (the value of a "__prog" kfunc argument), the address of
// the kernel struct (kdata) of the struct_ops map it is associated with;
// 0 if it has none, if it is poisoned, or if the map is not fully
// initialised yet (still in StateInit). A kfunc calls it from a program's
// run, inside the RCU read-side section that keeps the map alive for a
// struct_ops program; other programs hold a reference.
func (k *Kernel) ProgGetAssocStructOps(aux uint64) uint64 {
	if sm := k.AssocStructOpsMap(aux); sm != nil {
		return sm.KData()
	}
	return 0
}

// AssocStructOpsMap is ProgGetAssocStructOps returning the instance itself,
// for a kfunc that calls its members.
func (k *Kernel) AssocStructOpsMap(aux uint64) *structops.Map {
	p, ok := k.progByAux(aux)
	if !ok {
		return nil
	}
	m := p.so.assoc.Load()
	if m == nil || m == assocPoison {
		return nil
	}
	sm, ok := m.Ops.(*structops.Map)
	if !ok || sm.State() == structops.StateInit {
		return nil
	}
	return sm
}

// structOpsCPU holds a CPU's areas for member calls: the argument arrays
// (the trampoline's stack) and the machines nested calls run on.
type structOpsCPU struct {
	args uint64 // maxNestedCalls+1 arrays of MaxArgs u64
	buf  []byte
	// stateOff is where in buf a bpf_dummy_ops test run keeps the
	// kernel's copy of its state (dummyops.go).
	stateOff int
	depth    int // nested calls under way; only the CPU's running goroutine touches it
	// nested[i] runs calls at depth i+1.
	nested []*interp.Machine
}

// maxNestedCalls bounds member calls made from kfuncs inside programs.
const maxNestedCalls = 4

func (k *Kernel) structOpsCPU(id int) (*structOpsCPU, error) {
	st := k.structOps()
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.cpus == nil {
		st.cpus = make([]*structOpsCPU, len(k.cpus))
	}
	if c := st.cpus[id]; c != nil {
		return c, nil
	}
	argsSize := uint64(maxNestedCalls+1) * structops.MaxArgs * 8
	size := argsSize + 8
	addr, err := k.mem.Vmalloc(size, mem.PermRW, "bpf_struct_ops_args")
	if err != nil {
		return nil, err
	}
	buf, err := k.mem.Bytes(addr, size)
	if err != nil {
		return nil, err
	}
	c := &structOpsCPU{args: addr, buf: buf, stateOff: int(argsSize)}
	st.cpus[id] = c
	return c, nil
}

// runStructOps runs a struct_ops program with args: on CPU cpu, as the
// subsystem calling through kdata, or nested in the program running on
// caller (a kfunc calling a member), on a machine of its own with its own
// stack, inside the caller's RCU read-side section. A JITed program runs
// JITed, but for nested calls, which the interpreter serves: the CPU's
// A64 state belongs to the program that called the kfunc.
func (k *Kernel) runStructOps(p *Program, caller *interp.Machine, cpu int, args []uint64) (uint64, error) {
	if len(args) > structops.MaxArgs {
		return 0, errors.Wrapf(uapi.E2BIG, "%d arguments", len(args))
	}
	c, err := k.cpu(uint32(cpu))
	if err != nil {
		return 0, err
	}
	sc, err := k.structOpsCPU(c.ID)
	if err != nil {
		return 0, err
	}
	if caller != nil {
		return k.runNested(p, c, sc, args)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	addr := sc.putArgs(0, args)
	k.rcu.readLock(c.ID)
	defer k.rcu.readUnlock(c.ID)
	return k.runWithCtx(c, p, addr, DefaultMaxInsns)
}

// runWithCtx runs p on CPU c (whose lock the caller holds, inside an RCU
// read-side section) with its context at ctx, JITed if it is, stopped
// after budget instructions; a spin lock it left held is released.
func (k *Kernel) runWithCtx(c *CPU, p *Program, ctx, budget uint64) (uint64, error) {
	m := c.machine
	m.MaxInsns, m.Packet = budget, interp.Packet{}
	var r0 uint64
	var err error
	if p.jit != nil {
		r0, err = k.runJIT(c, p, ctx, 0)
	} else {
		r0, err = m.Run(p.code, ctx, 0)
	}
	c.releaseSpinLock()
	if err != nil {
		return 0, errors.Wrapf(err, "program %s", p.name)
	}
	return r0, nil
}

// putArgs writes the arguments of a call at depth and returns their
// address.
func (sc *structOpsCPU) putArgs(depth int, args []uint64) uint64 {
	off := depth * structops.MaxArgs * 8
	for i, a := range args {
		binary.LittleEndian.PutUint64(sc.buf[off+8*i:], a)
	}
	return sc.args + uint64(off)
}

func (k *Kernel) runNested(p *Program, c *CPU, sc *structOpsCPU, args []uint64) (uint64, error) {
	if sc.depth >= maxNestedCalls {
		return 0, errors.Wrapf(uapi.ELOOP, "struct_ops calls nest deeper than %d", maxNestedCalls)
	}
	if len(sc.nested) <= sc.depth {
		m, err := k.newNestedMachine(c)
		if err != nil {
			return 0, err
		}
		sc.nested = append(sc.nested, m)
	}
	m := sc.nested[sc.depth]
	sc.depth++
	defer func() { sc.depth-- }()
	addr := sc.putArgs(sc.depth, args)
	m.MaxInsns = DefaultMaxInsns
	code, err := p.interpCode()
	if err != nil {
		return 0, errors.Wrapf(err, "program %s", p.name)
	}
	r0, err := m.Run(code, addr, 0)
	if err != nil {
		return 0, errors.Wrapf(err, "program %s", p.name)
	}
	return r0, nil
}

// newNestedMachine makes a machine for nested runs on CPU c: c's CPU
// number and per-CPU state, a stack of its own.
func (k *Kernel) newNestedMachine(c *CPU) (*interp.Machine, error) {
	base, err := k.mem.Vmalloc(interp.StackSize, mem.PermRW, "bpf_stack")
	if err != nil {
		return nil, err
	}
	stack, err := k.mem.Bytes(base, interp.StackSize)
	if err != nil {
		return nil, err
	}
	m, err := interp.NewMachine(c.ID, k.mem.NewTLB(), base, stack)
	if err != nil {
		return nil, err
	}
	m.Data, m.TailCall, m.PercpuOffset = c, k.tailCallTarget, k.percpu.Offset(c.ID)
	return m, nil
}

// newStructOpsMap creates a struct_ops map from a MapSpec whose value is
// the user's struct (as cilium/ebpf's ELF reader makes them): the map's
// value is the kernel's struct bpf_struct_ops_<name>. The spec's contents
// name programs, so a collection fills them in once its programs are
// loaded (populateStructOps); NewMap leaves the map empty.
func (k *Kernel) newStructOpsMap(p *Process, spec *ebpf.MapSpec) (*Map, error) {
	st, ok := btf.As[*btf.Struct](spec.Value)
	if !ok {
		return nil, errors.Wrapf(uapi.EINVAL, "map %s: struct_ops: value must be a struct", spec.Name)
	}
	d, ok := k.structOps().reg.ByName(st.Name)
	if !ok {
		return nil, errors.Wrapf(uapi.ENOTSUPP, "map %s: struct_ops: %q is not simulated (no subsystem registered it)", spec.Name, structops.ValuePrefix+st.Name)
	}
	m, err := k.createMap(maps.Attr{
		Type:                  uapi.MapTypeStructOps,
		KeySize:               spec.KeySize,
		ValueSize:             d.ValueSize(),
		MaxEntries:            spec.MaxEntries,
		Flags:                 spec.Flags,
		Name:                  spec.Name,
		BTFVmlinuxValueTypeID: uint32(d.ValueTypeID),
	})
	if err != nil {
		return nil, errors.Wrapf(err, "map %s", spec.Name)
	}
	return p.newMapHandle(m)
}

// NewStructOpsMap is BPF_MAP_CREATE of a BPF_MAP_TYPE_STRUCT_OPS map with
// raw attributes: the value type's id in the kernel's BTF
// (btf_vmlinux_value_type_id), the value size and map_flags.
func (p *Process) NewStructOpsMap(name string, valueTypeID btf.TypeID, valueSize, flags uint32) (*Map, error) {
	k := p.k
	k.structOps()
	m, err := k.createMap(maps.Attr{Type: uapi.MapTypeStructOps, KeySize: 4, ValueSize: valueSize, MaxEntries: 1,
		Flags: flags, Name: name, BTFVmlinuxValueTypeID: uint32(valueTypeID)})
	if err != nil {
		return nil, err
	}
	return p.newMapHandle(m)
}

// updateStructOps is BPF_MAP_UPDATE_ELEM on a struct_ops map: the value's
// function members hold program fds of the handle's process (a *Program
// is accepted too, as cilium/ebpf accepts handles for fd values).
func (h *Map) updateStructOps(sm *structops.Map, key, value any, flags uint64) error {
	kb, err := marshal(key, int(h.m.KeySize))
	if err != nil {
		return err
	}
	vb, err := marshal(value, int(h.m.ValueSize))
	if err != nil {
		return err
	}
	return sm.Update(kb, vb, flags, func(fd int) (structops.Prog, error) {
		f, err := h.proc.fds.get(fd)
		if err != nil {
			return nil, err
		}
		prog, ok := f.obj.(*Program)
		if !ok {
			return nil, errors.Wrapf(uapi.EINVAL, "fd %d is not a program", fd)
		}
		if !prog.tryGet() {
			return nil, errors.Wrapf(uapi.EBADF, "fd %d: the program is gone", fd)
		}
		return structOpsProg{prog}, nil
	})
}

// lookupStructOps is BPF_MAP_LOOKUP_ELEM on a struct_ops map.
func (h *Map) lookupStructOps(sm *structops.Map, key []byte) ([]byte, error) {
	out := make([]byte, h.m.ValueSize)
	if err := sm.SysLookup(key, out); err != nil {
		return nil, err
	}
	return out, nil
}

// StructOps returns the struct_ops instance behind a struct_ops map
// handle, for inspection; nil for other maps.
func (h *Map) StructOps() *structops.Map {
	sm, _ := h.m.Ops.(*structops.Map)
	return sm
}

// Refs returns the map's reference and user reference counts.
func (h *Map) Refs() (refcnt, usercnt int64) { return h.m.Refs() }

// StructOpsLink is a struct_ops link (BPF_LINK_CREATE with a struct_ops
// map): an fd of its process, like cilium/ebpf's link.Link from
// link.AttachStructOps. It registers the map's instance until closed.
type StructOpsLink struct {
	k      *Kernel
	proc   *Process
	l      *structops.Link
	fd     int
	closed atomic.Bool
}

// AttachStructOps registers a BPF_F_LINK struct_ops map's instance through
// a new link (bpf_struct_ops_link_create).
func (p *Process) AttachStructOps(m *Map) (*StructOpsLink, error) {
	if m == nil {
		return nil, errors.Wrap(uapi.EINVAL, "nil map")
	}
	if m.proc != p {
		return nil, errors.Wrap(uapi.EBADF, "the map's fd belongs to another process")
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	if m.m.Attr.Type != uapi.MapTypeStructOps {
		return nil, errors.Wrapf(uapi.EINVAL, "map %s is not a struct_ops map", m.Name())
	}
	m.m.Get()
	l, err := structops.NewLink(m.m)
	if err != nil {
		m.m.Put()
		return nil, err
	}
	sl := &StructOpsLink{k: p.k, proc: p, l: l}
	f := p.k.newFile(sl, func(f *file) {
		f.k.openFiles.Add(-1)
		f.obj.(*StructOpsLink).l.Detach()
	})
	fd, err := p.fds.install(f)
	if err != nil {
		p.k.openFiles.Add(-1)
		l.Detach()
		return nil, err
	}
	sl.fd = fd
	return sl, nil
}

// AttachStructOps is Process.AttachStructOps for the map's process.
func (k *Kernel) AttachStructOps(m *Map) (*StructOpsLink, error) {
	if m == nil {
		return nil, errors.Wrap(uapi.EINVAL, "nil map")
	}
	return m.proc.AttachStructOps(m)
}

// FD returns the link's fd.
func (l *StructOpsLink) FD() int { return l.fd }

// Map returns the instance the link registers, nil once detached.
func (l *StructOpsLink) Map() *structops.Map { return l.l.Map() }

// Update switches the link to another ready BPF_F_LINK map of the same
// type (BPF_LINK_UPDATE): the subsystem's update callback runs, and the
// link's reference moves to m.
func (l *StructOpsLink) Update(m *Map) error {
	if l.closed.Load() {
		return errors.Wrap(uapi.EBADF, "link is closed")
	}
	if m == nil {
		return errors.Wrap(uapi.EINVAL, "nil map")
	}
	if err := m.check(); err != nil {
		return err
	}
	return l.l.Update(m.m, nil)
}

// Detach unregisters the instance now (BPF_LINK_DETACH); the fd stays open.
func (l *StructOpsLink) Detach() error {
	if l.closed.Load() {
		return errors.Wrap(uapi.EBADF, "link is closed")
	}
	l.l.Detach()
	return nil
}

// Close closes the link's fd; the last close unregisters the instance and
// drops the link's reference on its map.
func (l *StructOpsLink) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return nil
	}
	if err := l.proc.fds.close(l.fd); err != nil && !l.proc.fds.isClosed() {
		return err
	}
	return nil
}

// populateStructOps fills the collection's struct_ops maps once their
// programs are loaded, as cilium/ebpf's populateStructOps does: the user
// struct of the object is translated into the kernel's value type by
// member name, function members getting the fd of the program whose
// AttachTo names them.
func (c *Collection) populateStructOps(spec *ebpf.CollectionSpec) error {
	for _, name := range sortedKeys(c.Maps) {
		ms := spec.Maps[name]
		h := c.Maps[name]
		if ms == nil || ms.Type != ebpf.StructOpsMap || len(ms.Contents) == 0 {
			continue
		}
		sm := h.StructOps()
		if sm == nil {
			continue
		}
		userSt, ok := btf.As[*btf.Struct](ms.Value)
		if !ok {
			return errors.Wrapf(uapi.EINVAL, "map %s: struct_ops value is not a struct", name)
		}
		udata, ok := ms.Contents[0].Value.([]byte)
		if !ok || len(udata) < int(userSt.Size) {
			return errors.Wrapf(uapi.EINVAL, "map %s: struct_ops contents are not the struct's bytes", name)
		}
		d := sm.Desc()
		value := make([]byte, d.ValueSize())
		kdata := value[structops.DataOffset:]
		for _, um := range userSt.Members {
			size, err := btf.Sizeof(um.Type)
			if err != nil {
				return errors.Wrapf(uapi.EINVAL, "map %s: %s: %v", name, um.Name, err)
			}
			off := int(um.Offset.Bytes())
			src := udata[off : off+size]
			km, ok := d.MemberByName(um.Name)
			if !ok {
				if !isZeroBytes(src) {
					return errors.Wrapf(uapi.EINVAL, "map %s: %s doesn't exist in %s, but it has non-zero value", name, um.Name, d.Type.Name())
				}
				continue
			}
			if _, isPtr := btf.UnderlyingType(um.Type).(*btf.Pointer); isPtr {
				key := d.Type.Name() + ":" + um.Name
				for pname, ps := range spec.Programs {
					if ps.AttachTo != key {
						continue
					}
					if prog, ok := c.Programs[pname]; ok {
						binary.LittleEndian.PutUint64(kdata[km.Offset:], uint64(prog.FD()))
					}
				}
				continue
			}
			if uint32(size) != km.Size {
				return errors.Wrapf(uapi.EINVAL, "map %s: size mismatch for %s: user=%d kernel=%d", name, um.Name, size, km.Size)
			}
			copy(kdata[km.Offset:], src)
		}
		if err := h.Update(uint32(0), value, ebpf.UpdateAny); err != nil {
			return errors.Wrapf(err, "map %s: filling struct_ops", name)
		}
	}
	return nil
}

func isZeroBytes(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// RunCallback runs the program as an asynchronous callback of itself on
// CPU cpu, with args as its u64 context: what a bpf_timer callback is, run
// later, inside an RCU read-side section, with no reference on anything
// the program is associated with. Subsystems and tests use it to model
// callbacks of their own; map values' timers run theirs through the
// kernel's timers (timer.go).
func (p *Program) RunCallback(cpu int, args ...uint64) (uint64, error) {
	if !p.isOpen() || !p.tryGet() {
		return 0, errors.Wrap(uapi.EBADF, "program is closed")
	}
	defer p.put()
	return p.k.runStructOps(p, nil, cpu, args)
}
