package sim_test

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// TestScalarTrackingLikeKernel compares what the verifier knows of a
// register after an ALU operation with what this machine's kernel knows:
// for values of several shapes (constants at the edges of the ranges,
// zero-extended loads of every width, negative ranges, sparse bit
// patterns) through every ALU operation on both widths, the register's
// state as the level-2 log prints it must be the kernel's, character for
// character. Where the verifier knows less than the kernel it explores
// more paths; where it knows more it accepts what the kernel refuses.
func TestScalarTrackingLikeKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	type setup struct {
		name  string
		insns asm.Instructions // leave the value in r1; r6 points to 16 readable packet bytes
	}
	load := func(size asm.Size) asm.Instructions { return asm.Instructions{asm.LoadMem(asm.R1, asm.R6, 0, size)} }
	setups := []setup{
		{"0", asm.Instructions{asm.Mov.Imm(asm.R1, 0)}},
		{"5", asm.Instructions{asm.Mov.Imm(asm.R1, 5)}},
		{"-5", asm.Instructions{asm.Mov.Imm(asm.R1, -5)}},
		{"s32max", asm.Instructions{asm.Mov.Imm(asm.R1, math.MaxInt32)}},
		{"0x80000000", asm.Instructions{asm.Mov.Imm32(asm.R1, math.MinInt32)}},
		{"s64min", asm.Instructions{asm.LoadImm(asm.R1, math.MinInt64, asm.DWord)}},
		{"0x0123456789abcdef", asm.Instructions{asm.LoadImm(asm.R1, 0x0123456789abcdef, asm.DWord)}},
		{"u8", load(asm.Byte)},
		{"u16", load(asm.Half)},
		{"u32", load(asm.Word)},
		{"u64", load(asm.DWord)},
		{"u8-100", append(load(asm.Byte), asm.Sub.Imm(asm.R1, 100))},
		{"u8<<8|1", append(load(asm.Byte), asm.LSh.Imm(asm.R1, 8), asm.Or.Imm(asm.R1, 1))},
		{"u16&0xf0f0", append(load(asm.Half), asm.And.Imm(asm.R1, 0xf0f0))},
		{"u32<<32", append(load(asm.Word), asm.LSh.Imm(asm.R1, 32))},
		{"s8", asm.Instructions{asm.LoadMemSX(asm.R1, asm.R6, 0, asm.Byte)}},
	}
	type op struct {
		name string
		in   asm.Instruction
	}
	ops := []op{
		{"neg64", asm.Instruction{OpCode: asm.OpCode(0x87), Dst: asm.R1}},
		{"neg32", asm.Instruction{OpCode: asm.OpCode(0x84), Dst: asm.R1}},
	}
	for _, w := range []int64{16, 32, 64} {
		ops = append(ops,
			op{fmt.Sprintf("be%d", w), asm.Instruction{OpCode: asm.OpCode(0xdc), Dst: asm.R1, Constant: w}},
			op{fmt.Sprintf("le%d", w), asm.Instruction{OpCode: asm.OpCode(0xd4), Dst: asm.R1, Constant: w}},
			op{fmt.Sprintf("bswap%d", w), asm.Instruction{OpCode: asm.OpCode(0xd7), Dst: asm.R1, Constant: w}},
		)
	}
	for _, alu := range []struct {
		name string
		op   asm.ALUOp
	}{{"add", asm.Add}, {"sub", asm.Sub}, {"mul", asm.Mul}, {"and", asm.And}, {"or", asm.Or}, {"xor", asm.Xor}, {"lsh", asm.LSh}, {"rsh", asm.RSh}, {"arsh", asm.ArSh}} {
		for _, c := range []int32{3, -3, 0x7fff0000} {
			if (alu.op == asm.LSh || alu.op == asm.RSh || alu.op == asm.ArSh) && c != 3 {
				continue
			}
			ops = append(ops,
				op{fmt.Sprintf("%s64 %d", alu.name, c), alu.op.Imm(asm.R1, c)},
				op{fmt.Sprintf("%s32 %d", alu.name, c), alu.op.Imm32(asm.R1, c)},
			)
		}
	}
	compared, differ := 0, 0
	for _, s := range setups {
		for _, o := range ops {
			insns := asm.Instructions{
				asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
				asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
				asm.Mov.Reg(asm.R6, asm.R2),
				asm.Add.Imm(asm.R2, 16),
				asm.JGT.Reg(asm.R2, asm.R3, "out"),
			}
			insns = append(insns, s.insns...)
			opIndex := 0
			for _, in := range insns {
				opIndex += int(in.Size() / asm.InstructionSize)
			}
			insns = append(insns, o.in, asm.Mov.Imm(asm.R0, 2).WithSymbol("out"), asm.Return())
			spec := &ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: insns}
			kp, err := ebpf.NewProgramWithOptions(spec, ebpf.ProgramOptions{LogLevel: ebpf.LogLevelInstruction})
			if err != nil {
				t.Fatalf("%s / %s: the kernel refused it: %v", s.name, o.name, err)
			}
			kLine := stateAfter(kp.VerifierLog, opIndex)
			kp.Close()
			sp, err := k.NewProgramWithOptions(spec, sim.ProgramOptions{LogLevel: ebpf.LogLevelInstruction})
			if err != nil {
				t.Fatalf("%s / %s: bpfsim refused it: %v", s.name, o.name, err)
			}
			sLine := stateAfter(sp.VerifierLog(), opIndex)
			sp.Close()
			compared++
			if kLine == "" || kLine != sLine {
				differ++
				t.Errorf("r1 = %s; %s:\n kernel: %s\n bpfsim: %s", s.name, o.name, kLine, sLine)
			}
		}
	}
	t.Logf("%d register states compared, %d differ", compared, differ)
}

// stateAfter returns what a level-2 log says of the registers after the
// instruction at idx: the text after the ';' of its line.
func stateAfter(log string, idx int) string {
	prefix := fmt.Sprintf("%d: (", idx)
	for _, line := range strings.Split(log, "\n") {
		if strings.HasPrefix(line, prefix) {
			if _, after, ok := strings.Cut(line, ";"); ok {
				return strings.TrimSpace(after)
			}
		}
	}
	return ""
}
