package sim

import (
	"bytes"
	"debug/elf"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/kfunc"
	"github.com/bpfsim/bpfsim/sim/splitbtf"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// Kernel modules' BTF, as kernel/bpf/btf.c's btf_module_notify and
// btf_parse_module take it when a module is loaded: a module's .BTF
// section is split BTF on vmlinux's, and a module built outside the
// kernel tree also carries a .BTF.base section, the distilled base its
// split BTF was made against, which the kernel relocates onto the vmlinux
// BTF it runs (package splitbtf, seed 002). The module's types then serve
// CO-RE relocations, as libbpf searches module BTF for types vmlinux lacks.

// ModuleSpec is the BTF of a kernel module, as its .ko file carries it.
type ModuleSpec struct {
	Name string
	// BTF is the module's .BTF section: raw split BTF.
	BTF []byte
	// BaseBTF is its .BTF.base section: the distilled base BTF is split
	// on. Empty for a module built with its kernel, whose split BTF
	// refers to that kernel's vmlinux ids directly.
	BaseBTF []byte
}

// LoadModuleSpec reads the .BTF and .BTF.base sections of a kernel module
// file (a .ko).
func LoadModuleSpec(path string) (*ModuleSpec, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, errors.Wrap(uapi.EINVAL, err.Error())
	}
	defer f.Close()
	spec := &ModuleSpec{Name: moduleName(path)}
	for _, s := range []struct {
		name string
		to   *[]byte
	}{{".BTF", &spec.BTF}, {".BTF.base", &spec.BaseBTF}} {
		sec := f.Section(s.name)
		if sec == nil {
			continue
		}
		if *s.to, err = sec.Data(); err != nil {
			return nil, errors.Wrapf(uapi.EINVAL, "%s: section %s: %v", path, s.name, err)
		}
	}
	if spec.BTF == nil {
		return nil, errors.Wrapf(uapi.ENOENT, "%s has no .BTF section", path)
	}
	return spec, nil
}

// moduleName is the module name of a file: its base name without the .ko
// (and a compression suffix after it).
func moduleName(path string) string {
	name, _, _ := strings.Cut(filepath.Base(path), ".ko")
	return name
}

// Module is a loaded module's BTF, and the kfuncs it registered.
type Module struct {
	k     *Kernel
	name  string
	btf   *splitbtf.BTF
	idMap []uint32
	// spec is btf as cilium/ebpf reads it, on base: the kernel's BTF as
	// it was when the module was loaded.
	spec *btf.Spec
	// kfuncs are the module's kfuncs by their id in its BTF; users
	// counts the programs calling them, which hold the module (the
	// kernel's module references, taken by btf_try_get_module). Both
	// under the module table's lock.
	kfuncs map[btf.TypeID]*kfuncEntry
	users  int
	// obj is the module's BTF object (btfobj.go).
	obj *btfObject
}

// Name is the module's name, as /sys/kernel/btf lists it.
func (m *Module) Name() string { return m.name }

// BTFID is the id of the module's BTF object, as `bpftool btf list` shows
// it.
func (m *Module) BTFID() btf.ID { return m.obj.id }

// RawBTF is the module's BTF after relocation, as the kernel exposes it
// in /sys/kernel/btf/<name>: split BTF on this kernel's vmlinux BTF.
func (m *Module) RawBTF() []byte { return m.btf.Raw() }

// BTF is the module's types, split on the kernel's BTF (cilium/ebpf's
// btf.LoadKernelModuleSpec). The Spec is the caller's to change.
func (m *Module) BTF() *btf.Spec { return m.spec.Copy() }

// RelocateID is btf_relocate_id: the id a type of the module's BTF as
// built (its .BTF.ids, which resolve_btfids filled against the distilled
// base) has after relocation. A module without a distilled base keeps its
// ids.
func (m *Module) RelocateID(id btf.TypeID) (btf.TypeID, error) {
	if m.idMap == nil {
		if uint32(id) >= m.btf.TypeCount() {
			return 0, errors.Wrapf(uapi.ENOENT, "module %s has no type %d", m.name, id)
		}
		return id, nil
	}
	if int(id) >= len(m.idMap) {
		return 0, errors.Wrapf(uapi.ENOENT, "module %s had no type %d", m.name, id)
	}
	return btf.TypeID(m.idMap[id]), nil
}

// moduleTable is the loaded modules, by name.
type moduleTable struct {
	mu     sync.RWMutex
	byName map[string]*Module
}

