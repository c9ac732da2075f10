package main

import (
	"fmt"
	"os"
	"strings"
)

// writeChart draws two panels as SVG: each backend's share of the first
// service's traffic (bars) and of its table (dots) against the ideal 1/N,
// and what removing one backend moved against the ideal.
func writeChart(path string, s *service, sh shares, d disruption) error {
	const (
		width, height = 960, 520
		left, top     = 60, 50
		plotW, plotH  = 600, 380
	)
	n := len(sh.ids)
	ideal := 1 / float64(n)
	maxShare := ideal * 1.5
	for i := range sh.ids {
		maxShare = max(maxShare, sh.traffic[i]*1.1, sh.slots[i]*1.1)
	}
	y := func(v float64) float64 { return top + plotH - v/maxShare*plotH }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="16">Maglev on bpfsim: %d backends, %d slots</text>`+"\n", left, n, len(s.table))
	// Panel 1: shares.
	barW := float64(plotW) / float64(n)
	for i := range sh.ids {
		x := float64(left) + float64(i)*barW
		fmt.Fprintf(&b, `<rect x="%.2f" y="%.2f" width="%.2f" height="%.2f" fill="#4e79a7"/>`+"\n",
			x+barW*0.1, y(sh.traffic[i]), barW*0.8, float64(top+plotH)-y(sh.traffic[i]))
		fmt.Fprintf(&b, `<circle cx="%.2f" cy="%.2f" r="%.1f" fill="#f28e2b"/>`+"\n", x+barW/2, y(sh.slots[i]), min(3, barW/3+0.5))
	}
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.2f" y2="%.2f" stroke="#e15759" stroke-dasharray="6 4"/>`+"\n", left, left+plotW, y(ideal), y(ideal))
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/>`+"\n", left, left+plotW, top+plotH, top+plotH)
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/>`+"\n", left, left, top, top+plotH)
	for _, v := range []float64{0, ideal, maxShare} {
		fmt.Fprintf(&b, `<text x="%d" y="%.2f" text-anchor="end">%.2f%%</text>`+"\n", left-6, y(v)+4, v*100)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d">backends of the first service, in table order: bars = share of packets, dots = share of slots, dashed = ideal 1/N</text>`+"\n", left, top+plotH+24)
	// Panel 2: disruption.
	px, pw := left+plotW+80, 180
	maxD := max(d.ideal, d.slotsMoved, d.flowsMoved) * 1.2
	yd := func(v float64) float64 { return top + plotH - v/maxD*plotH }
	for i, bar := range []struct {
		label string
		v     float64
		color string
	}{{"ideal 1/N", d.ideal, "#e15759"}, {"slots moved", d.slotsMoved, "#4e79a7"}, {"flows moved", d.flowsMoved, "#76b7b2"}} {
		x := float64(px) + float64(i)*float64(pw)/3
		fmt.Fprintf(&b, `<rect x="%.2f" y="%.2f" width="%.2f" height="%.2f" fill="%s"/>`+"\n", x+8, yd(bar.v), float64(pw)/3-16, float64(top+plotH)-yd(bar.v), bar.color)
		fmt.Fprintf(&b, `<text x="%.2f" y="%.2f" text-anchor="middle">%.2f%%</text>`+"\n", x+float64(pw)/6, yd(bar.v)-6, bar.v*100)
		fmt.Fprintf(&b, `<text x="%.2f" y="%d" text-anchor="middle">%s</text>`+"\n", x+float64(pw)/6, top+plotH+18, bar.label)
	}
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/>`+"\n", px, px+pw, top+plotH, top+plotH)
	fmt.Fprintf(&b, `<text x="%d" y="%d">removing one backend</text>`+"\n", px, top-10)
	b.WriteString("</svg>\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
