package sim_test

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// BenchmarkVerifiedLoad measures loading programs that make the verifier
// work, in bpfsim and, in the same run, in this machine's kernel (which
// also JIT-compiles them):
//
//   - lb: the Maglev load balancer of testdata/lb.bpf.c (450
//     instructions, a bpf-to-bpf call, five maps and .rodata), its maps
//     created once;
//   - lb-collection: the whole object, maps included, per load;
//   - generated-1000: branchy generated XDP programs of about 1,000
//     instructions (kdiff.Generate), seeds the kernel accepts.
//
// Each reports ms/load and the instructions the verifier processed per
// load. The kernel sub-benchmarks skip without BPF privileges.
func BenchmarkVerifiedLoad(b *testing.B) {
	spec := loadLBSpec(b)
	generated := generatedPrograms(b)

	b.Run("bpfsim", func(b *testing.B) {
		k := newKernel(b, nil)
		coll, err := k.NewCollection(spec) // the maps the balancer refers to
		if err != nil {
			b.Fatal(err)
		}
		defer coll.Close()
		lb := withMaps(b, spec.Programs["xdp_lb4"], coll.Maps)
		load := func(ps *ebpf.ProgramSpec) int {
			p, err := k.NewProgram(ps)
			if err != nil {
				b.Fatalf("%s: %v", ps.Name, err)
			}
			n, _ := p.VerifiedInstructions()
			p.Close()
			return n
		}
		b.Run("lb", func(b *testing.B) { benchLoads(b, []*ebpf.ProgramSpec{lb}, load) })
		b.Run("lb-collection", func(b *testing.B) {
			benchLoads(b, []*ebpf.ProgramSpec{spec.Programs["xdp_lb4"]}, func(*ebpf.ProgramSpec) int {
				c, err := k.NewCollection(spec)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := c.Programs["xdp_lb4"].VerifiedInstructions()
				c.Close()
				return n
			})
		})
		b.Run("generated-1000", func(b *testing.B) { benchLoads(b, generated, load) })
	})

	b.Run("kernel", func(b *testing.B) {
		if _, err := kdiff.OpenKernel(); err != nil {
			b.Skipf("kernel loads skipped: this machine cannot load BPF programs: %v", err)
		}
		coll, err := ebpf.NewCollection(spec)
		if err != nil {
			b.Fatal(err)
		}
		defer coll.Close()
		lb := withMaps(b, spec.Programs["xdp_lb4"], coll.Maps)
		load := func(ps *ebpf.ProgramSpec) int {
			p, err := ebpf.NewProgram(ps)
			if err != nil {
				b.Fatalf("%s: %v", ps.Name, err)
			}
			n := kernelVerifiedInstructions(b, p)
			p.Close()
			return n
		}
		b.Run("lb", func(b *testing.B) { benchLoads(b, []*ebpf.ProgramSpec{lb}, load) })
		b.Run("lb-collection", func(b *testing.B) {
			benchLoads(b, []*ebpf.ProgramSpec{spec.Programs["xdp_lb4"]}, func(*ebpf.ProgramSpec) int {
				c, err := ebpf.NewCollection(spec)
				if err != nil {
					b.Fatal(err)
				}
				n := kernelVerifiedInstructions(b, c.Programs["xdp_lb4"])
				c.Close()
				return n
			})
		})
		b.Run("generated-1000", func(b *testing.B) { benchLoads(b, generated, load) })
	})
}

// benchLoads loads the programs in turn, load returning the instructions
// the verifier processed; the metric is its mean over the programs loaded.
func benchLoads(b *testing.B, specs []*ebpf.ProgramSpec, load func(*ebpf.ProgramSpec) int) {
	verified := make([]int, len(specs))
	i := 0
	for b.Loop() {
		verified[i%len(specs)] = load(specs[i%len(specs)])
		i++
	}
	loaded := verified[:min(i, len(specs))]
	sum := 0
	for _, n := range loaded {
		sum += n
	}
	b.ReportMetric(b.Elapsed().Seconds()*1e3/float64(i), "ms/load")
	b.ReportMetric(float64(sum)/float64(len(loaded)), "verified-insns/load")
}

// generatedLength gives kdiff.Generate programs of about 1,000
// instructions (920 to 1,030 for the seeds below).
const generatedLength = 240

// generatedSeeds are the first seeds at generatedLength; this machine's
// kernel (6.18) accepts them all.
var generatedSeeds = []uint64{0, 1, 2, 3}

func generatedPrograms(b *testing.B) []*ebpf.ProgramSpec {
	o := kdiff.DefaultGenOptions
	o.Length = generatedLength
	var specs []*ebpf.ProgramSpec
	for _, seed := range generatedSeeds {
		specs = append(specs, kdiff.Generate(seed, o).Spec)
	}
	return specs
}

// withMaps returns a copy of ps whose map references are resolved to
// maps, *sim.Map or *ebpf.Map, by name.
func withMaps[M asm.FDer](b *testing.B, ps *ebpf.ProgramSpec, maps map[string]M) *ebpf.ProgramSpec {
	ps = ps.Copy()
	for name, m := range maps {
		if err := ps.Instructions.AssociateMap(name, m); err != nil {
			b.Fatalf("map %s: %v", name, err)
		}
	}
	return ps
}

func kernelVerifiedInstructions(b *testing.B, p *ebpf.Program) int {
	info, err := p.Info()
	if err != nil {
		b.Fatal(err)
	}
	n, _ := info.VerifiedInstructions()
	return int(n)
}
