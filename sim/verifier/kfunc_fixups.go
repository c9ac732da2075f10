package verifier

import (
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// KfuncCalls is the ability of a KernelCalls that has kfuncs: the fix-ups
// need each kfunc's address and, for a "__prog" argument, the calling
// program's struct bpf_prog_aux.
type KfuncCalls interface {
	// Kfunc returns the call imm (BPF_CALL_IMM) of the kfunc with this
	// BTF id.
	Kfunc(btfID int32) (int32, error)
	// ProgAux returns the address of the program's struct bpf_prog_aux.
	ProgAux() (uint64, error)
	// KfuncByName returns the call imm of the kernel function name, a
	// specialised kfunc programs do not call by BTF id.
	KfuncByName(name string) (int32, error)
}

// fixupKfuncCall is fixup_kfunc_call: the call's imm becomes the kfunc's
// address relative to __bpf_call_base (on a 64-bit kernel whose JIT has no
// far kfunc calls, as arm64's), so that interpreter and JIT reach it as
// they reach helpers; the call keeps BPF_PSEUDO_KFUNC_CALL in src_reg. A
// "__prog" argument is loaded with the program's aux pointer just before
// the call.
func fixupKfuncCall(p *Prog, i int, calls KernelCalls) ([]insn.Insn, error) {
	kf := p.Aux[i].Kfunc
	kc, ok := calls.(KfuncCalls)
	if kf == nil || !ok {
		return nil, reject(uapi.EFAULT, "verifier internal error: kernel function descriptor not found for func_id %d", p.Insns[i].Imm)
	}
	var imm int32
	var err error
	switch v := p.Aux[i].KfuncVariant; {
	case v != "":
		imm, err = kc.KfuncByName(v)
	case kf.Module != "":
		// A module's kfunc: its id is of the module's BTF.
		imm, err = kc.KfuncByName(kf.Name)
	default:
		imm, err = kc.Kfunc(kf.BTFID)
	}
	if err != nil {
		return nil, reject(uapi.EFAULT, "kernel function %s has no address: %v", kf.Name, err)
	}
	call := p.Insns[i]
	call.Imm = imm
	if kf.ProgArg < 0 {
		p.Insns[i] = call
		return nil, nil
	}
	aux, err := kc.ProgAux()
	if err != nil {
		return nil, reject(uapi.ENOMEM, "no bpf_prog_aux for %s: %v", kf.Name, err)
	}
	reg := uint8(insn.R1 + kf.ProgArg)
	return []insn.Insn{
		{Code: insn.LD | insn.IMM | insn.DW, Dst: reg, Imm: int32(uint32(aux))},
		{Imm: int32(uint32(aux >> 32))},
		call,
	}, nil
}
