// Command itlb-experiment runs the iTLB experiment of the arm64 prog pack
// series on the A64 emulator's instruction-TLB model (package
// jit_arm64/itlbexp) and prints the counters of each placement, the
// reductions packs bring and the memory the JIT images take.
//
//	go run ./scripts/itlb-experiment -rounds 200
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/bpfsim/bpfsim/jit_arm64/itlbexp"
)

func main() {
	cfg := itlbexp.DefaultConfig()
	flag.IntVar(&cfg.Processes, "processes", cfg.Processes, "stresser processes")
	flag.IntVar(&cfg.ProgsPerProcess, "progs", cfg.ProgsPerProcess, "programs each process loads")
	flag.IntVar(&cfg.TriggeredPerProcess, "triggered", cfg.TriggeredPerProcess, "programs each process triggers")
	flag.IntVar(&cfg.Slice, "slice", cfg.Slice, "triggers a process makes before the next runs (0: -triggered)")
	flag.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "measured runs of every triggered program")
	flag.IntVar(&cfg.ITLB.L1Entries, "l1", cfg.ITLB.L1Entries, "L1 iTLB entries")
	flag.IntVar(&cfg.ITLB.L1Ways, "l1ways", cfg.ITLB.L1Ways, "L1 iTLB ways (0: fully associative)")
	flag.IntVar(&cfg.ITLB.L2Entries, "l2", cfg.ITLB.L2Entries, "L2 TLB entries (0: none)")
	flag.IntVar(&cfg.ITLB.L2Ways, "l2ways", cfg.ITLB.L2Ways, "L2 TLB ways (0: fully associative)")
	flag.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the stand-in programs, image offsets and other code's pages")
	gccPages := flag.Int("gcc-pages", -1, "pages of gcc text run per time slice (-1: default)")
	gccEvery := flag.Int("gcc-every", -1, "triggers between gcc time slices (-1: default; 0 drops gcc)")
	sweep := flag.Bool("sweep", false, "also print the reductions as gcc's time slice grows")
	programs := flag.String("programs", "bpf", "the programs: bpf (generated BPF programs compiled by bpfsim's arm64 JIT) or standins (synthetic A64 functions)")
	flag.Parse()
	switch *programs {
	case "bpf":
		cfg.Loader = itlbexp.BPFPrograms(cfg.Seed)
	case "standins":
		cfg.Loader = itlbexp.StandIns(cfg.Seed)
	default:
		fmt.Fprintf(os.Stderr, "itlb-experiment: -programs %q: want bpf or standins\n", *programs)
		os.Exit(2)
	}

	for i := range cfg.Other {
		o := &cfg.Other[i]
		if o.Name != "gcc cc1" {
			continue
		}
		if *gccPages >= 0 {
			o.PagesPerVisit = *gccPages
		}
		if *gccEvery == 0 {
			o.PagesPerVisit = 0
		} else if *gccEvery > 0 {
			o.Every = *gccEvery
		}
	}
	fmt.Printf("%d %s programs loaded (%d processes x %d), %d triggered, %d measured rounds; L1 iTLB %d entries, L2 %d entries\n",
		cfg.Processes*cfg.ProgsPerProcess, *programs, cfg.Processes, cfg.ProgsPerProcess, cfg.Processes*cfg.TriggeredPerProcess,
		cfg.Rounds, cfg.ITLB.L1Entries, cfg.ITLB.L2Entries)
	for _, o := range cfg.Other {
		fmt.Printf("other code %q: %d of %d pages per visit, %d insns each, mapped by %d-byte entries\n",
			o.Name, o.PagesPerVisit, o.Pages, o.InsnsPerPage, o.Mapping)
	}
	fmt.Println()
	c, err := itlbexp.Compare(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "itlb-experiment:", err)
		os.Exit(1)
	}
	if err := c.Report(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "itlb-experiment:", err)
		os.Exit(1)
	}
	if *sweep {
		if err := sweepGCC(cfg); err != nil {
			fmt.Fprintln(os.Stderr, "itlb-experiment:", err)
			os.Exit(1)
		}
	}
}

// sweepGCC reruns the comparison with gcc's time slice (pages run per
// slice) growing, to show how the reduction depends on the share of other
// code, which the series' set-up does not pin down.
func sweepGCC(cfg itlbexp.Config) error {
	fmt.Println()
	fmt.Println("gcc pages/slice  other code share    no-packs misses/1k  block-packs misses/1k  misses -%  walks -%  page-packs misses -%")
	for _, pages := range []int{0, 32, 128, 512, 2048} {
		c := cfg
		c.Other = append([]itlbexp.TextRegion(nil), cfg.Other...)
		for i := range c.Other {
			if c.Other[i].Name == "gcc cc1" {
				c.Other[i].PagesPerVisit = pages
			}
		}
		cmp, err := itlbexp.Compare(c)
		if err != nil {
			return err
		}
		np, hp := cmp.NoPacks, cmp.HugePacks
		other := np.ITLB.Instructions - np.ProgramInsns
		fmt.Printf("%15d  %17.1f%%  %18.3f  %21.3f  %8.1f%%  %7.1f%%  %19.1f%%\n", pages,
			100*float64(other)/float64(np.ITLB.Instructions), np.ITLB.MissesPerKilo(), hp.ITLB.MissesPerKilo(),
			100*itlbexp.Reduction(np, hp, itlbexp.Misses), 100*itlbexp.Reduction(np, hp, itlbexp.Walks),
			100*itlbexp.Reduction(np, cmp.PagePacks, itlbexp.Misses))
	}
	return nil
}
