package progpack_test

import (
	"fmt"
	"testing"

	"github.com/bpfsim/bpfsim/sim/progpack"
)

var benchModes = []struct {
	name string
	opts progpack.Options
}{
	{"packs", progpack.Options{}},
	{"packs mapped by pages", progpack.Options{PageMappedPacks: true}},
	{"no packs", progpack.Options{Mode: progpack.NoPacks}},
}

// BenchmarkAllocFinalizeFree is the life of one small JIT image: Alloc,
// the JIT's write of its code into the RW image, Finalize (the text copy
// through an alias, or set_memory_rox without packs) and Free (BRK over
// the chunk through an alias, or an unmap). One resident image keeps the
// pack mapped, as on a system that runs BPF programs.
func BenchmarkAllocFinalizeFree(b *testing.B) {
	for _, m := range benchModes {
		for _, size := range []int{256, 2048} {
			b.Run(fmt.Sprintf("%s/%dB", m.name, size), func(b *testing.B) {
				prog := code(size, 1)
				var a *progpack.Allocator
				fresh := func() {
					// Freed virtual ranges are never reused: a new address
					// space before the modules region runs out.
					a, _ = newAllocator(b, m.opts)
					jit(b, a, code(64, 2))
				}
				fresh()
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if i%100_000 == 99_999 {
						b.StopTimer()
						fresh()
						b.StartTimer()
					}
					img, err := a.Alloc(uint32(size), 4)
					if err != nil {
						b.Fatal(err)
					}
					if err := a.Space().Write(img.RWImage(), prog); err != nil {
						b.Fatal(err)
					}
					if err := a.Finalize(img); err != nil {
						b.Fatal(err)
					}
					if err := a.Free(img); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkResidentPrograms loads the seed's 160 programs (8 programs in
// each of 20 stresser instances) of 1 KiB and reports the executable
// memory and the iTLB entries (block and page mappings) they need.
func BenchmarkResidentPrograms(b *testing.B) {
	for _, m := range benchModes {
		b.Run(m.name, func(b *testing.B) {
			var st progpack.Stats
			for i := 0; i < b.N; i++ {
				a, _ := newAllocator(b, m.opts)
				for p := 0; p < 160; p++ {
					jit(b, a, code(1024, byte(p)))
				}
				st = a.Stats()
			}
			b.ReportMetric(float64(st.MappedBytes)/1024, "KiB-mapped")
			b.ReportMetric(float64(st.HugeMappings+st.PageMappings), "iTLB-entries")
			b.ReportMetric(float64(st.ImageBytes)/1024, "KiB-images")
		})
	}
}
