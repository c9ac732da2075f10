//go:build linux

package kdiff

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
)

// TestXDPContextLoadsConvertLikeTheKernel loads an XDP program that reads
// every xdp_md field a test-run program may read, into different
// registers, and compares the xlated code (convert_ctx_accesses) with this
// machine's kernel's, instruction by instruction; then both run it and
// must agree on what it read.
func TestXDPContextLoadsConvertLikeTheKernel(t *testing.T) {
	k := linuxLikeSim(t)
	ldx := func(dst, src uint8, off int16) insn.Insn {
		return insn.Insn{Code: insn.LDX | insn.MEM | insn.W, Dst: dst, Src: src, Off: off}
	}
	stx := func(dst, src uint8, off int16) insn.Insn {
		return insn.Insn{Code: insn.STX | insn.MEM | insn.DW, Dst: dst, Src: src, Off: off}
	}
	prog := []insn.Insn{
		ldx(insn.R2, insn.R1, 0),  // data
		ldx(insn.R3, insn.R1, 4),  // data_end
		ldx(insn.R4, insn.R1, 8),  // data_meta
		ldx(insn.R5, insn.R1, 12), // ingress_ifindex
		ldx(insn.R1, insn.R1, 16), // rx_queue_index, over the context pointer
		// Store what was read into the packet, which must hold 32
		// bytes: data_end - data, data - data_meta, the two indexes.
		{Code: insn.ALU64 | insn.MOV | insn.X, Dst: insn.R0, Src: insn.R2},
		{Code: insn.ALU64 | insn.ADD | insn.K, Dst: insn.R0, Imm: 32},
		{Code: insn.JMP | insn.JGT | insn.X, Dst: insn.R0, Src: insn.R3, Off: 8},
		{Code: insn.ALU64 | insn.SUB | insn.X, Dst: insn.R3, Src: insn.R2},
		stx(insn.R2, insn.R3, 0),
		{Code: insn.ALU64 | insn.MOV | insn.X, Dst: insn.R0, Src: insn.R2},
		{Code: insn.ALU64 | insn.SUB | insn.X, Dst: insn.R0, Src: insn.R4},
		stx(insn.R2, insn.R0, 8),
		stx(insn.R2, insn.R5, 16),
		stx(insn.R2, insn.R1, 24),
		movImm(insn.R0, 2),
		movImm(insn.R0, 2),
		{Code: insn.JMP | insn.EXIT},
	}
	sameXlated(t, k, loadInKernel(t, ebpf.XDP, prog), loadInSim(t, k, ebpf.XDP, prog))

	kern, err := OpenKernel()
	if err != nil {
		t.Skip(err)
	}
	p := &Program{Spec: specOf(t, ebpf.XDP, prog), Packet: make([]byte, 64)}
	ko := kern.Run(p)
	if ko.Rejected != nil || ko.RunErr != nil {
		t.Fatalf("kernel: %v %v", ko.Rejected, ko.RunErr)
	}
	for _, runtime := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		s, err := sim.NewKernel(&sim.Options{Runtime: runtime})
		if err != nil {
			t.Fatal(err)
		}
		so := (&Sim{K: s}).Run(p)
		if d := Diff(ko, so); d != "" {
			t.Errorf("%v: %s", runtime, d)
		}
	}
}

// specOf is insns as a program spec for both runners.
func specOf(t testing.TB, typ ebpf.ProgramType, insns []insn.Insn) *ebpf.ProgramSpec {
	t.Helper()
	var prog asm.Instructions
	r := bytes.NewReader(insn.Encode(insns))
	for r.Len() > 0 {
		var ins asm.Instruction
		if err := ins.Unmarshal(r, binary.LittleEndian, "linux"); err != nil {
			t.Fatal(err)
		}
		prog = append(prog, ins)
	}
	return &ebpf.ProgramSpec{Type: typ, License: "GPL", Instructions: prog}
}
