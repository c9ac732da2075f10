//go:build linux

package kdiff

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/insn"
)

// Kernel loads and test-runs programs in the running Linux kernel.
type Kernel struct{}

// OpenKernel checks that this process may load and run BPF programs here
// (root, or CAP_BPF with CAP_NET_ADMIN, and bpf() not disabled) and
// explains why not otherwise.
func OpenKernel() (*Kernel, error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, errors.Wrap(err, "raising RLIMIT_MEMLOCK")
	}
	probe, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
	})
	if err != nil {
		return nil, errors.Wrap(err, "loading a probe XDP program")
	}
	defer probe.Close()
	if _, err := probe.Run(&ebpf.RunOptions{Data: make([]byte, 14)}); err != nil {
		return nil, errors.Wrap(err, "test-running a probe XDP program")
	}
	return &Kernel{}, nil
}

// Run loads p in the kernel and test-runs it once on its packet; a
// program with maps runs as described at Program (kernel_maps_linux.go).
func (k *Kernel) Run(p *Program) Outcome {
	if p.Maps != nil {
		return k.runMaps(p)
	}
	prog, err := ebpf.NewProgramWithOptions(p.Spec, ebpf.ProgramOptions{LogDisabled: false})
	if err != nil {
		return Outcome{Rejected: err}
	}
	defer prog.Close()
	out := make([]byte, len(p.Packet))
	ret, err := prog.Run(&ebpf.RunOptions{Data: p.Packet, DataOut: out})
	o := Outcome{Retval: ret, Packet: out, RunErr: err}
	o.Xlated, o.XlatedErr = xlated(prog)
	return o
}

// xlated reads back the program the kernel runs after its verifier
// rewrote it, in a form bpfsim can run: bpf-to-bpf calls get their
// relative target back in imm (the kernel keeps it in off, and the
// subprogram index in imm). Context loads stay as the kernel converted
// them: bpfsim hands kernel code the same structure behind the context.
func xlated(prog *ebpf.Program) ([]insn.Insn, error) {
	info, err := prog.Info()
	if err != nil {
		return nil, err
	}
	raw, err := info.Instructions()
	if err != nil {
		return nil, err
	}
	insns, err := fromKernel(raw)
	if err != nil {
		return nil, err
	}
	// Programs the JIT split into functions (jit_subprogs) show each
	// local call's offset in off and its callee's index in imm; one left
	// whole (its only callee removed as never reached) shows the offset
	// in imm, as loaded.
	if addrs, ok := info.JitedKsymAddrs(); !ok || len(addrs) > 1 {
		for i := range insns {
			in := &insns[i]
			if in.Code == insn.JMP|insn.CALL && in.Src == insn.PseudoCall {
				in.Imm, in.Off = int32(in.Off), 0
			}
		}
	}
	return insns, nil
}

// fromKernel encodes instructions cilium/ebpf decoded from the kernel's
// xlated code back into the kernel's own: field by field, so that what
// cilium/ebpf's encoder would refuse or drop stays as the kernel has it (a
// call's imm that is a kernel function's offset from __bpf_call_base, the
// per-CPU move's off of -1). Only its extended opcodes (signed division,
// sign-extending moves, atomics) go through its encoder, which knows them.
func fromKernel(raw asm.Instructions) ([]insn.Insn, error) {
	out := make([]insn.Insn, 0, len(raw))
	for i := range raw {
		ins := &raw[i]
		if ins.OpCode > 0xff || uint8(ins.OpCode)&0xe7 == insn.STX|insn.ATOMIC {
			one, err := insn.FromAsm(asm.Instructions{*ins})
			if err != nil {
				return nil, errors.Wrapf(err, "xlated instruction %d", len(out))
			}
			out = append(out, one...)
			continue
		}
		in := insn.Insn{Code: uint8(ins.OpCode), Dst: uint8(ins.Dst) & 0xf, Src: uint8(ins.Src) & 0xf, Off: ins.Offset, Imm: int32(ins.Constant)}
		if ins.OpCode.IsDWordLoad() {
			out = append(out, in, insn.Insn{Imm: int32(uint64(ins.Constant) >> 32)})
			continue
		}
		out = append(out, in)
	}
	return out, nil
}
