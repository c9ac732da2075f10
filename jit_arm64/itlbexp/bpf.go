package itlbexp

import (
	"encoding/binary"

	ebpfasm "github.com/cilium/ebpf/asm"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/jit_arm64"
	"github.com/bpfsim/bpfsim/jit_arm64/a64"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/kdiff"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// BPFPrograms returns a Loader of real BPF programs compiled by the arm64
// JIT (jit_arm64): program i is a program of sim/kdiff's generator (ALU,
// branches, stack and context accesses, atomics, bounded loops; no
// bpf-to-bpf calls) of a length that grows with i's draw, that calls
// bpf_trace_printk once on entry, as the series' stress programs do (the
// call reaches HelperAddr), and treats the experiment's context as its
// packet: the generator's xdp_md loads become "r6 = r1; r7 = r1 +
// CtxSize". The images are what the JIT emits for the address they will
// run at, padded to the sizing pass's length with the break instruction.
func BPFPrograms(seed uint64) Loader { return bpfLoader{seed: seed} }

type bpfLoader struct{ seed uint64 }

func (l bpfLoader) input(i int) (*jit_arm64.Input, error) {
	if i < 0 {
		return nil, errors.Wrapf(uapi.EINVAL, "itlbexp: program %d", i)
	}
	o := kdiff.DefaultGenOptions
	o.Calls = false
	o.PacketSize = 192
	// 10 to 150 body instructions: images of about 0.5 to 5 KiB.
	o.Length = 10 + int((l.seed*0x9e3779b97f4a7c15+uint64(i)*0xbf58476d1ce4e5b9)>>40)%140
	p := kdiff.Generate(l.seed<<20|uint64(i), o)
	body := p.Spec.Instructions
	if len(body) < 2 || body[0].Src != ebpfasm.R1 || body[1].Src != ebpfasm.R1 {
		return nil, errors.Wrapf(uapi.EINVAL, "itlbexp: program %d does not start with the xdp_md loads", i)
	}
	prog := ebpfasm.Instructions{
		ebpfasm.Mov.Reg(ebpfasm.R6, ebpfasm.R1),
		ebpfasm.FnTracePrintk.Call(),
		ebpfasm.Mov.Reg(ebpfasm.R1, ebpfasm.R6),
		ebpfasm.Mov.Reg(body[0].Dst, ebpfasm.R1),
		ebpfasm.Mov.Reg(body[1].Dst, ebpfasm.R1),
		ebpfasm.Add.Imm(body[1].Dst, CtxSize),
	}
	insns, err := insn.FromAsm(append(prog, body[2:]...))
	if err != nil {
		return nil, err
	}
	return &jit_arm64.Input{
		Insns:      insns,
		Funcs:      []jit_arm64.Func{{Start: 0, End: len(insns), StackDepth: insn.MaxBPFStack}},
		CallTarget: func(int32) (uint64, error) { return HelperAddr, nil },
	}, nil
}

func (l bpfLoader) Len(i int) (int, error) {
	in, err := l.input(i)
	if err != nil {
		return 0, err
	}
	words, err := jit_arm64.Translate(in, 0)
	return 4 * len(words), err
}

func (l bpfLoader) Code(i int, image uint64) ([]byte, error) {
	in, err := l.input(i)
	if err != nil {
		return nil, err
	}
	size, err := jit_arm64.Translate(in, 0)
	if err != nil {
		return nil, err
	}
	words, err := jit_arm64.Translate(in, image)
	if err != nil {
		return nil, err
	}
	code := make([]byte, 4*len(size))
	for j := range len(size) {
		w := a64.BreakFault
		if j < len(words) {
			w = words[j]
		}
		binary.LittleEndian.PutUint32(code[4*j:], w)
	}
	return code, nil
}
