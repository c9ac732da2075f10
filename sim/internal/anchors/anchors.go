// Package anchors holds the BPF programs of ../shared/ANCHORS.md that
// bpfsim's benchmarks measure against other runtimes, so that every
// benchmark of a runtime runs the very same instructions.
package anchors

import "github.com/bpfsim/bpfsim/sim/insn"

// ALULoop is the loop of ANCHORS.md: per iteration add, xor, stack store,
// stack load, add, sub, jne. It runs 7n+4 instructions and returns
// ALULoopResult for n = 1,000,000.
func ALULoop(n int32) []insn.Insn {
	return []insn.Insn{
		{Code: insn.ALU64 | insn.MOV | insn.K, Dst: 0, Imm: 0},
		{Code: insn.ALU64 | insn.MOV | insn.K, Dst: 1, Imm: n},
		{Code: insn.ALU64 | insn.MOV | insn.K, Dst: 2, Imm: 0x5a5a},
		{Code: insn.ALU64 | insn.ADD | insn.X, Dst: 0, Src: 1},
		{Code: insn.ALU64 | insn.XOR | insn.X, Dst: 0, Src: 2},
		{Code: insn.STX | insn.MEM | insn.DW, Dst: 10, Src: 0, Off: -8},
		{Code: insn.LDX | insn.MEM | insn.DW, Dst: 3, Src: 10, Off: -8},
		{Code: insn.ALU64 | insn.ADD | insn.X, Dst: 0, Src: 3},
		{Code: insn.ALU64 | insn.SUB | insn.K, Dst: 1, Imm: 1},
		{Code: insn.JMP | insn.JNE | insn.K, Dst: 1, Imm: 0, Off: -7},
		{Code: insn.JMP | insn.EXIT},
	}
}

// ALULoopResult is what ALULoop(1_000_000) returns.
const ALULoopResult = 0x81296f516d0e20e

// ALULoopInsns is the number of instructions ALULoop(n) runs.
func ALULoopInsns(n int32) int { return 7*int(n) + 4 }