// LoadModule loads a module's BTF into the kernel, as the module loader
// does (btf_module_notify): the split BTF is read on its distilled base
// when it has one, then relocated onto the kernel's BTF as it is now
// (types registered later are not in the module's base); without a
// distilled base it is read on the kernel's BTF as it is. BTF the
// kernel's checks refuse (splitbtf.Check, with the kernel's errno and
// message), or a distilled base the kernel's BTF cannot stand in for
// (EINVAL; ENOENT for a string the relocation cannot place), fails the
// load, as it fails the module's load in a kernel without
// CONFIG_MODULE_ALLOW_BTF_MISMATCH; a module of a loaded module's name is
// EEXIST.
func (k *Kernel) LoadModule(spec *ModuleSpec) (*Module, error) {
	if spec == nil || spec.Name == "" || len(spec.Name) >= 56 { // MODULE_NAME_LEN
		return nil, errors.Wrap(uapi.EINVAL, "a module needs a name of at most 55 bytes")
	}
	t := &k.modules
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.byName[spec.Name]; ok {
		return nil, errors.Wrapf(uapi.EEXIST, "module %s is already loaded", spec.Name)
	}
	vmlinux, vmlinuxSpec, err := k.so.btf.raw()
	if err != nil {
		return nil, err
	}
	m := &Module{k: k, name: spec.Name}
	// The kernel checks the module's types as it checks any BTF
	// (btf_parse_module), against the base they were built on, before it
	// relocates them.
	if len(spec.BaseBTF) == 0 {
		if m.btf, err = parseChecked(spec.BTF, vmlinux); err != nil {
			return nil, errors.WithMessagef(err, "module %s: BTF", spec.Name)
		}
	} else {
		dist, err := parseChecked(spec.BaseBTF, nil)
		if err != nil {
			return nil, errors.WithMessagef(err, "module %s: .BTF.base", spec.Name)
		}
		split, err := parseChecked(spec.BTF, dist)
		if err != nil {
			return nil, errors.WithMessagef(err, "module %s: BTF", spec.Name)
		}
		if m.btf, m.idMap, err = splitbtf.Relocate(split, vmlinux); err != nil {
			return nil, errors.WithMessagef(err, "module %s: relocating its BTF", spec.Name)
		}
	}
	if m.spec, err = btf.LoadSplitSpecFromReader(bytes.NewReader(m.btf.Raw()), vmlinuxSpec); err != nil {
		return nil, errors.Wrapf(uapi.EINVAL, "module %s: BTF: %v", spec.Name, err)
	}
	// Its BTF object (btf_module_notify gives module BTF an id too).
	m.obj = &btfObject{name: m.name, kernel: true, module: m, raw: func() ([]byte, error) { return m.RawBTF(), nil }}
	bt := &k.btfs
	bt.mu.Lock()
	err = bt.add(k, m.obj)
	bt.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if t.byName == nil {
		t.byName = map[string]*Module{}
	}
	t.byName[spec.Name] = m
	return m, nil
}

// parseChecked reads raw BTF on base and checks it as the kernel does.
func parseChecked(raw []byte, base *splitbtf.BTF) (*splitbtf.BTF, error) {
	b, err := splitbtf.Parse(raw, base)
	if err != nil {
		return nil, err
	}
	if err := b.Check(); err != nil {
		return nil, err
	}
	return b, nil
}

// UnloadModule removes a module's BTF and its kfuncs (delete_module):
// ENOENT for a module not loaded, EAGAIN while a program calls its kfuncs
// (rmmod's "Module is in use"; a program holds the module until it is
// freed, a grace period after its last reference goes).
func (k *Kernel) UnloadModule(name string) error {
	t := &k.modules
	t.mu.Lock()
	defer t.mu.Unlock()
	m, ok := t.byName[name]
	if !ok {
		return errors.Wrapf(uapi.ENOENT, "module %s is not loaded", name)
	}
	if m.users > 0 {
		return errors.Wrapf(uapi.EAGAIN, "module %s is in use by %d programs", name, m.users)
	}
	kt := &k.so.kfuncs
	kt.mu.Lock()
	for _, e := range m.kfuncs {
		delete(kt.byName, e.f.Name)
	}
	kt.mu.Unlock()
	delete(t.byName, name)
	bt := &k.btfs
	bt.mu.Lock()
	bt.put(m.obj) // the id goes with the last handle on it
	bt.mu.Unlock()
	return nil
}

