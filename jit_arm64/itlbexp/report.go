package itlbexp

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/dustin/go-humanize"
)

// Report writes the comparison as the series' cover letter lays its
// figures out: the counters of each placement, their rates per 1,000
// instructions, the reductions packs bring, and the memory the images take.
func (c Comparison) Report(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "placement\tINST_RETIRED\tin programs+helpers\tL1I_TLB\tiTLB-load-misses\tITLB_WALK\tmisses/1k insns\twalks/1k insns\tITLB_WALK/L1I_TLB\t")
	for _, r := range []Result{c.NoPacks, c.PagePacks, c.HugePacks} {
		s := r.ITLB
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.3f\t%.4f\t%.6f\t\n", r.Label(),
			humanize.Comma(int64(s.Instructions)), humanize.Comma(int64(r.ProgramInsns)),
			humanize.Comma(int64(s.Accesses)), humanize.Comma(int64(s.Misses)), humanize.Comma(int64(s.Walks)),
			s.MissesPerKilo(), s.WalksPerKilo(), float64(s.Walks)/float64(max(s.Accesses, 1)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	for _, after := range []Result{c.PagePacks, c.HugePacks} {
		fmt.Fprintf(w, "%s vs no packs: iTLB-load-misses/1k insns %s, ITLB_WALK/1k insns %s\n", after.Label(),
			pct(Reduction(c.NoPacks, after, Misses)), pct(Reduction(c.NoPacks, after, Walks)))
	}
	fmt.Fprintln(w, "(the series measured on hardware: iTLB-load-misses/s -63.16%, ITLB_WALK/1000 INST_RETIRED -42.71%)")
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "placement\tprograms\timage bytes\tmapped for images\tareas\tpacks\t4 KiB entries\t2 MiB entries\t")
	for _, r := range []Result{c.NoPacks, c.PagePacks, c.HugePacks} {
		p := r.Pack
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t\n", r.Label(), p.Images,
			humanize.IBytes(p.ImageBytes), humanize.IBytes(p.MappedBytes), r.ImageAreas, p.Packs, p.PageMappings, p.HugeMappings)
	}
	return tw.Flush()
}

func pct(red float64) string {
	if red >= 0 {
		return fmt.Sprintf("%.2f%% decrease", 100*red)
	}
	return fmt.Sprintf("%.2f%% increase", -100*red)
}
