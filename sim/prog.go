package sim

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// Program is a program loaded into the simulated kernel.
type Program struct {
	k        *Kernel
	typ      ebpf.ProgramType
	name     string
	xlated   []insn.Insn
	subprogs []verifier.Subprog
	code     *interp.Program
}

// supportedTypes lists the program types bpfsim can load and test-run
// today, with what their context is.
var supportedTypes = map[ebpf.ProgramType]string{
	ebpf.XDP:                "struct xdp_md",
	ebpf.Syscall:            "raw context bytes",
	ebpf.UnspecifiedProgram: "raw memory: r1 = pointer to Data, r2 = its length",
}

// NewProgram loads a program described by a cilium/ebpf ProgramSpec.
//
// bpfsim accepts UnspecifiedProgram, which the kernel does not: it is a raw
// harness where r1 points to a copy of RunOptions.Data and r2 holds its
// length, as the bpf_conformance suite expects.
func (k *Kernel) NewProgram(spec *ebpf.ProgramSpec) (*Program, error) {
	if spec == nil {
		return nil, errors.Wrap(uapi.EINVAL, "nil ProgramSpec")
	}
	insns, err := fromAsm(spec.Instructions)
	if err != nil {
		return nil, errors.Wrapf(err, "program %s", spec.Name)
	}
	return k.LoadInsns(spec.Type, spec.Name, insns)
}

// LoadBytecode loads raw little-endian BPF bytecode.
func (k *Kernel) LoadBytecode(typ ebpf.ProgramType, name string, code []byte) (*Program, error) {
	insns, err := insn.Decode(code)
	if err != nil {
		return nil, err
	}
	return k.LoadInsns(typ, name, insns)
}

// LoadInsns loads decoded instructions: the common path of every loader.
func (k *Kernel) LoadInsns(typ ebpf.ProgramType, name string, insns []insn.Insn) (*Program, error) {
	if _, ok := supportedTypes[typ]; !ok {
		return nil, errors.Wrapf(uapi.EINVAL, "program type %s is not supported by bpfsim yet", typ)
	}
	insns = append([]insn.Insn(nil), insns...)
	subs, err := verifier.CheckStructure(insns)
	if err != nil {
		return nil, err
	}
	code, err := interp.Compile(insns, k.resolveHelper)
	if err != nil {
		return nil, err
	}
	return &Program{k: k, typ: typ, name: name, xlated: insns, subprogs: subs, code: code}, nil
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
	insns = append([]insn.Insn(nil), insns...)
	code, err := interp.Compile(insns, k.resolveHelper)
	if err != nil {
		return nil, err
	}
	return &Program{k: k, typ: typ, name: name, xlated: insns, code: code}, nil
}

// fromAsm encodes cilium/ebpf instructions, refusing what this simulated
// kernel cannot resolve yet.
func fromAsm(in asm.Instructions) ([]insn.Insn, error) {
	if len(in) == 0 {
		return nil, errors.Wrap(uapi.E2BIG, "no instructions")
	}
	for i := range in {
		ins := &in[i]
		switch {
		case ins.IsLoadFromMap():
			return nil, errors.Wrapf(uapi.EINVAL, "instruction %d loads map %q: maps are not supported by bpfsim yet", i, ins.Reference())
		case ins.IsKfuncCall():
			return nil, errors.Wrapf(uapi.EINVAL, "instruction %d calls a kfunc: kfuncs are not supported by bpfsim yet", i)
		case btf.CORERelocationMetadata(ins) != nil:
			return nil, errors.Wrapf(uapi.EINVAL, "instruction %d needs a CO-RE relocation: kernel BTF is not simulated yet", i)
		}
	}
	return insn.FromAsm(in)
}

// Type returns the program type.
func (p *Program) Type() ebpf.ProgramType { return p.typ }

// Name returns the program's name.
func (p *Program) Name() string { return p.name }

// Instructions returns the xlated instructions: what the simulated kernel
// runs after loading.
func (p *Program) Instructions() []insn.Insn { return append([]insn.Insn(nil), p.xlated...) }

// Xlated renders the xlated program in the syntax of
// `bpftool prog dump xlated`.
func (p *Program) Xlated() string { return insn.Dump(p.xlated, nil) }

// Kernel returns the kernel the program is loaded in.
func (p *Program) Kernel() *Kernel { return p.k }
