package sim

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/jit_arm64"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// Program is a user-space handle on a program loaded into the simulated
// kernel: an open file descriptor, like cilium/ebpf's *ebpf.Program. The
// handle NewProgram returns is the one that loaded the program; opening
// it by id (process.go) or from a pin (pin.go) gives other handles on the
// same program, each with its own fd.
type Program struct {
	// bpfProg is the program itself, shared by every handle on it.
	*bpfProg

	// proc is the process whose fd the handle is; for the loading
	// handle, also the process whose fds the program's map references
	// are.
	proc   *Process
	fd     int
	file   *file
	closed atomic.Bool
	// pinnedPath is where this handle pinned the program, or the pin it
	// was loaded from (pin.go).
	pinnedPath string
}

// bpfProg is the kernel's struct bpf_prog: what was loaded, its id and
// its references (progobj.go).
type bpfProg struct {
	k *Kernel
	// loader is the handle that loaded the program, which stands for the
	// program in the kernel's tables (ids, prog array slots, JIT images,
	// pins) whatever handle reaches it.
	loader   *Program
	typ      ebpf.ProgramType
	name     string
	xlated   []insn.Insn
	subprogs []verifier.Subprog
	// jitReadsCurrent: the JITed code reads the current task's page
	// (jit.go).
	jitReadsCurrent bool
	// code is the program compiled for the interpreter. A JITed program
	// compiles it only when something runs it interpreted (interpCode):
	// most never are, and compiling cost a tenth of a load.
	code     *interp.Program
	codeOnce sync.Once
	codeErr  error
	// jit is the program's A64 image when it runs JITed; jitErr says
	// why a program of a JIT kernel does not (jit.go).
	jit    *jit_arm64.Image
	jitErr error
	// direct is the state of the image's direct tail calls
	// (jit_tailcall.go).
	direct *directSites
	// kfuncModules are the modules whose kfuncs the program calls, its
	// fd_array of module BTFs; it holds each (module.go).
	kfuncModules []*Module
	// usedMaps hold a reference on every map the program loads
	// (prog->aux->used_maps); mapLoads remember which lddw loads which
	// map, for the xlated dump.
	usedMaps []*maps.Map
	mapLoads []mapLoad // in instruction order
	// verified holds what the verifier found; nil for a program loaded
	// unverified.
	verified *verifier.Result
	// fixedUp says the verifier's rewrites ran (fixup.go): calls go to
	// kernel functions by address. lines and funcs are the BTF line info
	// and each subprogram's func info, if the program came with them.
	fixedUp bool
	// ctxConverted says the program reads the kernel's structure behind
	// its context (verifier.CtxConverter), not the uapi one: the
	// verifier's rewrites converted its context loads, or the code is
	// the kernel's own xlated code. A test run then passes it that
	// structure.
	ctxConverted bool
	lines        []verifier.LineInfo
	funcs        []*btf.Func
	// sleepable is BPF_F_SLEEPABLE: the program may sleep, so it runs
	// under RCU tasks trace rather than RCU, and may use only the map
	// types that wait for such readers.
	sleepable bool
	// attachType is the expected attach type it was loaded with, for the
	// program types whose rules depend on it (cgroup_skb's return codes).
	attachType ebpf.AttachType

	// The program as a kernel object (progobj.go): its id, its
	// references, and the poke descriptors of its tail calls.
	id     uint32
	refcnt atomic.Int64
	// aux is the address of the program's struct bpf_prog_aux, which
	// its calls of bpf_timer_set_callback pass (timer.go).
	aux   uint64
	obj   progObject
	pokes []verifier.PokeDesc
	poke  *pokeTracker

	// so is the program's struct_ops member and association
	// (structops.go).
	so progStructOps

	// iter is an iterator program's target; maxRdonly and maxRdwr are
	// what it reads of keys and reads or writes of values (iter.go).
	iter               *iterTarget
	maxRdonly, maxRdwr int

	// trace is an fentry or fexit program's function (fentry.go), and
	// btfCtx the context of a tracing program, iterators' too (iter.go).
	trace *TracedFunc
	// tp is a tp_btf program's tracepoint (tracepoint.go).
	tp     *Tracepoint
	btfCtx *verifier.BTFCtxType
}

