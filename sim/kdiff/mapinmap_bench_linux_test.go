//go:build linux

package kdiff

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// innerLookupLoop looks up outer[0], then inner[0] in the map found, n
// times; an XDP program, so that both kernels test-run it with repeat.
func innerLookupLoop(outer int, n int32) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.Mov.Imm(asm.R6, n),
		asm.LoadMapPtr(asm.R1, outer).WithSymbol("loop"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Reg(asm.R1, asm.R0),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Sub.Imm(asm.R6, 1),
		asm.JNE.Imm(asm.R6, 0, "loop"),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("out"),
		asm.Return(),
	}
}

// BenchmarkInnerMapLookup is one lookup through an outer map, outer and
// inner lookup together, loop overhead (three instructions) included:
// inner arrays inlined (no BPF_F_INNER_MAP), called directly
// (array_map_lookup_elem, BPF_F_INNER_MAP), and a hash of maps with inner
// hashes; on bpfsim and, through BPF_PROG_TEST_RUN with repeat, on this
// machine's kernel.
func BenchmarkInnerMapLookup(b *testing.B) {
	const n = 1000
	for _, c := range []struct {
		name  string
		outer ebpf.MapType
		inner ebpf.MapSpec
	}{
		{"array_of_maps/inline", ebpf.ArrayOfMaps, ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4}},
		{"array_of_maps/call", ebpf.ArrayOfMaps, ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4, Flags: uapi.BPF_F_INNER_MAP}},
		{"hash_of_maps/hash", ebpf.HashOfMaps, ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4}},
	} {
		spec := &ebpf.MapSpec{Type: c.outer, KeySize: 4, ValueSize: 4, MaxEntries: 4, InnerMap: &c.inner}
		b.Run(c.name+"/bpfsim", func(b *testing.B) {
			k, err := sim.NewKernel(nil)
			if err != nil {
				b.Fatal(err)
			}
			outer, err := k.NewMap(spec)
			if err != nil {
				b.Fatal(err)
			}
			defer outer.Close()
			inner, err := k.NewMap(&c.inner)
			if err != nil {
				b.Fatal(err)
			}
			defer inner.Close()
			if err := inner.Put(uint32(0), uint64(1)); err != nil {
				b.Fatal(err)
			}
			if err := outer.Put(uint32(0), inner); err != nil {
				b.Fatal(err)
			}
			p, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: innerLookupLoop(outer.FD(), n)})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			b.ResetTimer()
			if _, err := p.Run(&sim.RunOptions{Data: make([]byte, 64), Repeat: uint32(b.N)}); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/lookup")
			b.ReportMetric(0, "ns/op")
		})
		b.Run(c.name+"/kernel", func(b *testing.B) {
			if _, err := OpenKernel(); err != nil {
				b.Skipf("skipped: this machine cannot load BPF programs: %v", err)
			}
			outer, err := ebpf.NewMap(spec)
			if err != nil {
				b.Fatal(err)
			}
			defer outer.Close()
			inner, err := ebpf.NewMap(&c.inner)
			if err != nil {
				b.Fatal(err)
			}
			defer inner.Close()
			if err := inner.Put(uint32(0), uint64(1)); err != nil {
				b.Fatal(err)
			}
			if err := outer.Put(uint32(0), inner); err != nil {
				b.Fatal(err)
			}
			p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: innerLookupLoop(outer.FD(), n)})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			b.ResetTimer()
			_, d, err := p.Benchmark(make([]byte, 64), b.N, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(d.Nanoseconds())/n, "ns/lookup")
			b.ReportMetric(0, "ns/op")
		})
	}
}
