package main

import (
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/bpfsim/bpfsim/sim"
)

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	typeName := fs.String("type", "raw", "program type of raw bytecode: "+typeNames)
	section := fs.String("section", "", "ELF section or program name to run")
	isHex := fs.Bool("hex", false, "PROGRAM is bytecode written in hex")
	dataFile := fs.String("data", "", "file holding the input data (packet or memory)")
	dataHex := fs.String("data-hex", "", "input data written in hex")
	ctxFile := fs.String("ctx", "", "file holding the context input (syscall programs, __sk_buff of skb programs, struct bpf_sk_lookup of sk_lookup programs)")
	repeat := fs.Uint("repeat", 1, "run this many times")
	cpu := fs.Uint("cpu", 0, "simulated CPU to run on")
	cpus := fs.Int("cpus", 2, "number of simulated CPUs")
	seed := fs.Uint64("seed", 0, "seed for bpf_get_prandom_u32")
	maxInsns := fs.Uint64("max-insns", sim.DefaultMaxInsns, "instruction budget per run")
	unverified := fs.Bool("unverified", false, "load without the verifier (for programs the kernel would refuse)")
	logLevel := fs.Int("log", 0, "verifier log level (1: the failing path, 2: every instruction); the log goes to stderr")
	showMaps := fs.Bool("maps", false, "dump the object's maps after the run, as bpftool map dump does")
	jit := fs.Bool("jit", false, "run the program JITed to arm64 on the A64 emulator (fails if the JIT cannot translate it)")
	advance := fs.Duration("advance", 0, "after the run, move the virtual clock this far, firing the bpf_timers that expire on the way")
	var modules moduleFiles
	fs.Var(&modules, "module", "load this kernel module's BTF (a .ko with .BTF and, built out of tree, .BTF.base) first, for CO-RE relocations against its types; repeatable")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: bpfsim run [flags] PROGRAM")
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
	fail := func(err error) int {
		fmt.Fprintf(stderr, "bpfsim: %v\n", err)
		return 1
	}
	popts := sim.ProgramOptions{Unverified: *unverified, LogLevel: logLevelOf(*logLevel), Runtime: sim.RuntimeInterpreter}
	typ, err := parseType(*typeName, &popts)
	if err != nil {
		return fail(err)
	}
	var data, ctx []byte
	switch {
	case *dataFile != "":
		if data, err = os.ReadFile(*dataFile); err != nil {
			return fail(err)
		}
	case *dataHex != "":
		if data, err = decodeHex(*dataHex); err != nil {
			return fail(err)
		}
	}
	if *ctxFile != "" {
		if ctx, err = os.ReadFile(*ctxFile); err != nil {
			return fail(err)
		}
	}
	k, err := sim.NewKernel(&sim.Options{CPUs: *cpus, Seed: *seed})
	if err != nil {
		return fail(err)
	}
	if *jit {
		popts.Runtime = sim.RuntimeJIT
	}
	if err := modules.load(k); err != nil {
		return fail(err)
	}
	l, err := loadFile(k, positional[0], *section, *isHex, typ, popts)
	if *logLevel > 0 {
		printVerifierLog(stderr, l, err)
	}
	if err != nil {
		return fail(err)
	}
	prog := l.prog
	opts := &sim.RunOptions{Data: data, Repeat: uint32(*repeat), CPU: uint32(*cpu), MaxInsns: *maxInsns}
	if ctx != nil {
		opts.Context = ctx
	}
	res, err := prog.Test(opts)
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(stdout, "r0 = %#x (%d)\n", res.R0, int64(res.R0))
	unit := "instructions"
	if prog.Runtime() == sim.RuntimeJIT {
		unit = "A64 instructions (JIT)"
	}
	fmt.Fprintf(stdout, "%d %s, %v per run\n", res.Insns, unit, res.Duration)
	if len(res.Data) > 0 {
		fmt.Fprintf(stdout, "data out (%d bytes):\n%s", len(res.Data), hex.Dump(res.Data))
	}
	if len(res.Context) > 0 {
		fmt.Fprintf(stdout, "context out (%d bytes):\n%s", len(res.Context), hex.Dump(res.Context))
	}
	if *advance > 0 {
		n, err := k.AdvanceClock(*advance)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "clock advanced %v: %d timer callbacks ran, %d timers still armed\n", *advance, n, k.ArmedTimers())
	}
	if trace := k.Trace().String(); trace != "" {
		fmt.Fprintf(stdout, "trace_pipe:\n%s", trace)
	}
	if *showMaps {
		if err := dumpMaps(stdout, l.maps, ""); err != nil {
			return fail(err)
		}
	}
	return 0
}
