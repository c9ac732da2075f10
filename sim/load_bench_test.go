package sim_test

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// SmallProgramOptions generate XDP programs of about 75 instructions (the
// size ANCHORS.md measured the kernel's load rate with): ALU, branches,
// stack and packet accesses, atomics and loops, no calls.
var smallProgramOptions = func() kdiff.GenOptions {
	o := kdiff.DefaultGenOptions
	o.Length, o.Calls = 10, false
	return o
}()

// SmallPrograms returns n generated programs of about 75 instructions.
func smallPrograms(n int) []*ebpf.ProgramSpec {
	specs := make([]*ebpf.ProgramSpec, n)
	for i := range specs {
		specs[i] = kdiff.Generate(uint64(i), smallProgramOptions).Spec
	}
	return specs
}

// smallBytecode is smallPrograms encoded as the kernel takes them.
func smallBytecode(b *testing.B, n int) [][]byte {
	code := make([][]byte, n)
	for i, spec := range smallPrograms(n) {
		insns, err := insn.FromAsm(spec.Instructions)
		if err != nil {
			b.Fatal(err)
		}
		code[i] = insn.Encode(insns)
	}
	return code
}

// BenchmarkLoad measures the whole load path (copy, map resolution,
// verification, fix-ups, compilation) in programs per second, and the
// kernel's (verifier and JIT) on the same programs in the same run where
// this machine can load BPF programs.
func BenchmarkLoad(b *testing.B) {
	k, err := sim.NewKernel(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("generated-75", func(b *testing.B) {
		specs := smallPrograms(256)
		i := 0
		for b.Loop() {
			p, err := k.NewProgram(specs[i%len(specs)])
			if err != nil {
				b.Fatal(err)
			}
			p.Close()
			i++
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "progs/s")
	})
	b.Run("kernel/generated-75", func(b *testing.B) {
		if _, err := kdiff.OpenKernel(); err != nil {
			b.Skipf("no kernel comparison: %v", err)
		}
		specs := smallPrograms(256)
		i := 0
		for b.Loop() {
			p, err := ebpf.NewProgram(specs[i%len(specs)])
			if err != nil {
				b.Fatal(err)
			}
			p.Close()
			i++
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "progs/s")
	})
	// The raw pair starts from bytecode on both sides: no cilium/ebpf
	// encoding, no BTF, one BPF_PROG_LOAD in the kernel (the figure
	// ANCHORS.md measured).
	b.Run("raw/generated-75", func(b *testing.B) {
		code := smallBytecode(b, 256)
		i := 0
		for b.Loop() {
			p, err := k.LoadBytecode(ebpf.XDP, "raw", code[i%len(code)])
			if err != nil {
				b.Fatal(err)
			}
			p.Close()
			i++
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "progs/s")
	})
	b.Run("kernel/raw/generated-75", func(b *testing.B) {
		kern, err := kdiff.OpenKernel()
		if err != nil {
			b.Skipf("no kernel comparison: %v", err)
		}
		code := smallBytecode(b, 256)
		i := 0
		for b.Loop() {
			closeProg, err := kern.LoadRaw(ebpf.XDP, code[i%len(code)])
			if err != nil {
				b.Fatal(err)
			}
			closeProg()
			i++
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "progs/s")
	})
	b.Run("2-insn", func(b *testing.B) {
		spec := &ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}}
		for b.Loop() {
			p, err := k.NewProgram(spec)
			if err != nil {
				b.Fatal(err)
			}
			p.Close()
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "progs/s")
	})
	b.Run("kernel/2-insn", func(b *testing.B) {
		if _, err := kdiff.OpenKernel(); err != nil {
			b.Skipf("no kernel comparison: %v", err)
		}
		spec := &ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}}
		for b.Loop() {
			p, err := ebpf.NewProgram(spec)
			if err != nil {
				b.Fatal(err)
			}
			p.Close()
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "progs/s")
	})
	// An object whose program reads .kconfig externs: the collection
	// (its .bss map and program) and the .kconfig map the loader fills
	// in from the kernel's configuration; cilium/ebpf reads and parses
	// this machine's /proc/config.gz at each load.
	b.Run("kconfig-collection/bpfsim", func(b *testing.B) {
		spec := externsSpec(b, "kconfig")
		for b.Loop() {
			c, err := k.NewCollection(spec)
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "loads/s")
	})
	b.Run("kconfig-collection/kernel", func(b *testing.B) {
		if _, err := kdiff.OpenKernel(); err != nil {
			b.Skipf("no kernel comparison: %v", err)
		}
		spec := externsSpec(b, "kconfig")
		for b.Loop() {
			c, err := ebpf.NewCollection(spec)
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "loads/s")
	})
}
