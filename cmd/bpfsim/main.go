// Command bpfsim loads and runs BPF programs on the simulated kernel, in
// the spirit of bpftool:
//
//	bpfsim run [flags] PROGRAM      run a program and print r0 and its output
//	bpfsim dump [xlated] PROGRAM    print the program as bpftool prog dump xlated does
//	bpfsim dump jited PROGRAM       print the arm64 JIT's code with the xlated instructions interleaved
//	bpfsim map dump OBJECT          print an object's maps as bpftool map dump does
//	bpfsim btf dump                 print the simulated kernel's types as a vmlinux.h, or a BTF file's
//	bpfsim btf relocate MODULE.ko   relocate a module's split BTF as the kernel does at module load
//	bpfsim btf list                 list the kernel's BTF objects
//	bpfsim btf distill ...          distill a module's BTF, as pahole does out of tree
//	bpfsim plugin [MEMORY-HEX]      act as a bpf_conformance plugin
//
// PROGRAM is a clang-built ELF object (pick the program with -section), a
// file of raw bytecode, or, with -hex, a file of bytecode written in hex.
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

const usage = `usage:
  bpfsim run [flags] PROGRAM      run a program on the simulated kernel
  bpfsim dump [xlated] PROGRAM    print the program in bpftool's xlated syntax
  bpfsim dump jited PROGRAM       print the arm64 JIT's A64 code, xlated instructions interleaved
  bpfsim map dump OBJECT          print an object's maps as bpftool map dump does
  bpfsim btf dump [FILE]          print the simulated kernel's types as a vmlinux.h (CO-RE), or a BTF file's
  bpfsim btf relocate MODULE.ko   relocate a module's split BTF onto the kernel's, as module load does
  bpfsim btf list                 list the kernel's BTF objects, as bpftool btf list does
  bpfsim btf distill -base VMLINUX -o PREFIX SPLIT
                                  distill a module's BTF, as pahole does out of tree
  bpfsim plugin [MEMORY-HEX]      run as a bpf_conformance plugin (program hex on stdin)

Run 'bpfsim COMMAND -h' for a command's flags.
`

// realMain runs the CLI and returns its exit status. Bad input of any kind
// is an error message and a non-zero status, never a panic (the fuzz tests
// hold it to that).
func realMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	// The conformance runner passes the memory argument before the plugin
	// options, so "bpfsim MEMORY-HEX plugin ..." means "bpfsim plugin
	// MEMORY-HEX ...".
	if len(args) > 1 && args[1] == "plugin" {
		return cmdPlugin(append([]string{args[0]}, args[2:]...), stdin, stdout, stderr)
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "dump":
		return cmdDump(args[1:], stdout, stderr)
	case "plugin":
		return cmdPlugin(args[1:], stdin, stdout, stderr)
	case "map":
		return cmdMap(args[1:], stdout, stderr)
	case "btf":
		return cmdBTF(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "bpfsim: unknown command %q\n%s", args[0], usage)
	return 2
}