// RegisterKfunc makes f, a function of the module, callable by programs
// loaded afterwards, as a module's register_btf_kfunc_id_set does: f.Name
// must be a function of the module's BTF (what its .BTF.ids names), and
// the verifier checks calls against that function's prototype, relocated
// onto the kernel's types; f.Proto, if set, must be compatible with it.
// Programs call it by name, as a kfunc of vmlinux; a kfunc name is the
// kernel's once (EEXIST).
func (m *Module) RegisterKfunc(f *kfunc.Func) error {
	if f == nil || f.Name == "" || f.Fn == nil {
		return errors.Wrap(uapi.EINVAL, "kfunc needs a name and a function")
	}
	id, fn, ok := m.function(f.Name)
	if !ok {
		return errors.Wrapf(uapi.ENOENT, "module %s's BTF has no function %s", m.name, f.Name)
	}
	proto, ok := fn.Type.(*btf.FuncProto)
	if !ok {
		return errors.Wrapf(uapi.EINVAL, "module %s: function %s has no prototype", m.name, f.Name)
	}
	if f.Proto != nil {
		if err := btf.CheckTypeCompatibility(f.Proto, proto); err != nil {
			return errors.Wrapf(uapi.EINVAL, "module %s: kfunc %s: %v", m.name, f.Name, err)
		}
	}
	vp, err := verifier.NewKfuncProto(f.Name, int32(id), proto, uint32(f.Flags))
	if err != nil {
		return err
	}
	vp.Module = m.name
	t := &m.k.modules
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byName[m.name] != m {
		return errors.Wrapf(uapi.ENOENT, "module %s is not loaded", m.name)
	}
	kt := &m.k.so.kfuncs
	kt.mu.Lock()
	defer kt.mu.Unlock()
	if _, ok := kt.byName[f.Name]; ok || m.k.isBuiltinKfunc(f.Name) {
		return errors.Wrapf(uapi.EEXIST, "kfunc %s is already registered", f.Name)
	}
	if _, err := m.k.ksyms.define(ksymSpec{name: f.Name, kind: ksymModuleKfunc}, 0); err != nil {
		return err
	}
	e := &kfuncEntry{f: f, id: id, proto: vp, helper: &interp.Helper{ID: int32(id), Name: f.Name, Fn: f.Fn}, module: m}
	if kt.byName == nil {
		kt.byID, kt.byName = map[btf.TypeID]*kfuncEntry{}, map[string]*kfuncEntry{}
	}
	if m.kfuncs == nil {
		m.kfuncs = map[btf.TypeID]*kfuncEntry{}
	}
	kt.byName[f.Name], m.kfuncs[id] = e, e
	return nil
}

// function finds the function name among the module's own types.
func (m *Module) function(name string) (btf.TypeID, *btf.Func, bool) {
	for id := m.btf.StartID(); id < m.btf.TypeCount(); id++ {
		t, err := m.spec.TypeByID(btf.TypeID(id))
		if fn, ok := t.(*btf.Func); err == nil && ok && fn.Name == name {
			return btf.TypeID(id), fn, true
		}
	}
	return 0, nil, false
}

// kfunc returns the module's kfunc with BTF id id.
func (m *Module) kfunc(id btf.TypeID) (*kfuncEntry, bool) {
	t := &m.k.modules
	t.mu.RLock()
	defer t.mu.RUnlock()
	e, ok := m.kfuncs[id]
	return e, ok
}

// holdModules takes a program's references on the modules whose kfuncs
// it calls (btf_try_get_module): ENXIO for a module unloaded meanwhile.
func (k *Kernel) holdModules(ms []*Module) error {
	t := &k.modules
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range ms {
		if t.byName[m.name] != m {
			return errors.Wrapf(uapi.ENXIO, "module %s is being unloaded", m.name)
		}
	}
	for _, m := range ms {
		m.users++
	}
	return nil
}

// releaseModules drops the references holdModules took.
func (k *Kernel) releaseModules(ms []*Module) {
	t := &k.modules
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range ms {
		m.users--
	}
}

// Modules returns the loaded modules, by name.
func (k *Kernel) Modules() []*Module {
	t := &k.modules
	t.mu.RLock()
	defer t.mu.RUnlock()
	ms := make([]*Module, 0, len(t.byName))
	for _, m := range t.byName {
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].name < ms[j].name })
	return ms
}

// moduleSpecs are the loaded modules' types, for CO-RE relocations to
// search after vmlinux's.
func (k *Kernel) moduleSpecs() []*btf.Spec {
	ms := k.Modules()
	specs := make([]*btf.Spec, len(ms))
	for i, m := range ms {
		specs[i] = m.spec
	}
	return specs
}

// raw returns the kernel's BTF as raw BTF and as a Spec, the two made from
// the same encoding so that their ids agree.
func (kb *kernelBTF) raw() (*splitbtf.BTF, *btf.Spec, error) {
	kb.mu.Lock()
	defer kb.mu.Unlock()
	b, err := kb.builder()
	if err != nil {
		return nil, nil, err
	}
	if kb.rawBTF == nil || kb.spec == nil {
		buf, err := b.Marshal(nil, nil)
		if err != nil {
			return nil, nil, err
		}
		if kb.rawBTF, err = splitbtf.Parse(buf, nil); err != nil {
			return nil, nil, err
		}
		if kb.spec, err = btf.LoadSpecFromReader(bytes.NewReader(buf)); err != nil {
			return nil, nil, err
		}
	}
	return kb.rawBTF, kb.spec, nil
}

// RawKernelBTF is the kernel's BTF as raw BTF, as /sys/kernel/btf/vmlinux
// reads: what modules' BTF is relocated onto and split from.
func (k *Kernel) RawKernelBTF() ([]byte, error) {
	b, _, err := k.so.btf.raw()
	if err != nil {
		return nil, err
	}
	return b.Raw(), nil
}
