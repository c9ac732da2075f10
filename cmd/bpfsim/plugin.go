package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"strconv"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
)

// cmdPlugin speaks the bpf_conformance plugin protocol: the optional first
// argument is the memory in hex, the program arrives in hex on stdin (or
// with --program), and r0 is printed in hex. r1 points to the memory and
// r2 holds its length. Any failure is a message and exit status 1.
//
// Options: --program HEX, --elf (the program is an ELF object), --xdp (run
// as XDP with the memory, padded to 14 bytes, as the packet: for the
// runner's --xdp_prolog), --max-insns N (instruction budget), --jit (run
// the program JITed to A64 on the emulator; a program the JIT cannot
// translate fails to load).
func cmdPlugin(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, format+"\n", a...)
		return 1
	}
	var memHex, progHex string
	var haveProg, isELF, isXDP, jit bool
	maxInsns := uint64(sim.DefaultMaxInsns)
	if len(args) > 0 && (len(args[0]) < 2 || args[0][:2] != "--") {
		memHex, args = args[0], args[1:]
	}
	for len(args) > 0 {
		switch args[0] {
		case "--program":
			if len(args) < 2 {
				return fail("missing program argument")
			}
			progHex, haveProg, args = args[1], true, args[2:]
		case "--elf":
			isELF, args = true, args[1:]
		case "--xdp":
			isXDP, args = true, args[1:]
		case "--jit":
			jit, args = true, args[1:]
		case "--max-insns":
			if len(args) < 2 {
				return fail("missing --max-insns argument")
			}
			n, err := strconv.ParseUint(args[1], 0, 64)
			if err != nil {
				return fail("bad --max-insns: %v", err)
			}
			maxInsns, args = n, args[2:]
		case "--debug", "":
			args = args[1:]
		default:
			return fail("invalid argument: %s", args[0])
		}
	}
	if !haveProg {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && err != io.EOF {
			return fail("reading the program: %v", err)
		}
		progHex = line
	}
	memory, err := decodeHex(memHex)
	if err != nil {
		return fail("memory: %v", err)
	}
	code, err := decodeHex(progHex)
	if err != nil {
		return fail("program: %v", err)
	}

	k, err := sim.NewKernel(&sim.Options{CPUs: 1, BareHelpers: true})
	if err != nil {
		return fail("%v", err)
	}
	for _, h := range conformanceHelpers() {
		if err := k.RegisterHelper(h); err != nil {
			return fail("%v", err)
		}
	}
	typ := ebpf.UnspecifiedProgram
	// Conformance programs test the instruction set, not the verifier:
	// many would not pass it (division by a register that may be zero,
	// reads of uninitialised stack in unprivileged terms...).
	unverified := sim.ProgramOptions{Unverified: true}
	if jit {
		unverified.Runtime = sim.RuntimeJIT
	}
	if isXDP {
		typ = ebpf.XDP
		// A test run needs at least an Ethernet header; the suite's libbpf
		// plugin pads the same way, and its XDP prolog passes the real
		// length in r2.
		for len(memory) < 14 {
			memory = append(memory, 0)
		}
	}
	var prog *sim.Program
	if isELF || bytes.HasPrefix(code, []byte("\x7fELF")) {
		var l *loaded
		if l, err = loadBytes(k, code, "", false, typ, unverified); err == nil {
			prog = l.prog
		}
	} else {
		var insns []insn.Insn
		if insns, err = insn.Decode(code); err == nil {
			prog, err = k.LoadInsnsWithOptions(typ, "conformance", insns, unverified)
		}
	}
	if err != nil {
		return fail("Failed to load code: %v", err)
	}
	res, err := prog.Test(&sim.RunOptions{Data: memory, MaxInsns: maxInsns})
	if err != nil {
		return fail("%v", err)
	}
	fmt.Fprintf(stdout, "%x\n", res.R0)
	return 0
}

// conformanceHelpers are the helpers the suite's tests call, with the ids
// and behaviour of the uBPF test plugin that the suite was written against.
func conformanceHelpers() []*interp.Helper {
	return []*interp.Helper{
		{ID: 0, Name: "gather_bytes", Fn: func(_ *interp.Machine, a, b, c, d, e uint64) (uint64, error) {
			return (a&0xff)<<32 | (b&0xff)<<24 | (c&0xff)<<16 | (d&0xff)<<8 | e&0xff, nil
		}},
		{ID: 1, Name: "memfrob", Fn: func(m *interp.Machine, p, n, _, _, _ uint64) (uint64, error) {
			// XOR n bytes at p with 42, a page at a time.
			buf := make([]byte, 4096)
			for done := uint64(0); done < n; {
				chunk := buf[:min(n-done, uint64(len(buf)))]
				if err := m.ReadMem(p+done, chunk); err != nil {
					return 0, err
				}
				for i := range chunk {
					chunk[i] ^= 42
				}
				if err := m.WriteMem(p+done, chunk); err != nil {
					return 0, err
				}
				done += uint64(len(chunk))
			}
			return 0, nil
		}},
		{ID: 2, Name: "no_op", Fn: func(*interp.Machine, uint64, uint64, uint64, uint64, uint64) (uint64, error) {
			return 0, nil
		}},
		{ID: 3, Name: "sqrti", Fn: func(_ *interp.Machine, a, _, _, _, _ uint64) (uint64, error) {
			return uint64(math.Sqrt(float64(a))), nil
		}},
		{ID: 4, Name: "strcmp_ext", Fn: func(m *interp.Machine, a, b, _, _, _ uint64) (uint64, error) {
			for i := uint64(0); ; i++ {
				x, f := m.TLB.Load8(a + i)
				if f != nil {
					f.PC = m.PC()
					return 0, f
				}
				y, f := m.TLB.Load8(b + i)
				if f != nil {
					f.PC = m.PC()
					return 0, f
				}
				if x != y || x == 0 {
					return uint64(int64(x) - int64(y)), nil
				}
			}
		}},
		// unwind returns its argument; a zero result ends the program with
		// r0 = 0, the way uBPF's unwind extension (and bpf_throw) does.
		{ID: 5, Name: "unwind", Fn: func(_ *interp.Machine, a, _, _, _, _ uint64) (uint64, error) {
			if a == 0 {
				return 0, &interp.Unwind{R0: 0}
			}
			return a, nil
		}},
	}
}
