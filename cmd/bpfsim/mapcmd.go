package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/bpfsim/bpfsim/sim"
)

// cmdMap is `bpfsim map dump OBJECT`: the maps an ELF object defines, with
// their initial contents, as `bpftool map dump` prints them.
func cmdMap(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "dump" {
		fmt.Fprintln(stderr, "usage: bpfsim map dump [-map NAME] [-cpus N] OBJECT")
		return 2
	}
	fs := flag.NewFlagSet("map dump", flag.ContinueOnError)
	fs.SetOutput(stderr)
	only := fs.String("map", "", "dump only this map")
	cpus := fs.Int("cpus", 2, "number of simulated CPUs (per-CPU maps show one value each)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: bpfsim map dump [-map NAME] [-cpus N] OBJECT")
		fs.PrintDefaults()
	}
	positional, err := parseArgs(fs, args[1:])
	if err != nil {
		return 2
	}
	if len(positional) != 1 {
		fs.Usage()
		return 2
	}
	k, err := sim.NewKernel(&sim.Options{CPUs: *cpus})
	if err == nil {
		var ms map[string]*sim.Map
		if ms, err = loadMaps(k, positional[0], *only); err == nil {
			if err = dumpMaps(stdout, ms, *only); err == nil {
				return 0
			}
		}
	}
	fmt.Fprintf(stderr, "bpfsim: %v\n", err)
	return 1
}