// ProgramOptions control loading, as cilium/ebpf's ProgramOptions do.
type ProgramOptions struct {
	// LogLevel asks for the verifier log: LogLevelBranch (1) keeps the
	// path that failed, LogLevelInstruction (2) every instruction with
	// its state. It is returned by Program.VerifierLog and, on failure,
	// in the *verifier.Error.
	LogLevel ebpf.LogLevel
	// Unverified skips the verifier: the program runs as written, like
	// programs in conformance suites that the kernel would refuse. Off by
	// default; the raw harness type (UnspecifiedProgram) is always
	// unverified, since the kernel has no such type.
	Unverified bool
	// License is the program's license for LoadInsns and LoadBytecode
	// (NewProgram takes it from the spec); GPL-only helpers need a
	// GPL-compatible one. Empty means "GPL".
	License string
	// Flags are BPF_PROG_LOAD's prog_flags for LoadInsns and LoadBytecode
	// (NewProgram takes them from the spec), e.g. uapi.BPF_F_SLEEPABLE.
	Flags uint32
	// Runtime asks for a runtime: RuntimeJIT makes the load fail if the
	// JIT cannot translate the program (as with
	// CONFIG_BPF_JIT_ALWAYS_ON), where a JIT kernel would run it in the
	// interpreter. RuntimeDefault takes the kernel's.
	Runtime Runtime

	// AttachBTFID and ExpectedAttachType are BPF_PROG_LOAD's
	// attach_btf_id and expected_attach_type. A struct_ops program gives
	// its struct's id in the kernel's BTF and its member's index
	// (NewProgram finds them from ProgramSpec.AttachTo).
	AttachBTFID        uint32
	ExpectedAttachType uint32

	// KernelTypes, as cilium/ebpf's ProgramOptions.KernelTypes, are the
	// types NewProgram resolves CO-RE relocations against, in place of
	// the simulated kernel's BTF (Kernel.KernelBTF): a program written for
	// another kernel's layouts (btfhub's BTF, say) relocates as there.
	KernelTypes *btf.Spec

	// funcInfo records that the program has BTF function info.
	funcInfo bool
	// source is the program's BTF line and func info, carried through
	// the rewrites for the xlated dump.
	source *source
	// owned records that the instructions were made for this load, so
	// the load may keep them without a copy.
	owned bool
	// proc is the loading process (nil: the kernel's first).
	proc *Process
	// kfuncModules is the program's fd_array of module BTFs: the modules
	// whose kfuncs it calls, the first at call offset 1.
	kfuncModules []*Module
}

// mapLoad is one resolved map reference: an lddw of a map pointer or, with
// value set, of the address off bytes into the map's value.
type mapLoad = verifier.MapRef

// supportedTypes lists the program types bpfsim can load and test-run
// today, with what their context is.
var supportedTypes = map[ebpf.ProgramType]string{
	ebpf.XDP:                "struct xdp_md",
	ebpf.SocketFilter:       "struct __sk_buff; data starts after the Ethernet header",
	ebpf.SchedCLS:           "struct __sk_buff; data starts at the Ethernet header",
	ebpf.SchedACT:           "struct __sk_buff; data starts at the Ethernet header",
	ebpf.CGroupSKB:          "struct __sk_buff; data starts after the Ethernet header; read-only packet",
	ebpf.Kprobe:             "raw context bytes (struct pt_regs), read-only",
	ebpf.TracePoint:         "raw context bytes (the tracepoint's record), read-only",
	ebpf.RawTracepoint:      "raw context bytes (the u64 arguments), read-only",
	ebpf.Syscall:            "raw context bytes",
	ebpf.StructOps:          "the u64 array of the member's arguments, kernel objects among them; run through its struct_ops map, or test-run for bpf_dummy_ops (structops.go, dummyops.go)",
	ebpf.Tracing:            "iterators (SEC(\"iter/bpf_map\"), SEC(\"iter/bpf_map_elem\")): struct bpf_iter__<target>, run by reading an iterator link (iter.go); fentry and fexit: the u64 array of the function's arguments (and return value), run by calls of a TracedFunc (fentry.go); tp_btf: the u64 array of a tracepoint's arguments, run when it fires (tracepoint.go)",
	ebpf.SkLookup:           "struct bpf_sk_lookup, read as the kernel's struct bpf_sk_lookup_kern; a test run's context in and out; sockets not simulated (sklookup.go)",
	ebpf.UnspecifiedProgram: "raw memory: r1 = pointer to Data, r2 = its length",
}

