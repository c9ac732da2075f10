package sim

import (
	"debug/elf"
	"reflect"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Externs: the symbols an object leaves for the loader to find in the
// running kernel, resolved here against the simulated one as cilium/ebpf
// resolves them against Linux (its linker.go):
//
//   - .kconfig variables (extern int CONFIG_HZ __kconfig): a read-only,
//     frozen array map of one element, the object's .kconfig section
//     filled from Options.Config and Options.Release (kconfig.go), made
//     for each program that reads it; its loads become loads of the
//     variable's address in the value;
//   - __ksym variables (extern void bpf_map_lookup_elem __ksym): the
//     address of the function of that name in the simulated kernel's
//     text (ksyms.go), or 0 for a weak one it lacks;
//   - the address of a kfunc (bpf_ksym_exists(kfunc)): its BTF id, or 0
//     for a weak one the kernel lacks; a call of such a weak kfunc
//     becomes a call of an unknown helper, which the verifier refuses if
//     the program can reach it and removes as dead code otherwise.
//
// cilium/ebpf's ELF reader keeps what it knows of these (the variable's
// offset in .kconfig, the symbol's ELF binding) in the instruction's
// metadata under keys its package does not export. bpfsim reads them by
// reflection: they are plain fields, and TestExternsOfCiliumTestdata
// fails if a cilium/ebpf upgrade moves them.

// externKind says what an instruction's extern is.
type externKind int

const (
	externNone    externKind = iota
	externKconfig            // an lddw of a .kconfig variable's address
	externKsym               // an lddw of a __ksym variable's address
	externKfunc              // a kfunc call, or an lddw of a kfunc's address
)

// extern is what cilium/ebpf recorded of an instruction's extern.
type extern struct {
	kind externKind
	name string
	weak bool
	// kconfig is the object's .kconfig section and offset the
	// variable's place in it.
	kconfig *ebpf.MapSpec
	offset  uint32
}

// ciliumPkg is the package whose metadata keys externOf reads.
const ciliumPkg = "github.com/cilium/ebpf"

// externOf returns the extern an instruction refers to, if any.
func externOf(ins *asm.Instruction) extern {
	if !ins.OpCode.IsDWordLoad() && !ins.IsKfuncCall() {
		return extern{}
	}
	// asm.Metadata is a list of key/value pairs: struct{ head *element }
	// with element struct{ next *element; key, value any }.
	md := reflect.ValueOf(&ins.Metadata).Elem()
	if md.Kind() != reflect.Struct || md.NumField() != 1 {
		return extern{}
	}
	for e := md.Field(0); e.Kind() == reflect.Pointer && !e.IsNil(); e = e.Elem().Field(0) {
		el := e.Elem()
		if el.NumField() != 3 {
			return extern{}
		}
		key, val := el.Field(1).Elem(), el.Field(2).Elem()
		if !key.IsValid() || key.Type().PkgPath() != ciliumPkg || val.Kind() != reflect.Pointer || val.IsNil() {
			continue
		}
		meta := val.Elem()
		if meta.Kind() != reflect.Struct {
			continue
		}
		switch key.Type().Name() {
		case "kconfigMetaKey":
			m, off := meta.FieldByName("Map"), meta.FieldByName("Offset")
			if m.Kind() != reflect.Pointer || m.Type().Elem() != reflect.TypeFor[ebpf.MapSpec]() || off.Kind() != reflect.Uint32 {
				return extern{}
			}
			spec := (*ebpf.MapSpec)(m.UnsafePointer())
			return extern{kind: externKconfig, kconfig: spec, offset: uint32(off.Uint())}
		case "ksymMetaKey":
			name, bind := meta.FieldByName("Name"), meta.FieldByName("Binding")
			if name.Kind() != reflect.String || !bind.IsValid() {
				return extern{}
			}
			return extern{kind: externKsym, name: name.String(), weak: isWeak(bind)}
		case "kfuncMetaKey":
			fn, bind := meta.FieldByName("Func"), meta.FieldByName("Binding")
			if fn.Kind() != reflect.Pointer || fn.IsNil() || fn.Type().Elem() != reflect.TypeFor[btf.Func]() || !bind.IsValid() {
				return extern{}
			}
			f := (*btf.Func)(fn.UnsafePointer())
			return extern{kind: externKfunc, name: f.Name, weak: isWeak(bind)}
		}
	}
	return extern{}
}

// isWeak says whether an elf.SymBind field holds STB_WEAK.
func isWeak(bind reflect.Value) bool {
	switch {
	case bind.CanInt():
		return bind.Int() == int64(elf.STB_WEAK)
	case bind.CanUint():
		return bind.Uint() == uint64(elf.STB_WEAK)
	}
	return false
}

// kfuncCallPoison is the helper id cilium/ebpf gives a call of a weak
// kfunc the kernel lacks: no kernel has such a helper, so the verifier
// refuses the call where it is reachable.
const kfuncCallPoison = 0xdedc0de

// resolveExterns fills in the .kconfig and __ksym variables and the kfunc
// addresses of a program about to be loaded by proc. It returns the
// instructions (a copy if it changed any) and the .kconfig map it made,
// which the caller closes once the program is loaded (the program then
// holds it).
func (k *Kernel) resolveExterns(proc *Process, in asm.Instructions) (asm.Instructions, *Map, error) {
	var out asm.Instructions
	var kconfig *Map
	var section *ebpf.MapSpec
	fail := func(err error) (asm.Instructions, *Map, error) {
		if kconfig != nil {
			kconfig.Close()
		}
		return nil, nil, err
	}
	for i := range in {
		ext := externOf(&in[i])
		if ext.kind == externNone || (ext.kind == externKfunc && in[i].IsKfuncCall()) {
			continue // kfunc calls: resolveKfuncCalls
		}
		if out == nil {
			out = append(asm.Instructions(nil), in...)
		}
		ins := &out[i]
		switch ext.kind {
		case externKconfig:
			if section == nil {
				section = ext.kconfig
				m, err := k.newKconfigMap(proc, section)
				if err != nil {
					return fail(errors.Wrapf(err, "instruction %d", i))
				}
				kconfig = m
			} else if ext.kconfig != section {
				return fail(errors.Wrapf(uapi.EINVAL, "instruction %d reads a second .kconfig section", i))
			}
			if err := ins.AssociateMap(kconfig); err != nil {
				return fail(errors.Wrapf(uapi.EINVAL, "instruction %d: %v", i, err))
			}
			// A load of the variable's address: BPF_PSEUDO_MAP_VALUE
			// with the offset in the second half of the immediate.
			ins.Constant = int64(uint64(ext.offset) << 32)
		case externKsym:
			addr, ok := k.ksymAddr(ext.name)
			if !ok && !ext.weak {
				return fail(errors.Wrapf(uapi.ENOENT, "instruction %d loads the kernel symbol %s, which is not simulated (the simulated kernel's symbols are the functions of its text, Kernel.KernelSymbols)", i, ext.name))
			}
			ins.Constant = int64(addr)
			*ins = ins.WithReference("")
		case externKfunc:
			var id int64
			if e, ok := k.kfuncByName(ext.name); ok {
				id = int64(e.id)
			} else if !ext.weak {
				return fail(errors.Wrapf(uapi.EINVAL, "instruction %d takes the address of kfunc %s, which is not simulated (no subsystem or loaded module registered it)", i, ext.name))
			}
			// cilium/ebpf loads the id as a plain number: non-zero
			// is all bpf_ksym_exists asks of it.
			ins.Constant, ins.Src = id, 0
			*ins = ins.WithReference("")
		}
	}
	if out == nil {
		return in, nil, nil
	}
	return out, kconfig, nil
}

// newKconfigMap makes the .kconfig map of an object's section, as
// cilium/ebpf makes it: an array of one element with the section as its
// value type, BPF_F_RDONLY_PROG, filled in and frozen.
func (k *Kernel) newKconfigMap(proc *Process, section *ebpf.MapSpec) (*Map, error) {
	ds, ok := section.Value.(*btf.Datasec)
	if !ok || section.ValueSize == 0 {
		return nil, errors.Wrap(uapi.EINVAL, ".kconfig is not a section of variables")
	}
	value, err := k.kconfigValues(ds)
	if err != nil {
		return nil, err
	}
	// A shallow copy: creation reads the section's types, never
	// changes them, and a deep copy of them was a fifth of a load.
	spec := *section
	spec.Contents = []ebpf.MapKV{{Key: uint32(0), Value: value}}
	if proc == nil {
		proc = k.init
	}
	return proc.NewMap(&spec)
}

// ksymAddr is the address /proc/kallsyms gives name: a function of the
// simulated kernel's text, placed now if it is the function of a helper
// no program has called yet.
func (k *Kernel) ksymAddr(name string) (uint64, bool) {
	if s, ok := k.KernelSymbol(name); ok {
		return s.Addr, true
	}
	k.mu.Lock()
	var found *Helper
	for id, h := range k.helpers {
		fn := h.Name
		if h.Name == uapi.HelperName(id) && helperFuncNames[id] != "" {
			fn = helperFuncNames[id]
		}
		if fn == name {
			found = h
			break
		}
	}
	k.mu.Unlock()
	if found == nil {
		return 0, false
	}
	s, err := k.helperKsym(found.ID, found)
	if err != nil {
		return 0, false
	}
	return s.Addr, true
}
