package itlbexp

import (
	"math/rand/v2"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/jit_arm64"
	"github.com/bpfsim/bpfsim/jit_arm64/emu"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/progpack"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Addresses of the text the experiment charges without emulating it
// (emu.CPU.ChargeFetch). They only name iTLB entries: nothing is mapped
// there in the simulated space.
const (
	// KernelText stands for the kernel image's text, which arm64 maps by
	// 2 MiB blocks. It lies between the linear map and the modules region,
	// where the simulated space allocates nothing.
	KernelText uint64 = 0xffff_7f00_0000_0000
	// UserText stands for user-space text (a lower-half address). Each
	// process's copy is offset by its index << 32, standing for its ASID.
	UserText uint64 = 0x0000_aaaa_0000_0000
)

// TextRegion is code competing for the iTLB that the experiment charges
// instead of emulating: a working set of Pages pages, Stride bytes apart,
// of which a visit runs PagesPerVisit chosen at random (uniformly, from
// the experiment's seeded generator), InsnsPerPage instructions on each.
type TextRegion struct {
	Name string
	Base uint64
	// Mapping is the size of the translations of the text: mem.PageSize
	// or mem.HugeSize.
	Mapping uint64
	// Pages is the working set; Stride the distance between its pages
	// (mem.PageSize when 0), so that a kernel path can spread over
	// several 2 MiB blocks.
	Pages  int
	Stride uint64
	// PagesPerVisit pages run on a visit, InsnsPerPage instructions each.
	PagesPerVisit, InsnsPerPage int
	// Every makes the region run after every Every-th trigger only (a
	// context switch to another task); 0 or 1 means after each trigger.
	// Before the trigger, when BeforeTrigger is set (a syscall's entry).
	Every         int
	BeforeTrigger bool
	// PerProcess gives each stresser process its own copy of the text
	// (user code under its own ASID): process p's copy is at Base + p<<32.
	PerProcess bool
}

// DefaultOther is the code interleaved with the programs by default, a
// guess at one CPU of the series' set-up (documented in the package doc):
// each trigger is a stresser's loop around a system call (one user page
// per process, 20 instructions), the system call's kernel path (12 pages
// out of a 32-page working set spread over 8 MiB of block-mapped kernel
// text, 40 instructions each) and, after every fifth trigger, a time slice
// of gcc's compiler proper (32 pages out of a 2 MiB hot set mapped by
// 4 KiB pages, 64 instructions each).
func DefaultOther() []TextRegion {
	return []TextRegion{
		{Name: "stresser loop", Base: UserText, Mapping: mem.PageSize, Pages: 1, PagesPerVisit: 1, InsnsPerPage: 20, BeforeTrigger: true, PerProcess: true},
		{Name: "syscall path", Base: KernelText, Mapping: mem.HugeSize, Pages: 32, Stride: 256 << 10, PagesPerVisit: 12, InsnsPerPage: 40, BeforeTrigger: true},
		{Name: "gcc cc1", Base: UserText + 0x1000_0000, Mapping: mem.PageSize, Pages: 512, PagesPerVisit: 32, InsnsPerPage: 64, Every: 5},
	}
}

// DefaultHelper is the kernel text the stand-ins' helper call runs, a
// guess at bpf_trace_printk (bpf_printk in the series' stress programs):
// 8 pages of a 16-page working set spread over 2 MiB of block-mapped
// kernel text, 60 instructions each.
func DefaultHelper() TextRegion {
	return TextRegion{Name: "bpf_trace_printk", Base: KernelText + 0x100_0000, Mapping: mem.HugeSize, Pages: 16, Stride: 128 << 10, PagesPerVisit: 8, InsnsPerPage: 60}
}

// Config describes one run of the experiment.
type Config struct {
	// Mode and PageMappedPacks choose how progpack places the images.
	Mode            progpack.Mode
	PageMappedPacks bool
	// Processes load ProgsPerProcess programs each and trigger the first
	// TriggeredPerProcess of them in turn: 20, 8 and 5 in the series.
	Processes, ProgsPerProcess, TriggeredPerProcess int
	// SharedHooks attaches every process's k-th triggered program to one
	// hook shared by all, as the series' stress tool attaches to system
	// call tracepoints (sys_enter_getpgid, _getgid, _getuid,
	// _getpriority, _geteuid): a trigger, one system call, runs the
	// programs of all processes attached there, in load order. Without it
	// a trigger runs the calling process's program only.
	SharedHooks bool
	// Slice is how many triggers (system calls) a process makes before
	// the next one runs (TriggeredPerProcess when 0: one pass of its loop).
	Slice int
	// Rounds is how many times each triggered program runs while the
	// counters count, after one warm-up round.
	Rounds int
	// ITLB sizes the instruction TLB.
	ITLB emu.ITLBConfig
	// Other is the code interleaved with the programs.
	Other []TextRegion
	// Helper is the kernel text a call to HelperAddr charges (one visit
	// per call); its Every, BeforeTrigger and PerProcess are ignored.
	Helper TextRegion
	// Setup, if set, runs after loading and before the first trigger: it
	// may register more Go functions on the CPU (helpers a real JIT's
	// images call) or prepare memory.
	Setup func(cpu *emu.CPU, space *mem.Space) error
	// Loader produces the images; StandIns(Seed) when nil.
	Loader Loader
	// Seed drives the stand-ins, the image offsets progpack randomizes
	// and the pages other code visits, so that both modes see the same.
	Seed uint64
}

// DefaultConfig is the series' set-up on the default iTLB, with packs.
func DefaultConfig() Config {
	return Config{
		Mode:                progpack.Packs,
		Processes:           20,
		ProgsPerProcess:     8,
		TriggeredPerProcess: 5,
		SharedHooks:         true,
		Rounds:              50,
		ITLB:                emu.DefaultITLBConfig(),
		Other:               DefaultOther(),
		Helper:              DefaultHelper(),
		Seed:                1,
	}
}

// Result is what one run measured.
type Result struct {
	Mode            progpack.Mode
	PageMappedPacks bool
	// Loaded and Triggered count programs; Runs counts measured runs.
	Loaded, Triggered int
	Runs              uint64
	// ITLB holds the counters over the measured rounds; ProgramInsns is
	// the part of ITLB.Instructions retired inside the programs' runs,
	// including the helper text their calls charge.
	ITLB         emu.ITLBStats
	ProgramInsns uint64
	// Pack is the allocator's memory use with every image loaded.
	Pack progpack.Stats
	// ImageAreas and ImageAreaBytes count the executable areas of the
	// address space holding images, from the space's own list.
	ImageAreas     int
	ImageAreaBytes uint64
}

// Label names the placement: "no packs", "packs (4 KiB pages)" or
// "packs (2 MiB block)".
func (r Result) Label() string { return label(r.Mode, r.PageMappedPacks) }

func label(m progpack.Mode, pageMapped bool) string {
	switch {
	case m == progpack.NoPacks:
		return "no packs"
	case pageMapped:
		return "packs (4 KiB pages)"
	}
	return "packs (2 MiB block)"
}

func (cfg *Config) check() error {
	switch {
	case cfg.Processes <= 0, cfg.ProgsPerProcess <= 0, cfg.TriggeredPerProcess <= 0,
		cfg.TriggeredPerProcess > cfg.ProgsPerProcess, cfg.Rounds <= 0, cfg.Slice < 0:
		return errors.Wrapf(uapi.EINVAL, "itlbexp: %d processes x %d programs, %d triggered, slice %d, %d rounds",
			cfg.Processes, cfg.ProgsPerProcess, cfg.TriggeredPerProcess, cfg.Slice, cfg.Rounds)
	}
	for _, o := range append([]TextRegion{cfg.Helper}, cfg.Other...) {
		if o.Name == "" && o.Pages == 0 && o.PagesPerVisit == 0 {
			continue // no helper text
		}
		if o.Pages <= 0 || o.PagesPerVisit < 0 || o.InsnsPerPage < 0 || o.Every < 0 ||
			(o.Mapping != mem.PageSize && o.Mapping != mem.HugeSize) {
			return errors.Wrapf(uapi.EINVAL, "itlbexp: other code %q: %+v", o.Name, o)
		}
	}
	return nil
}

// program is one loaded image.
type program struct {
	bin   *progpack.Binary
	entry uint64
}

// Run loads Processes x ProgsPerProcess programs through progpack in the
// configured mode, then triggers TriggeredPerProcess of each process's
// programs on one emulated CPU, interleaved with the other code: one
// warm-up round, then Rounds measured rounds.
func Run(cfg Config) (Result, error) {
	if err := cfg.check(); err != nil {
		return Result{}, err
	}
	if cfg.Loader == nil {
		cfg.Loader = StandIns(cfg.Seed)
	}
	if cfg.Slice == 0 {
		cfg.Slice = cfg.TriggeredPerProcess
	}
	space := mem.New()
	placeRand := rand.New(rand.NewPCG(cfg.Seed, 0x9ac4))
	alloc, err := progpack.New(space, jit_arm64.NewPatcher(space), progpack.Options{
		Mode:            cfg.Mode,
		PageMappedPacks: cfg.PageMappedPacks,
		// One goroutine loads, so the generator needs no lock.
		Rand: func(n uint32) uint32 { return placeRand.Uint32N(n) },
	})
	if err != nil {
		return Result{}, err
	}
	res := Result{Mode: cfg.Mode, PageMappedPacks: cfg.PageMappedPacks}

	// Load: process by process, as the stressers start one after another.
	progs := make([][]program, cfg.Processes)
	for p := range progs {
		for j := 0; j < cfg.ProgsPerProcess; j++ {
			prog, err := load(alloc, space, cfg.Loader, p*cfg.ProgsPerProcess+j)
			if err != nil {
				return Result{}, err
			}
			progs[p] = append(progs[p], prog)
		}
	}
	res.Loaded = cfg.Processes * cfg.ProgsPerProcess
	res.Triggered = cfg.Processes * cfg.TriggeredPerProcess
	res.Pack = alloc.Stats()
	for _, a := range space.Areas() {
		switch a.Name {
		case "bpf_prog_pack", "bpf_jit_binary", "bpf_jit_alloc_exec":
			res.ImageAreas++
			res.ImageAreaBytes += a.Size
		}
	}

	ctx, err := space.Vmalloc(CtxSize, mem.PermRW, "ctx")
	if err != nil {
		return Result{}, err
	}
	fill := make([]byte, CtxSize)
	for i := range fill {
		fill[i] = byte(i*131 + 7)
	}
	if err := space.Write(ctx, fill); err != nil {
		return Result{}, err
	}
	stack, err := space.Vmalloc(StackSize, mem.PermRW, "stack")
	if err != nil {
		return Result{}, err
	}
	cpu := emu.New(space.NewTLB())
	cpu.SetSP(stack + StackSize)
	cpu.Limit = 1 << 22 // a runaway image is an error, not a hang
	if err := cpu.EnableITLB(cfg.ITLB); err != nil {
		return Result{}, err
	}

	r := &runner{cfg: &cfg, cpu: cpu, rng: rand.New(rand.NewPCG(cfg.Seed, 0x07e4)), ctx: ctx}
	cpu.Funcs[HelperAddr] = func(c *emu.CPU) error {
		r.visit(&cfg.Helper, 0)
		c.SetX(0, c.X(0)>>3) // some result the program folds in
		return nil
	}
	if cfg.Setup != nil {
		if err := cfg.Setup(cpu, space); err != nil {
			return Result{}, err
		}
	}
	if err := r.rounds(progs, 1); err != nil {
		return Result{}, err
	}
	cpu.ResetITLBStats()
	r.runs, r.progInsns = 0, 0
	if err := r.rounds(progs, cfg.Rounds); err != nil {
		return Result{}, err
	}
	res.ITLB = cpu.ITLBStats()
	res.Runs, res.ProgramInsns = r.runs, r.progInsns
	return res, nil
}

// load JITs program i into memory from alloc, as bpf_int_jit_compile does:
// size, allocate, write the RW image against the RX address, finalize.
func load(alloc *progpack.Allocator, space *mem.Space, l Loader, i int) (program, error) {
	n, err := l.Len(i)
	if err != nil {
		return program{}, errors.WithMessagef(err, "itlbexp: program %d", i)
	}
	if n <= 0 || n%4 != 0 {
		return program{}, errors.Wrapf(uapi.EINVAL, "itlbexp: program %d: image of %d bytes", i, n)
	}
	b, err := alloc.Alloc(uint32(n), 4)
	if err != nil {
		return program{}, errors.WithMessagef(err, "itlbexp: program %d", i)
	}
	code, err := l.Code(i, b.Image())
	if err == nil && len(code) != n {
		err = errors.Wrapf(uapi.EINVAL, "itlbexp: program %d: %d bytes of code, %d announced", i, len(code), n)
	}
	if err == nil {
		err = space.Write(b.RWImage(), code)
	}
	if err == nil {
		err = alloc.Finalize(b)
	} else {
		alloc.Free(b)
	}
	if err != nil {
		return program{}, errors.WithMessagef(err, "itlbexp: program %d", i)
	}
	return program{bin: b, entry: b.Image()}, nil
}

// runner triggers the programs and charges the other code.
type runner struct {
	cfg       *Config
	cpu       *emu.CPU
	rng       *rand.Rand
	ctx       uint64
	triggers  uint64
	runs      uint64
	progInsns uint64
}

// rounds makes every process run its loop of triggers n times; processes
// take turns, each making Slice triggers. Trigger k of process p runs
// program k of every process with SharedHooks, of p only without.
func (r *runner) rounds(progs [][]program, n int) error {
	cfg := r.cfg
	next := make([]int, len(progs)) // each process's next trigger
	perProcess := cfg.TriggeredPerProcess * n
	for done := 0; done < perProcess; done += cfg.Slice {
		for p := range progs {
			for k := 0; k < cfg.Slice && done+k < perProcess; k++ {
				hook := next[p]
				next[p] = (next[p] + 1) % cfg.TriggeredPerProcess
				if err := r.trigger(progs, p, hook); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// trigger is one system call of process p that fires hook.
func (r *runner) trigger(progs [][]program, p, hook int) error {
	r.triggers++
	r.other(p, true)
	attached := progs[p : p+1]
	if r.cfg.SharedHooks {
		attached = progs
	}
	for _, pp := range attached {
		entry := pp[hook].entry
		before := r.cpu.Retired
		if _, err := r.cpu.Run(entry, r.ctx); err != nil {
			return errors.WithMessagef(err, "itlbexp: running the image at %#x", entry)
		}
		r.progInsns += r.cpu.Retired - before
		r.runs++
	}
	r.other(p, false)
	return nil
}

// other charges the regions that run before (or after) a trigger.
func (r *runner) other(p int, before bool) {
	for i := range r.cfg.Other {
		o := &r.cfg.Other[i]
		if o.BeforeTrigger != before || (o.Every > 1 && r.triggers%uint64(o.Every) != 0) {
			continue
		}
		r.visit(o, p)
	}
}

// visit charges one visit of process p to the region's text.
func (r *runner) visit(o *TextRegion, p int) {
	base := o.Base
	if o.PerProcess {
		base += uint64(p) << 32
	}
	stride := o.Stride
	if stride == 0 {
		stride = mem.PageSize
	}
	for v := 0; v < o.PagesPerVisit; v++ {
		page := uint64(0)
		if o.Pages > 1 {
			page = uint64(r.rng.IntN(o.Pages))
		}
		r.cpu.ChargeFetch(base+page*stride, uint64(o.InsnsPerPage), o.Mapping)
	}
}

// Comparison holds the runs of one configuration in each placement.
type Comparison struct {
	NoPacks, PagePacks, HugePacks Result
}

// Compare runs cfg without packs, with page-mapped packs and with
// block-mapped packs (cfg.Mode and PageMappedPacks are ignored).
func Compare(cfg Config) (Comparison, error) {
	var c Comparison
	var err error
	cfg.Mode, cfg.PageMappedPacks = progpack.NoPacks, false
	if c.NoPacks, err = Run(cfg); err != nil {
		return c, err
	}
	cfg.Mode, cfg.PageMappedPacks = progpack.Packs, true
	if c.PagePacks, err = Run(cfg); err != nil {
		return c, err
	}
	cfg.PageMappedPacks = false
	c.HugePacks, err = Run(cfg)
	return c, err
}

// Reduction returns by how much (a fraction, 0.63 for 63%) after's rate
// per instruction of n is below before's: 1 - rate(after)/rate(before).
func Reduction(before, after Result, n func(emu.ITLBStats) uint64) float64 {
	rb := float64(n(before.ITLB)) / float64(before.ITLB.Instructions)
	ra := float64(n(after.ITLB)) / float64(after.ITLB.Instructions)
	if rb == 0 {
		return 0
	}
	return 1 - ra/rb
}

// Misses and Walks select counters for Reduction.
func Misses(s emu.ITLBStats) uint64 { return s.Misses }

// Walks selects ITLB_WALK for Reduction.
func Walks(s emu.ITLBStats) uint64 { return s.Walks }
