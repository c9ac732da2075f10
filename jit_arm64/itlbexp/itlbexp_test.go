package itlbexp_test

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/bpfsim/bpfsim/jit_arm64/a64"
	"github.com/bpfsim/bpfsim/jit_arm64/itlbexp"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/progpack"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func smallConfig() itlbexp.Config {
	cfg := itlbexp.DefaultConfig()
	cfg.Rounds = 3
	return cfg
}

// TestPacksReduceITLBMisses runs the series' set-up (160 programs loaded,
// 100 triggered) in the three placements and requires packs to lower the
// iTLB misses per instruction, block-mapped packs the most; the measured
// reductions are logged, not asserted.
func TestPacksReduceITLBMisses(t *testing.T) {
	for _, c := range []struct {
		name   string
		loader itlbexp.Loader
	}{{"stand-ins", nil}, {"JITed BPF programs", itlbexp.BPFPrograms(1)}} {
		t.Run(c.name, func(t *testing.T) {
			cfg := smallConfig()
			cfg.Loader = c.loader
			packsReduceITLBMisses(t, cfg)
		})
	}
}

func packsReduceITLBMisses(t *testing.T, cfg itlbexp.Config) {
	c, err := itlbexp.Compare(cfg)
	if err != nil {
		t.Fatal(err)
	}
	np, pp, hp := c.NoPacks, c.PagePacks, c.HugePacks
	for _, r := range []itlbexp.Result{np, pp, hp} {
		if r.Loaded != 160 || r.Triggered != 100 {
			t.Errorf("%s: %d loaded, %d triggered; want 160 and 100", r.Label(), r.Loaded, r.Triggered)
		}
		// Shared hooks: every trigger runs one program of each process.
		if want := uint64(cfg.Processes * cfg.TriggeredPerProcess * cfg.Processes * cfg.Rounds); r.Runs != want {
			t.Errorf("%s: %d runs, want %d", r.Label(), r.Runs, want)
		}
		if r.ITLB.Instructions != np.ITLB.Instructions || r.ProgramInsns != np.ProgramInsns {
			t.Errorf("%s retired %d (%d in programs), no packs %d (%d): the modes ran different code",
				r.Label(), r.ITLB.Instructions, r.ProgramInsns, np.ITLB.Instructions, np.ProgramInsns)
		}
		if r.ITLB.Flushes != 0 {
			t.Errorf("%s: %d iTLB flushes while measuring: the address space changed under the loop", r.Label(), r.ITLB.Flushes)
		}
		if r.ITLB.Misses == 0 && r.Mode == progpack.NoPacks {
			t.Errorf("no packs: no iTLB misses at all")
		}
	}
	if !(hp.ITLB.MissesPerKilo() < pp.ITLB.MissesPerKilo() && pp.ITLB.MissesPerKilo() < np.ITLB.MissesPerKilo()) {
		t.Errorf("misses/1k insns: no packs %.3f, page-mapped packs %.3f, block-mapped packs %.3f; want decreasing",
			np.ITLB.MissesPerKilo(), pp.ITLB.MissesPerKilo(), hp.ITLB.MissesPerKilo())
	}
	if hp.ITLB.Walks > np.ITLB.Walks {
		t.Errorf("walks: block-mapped packs %d > no packs %d", hp.ITLB.Walks, np.ITLB.Walks)
	}
	t.Logf("misses/1k insns: no packs %.3f, packs (4 KiB) %.3f, packs (2 MiB) %.3f; reduction %.1f%% (4 KiB), %.1f%% (2 MiB); walks reduction %.1f%% (2 MiB)",
		np.ITLB.MissesPerKilo(), pp.ITLB.MissesPerKilo(), hp.ITLB.MissesPerKilo(),
		100*itlbexp.Reduction(np, pp, itlbexp.Misses), 100*itlbexp.Reduction(np, hp, itlbexp.Misses),
		100*itlbexp.Reduction(np, hp, itlbexp.Walks))
	var b strings.Builder
	if err := c.Report(&b); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", b.String())
}

// TestBPFProgramsAreTheJITsOutput: the images of BPFPrograms are what
// the JIT emits, at the address they will run at, padded to the sizing
// pass's length with the break instruction, and differ between programs.
func TestBPFProgramsAreTheJITsOutput(t *testing.T) {
	l := itlbexp.BPFPrograms(1)
	sizes := map[int]bool{}
	for i := 0; i < 16; i++ {
		n, err := l.Len(i)
		if err != nil {
			t.Fatal(err)
		}
		code, err := l.Code(i, 0xffff_8000_0010_0000)
		if err != nil || len(code) != n {
			t.Fatalf("program %d: %d bytes, Len %d, %v", i, len(code), n, err)
		}
		// The prologue's first word is mov x9, x30.
		if w := uint32(code[0]) | uint32(code[1])<<8 | uint32(code[2])<<16 | uint32(code[3])<<24; w != 0xaa1e03e9 {
			t.Fatalf("program %d starts with %#08x, not the JIT's prologue", i, w)
		}
		sizes[n] = true
	}
	if len(sizes) < 8 {
		t.Fatalf("16 programs have only %d sizes", len(sizes))
	}
	if _, err := l.Len(-1); err == nil {
		t.Fatal("program -1 loaded")
	}
}

