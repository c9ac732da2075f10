package jit_arm64_test

import (
	"fmt"
	"testing"

	"github.com/bpfsim/bpfsim/jit_arm64"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// benchPrograms are the programs of BenchmarkCompile and
// BenchmarkTranslate: generated programs of about 75 and 260
// instructions, and test_tag's largest: a straight run of 4,096 moves,
// and of 2,047 lddw.
func benchPrograms(b *testing.B) []struct {
	name  string
	insns []insn.Insn
} {
	moves := make([]insn.Insn, 4096)
	for i := range moves {
		moves[i] = insn.Insn{Code: insn.ALU64 | insn.MOV | insn.K, Dst: uint8(i % 10), Imm: int32(i * 2654435761)}
	}
	moves[len(moves)-1] = insn.Insn{Code: insn.JMP | insn.EXIT}
	// test_tag's other kind after the fix-ups: lddw of a map's kernel
	// address (bpfsim's map addresses look like this one), then exit.
	lddws := make([]insn.Insn, 0, 4096)
	for r := 0; len(lddws) < 4094; r++ {
		addr := uint64(0xffff8000800bf000) + uint64(r%7)<<12
		lddws = append(lddws,
			insn.Insn{Code: insn.LD | insn.IMM | insn.DW, Dst: uint8(r % 10), Imm: int32(uint32(addr))},
			insn.Insn{Imm: int32(uint32(addr >> 32))})
	}
	lddws = append(lddws, insn.Insn{Code: insn.ALU64 | insn.MOV | insn.K, Imm: 42}, insn.Insn{Code: insn.JMP | insn.EXIT})
	gen := func(length int) []insn.Insn {
		o := kdiff.DefaultGenOptions
		o.Length, o.Calls = length, false
		insns, err := insn.FromAsm(kdiff.Generate(1, o).Spec.Instructions)
		if err != nil {
			b.Fatal(err)
		}
		return insns
	}
	return []struct {
		name  string
		insns []insn.Insn
	}{{"generated", gen(10)}, {"generated", gen(200)}, {"moves", moves}, {"lddw", lddws}}
}

// BenchmarkCompile is the JIT alone (passes, placement in a pack,
// finalize, free) per BPF instruction.
func BenchmarkCompile(b *testing.B) {
	for _, c := range benchPrograms(b) {
		b.Run(fmt.Sprintf("%s-%d", c.name, len(c.insns)), func(b *testing.B) {
			e := newJITEnv(b)
			for b.Loop() {
				img, err := e.jit.Compile(&jit_arm64.Input{Insns: c.insns})
				if err != nil {
					b.Fatal(err)
				}
				if err := img.Free(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(c.insns)), "ns/insn")
		})
	}
}

// BenchmarkTranslate is the translation alone, without the allocator.
func BenchmarkTranslate(b *testing.B) {
	for _, c := range benchPrograms(b) {
		b.Run(fmt.Sprintf("%s-%d", c.name, len(c.insns)), func(b *testing.B) {
			for b.Loop() {
				if _, err := jit_arm64.Translate(&jit_arm64.Input{Insns: c.insns}, 0xffff800010000000); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(c.insns)), "ns/insn")
		})
	}
}