// NewProgram loads a program described by a cilium/ebpf ProgramSpec.
//
// bpfsim accepts UnspecifiedProgram, which the kernel does not: it is a raw
// harness where r1 points to a copy of RunOptions.Data and r2 holds its
// length, as the bpf_conformance suite expects.
func (k *Kernel) NewProgram(spec *ebpf.ProgramSpec) (*Program, error) {
	return k.NewProgramWithOptions(spec, ProgramOptions{})
}

// NewProgramWithOptions is NewProgram with load options.
func (k *Kernel) NewProgramWithOptions(spec *ebpf.ProgramSpec, opts ProgramOptions) (*Program, error) {
	if spec == nil {
		return nil, errors.Wrap(uapi.EINVAL, "nil ProgramSpec")
	}
	if spec.ByteOrder != nil && spec.ByteOrder.String() != binary.LittleEndian.String() {
		return nil, errors.Wrapf(uapi.EINVAL, "program %s is %s: the simulated kernel is little-endian", spec.Name, spec.ByteOrder)
	}
	ins, poison, err := k.relocateCORE(spec.Instructions, opts.KernelTypes) // corereloc.go
	if err != nil {
		return nil, errors.Wrapf(err, "program %s", spec.Name)
	}
	ins, kconfig, err := k.resolveExterns(opts.proc, ins) // externs.go
	if err != nil {
		return nil, errors.Wrapf(err, "program %s", spec.Name)
	}
	if kconfig != nil {
		// The program holds its .kconfig map once loaded, as the
		// kernel holds a program's maps; the loader's fd goes.
		defer kconfig.Close()
	}
	ins, opts.kfuncModules, err = k.resolveKfuncCalls(ins) // kfunc.go
	if err != nil {
		return nil, errors.Wrapf(err, "program %s", spec.Name)
	}
	insns, meta, err := fromAsm(ins)
	if err != nil {
		return nil, errors.Wrapf(err, "program %s", spec.Name)
	}
	opts.License = spec.License
	opts.Flags = spec.Flags
	if err := k.structOpsAttachOf(spec, &opts); err != nil { // structops.go
		return nil, err
	}
	if err := k.iterAttachOf(spec, &opts); err != nil { // iter.go
		return nil, err
	}
	if spec.Type != ebpf.StructOps && opts.ExpectedAttachType == 0 {
		opts.ExpectedAttachType = uint32(spec.AttachType)
	}
	// cilium/ebpf hands the kernel BTF line and function info when the
	// instructions carry any (btf.MarshalExtInfos): programs from ELF
	// objects with BTF; hand-written ones and raw bytecode come without.
	if meta {
		opts.source = sourceOf(spec.Instructions)
	}
	opts.funcInfo = opts.source != nil
	opts.owned = true
	if opts.License == "" {
		opts.License = "unspecified"
	}
	p, err := k.LoadInsnsWithOptions(spec.Type, spec.Name, insns, opts)
	return p, poison.explain(err)
}

// LoadBytecode loads raw little-endian BPF bytecode.
func (k *Kernel) LoadBytecode(typ ebpf.ProgramType, name string, code []byte) (*Program, error) {
	return k.LoadBytecodeWithOptions(typ, name, code, ProgramOptions{})
}

// LoadBytecodeWithOptions is LoadBytecode with load options.
func (k *Kernel) LoadBytecodeWithOptions(typ ebpf.ProgramType, name string, code []byte, opts ProgramOptions) (*Program, error) {
	insns, err := insn.Decode(code)
	if err != nil {
		return nil, err
	}
	opts.owned = true
	return k.LoadInsnsWithOptions(typ, name, insns, opts)
}

// LoadInsns loads decoded instructions: the common path of every loader.
// Map references are lddw instructions whose source is BPF_PSEUDO_MAP_FD
// or BPF_PSEUDO_MAP_VALUE with a map's fd in imm (Map.FD).
func (k *Kernel) LoadInsns(typ ebpf.ProgramType, name string, insns []insn.Insn) (*Program, error) {
	return k.LoadInsnsWithOptions(typ, name, insns, ProgramOptions{})
}

