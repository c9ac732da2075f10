package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/bpfsim/bpfsim/sim"
)

func cmdDump(args []string, stdout, stderr io.Writer) int {
	jited := false
	if len(args) > 0 && (args[0] == "xlated" || args[0] == "jited") {
		jited = args[0] == "jited"
		args = args[1:]
	}
	fs := flag.NewFlagSet("dump", flag.ContinueOnError)
	fs.SetOutput(stderr)
	typeName := fs.String("type", "raw", "program type of raw bytecode: "+typeNames)
	section := fs.String("section", "", "ELF section or program name to dump")
	isHex := fs.Bool("hex", false, "PROGRAM is bytecode written in hex")
	unverified := fs.Bool("unverified", false, "load without the verifier")
	inline := fs.Bool("inline-kfuncs", false, "inline the calls of inlinable kfuncs, as seed 003's RFC proposes (released kernels call them)")
	var modules moduleFiles
	fs.Var(&modules, "module", "load this kernel module's BTF first (see bpfsim run -h); repeatable")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: bpfsim dump [xlated|jited] [flags] PROGRAM")
		fs.PrintDefaults()
	}
	positional, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(positional) != 1 {
		fs.Usage()
		return 2
	}
	opts := sim.ProgramOptions{Unverified: *unverified}
	typ, err := parseType(*typeName, &opts)
	if err == nil {
		var k *sim.Kernel
		if k, err = sim.NewKernel(&sim.Options{InlineKfuncs: *inline}); err == nil {
			err = modules.load(k)
		}
		if err == nil {
			if jited {
				opts.Runtime = sim.RuntimeJIT
			}
			var l *loaded
			if l, err = loadFile(k, positional[0], *section, *isHex, typ, opts); err == nil {
				if !jited {
					fmt.Fprint(stdout, l.prog.Xlated())
					return 0
				}
				var listing string
				if listing, err = l.prog.DumpJited(); err == nil {
					fmt.Fprint(stdout, listing)
					return 0
				}
			}
		}
	}
	fmt.Fprintf(stderr, "bpfsim: %v\n", err)
	return 1
}