func TestImageMemoryInEachPlacement(t *testing.T) {
	c, err := itlbexp.Compare(smallConfig())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		r                 itlbexp.Result
		areas, huge, page int
	}{
		{c.NoPacks, 160, 0, -1},
		{c.PagePacks, 1, 0, progpack.PackSize / mem.PageSize},
		{c.HugePacks, 1, 1, 0},
	}
	for _, tc := range cases {
		t.Run(tc.r.Label(), func(t *testing.T) {
			p := tc.r.Pack
			if p.Images != 160 || p.RWBuffers != 0 {
				t.Errorf("%d images, %d RW buffers left; want 160 and 0", p.Images, p.RWBuffers)
			}
			if tc.r.ImageAreas != tc.areas || tc.r.ImageAreaBytes != p.MappedBytes {
				t.Errorf("%d areas of %d bytes in the space; want %d areas of the %d bytes progpack maps",
					tc.r.ImageAreas, tc.r.ImageAreaBytes, tc.areas, p.MappedBytes)
			}
			if p.HugeMappings != tc.huge || (tc.page >= 0 && p.PageMappings != tc.page) {
				t.Errorf("%d block and %d page entries, want %d and %d", p.HugeMappings, p.PageMappings, tc.huge, tc.page)
			}
			if tc.r.Mode == progpack.NoPacks && p.PageMappings < 160 {
				t.Errorf("no packs: %d page entries for 160 images", p.PageMappings)
			}
		})
	}
}

func TestStandInsAreRealisticallySizedAndDeterministic(t *testing.T) {
	l := itlbexp.StandIns(7)
	var total int
	for i := 0; i < 160; i++ {
		n, err := l.Len(i)
		if err != nil {
			t.Fatal(err)
		}
		if n < 296 || n > 4096 || n%4 != 0 {
			t.Errorf("program %d: %d bytes, want 300 B to 4 KiB of whole words", i, n)
		}
		a, _ := l.Code(i, 0)
		b, _ := l.Code(i, 0x1000)
		if string(a) != string(b) || len(a) != n {
			t.Errorf("program %d differs between calls or from its length", i)
		}
		total += n
	}
	t.Logf("160 stand-ins, %d bytes, %d on average", total, total/160)
}

// TestLoaderIsPluggable runs the experiment with images from a Loader
// that resolves a PC-relative reference against the image address it is
// given, the way the JIT resolves against ro_image.
func TestLoaderIsPluggable(t *testing.T) {
	var images []uint64
	cfg := smallConfig()
	cfg.Processes, cfg.ProgsPerProcess, cfg.TriggeredPerProcess = 2, 2, 1
	cfg.Loader = loaderFunc{
		n: func(i int) (int, error) { return 8, nil },
		code: func(i int, image uint64) ([]byte, error) {
			images = append(images, image)
			adr, err := a64.Adr(a64.X0, 0) // x0 = the image's own address
			if err != nil {
				return nil, err
			}
			ret, err := a64.Ret(a64.LR)
			if err != nil {
				return nil, err
			}
			return binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, adr), ret), nil
		},
	}
	r, err := itlbexp.Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(images) != 4 || r.Loaded != 4 || r.Pack.Images != 4 {
		t.Fatalf("Code called for %v, %d loaded", images, r.Loaded)
	}
	if want := uint64(2 * 1 * 2 * cfg.Rounds); r.Runs != want {
		t.Errorf("%d runs, want %d", r.Runs, want)
	}
	if r.ProgramInsns != 2*r.Runs {
		t.Errorf("%d instructions in programs, want 2 per run (%d runs)", r.ProgramInsns, r.Runs)
	}
}

type loaderFunc struct {
	n    func(i int) (int, error)
	code func(i int, image uint64) ([]byte, error)
}

func (l loaderFunc) Len(i int) (int, error)                   { return l.n(i) }
func (l loaderFunc) Code(i int, image uint64) ([]byte, error) { return l.code(i, image) }

func TestBadInputIsEINVAL(t *testing.T) {
	short := itlbexp.CodeFunc(func(i int) ([]byte, error) { return []byte{1, 2, 3}, nil })
	lying := loaderFunc{
		n:    func(int) (int, error) { return 8, nil },
		code: func(int, uint64) ([]byte, error) { return make([]byte, 4), nil },
	}
	cases := []struct {
		name string
		edit func(*itlbexp.Config)
	}{
		{"no processes", func(c *itlbexp.Config) { c.Processes = 0 }},
		{"more triggered than loaded", func(c *itlbexp.Config) { c.TriggeredPerProcess = 9 }},
		{"no rounds", func(c *itlbexp.Config) { c.Rounds = 0 }},
		{"other code with a 64 KiB mapping", func(c *itlbexp.Config) { c.Other[0].Mapping = 64 << 10 }},
		{"an image not a whole number of words", func(c *itlbexp.Config) { c.Loader = short }},
		{"code shorter than announced", func(c *itlbexp.Config) { c.Loader = lying }},
		{"an iTLB of no entries", func(c *itlbexp.Config) { c.ITLB.L1Entries = 0 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := smallConfig()
			tc.edit(&cfg)
			if _, err := itlbexp.Run(cfg); !errors.Is(err, uapi.EINVAL) {
				t.Errorf("Run: %v, want EINVAL", err)
			}
		})
	}
}

// BenchmarkExperiment runs the three placements of the default set-up
// (3 measured rounds) and reports the measured rates and reductions.
func BenchmarkExperiment(b *testing.B) {
	var c itlbexp.Comparison
	for b.Loop() {
		var err error
		if c, err = itlbexp.Compare(smallConfig()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(c.NoPacks.ITLB.MissesPerKilo(), "nopacks-misses/kinsn")
	b.ReportMetric(c.PagePacks.ITLB.MissesPerKilo(), "pagepacks-misses/kinsn")
	b.ReportMetric(c.HugePacks.ITLB.MissesPerKilo(), "packs-misses/kinsn")
	b.ReportMetric(100*itlbexp.Reduction(c.NoPacks, c.HugePacks, itlbexp.Misses), "reduction-%")
	b.ReportMetric(float64(3*(c.NoPacks.ITLB.Instructions)), "insns/op")
}
