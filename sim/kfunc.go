package sim

import (
	"slices"
	"strconv"
	"sync"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/kfunc"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/splitbtf"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// kfuncs: kernel functions that programs call by BTF id
// (BPF_PSEUDO_KFUNC_CALL), kernel/bpf/btf.c's kfunc id sets and
// verifier.c's add_kfunc_call and fixup_kfunc_call.
//
// The simulated kernel has a vmlinux BTF of its own (kernelBTF), which
// grows as subsystems register struct_ops types and kfuncs. A kfunc gets a
// BTF id there, which programs put in the call's imm (cilium/ebpf's ELF
// loader finds it by name, as against a real kernel), and a slot in the
// kernel's text (ksyms.go): after the fix-ups a kfunc call's imm is its
// address relative to __bpf_call_base, the same as a helper's, so neither
// the interpreter nor a JIT treats kfunc calls specially.

// ksymKfunc is the kind of a kfunc's symbol; its spec's helper field holds
// the kfunc's BTF id. A module's kfunc has a symbol of kind
// ksymModuleKfunc, found by name.
const (
	ksymKfunc       ksymKind = 100
	ksymModuleKfunc ksymKind = 101
)

// kernelBTF is the simulated vmlinux BTF. It starts with the types of
// vmlinux proper (seed: package vmlinuxbtf's, see corereloc.go), made on
// first use, so that kernels that never need BTF pay nothing.
type kernelBTF struct {
	mu   sync.Mutex
	b    *btf.Builder
	seed func() ([]btf.Type, error)
	// spec is b as a Spec, made when asked for and dropped by Add: CO-RE
	// relocations read it at every load.
	spec *btf.Spec
	// named are the seed's types by name, for types built on them.
	named map[string]btf.Type
	// rawBTF is b as raw BTF, made with spec by raw (module.go) and
	// dropped with it.
	rawBTF *splitbtf.BTF
}

// builder returns the BTF under construction, seeding it the first time.
// kb.mu is held.
func (kb *kernelBTF) builder() (*btf.Builder, error) {
	if kb.b != nil {
		return kb.b, nil
	}
	// Deduplicated, as pahole leaves vmlinux BTF: the types bpfsim adds
	// (task.go's, kfunc prototypes) build on ints and typedefs of
	// their own, and a kernel BTF with two "unsigned int"s could not
	// stand in for a module's distilled base (module.go).
	b, err := btf.NewBuilder(nil, &btf.BuilderOptions{Deduplicate: true})
	if err != nil {
		return nil, err
	}
	if kb.seed != nil {
		types, err := kb.seed()
		if err != nil {
			return nil, err
		}
		kb.named = map[string]btf.Type{}
		for _, t := range types {
			if _, err := b.Add(t); err != nil {
				return nil, errors.Wrapf(err, "vmlinux BTF: %s", t)
			}
			if n := t.TypeName(); n != "" && kb.named[n] == nil {
				kb.named[n] = t
			}
		}
		// Every type the seed reaches gets its id now. The builder
		// numbers the types it was given first and those they reach
		// after, so a type reached only through another (an int under
		// a typedef) would move each time a type is added later; the
		// kernel's ids never move.
		seen := map[btf.Type]bool{}
		var reach func(btf.Type) error
		reach = func(t btf.Type) error {
			if t == nil || seen[t] {
				return nil
			}
			seen[t] = true
			if _, err := b.Add(t); err != nil {
				return errors.Wrapf(err, "vmlinux BTF: %s", t)
			}
			for _, c := range btfChildren(t) {
				if err := reach(c); err != nil {
					return err
				}
			}
			return nil
		}
		for _, t := range types {
			if err := reach(t); err != nil {
				return nil, err
			}
		}
	}
	kb.b = b
	return b, nil
}

// withTypes returns the prototype build makes from the seed's types,
// found by name: the prototype refers to the very types in the BTF, so
// adding it adds none of them twice.
func (kb *kernelBTF) withTypes(build func(typ func(string) btf.Type) *btf.FuncProto) (*btf.FuncProto, error) {
	kb.mu.Lock()
	defer kb.mu.Unlock()
	if _, err := kb.builder(); err != nil {
		return nil, err
	}
	var missing string
	fp := build(func(name string) btf.Type {
		if t, ok := kb.named[name]; ok {
			return t
		}
		missing = name
		return &btf.Void{}
	})
	if missing != "" {
		return nil, errors.Wrapf(uapi.ENOENT, "vmlinux BTF has no type %s", missing)
	}
	return fp, nil
}

// Add adds t to the kernel's BTF and returns its id.
func (kb *kernelBTF) Add(t btf.Type) (btf.TypeID, error) {
	kb.mu.Lock()
	defer kb.mu.Unlock()
	b, err := kb.builder()
	if err != nil {
		return 0, err
	}
	id, err := b.Add(t)
	if err != nil {
		return 0, errors.Wrap(uapi.EINVAL, err.Error())
	}
	kb.spec = nil
	kb.rawBTF = nil
	return id, nil
}

// Spec returns the kernel's BTF as it is now, shared: callers must not
// change it.
func (kb *kernelBTF) Spec() (*btf.Spec, error) {
	kb.mu.Lock()
	defer kb.mu.Unlock()
	if kb.spec != nil {
		return kb.spec, nil
	}
	b, err := kb.builder()
	if err != nil {
		return nil, err
	}
	if kb.spec, err = b.Spec(); err != nil {
		return nil, err
	}
	return kb.spec, nil
}

// KernelBTF returns the simulated kernel's BTF as it is now: vmlinux's
// types (package vmlinuxbtf), then the struct_ops types and kfuncs
// registered so far, with the ids programs use. It is what CO-RE
// relocations are resolved against, unless a load names other types
// (ProgramOptions.KernelTypes). The Spec is the caller's to change.
func (k *Kernel) KernelBTF() (*btf.Spec, error) {
	s, err := k.so.btf.Spec()
	if err != nil {
		return nil, err
	}
	return s.Copy(), nil
}

// kfuncEntry is one registered kfunc.
type kfuncEntry struct {
	f      *kfunc.Func
	id     btf.TypeID
	proto  *verifier.KfuncProto
	helper *interp.Helper
	// internal kfuncs are in no program type's id set: only the
	// verifier's fix-ups call them.
	internal bool
	// module is the module whose BTF has the kfunc, nil for vmlinux's
	// (module.go); id is then an id of the module's BTF.
	module *Module
}

// kfuncTable is the kernel's kfuncs: vmlinux's by BTF id, and every
// kfunc, modules' too, by name (names are unique here, so that a call
// resolved by name finds one).
type kfuncTable struct {
	mu     sync.RWMutex
	byID   map[btf.TypeID]*kfuncEntry
	byName map[string]*kfuncEntry
}

// RegisterKfunc makes f callable by programs loaded afterwards: it gets a
// BTF id in the kernel's BTF and an address in its text. Its prototype
// must be one the verifier simulates (see verifier.NewKfuncProto). A name
// may be registered once (EEXIST).
func (k *Kernel) RegisterKfunc(f *kfunc.Func) error { return k.registerKfunc(f, false) }

// registerKfunc is RegisterKfunc; an internal kfunc is in no program
// type's id set.
func (k *Kernel) registerKfunc(f *kfunc.Func, internal bool) error {
	if f == nil || f.Name == "" || f.Fn == nil || f.Proto == nil {
		return errors.Wrap(uapi.EINVAL, "kfunc needs a name, a prototype and a function")
	}
	if f.Inline != nil {
		if err := verifier.CheckInlineBody(f.Name, f.Inline); err != nil {
			return err
		}
	}
	st := &k.so
	t := &st.kfuncs
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.byName[f.Name]; ok {
		return errors.Wrapf(uapi.EEXIST, "kfunc %s is already registered", f.Name)
	}
	id, err := st.btf.Add(&btf.Func{Name: f.Name, Type: f.Proto, Linkage: btf.GlobalFunc})
	if err != nil {
		return err
	}
	proto, err := verifier.NewKfuncProto(f.Name, int32(id), f.Proto, uint32(f.Flags))
	if err != nil {
		return err
	}
	proto.Body = f.Inline
	if _, err := k.ksyms.define(ksymSpec{name: f.Name, kind: ksymKfunc, helper: int32(id)}, 0); err != nil {
		return err
	}
	e := &kfuncEntry{f: f, id: id, proto: proto, helper: &interp.Helper{ID: int32(id), Name: f.Name, Fn: f.Fn}, internal: internal}
	if t.byID == nil {
		t.byID, t.byName = map[btf.TypeID]*kfuncEntry{}, map[string]*kfuncEntry{}
	}
	t.byID[id], t.byName[f.Name] = e, e
	return nil
}

// KfuncID returns the BTF id programs call the kfunc name by.
func (k *Kernel) KfuncID(name string) (btf.TypeID, bool) {
	e, ok := k.kfuncByName(name)
	if !ok {
		return 0, false
	}
	return e.id, true
}

// kfuncByName finds the kfunc name, registering it first if it is one of
// the kernel's own (dynptr_kfuncs.go).
func (k *Kernel) kfuncByName(name string) (*kfuncEntry, bool) {
	t := &k.so.kfuncs
	t.mu.RLock()
	e, ok := t.byName[name]
	t.mu.RUnlock()
	if !ok && k.registerBuiltinKfunc(name) {
		t.mu.RLock()
		e, ok = t.byName[name]
		t.mu.RUnlock()
	}
	return e, ok
}

func (k *Kernel) kfuncByID(id btf.TypeID) (*kfuncEntry, bool) {
	t := &k.so.kfuncs
	t.mu.RLock()
	defer t.mu.RUnlock()
	e, ok := t.byID[id]
	return e, ok
}

// kfuncResolver is the verifier's view of the kfuncs for program p
// (fetch_kfunc_meta): a call's off 0 names vmlinux's BTF, another the
// module BTF at that index of the program's fd_array
// (find_kfunc_desc_btf), which bpfsim fills with the modules whose
// kfuncs the program calls by name; a kfunc must be in the id set of p's
// type.
//
// It is never nil: the simulated kernel has BTF (CONFIG_DEBUG_INFO_BTF),
// kfuncs registered or not.
func (k *Kernel) kfuncResolver(p *Program) func(int32, int16) (*verifier.KfuncProto, error) {
	return func(imm int32, off int16) (*verifier.KfuncProto, error) {
		var e *kfuncEntry
		var ok bool
		switch {
		case off == 0:
			e, ok = k.kfuncByID(btf.TypeID(imm))
		case off < 0:
			return nil, &verifier.Error{Errno: uapi.EINVAL, Msg: "negative offset disallowed for kernel module function call"}
		case len(p.kfuncModules) == 0:
			return nil, &verifier.Error{Errno: uapi.EPROTO, Msg: "kfunc offset > 0 without fd_array is invalid"}
		case int(off) > len(p.kfuncModules):
			// The kernel reads an fd past the array's end: no BTF.
			return nil, &verifier.Error{Errno: uapi.EBADF, Msg: "invalid module BTF fd specified"}
		default:
			e, ok = p.kfuncModules[off-1].kfunc(btf.TypeID(imm))
		}
		if !ok {
			return nil, &verifier.Error{Errno: uapi.EINVAL, Msg: "kernel btf_id " + strconv.Itoa(int(imm)) + " is not a function"}
		}
		if e.internal || !e.f.AllowedFor(p.typ) {
			return nil, &verifier.Error{Errno: uapi.EACCES, Msg: "calling kernel function " + e.f.Name + " is not allowed"}
		}
		if e.f.Flags&kfunc.Sleepable != 0 && !p.sleepable {
			return nil, &verifier.Error{Errno: uapi.EACCES, Msg: "program must be sleepable to call sleepable kfunc " + e.f.Name}
		}
		return e.proto, nil
	}
}

// kfuncHelper is what a call of a kfunc's symbol runs.
func (k *Kernel) kfuncHelper(s *ksym) (*Helper, error) {
	t := &k.so.kfuncs
	t.mu.RLock()
	e, ok := t.byName[s.Name]
	t.mu.RUnlock()
	if !ok {
		return nil, errors.Wrapf(uapi.EINVAL, "kfunc %s is not registered (its module was unloaded?)", s.Name)
	}
	return e.helper, nil
}

// kfuncCalls gives the fix-ups the kernel's functions, and for kfuncs the
// program's aux (verifier.KfuncCalls).
type kfuncCalls struct {
	kernelCalls
	p *Program
}

var _ verifier.KfuncCalls = kfuncCalls{}

// Helper is kernelCalls' Helper, but for the helpers whose function
// depends on the program's type (taskstorage.go).
func (c kfuncCalls) Helper(id int32) (int32, bool, error) {
	if name, ok := taskStorageRecurFuncs[id]; ok && checksRecursion(c.p) {
		s, err := c.k.ksyms.define(ksymSpec{name: name, kind: ksymHelper, helper: id}, 0)
		if err != nil {
			return 0, false, err
		}
		return c.k.ksyms.imm(s), false, nil
	}
	return c.kernelCalls.Helper(id)
}

func (c kfuncCalls) Kfunc(btfID int32) (int32, error) {
	e, ok := c.k.kfuncByID(btf.TypeID(btfID))
	if !ok {
		return 0, errors.Errorf("no kfunc has BTF id %d", btfID)
	}
	return c.symbol(e)
}

// symbol is the call imm of kfunc e's symbol.
func (c kfuncCalls) symbol(e *kfuncEntry) (int32, error) {
	s, ok := c.k.ksyms.lookup(e.f.Name)
	if !ok || (s.spec.kind != ksymKfunc && s.spec.kind != ksymModuleKfunc) {
		return 0, errors.Errorf("kfunc %s has no symbol", e.f.Name)
	}
	return c.k.ksyms.imm(s), nil
}

func (c kfuncCalls) ProgAux() (uint64, error) { return c.k.progAux(c.p) }

func (c kfuncCalls) KfuncByName(name string) (int32, error) {
	e, ok := c.k.kfuncByName(name)
	if !ok {
		return 0, errors.Errorf("no kfunc %s", name)
	}
	return c.symbol(e)
}

// resolveKfuncCalls gives the kfunc calls of cilium/ebpf instructions their
// BTF ids, by name, as cilium/ebpf's fixupKfuncs does against the kernel's
// BTF; it returns in itself when there is none to resolve. A call of a
// module's kfunc gets an id of the module's BTF and the module's index in
// the program's fd_array (from 1) as its offset; the modules are
// returned in that order. An unknown kfunc fails the load, naming it.
func (k *Kernel) resolveKfuncCalls(in asm.Instructions) (asm.Instructions, []*Module, error) {
	var out asm.Instructions
	var modules []*Module
	for i := range in {
		ins := &in[i]
		if !ins.IsKfuncCall() || ins.Constant >= 0 || ins.Reference() == "" {
			continue
		}
		e, ok := k.kfuncByName(ins.Reference())
		if !ok && externOf(ins).weak {
			// A weak kfunc the kernel lacks: cilium/ebpf's poisoned
			// call, which only a dead branch may hold (externs.go).
			if out == nil {
				out = append(asm.Instructions(nil), in...)
			}
			out[i] = asm.BuiltinFunc(kfuncCallPoison).Call()
			continue
		}
		if !ok {
			return nil, nil, errors.Wrapf(uapi.EINVAL, "instruction %d calls kfunc %s, which is not simulated (no subsystem or loaded module registered it)", i, ins.Reference())
		}
		if out == nil {
			out = append(asm.Instructions(nil), in...)
		}
		out[i].Constant = int64(e.id)
		if e.module != nil {
			at := slices.Index(modules, e.module)
			if at < 0 {
				at = len(modules)
				modules = append(modules, e.module)
			}
			out[i].Offset = int16(at + 1)
		}
	}
	if out == nil {
		return in, nil, nil
	}
	return out, modules, nil
}

// checkNoKfuncCalls refuses kfunc calls in a program that is not
// verified: only the verifier's fix-ups make them calls of the kfunc.
func checkNoKfuncCalls(insns []insn.Insn) error {
	for i, in := range insns {
		if in.Code == insn.JMP|insn.CALL && in.Src == insn.PseudoKfuncCall {
			return errors.Wrapf(uapi.EINVAL, "insn %d calls a kfunc: kfunc calls need the verifier", i)
		}
	}
	return nil
}

// progAuxSlot is the room each program's struct bpf_prog_aux stand-in
// takes; progAuxArea is the area they are in.
const (
	progAuxSlot = 256
	progAuxArea = 16 << 20
)

// auxTable hands out the addresses of programs' struct bpf_prog_aux, the
// pointer a "__prog" kfunc argument gets. The area reads as zero and
// costs no memory: a kfunc only uses the address to find the program.
type auxTable struct {
	mu     sync.Mutex
	base   uint64
	next   uint64
	free   []uint64
	byAddr map[uint64]*Program
}

// progAux returns p's aux address, giving it one on first use.
func (k *Kernel) progAux(p *Program) (uint64, error) {
	t := &k.so.aux
	t.mu.Lock()
	defer t.mu.Unlock()
	if a := p.so.aux; a != 0 {
		return a, nil
	}
	if t.base == 0 {
		base, err := k.mem.Alloc(progAuxArea, mem.AllocOptions{Region: mem.RegionVmalloc, Perm: mem.PermRead, Name: "bpf_prog_aux", Device: textDevice{}})
		if err != nil {
			return 0, err
		}
		t.base, t.next, t.byAddr = base, base, map[uint64]*Program{}
	}
	var a uint64
	switch {
	case len(t.free) > 0:
		a, t.free = t.free[len(t.free)-1], t.free[:len(t.free)-1]
	case t.next+progAuxSlot <= t.base+progAuxArea:
		a, t.next = t.next, t.next+progAuxSlot
	default:
		return 0, errors.Wrap(uapi.ENOMEM, "no room for another bpf_prog_aux")
	}
	t.byAddr[a] = p
	p.so.aux = a
	return a, nil
}

// progByAux finds the program whose aux is at addr.
func (k *Kernel) progByAux(addr uint64) (*Program, bool) {
	t := &k.so.aux
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.byAddr[addr]
	return p, ok
}

// freeAux returns p's aux address, once p is freed.
func (k *Kernel) freeAux(p *Program) {
	if p.so.aux == 0 {
		return
	}
	t := &k.so.aux
	t.mu.Lock()
	delete(t.byAddr, p.so.aux)
	t.free = append(t.free, p.so.aux)
	p.so.aux = 0
	t.mu.Unlock()
}

// btfChildren returns the types t refers to.
func btfChildren(t btf.Type) []btf.Type {
	switch t := t.(type) {
	case *btf.Pointer:
		return []btf.Type{t.Target}
	case *btf.Array:
		return []btf.Type{t.Index, t.Type}
	case *btf.Struct:
		out := make([]btf.Type, len(t.Members))
		for i, m := range t.Members {
			out[i] = m.Type
		}
		return out
	case *btf.Union:
		out := make([]btf.Type, len(t.Members))
		for i, m := range t.Members {
			out[i] = m.Type
		}
		return out
	case *btf.Typedef:
		return []btf.Type{t.Type}
	case *btf.Volatile:
		return []btf.Type{t.Type}
	case *btf.Const:
		return []btf.Type{t.Type}
	case *btf.Restrict:
		return []btf.Type{t.Type}
	case *btf.TypeTag:
		return []btf.Type{t.Type}
	case *btf.Func:
		return []btf.Type{t.Type}
	case *btf.FuncProto:
		out := []btf.Type{t.Return}
		for _, p := range t.Params {
			out = append(out, p.Type)
		}
		return out
	case *btf.Var:
		return []btf.Type{t.Type}
	case *btf.Datasec:
		out := make([]btf.Type, len(t.Vars))
		for i, v := range t.Vars {
			out[i] = v.Type
		}
		return out
	}
	return nil // ints, floats, enums, forward declarations; declaration tags (unexported) are no seed type
}