// LoadInsnsWithOptions is LoadInsns with load options.
func (k *Kernel) LoadInsnsWithOptions(typ ebpf.ProgramType, name string, insns []insn.Insn, opts ProgramOptions) (*Program, error) {
	if _, ok := supportedTypes[typ]; !ok {
		return nil, errors.Wrapf(uapi.EINVAL, "program type %s is not supported by bpfsim yet", typ)
	}
	if opts.Flags&^uapi.ProgLoadFlags != 0 {
		return nil, errors.Wrapf(uapi.EINVAL, "unknown prog_flags %#x", opts.Flags&^uapi.ProgLoadFlags)
	}
	if !opts.owned {
		insns = append([]insn.Insn(nil), insns...)
	}
	subs, err := verifier.CheckStructure(insns)
	if err != nil {
		return nil, err
	}
	proc := opts.proc
	if proc == nil {
		proc = k.init
	}
	if err := checkExpectedAttach(typ, opts.ExpectedAttachType); err != nil {
		return nil, err
	}
	p := k.newProgram(typ, name)
	p.proc, p.sleepable = proc, opts.Flags&uapi.BPF_F_SLEEPABLE != 0
	if len(opts.kfuncModules) > 0 {
		if err := k.holdModules(opts.kfuncModules); err != nil { // module.go
			p.Close()
			return nil, err
		}
		p.kfuncModules = opts.kfuncModules
	}
	if typ != ebpf.StructOps {
		p.attachType = ebpf.AttachType(opts.ExpectedAttachType)
	}
	p.xlated, p.subprogs = insns, subs
	if err := k.prepareStructOpsLoad(p, insns, opts); err != nil { // structops.go
		p.Close()
		return nil, err
	}
	if err := k.prepareIterLoad(p, opts); err != nil { // iter.go
		p.Close()
		return nil, err
	}
	if err := p.resolvePseudoLdImm64(); err != nil {
		p.Close()
		return nil, err
	}
	if !opts.Unverified && typ != ebpf.UnspecifiedProgram {
		if err := checkSleepable(typ, p.sleepable); err != nil {
			p.Close()
			return nil, err
		}
		if err := checkTailCallReturns(p.xlated, p.subprogs, opts.source); err != nil {
			p.Close()
			return nil, err
		}
		if p.verified, err = k.verify(p, opts); err != nil {
			p.Close()
			return nil, err
		}
		p.maxRdonly, p.maxRdwr = p.verified.MaxRdonlyAccess, p.verified.MaxRdwrAccess
		if err := k.fixup(p, opts.source); err != nil {
			p.Close()
			return nil, err
		}
	} else {
		err := verifier.CheckRegisters(insns)
		if err == nil {
			// The interpreter needs a packet for these; the verifier
			// refuses them elsewhere, and unverified programs still may
			// not.
			err = checkLdAbs(typ, insns)
		}
		if err != nil {
			p.Close()
			return nil, err
		}
	}
	if err := k.jitCompile(p, opts); err != nil {
		p.Close()
		return nil, err
	}
	if p.jit == nil {
		if _, err := p.interpCode(); err != nil {
			p.Close()
			return nil, err
		}
	}
	if err := p.checkTailCallMaps(); err != nil {
		p.Close()
		return nil, err
	}
	if err := k.publish(p); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// checkExpectedAttach is bpf_prog_load_check_attach for the types whose
// expected attach type bpfsim looks at: a cgroup_skb program is for
// ingress or egress.
func checkExpectedAttach(typ ebpf.ProgramType, attach uint32) error {
	if typ == ebpf.SkLookup && attach != uint32(ebpf.AttachSkLookup) {
		return errors.Wrapf(uapi.EINVAL, "sk_lookup program with expected attach type %d: want BPF_SK_LOOKUP", attach)
	}
	if typ == ebpf.CGroupSKB && attach != uint32(ebpf.AttachCGroupInetIngress) && attach != uint32(ebpf.AttachCGroupInetEgress) {
		return errors.Wrapf(uapi.EINVAL, "cgroup_skb program with expected attach type %d: want BPF_CGROUP_INET_INGRESS or BPF_CGROUP_INET_EGRESS", attach)
	}
	return nil
}

// interpCode returns the program compiled for the interpreter, compiling
// it on first use.
func (p *Program) interpCode() (*interp.Program, error) {
	p.codeOnce.Do(func() {
		if p.code != nil {
			return // LoadXlated compiled it
		}
		resolve := p.k.resolveHelper
		if p.fixedUp {
			resolve = p.k.resolveCall // calls are direct after the rewrites
		}
		p.code, p.codeErr = interp.Compile(p.xlated, resolve)
	})
	return p.code, p.codeErr
}

// verify runs the verifier on a program whose maps are resolved.
func (k *Kernel) verify(p *Program, opts ProgramOptions) (*verifier.Result, error) {
	pt, ok := k.progTypeFor(p) // structops.go
	if !ok {
		return nil, errors.Wrapf(uapi.EINVAL, "program type %s cannot be verified by bpfsim yet", p.typ)
	}
	license := opts.License
	if license == "" {
		license = "GPL"
	}
	level := 0
	switch {
	case opts.LogLevel&ebpf.LogLevelInstruction != 0:
		level = 2
	case opts.LogLevel&ebpf.LogLevelBranch != 0:
		level = 1
	}
	// A pooled Config: the verifier keeps none after it returns.
	cfg := configPool.Get().(*verifier.Config)
	*cfg = verifier.Config{
		Type:          pt,
		Sleepable:     p.sleepable,
		TestStateFreq: opts.Flags&uapi.BPF_F_TEST_STATE_FREQ != 0,
		Maps:          p.mapLoads,
		Helper:        k.helperProtoFor(p.typ, p.attachType),
		LogLevel:      level,
		GPLCompatible: gplCompatible(license),
		NumCPUs:       k.NumCPUs(),
		FuncInfo:      opts.funcInfo,
		FuncBTF:       opts.source.funcBTF,
		Lines:         opts.source.lineInfo(),
		Subprogs:      p.subprogs,
		SubprogsOwned: true,               // found by CheckStructure for this load
		Kfunc:         k.kfuncResolver(p), // kfunc.go
	}
	res, err := verifier.Verify(p.xlated, cfg)
	*cfg = verifier.Config{}
	configPool.Put(cfg)
	var ve *verifier.Error
	if errors.As(err, &ve) && strings.HasPrefix(ve.Msg, "program of this type cannot use helper ") && !k.simulatesHelper(ve.Msg, p.typ) {
		// A helper bpfsim refuses for every type is one it has not
		// simulated yet, and so is one it lacks only the variant of
		// this type for. Say so, keeping the kernel's message and errno.
		err = errors.Wrap(err, "the helper is not simulated by bpfsim yet")
	}
	return res, err
}

var configPool = sync.Pool{New: func() any { return new(verifier.Config) }}

// helperProto is the verifier's view of the helper table.
func (k *Kernel) helperProto(id int32) *verifier.FuncProto {
	k.mu.Lock()
	h, ok := k.helpers[id]
	k.mu.Unlock()
	switch {
	case !ok:
		return nil
	case h.Proto != nil:
		return h.Proto
	case verifier.HelperProtos[id] != nil:
		return verifier.HelperProtos[id]
	}
	return verifier.UncheckedProto
}

// helperProtoFor returns the helper prototypes a program of type typ sees:
// helperProto's, less the helpers registered for other types only (the
// kernel's per-type func_proto tables). The functions are made once per
// type, so that a load allocates none.
func (k *Kernel) helperProtoFor(typ ebpf.ProgramType, attach ebpf.AttachType) func(int32) *verifier.FuncProto {
	fn := k.helperProtoForType(typ)
	if typ == ebpf.Tracing && attach == ebpf.AttachTraceIter {
		// Iterators have no attach cookie (attachcookie.go).
		return func(id int32) *verifier.FuncProto {
			if id == funcGetAttachCookie {
				return nil
			}
			return fn(id)
		}
	}
	if typ != ebpf.Tracing {
		return fn
	}
	// tracing_prog_func_proto: the seq_file helpers are the iterators'.
	return func(id int32) *verifier.FuncProto {
		if id == funcSeqPrintf || id == funcSeqWrite {
			return nil
		}
		return fn(id)
	}
}

func (k *Kernel) helperProtoForType(typ ebpf.ProgramType) func(int32) *verifier.FuncProto {
	k.mu.Lock()
	defer k.mu.Unlock()
	if fn, ok := k.helperProtoByType[typ]; ok {
		return fn
	}
	fn := func(id int32) *verifier.FuncProto {
		if types, ok := k.helperTypes[id]; ok && !slices.Contains(types, typ) {
			return nil
		}
		k.mu.Lock()
		p := k.helperTypeProtos[id][typ]
		k.mu.Unlock()
		if p != nil {
			return p
		}
		return k.helperProto(id)
	}
	k.helperProtoByType[typ] = fn
	return fn
}

// simulatesHelper says whether the helper a "cannot use helper name#id"
// message names is one bpfsim has (for other program types).
func (k *Kernel) simulatesHelper(msg string, typ ebpf.ProgramType) bool {
	i := strings.LastIndexByte(msg, '#')
	id, err := strconv.Atoi(strings.TrimSpace(msg[i+1:]))
	if i < 0 || err != nil {
		return false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.helpers[int32(id)]
	return ok && !slices.Contains(k.helperVariantsMissing[int32(id)], typ)
}

// gplCompatible is license_is_gpl_compatible.
func gplCompatible(license string) bool {
	switch license {
	case "GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL", "Dual MIT/GPL", "Dual MPL/GPL":
		return true
	}
	return false
}

// VerifierLog returns the verifier's log of a successful load, at the
// level ProgramOptions asked for (empty at level 0 and for unverified
// programs).
func (p *Program) VerifierLog() string {
	if p.verified == nil {
		return ""
	}
	return p.verified.Log
}

// resolvePseudoLdImm64 mirrors the kernel's pass of the same name: each
// lddw of a map fd becomes an lddw of the map's address (or of an address
// in its value), and the program takes a reference on the map.
func (p *Program) resolvePseudoLdImm64() error {
	insns := p.xlated
	// Programs load the same map many times; one fd table lookup (and
	// its lock) per distinct fd in a row is enough.
	lastFD, last := int32(-1), (*file)(nil)
	for i := 0; i < len(insns); i++ {
		in := insns[i]
		if !in.IsLdImm64() {
			continue
		}
		i++ // skip the second slot, whatever happens
		switch in.Src {
		case 0:
			continue
		case insn.PseudoFunc:
			// A callback's address: the verifier checks it names a
			// function (a PTR_TO_FUNC); the runtimes resolve it.
			continue
		case insn.PseudoMapFD, insn.PseudoMapValue:
		default:
			return errors.Wrapf(uapi.EINVAL, "insn %d: lddw with pseudo source %d is not supported by bpfsim yet", i-1, in.Src)
		}
		f := last
		if in.Imm != lastFD || f == nil {
			var err error
			if f, err = p.proc.fds.get(int(in.Imm)); err != nil {
				return errors.WithStack(&verifier.Error{Errno: uapi.EBADF, Msg: fmt.Sprintf("fd %d is not pointing to valid bpf_map", in.Imm)})
			}
			lastFD, last = in.Imm, f
		}
		m, ok := f.obj.(*maps.Map)
		if !ok {
			return errors.WithStack(&verifier.Error{Errno: uapi.EINVAL, Msg: fmt.Sprintf("fd %d is not pointing to valid bpf_map", in.Imm)})
		}
		if p.sleepable && !sleepableMapTypes[m.Attr.Type] && isBuiltinMapType(m.Attr.Type) {
			// check_map_prog_compatibility, as the map is added to the
			// program's used maps. A type registered from outside the
			// kernel is its author's to make safe for sleepable readers.
			return errors.WithStack(&verifier.Error{Errno: uapi.EINVAL, Msg: "Sleepable programs can only use array, hash, ringbuf and local storage maps"})
		}
		load := mapLoad{Insn: i - 1, Map: m}
		addr := m.Addr
		if in.Src == insn.PseudoMapValue {
			// The kernel's messages, in the verifier log.
			dv, ok := m.Ops.(maps.DirectValuer)
			if !ok {
				return errors.WithStack(&verifier.Error{Errno: uapi.EINVAL, Msg: "no direct value access support for this map type"})
			}
			load.Value, load.Off = true, uint32(insns[i].Imm)
			var err error
			if addr, err = dv.DirectValueAddr(load.Off); err != nil {
				if errors.Is(err, maps.ErrNoDirectValue) {
					return errors.WithStack(&verifier.Error{Errno: uapi.EINVAL, Msg: "no direct value access support for this map type"})
				}
				var errno uapi.Errno
				if !errors.As(err, &errno) {
					errno = uapi.EINVAL
				}
				return errors.WithStack(&verifier.Error{Errno: errno, Msg: fmt.Sprintf("invalid access to map value pointer, value_size=%d off=%d", m.Attr.ValueSize, load.Off)})
			}
		}
		insns[i-1].Src, insns[i-1].Imm, insns[i].Imm = 0, int32(uint32(addr)), int32(uint32(addr>>32))
		if p.mapLoads == nil {
			// Sized once: programs of many map loads exist (test_tag's).
			n := 0
			for j := i - 1; j < len(insns); j++ {
				if insns[j].IsLdImm64() && insns[j].Src != 0 {
					n++
				}
			}
			p.mapLoads = make([]mapLoad, 0, n)
		}
		p.mapLoads = append(p.mapLoads, load)
		p.useMap(m)
	}
	return nil
}

// useMap adds m to the program's used maps, taking a reference once.
func (p *Program) useMap(m *maps.Map) {
	for _, u := range p.usedMaps {
		if u == m {
			return
		}
	}
	m.Get()
	p.usedMaps = append(p.usedMaps, m)
}

// Close closes the handle's fd: the last fd on its file drops the file's
// reference. The program lives on while other handles, pins or prog
// array slots hold it; once the last reference goes, its id is released
// and, after a grace period, its used maps.
func (p *Program) Close() error {
	if !p.closed.CompareAndSwap(false, true) {
		return nil
	}
	if p.file == nil {
		p.put() // never published: the load's own reference
		return nil
	}
	// The fd's file holds the handle's reference. A process that has
	// exited closed it already.
	if err := p.proc.fds.close(p.fd); err != nil && !p.proc.fds.isClosed() {
		return err
	}
	return nil
}

// isOpen reports whether the handle may still be used: not closed, and
// its fd not closed by its process's exit.
func (p *Program) isOpen() bool {
	return !p.closed.Load() && (p.file == nil || p.file.fds.Load() > 0)
}

// LoadXlated loads instructions that are already xlated, such as a program
// read back from the kernel with BPF_OBJ_GET_INFO_BY_FD: it skips the
// checks meant for programs from user space (xlated code may use the
// kernel's AX register) and runs them as they are. It exists for
// differential analysis; programs should come through LoadInsns.
func (k *Kernel) LoadXlated(typ ebpf.ProgramType, name string, insns []insn.Insn) (*Program, error) {
	if _, ok := supportedTypes[typ]; !ok {
		return nil, errors.Wrapf(uapi.EINVAL, "program type %s is not supported by bpfsim yet", typ)
	}
	insns = fromDump(insns)
	code, err := interp.Compile(insns, k.resolveHelper)
	if err != nil {
		return nil, err
	}
	p := k.newProgram(typ, name)
	p.xlated, p.code = insns, code
	p.ctxConverted = convertsCtx(typ)
	if err := k.publish(p); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// fromAsm encodes cilium/ebpf instructions, refusing what this simulated
// kernel cannot resolve yet. meta says that some instruction carries
// metadata (symbols, references, source lines...).
func fromAsm(in asm.Instructions) (_ []insn.Insn, meta bool, _ error) {
	if len(in) == 0 {
		return nil, false, errors.Wrap(uapi.E2BIG, "no instructions")
	}
	for i := range in {
		ins := &in[i]
		if insn.HasMetadata(ins) {
			meta = true
		} else {
			// No reference, map, kfunc name or relocation: only a raw
			// lddw of fd 0 is refused (read as a .kconfig extern, below).
			if ins.IsLoadFromMap() && uint32(ins.Constant) == 0 {
				return nil, false, errors.Wrapf(uapi.EINVAL, "instruction %d loads from map fd 0 with no map: a .kconfig extern whose section was lost (load the program through its CollectionSpec)", i)
			}
			if !ins.IsKfuncCall() || ins.Constant >= 0 {
				continue
			}
		}
		switch {
		case ins.IsLoadFromMap() && ins.Reference() == "" && ins.Map() == nil && uint32(ins.Constant) == 0:
			// cilium/ebpf leaves .kconfig externs unnamed, with no fd,
			// until the loader makes their map (externs.go): this
			// one's section was lost on the way.
			return nil, false, errors.Wrapf(uapi.EINVAL, "instruction %d loads from map fd 0 with no map: a .kconfig extern whose section was lost (load the program through its CollectionSpec)", i)
		case ins.IsLoadFromMap() && ins.Reference() == "" && ins.Map() == nil:
			// A raw map fd (asm.LoadMapPtr): resolved like bytecode.
		case ins.IsLoadFromMap():
			// Maps are resolved by fd: the instruction must have been
			// associated with a *Map (AssociateMap), as cilium/ebpf needs
			// an *ebpf.Map.
			if _, ok := ins.Map().(*Map); !ok {
				return nil, false, errors.Wrapf(uapi.EINVAL, "instruction %d loads map %q, which is not a bpfsim map: load it with the collection or associate a *sim.Map", i, ins.Reference())
			}
		case ins.OpCode.IsDWordLoad() && ins.Reference() != "" && !ins.IsLoadOfFunctionPointer():
			// Neither a map, a function nor an extern (externs.go
			// resolved those): a symbol of inline assembly, which
			// cilium/ebpf leaves as a reference and loads as the
			// constant it has, as does bpfsim.
		case ins.IsKfuncCall() && ins.Constant < 0:
			return nil, false, errors.Wrapf(uapi.EINVAL, "instruction %d calls kfunc %q, which was not resolved to a BTF id", i, ins.Reference())
		}
	}
	insns, err := insn.FromAsm(in)
	return insns, meta, err
}

// Type returns the program type.
func (p *Program) Type() ebpf.ProgramType { return p.typ }

// Name returns the program's name.
func (p *Program) Name() string { return p.name }

// Instructions returns the xlated instructions: what the simulated kernel
// runs after loading.
//
// As BPF_OBJ_GET_INFO_BY_FD does (bpf_insn_prepare_dump), a tail call
// shows as the helper call it was written as.
func (p *Program) Instructions() []insn.Insn { return toDump(p.xlated) }

// Xlated renders the xlated program in the syntax of
// `bpftool prog dump xlated`: map pointers print as map[id:N], addresses
// in a map's value as map[id:N][0]+off, direct calls by the name of the
// kernel function they reach. For programs from an ELF object with BTF,
// each function is headed by its signature and each source line is
// printed, after "; ", before the first instruction compiled from it.
func (p *Program) Xlated() string {
	sym := p.xlatedSymbols()
	var b strings.Builder
	sub, line := 0, 0
	dump := toDump(p.xlated)
	for i := 0; i < len(p.xlated); i++ {
		for sub < len(p.subprogs) && p.subprogs[sub].Start < i {
			sub++
		}
		if sub < len(p.funcs) && sub < len(p.subprogs) && p.subprogs[sub].Start == i && p.funcs[sub] != nil {
			if sig := funcSignature(p.funcs[sub]); sig != "" {
				b.WriteString(sig + ":\n")
			}
		}
		if l, ok := p.lineAt(i, &line); ok {
			b.WriteString("; " + strings.TrimLeft(l.Line.String(), " \t\n\v\f\r") + "\n")
		}
		fmt.Fprintf(&b, "%4d: %s\n", i, insn.Format(dump, i, sym))
		if p.xlated[i].IsLdImm64() {
			i++
		}
	}
	return b.String()
}

// xlatedSymbols names what a dump shows symbolically: maps and the kernel
// functions of direct calls.
func (p *Program) xlatedSymbols() *insn.Symbols {
	sym := &insn.Symbols{Imm64: func(i int, _ insn.Insn, _ uint64) string {
		l, ok := verifier.FindMapRef(p.mapLoads, i)
		switch {
		case !ok:
			return ""
		case l.Value:
			return fmt.Sprintf("map[id:%d][0]+%d", l.Map.ID, l.Off)
		}
		return fmt.Sprintf("map[id:%d]", l.Map.ID)
	}}
	if p.fixedUp {
		sym.Call = func(_ int, in insn.Insn) string {
			// Helpers and kfuncs are called by address after the
			// fix-ups; bpftool names both from the kernel's symbols.
			if in.Src != 0 && in.Src != insn.PseudoKfuncCall {
				return ""
			}
			return p.k.callName(in.Imm)
		}
	}
	return sym
}

// Kernel returns the kernel the program is loaded in.
func (p *Program) Kernel() *Kernel { return p.k }

// VerifiedInstructions is the number of instructions the verifier
// processed, counting every path (the kernel's "processed N insns",
// bpf_prog_info.verified_insns); false for an unverified program.
func (p *Program) VerifiedInstructions() (int, bool) {
	if p.verified == nil {
		return 0, false
	}
	return p.verified.InsnProcessed, true
}
