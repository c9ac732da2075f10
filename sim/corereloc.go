package sim

import (
	"encoding/binary"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/vmlinuxbtf"
)

// CO-RE: a program's relocations against the kernel's types, resolved at
// load time as libbpf's bpf_object__relocate_core and cilium/ebpf's
// applyRelocations resolve them before BPF_PROG_LOAD (the kernel itself
// only does so for light skeletons, kernel/bpf/btf.c's bpf_core_apply).
// The target is the simulated kernel's BTF (KernelBTF), or the types a
// load names (ProgramOptions.KernelTypes, as cilium/ebpf's
// ProgramOptions.KernelTypes). A relocation that finds no target poisons
// its instruction, as libbpf and cilium/ebpf do: the verifier refuses the
// program only if that instruction can run.

// vmlinuxTypes is the seed of the kernel's BTF: package vmlinuxbtf's types,
// with enum bpf_func_id cut to the helpers this kernel has, so that a
// program probing for a helper with bpf_core_enum_value_exists learns what
// it could call, and bpfsim's own struct task_struct (task.go).
func (k *Kernel) vmlinuxTypes() ([]btf.Type, error) {
	types, err := vmlinuxbtf.Types()
	if err != nil {
		return nil, err
	}
	types = append(types, taskTypes()...)
	types = append(types, iterTypes(types)...)
	for _, t := range types {
		e, ok := t.(*btf.Enum)
		if !ok || e.Name != "bpf_func_id" {
			continue
		}
		k.mu.Lock()
		kept := e.Values[:0]
		for _, v := range e.Values {
			if _, ok := k.helpers[int32(v.Value)]; ok || v.Value == 0 || strings.HasPrefix(v.Name, "__") {
				kept = append(kept, v)
			}
		}
		k.mu.Unlock()
		e.Values = kept
	}
	return types, nil
}

// poisoned records which forms of poisoned instruction a relocation left,
// and the first relocation that found no target.
type poisoned struct {
	call, lddw bool
	first      *btf.CORERelocation
}

// explain names a refusal that a poisoned instruction caused, as
// cilium/ebpf does, so that the user looks for the relocation and not for
// a helper or register misuse in their code.
func (p poisoned) explain(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if p.call && strings.Contains(msg, "unknown#"+strconv.Itoa(btf.COREBadRelocationSentinel)) ||
		p.lddw && strings.Contains(msg, "frame pointer is read only") {
		return errors.Wrapf(err, "bad CO-RE relocation (%v found no target: the type or field is not simulated by bpfsim's kernel BTF, or no kernel has it)", p.first)
	}
	return err
}

// relocateCORE applies the CO-RE relocations of in against target (the
// kernel's BTF if nil) and returns the instructions with their fixups and
// without the relocations; in itself is not changed.
func (k *Kernel) relocateCORE(in asm.Instructions, target *btf.Spec) (asm.Instructions, poisoned, error) {
	var poison poisoned
	var relos []*btf.CORERelocation
	var at []int
	for i := range in {
		if r := btf.CORERelocationMetadata(&in[i]); r != nil {
			relos, at = append(relos, r), append(at, i)
		}
	}
	if len(relos) == 0 {
		return in, poison, nil
	}
	ownTypes := target == nil
	if ownTypes {
		var err error
		if target, err = k.so.btf.Spec(); err != nil {
			return nil, poison, err
		}
	}
	// bpf_core_type_id_local asks for a type's id in the program's own
	// BTF; bpfsim keeps no BTF blob for a program, so the ids are those
	// of a BTF made of the types asked about, in the order asked.
	local, err := btf.NewBuilder(nil, nil)
	if err != nil {
		return nil, poison, err
	}
	targets := []*btf.Spec{target}
	if ownTypes {
		// Then the loaded modules' types, which libbpf searches for
		// what vmlinux lacks (module.go).
		targets = append(targets, k.moduleSpecs()...)
	}
	fixups, err := btf.CORERelocate(relos, targets, binary.LittleEndian, local.Add)
	if err != nil {
		return nil, poison, errors.Wrap(uapi.EINVAL, err.Error())
	}
	out := append(asm.Instructions(nil), in...)
	for j, i := range at {
		ins := btf.WithCORERelocationMetadata(out[i], nil)
		if err := applyCOREFixup(&ins, fixups[j]); err != nil {
			return nil, poison, errors.Wrapf(uapi.EINVAL, "instruction %d: CO-RE relocation %s: %v", i, relos[j], err)
		}
		if strings.HasSuffix(fixups[j].String(), "=poison") {
			if poison.first == nil {
				poison.first = relos[j]
			}
			if ins.OpCode.IsDWordLoad() {
				poison.lddw = true
			} else {
				poison.call = true
			}
		}
		out[i] = ins
	}
	return out, poison, nil
}

// applyCOREFixup rewrites ins as a fixup says: the field offset of a load
// or store, the immediate of an ALU instruction or an lddw, or, for a
// poisoned relocation, an instruction the verifier refuses (a call of
// helper 0xbad2310, or an lddw into R10 to keep the size), as libbpf's
// bpf_core_patch_insn and cilium/ebpf's COREFixup.Apply do. It does not
// call Apply, which cilium/ebpf offers on Linux only: bpfsim runs on any
// system. The fixup is read from its String form (kind=poison or
// kind=local->target), the only view cilium/ebpf gives of it.
func applyCOREFixup(ins *asm.Instruction, f btf.COREFixup) error {
	s := f.String()
	eq := strings.LastIndexByte(s, '=')
	if eq < 0 {
		return errors.Errorf("unreadable fixup %q", s)
	}
	if s[eq+1:] == "poison" {
		src := ins.Source()
		if ins.OpCode.IsDWordLoad() {
			*ins = asm.LoadImm(asm.R10, btf.COREBadRelocationSentinel, asm.DWord)
		} else {
			*ins = asm.BuiltinFunc(btf.COREBadRelocationSentinel).Call()
		}
		*ins = ins.WithSource(src)
		return nil
	}
	from, to, ok := strings.Cut(s[eq+1:], "->")
	if !ok {
		return errors.Errorf("unreadable fixup %q", s)
	}
	if _, err := strconv.ParseUint(from, 10, 64); err != nil {
		return errors.Errorf("unreadable fixup %q", s)
	}
	target, err := strconv.ParseUint(to, 10, 64)
	if err != nil {
		return errors.Errorf("unreadable fixup %q", s)
	}
	switch class := ins.OpCode.Class(); class {
	case asm.LdXClass, asm.StClass, asm.StXClass:
		if target > 1<<15-1 {
			return errors.Errorf("offset %d does not fit an instruction", target)
		}
		ins.Offset = int16(target)
	case asm.LdClass:
		if !ins.IsConstantLoad(asm.DWord) {
			return errors.New("not an lddw of a constant")
		}
		ins.Constant = int64(target)
	case asm.ALUClass, asm.ALU64Class:
		if ins.OpCode.ALUOp() == asm.Swap || ins.OpCode.Source() != asm.ImmSource {
			return errors.Errorf("%v has no immediate to relocate", ins.OpCode)
		}
		if target > 1<<31-1 {
			return errors.Errorf("immediate %d does not fit an instruction", target)
		}
		ins.Constant = int64(target)
	default:
		return errors.Errorf("class %v cannot be relocated", class)
	}
	return nil
}
