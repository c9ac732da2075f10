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
	report := runDemo(t, false)
	for _, want := range []string{"Balance of the first service", "Removing backend", "packets/s", "call array_map_lookup_elem", "maglev_outer", "(interpreted)"} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q:\n%s", want, report)
		}
	}
	t.Logf("\n%s", report)
}

// TestDemoWithJITShowsTheA64Lookups runs the demo JITed: every packet is
// still forwarded, and the report shows the A64 code of the outer lookup
// (the call, the null check, the load of the inner map) and of the inner
// array's direct call.
func TestDemoWithJITShowsTheA64Lookups(t *testing.T) {
	report := runDemo(t, true)
	for _, want := range []string{"(JITed to arm64, on the A64 emulator)", "as the arm64 JIT wrote them", "blr\tx10", "mov\tx7, x0", "ldr\tx7, [x7]", "call array_map_lookup_elem", "Balance of the first service"} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q:\n%s", want, report)
		}
	}
}

func runDemo(t *testing.T, jit bool) string {
	t.Helper()
	dir := t.TempDir()
	outPath := filepath.Join(dir, "report.txt")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config{backends: 100, services: 4, packets: 100_000, seed: 1, svg: filepath.Join(dir, "chart.svg"), jit: jit}
	if err := run(cfg, out); err != nil {
		t.Fatal(err)
	}
	out.Close()
	report, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	svg, err := os.ReadFile(cfg.svg)
	if err != nil || !strings.HasPrefix(string(svg), "<svg") {
		t.Fatalf("chart: %v", err)
	}
	return string(report)
}
