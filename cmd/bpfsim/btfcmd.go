package main

import (
	"fmt"
	"io"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/vmlinuxbtf"
)

// cmdBTF is `bpfsim btf dump`: the simulated kernel's BTF as a C header,
// the vmlinux.h of `bpftool btf dump file /sys/kernel/btf/vmlinux format
// c`. A program built against it relocates (CO-RE) against bpfsim exactly,
// on any system, with no kernel to take a vmlinux.h from.
func cmdBTF(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 || args[0] != "dump" {
		fmt.Fprintln(stderr, "usage: bpfsim btf dump > vmlinux.h")
		return 2
	}
	k, err := sim.NewKernel(nil)
	if err == nil {
		spec, err2 := k.KernelBTF()
		if err = err2; err == nil {
			fmt.Fprintf(stdout, "/* The types of bpfsim's simulated kernel (bpfsim btf dump). */\n\n")
			if err = vmlinuxbtf.WriteHeader(stdout, spec); err == nil {
				return 0
			}
		}
	}
	fmt.Fprintf(stderr, "bpfsim: %v\n", err)
	return 1
}
