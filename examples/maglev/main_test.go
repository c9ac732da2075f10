package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoRunsEndToEnd runs the demo on a smaller traffic mix: every
// packet of every service is forwarded (run fails otherwise), the report
// has its sections, and the chart is written.
func TestDemoRunsEndToEnd(t *testing.T) {
	dir := t.TempDir()
	outPath := filepath.Join(dir, "report.txt")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config{backends: 100, services: 4, packets: 100_000, seed: 1, svg: filepath.Join(dir, "chart.svg")}
	if err := run(cfg, out); err != nil {
		t.Fatal(err)
	}
	out.Close()
	report, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Balance of the first service", "Removing backend", "packets/s", "call array_map_lookup_elem", "maglev_outer"} {
		if !strings.Contains(string(report), want) {
			t.Errorf("the report lacks %q:\n%s", want, report)
		}
	}
	svg, err := os.ReadFile(cfg.svg)
	if err != nil || !strings.HasPrefix(string(svg), "<svg") {
		t.Fatalf("chart: %v", err)
	}
	t.Logf("\n%s", report)
}
