package sim_test

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
)

// lookupLoop looks key 3 up n times in m; r0 ends as the last result.
func lookupLoop(t testing.TB, m *sim.Map, n int32) asm.Instructions {
	return associate(t, "m", m, asm.Instructions{
		asm.StoreImm(asm.RFP, -4, 3, asm.Word),
		asm.Mov.Imm(asm.R6, n),
		asm.LoadMapPtr(asm.R1, m.FD()).WithReference("m").WithSymbol("loop"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.Sub.Imm(asm.R6, 1),
		asm.JNE.Imm(asm.R6, 0, "loop"),
		asm.Return(),
	})
}

// BenchmarkMapLookupFromProgram is one bpf_map_lookup_elem call from a
// program, loop overhead (five instructions) included, two ways:
//   - helper: the program runs unverified, so each lookup is the generic
//     helper call;
//   - verified: an XDP program after the verifier's fix-ups, as the kernel
//     runs it: array lookups inlined, hash lookups a direct call of
//     __htab_map_lookup_elem. ANCHORS: ~0.5 ns and ~24 ns in the kernel.
func BenchmarkMapLookupFromProgram(b *testing.B) {
	for _, c := range []struct {
		name string
		spec *ebpf.MapSpec
	}{
		{"array", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 16}},
		{"percpu_array", &ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 16}},
		{"hash", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 16}},
		{"percpu_hash", &ebpf.MapSpec{Type: ebpf.PerCPUHash, KeySize: 4, ValueSize: 8, MaxEntries: 16}},
	} {
		for _, mode := range []string{"helper", "verified"} {
			b.Run(c.name+"/"+mode, func(b *testing.B) {
				k := newKernel(b, nil)
				m := newMap(b, k, c.spec)
				var v any = uint64(1)
				if c.spec.Type == ebpf.PerCPUArray || c.spec.Type == ebpf.PerCPUHash {
					v = []uint64{1, 1}
				}
				if err := m.Put(uint32(3), v); err != nil {
					b.Fatal(err)
				}
				const n = 1000
				typ, insns := ebpf.UnspecifiedProgram, lookupLoop(b, m, n)
				if mode == "verified" {
					// An XDP program must return a number.
					typ = ebpf.XDP
					insns = append(insns[:len(insns)-1:len(insns)-1], asm.Mov.Imm(asm.R0, 2), asm.Return())
				}
				p := load(b, k, typ, insns)
				b.ResetTimer()
				if _, err := p.Run(&sim.RunOptions{Data: make([]byte, 64), Repeat: uint32(b.N)}); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/lookup")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// BenchmarkMapFromUserSpace is the syscall side: Lookup of a present key,
// and, for hashes, an Update of a new key followed by its Delete.
func BenchmarkMapFromUserSpace(b *testing.B) {
	k := newKernel(b, nil)
	arr := newMap(b, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 16})
	hash := newMap(b, k, &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 1024})
	for _, m := range []*sim.Map{arr, hash} {
		if err := m.Put(uint32(3), uint64(7)); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		m    *sim.Map
	}{{"array lookup", arr}, {"hash lookup", hash}} {
		b.Run(c.name, func(b *testing.B) {
			var v uint64
			for i := 0; i < b.N; i++ {
				if err := c.m.Lookup(uint32(3), &v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("hash update+delete", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if err := hash.Update(uint32(100), uint64(i), ebpf.UpdateNoExist); err != nil {
				b.Fatal(err)
			}
			if err := hash.Delete(uint32(100)); err != nil {
				b.Fatal(err)
			}
			if i%512 == 0 {
				k.SynchronizeRCU() // let deleted elements come back
			}
		}
	})
}
