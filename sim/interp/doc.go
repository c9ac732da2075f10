// Package interp is bpfsim's BPF interpreter, the counterpart of the
// kernel's ___bpf_prog_run in kernel/bpf/core.c.
//
// Compile turns a program's xlated instructions into a dense internal form
// (one op per instruction slot, immediates pre-extended, jump targets
// resolved) once, at load time; Run executes it on a Machine, the state of
// one simulated CPU. Every load and store goes through the CPU's TLB into
// the shared simulated address space (package mem), so a pointer a program
// holds is a real kernel virtual address and a bad one is reported as a
// *mem.Fault naming the instruction.
//
// Semantics follow the kernel, including the parts the kernel implements
// with verifier rewrites rather than in the interpreter proper: division by
// zero yields 0, modulo by zero leaves the destination unchanged (the 32-bit
// forms zero-extend it), signed division of the minimum value by -1 yields
// the minimum value and the signed remainder 0, shift amounts are masked to
// the operand width, and every 32-bit operation zero-extends its result.
//
// After a helper call the interpreter leaves r1-r5 as they were, as the
// kernel's interpreter does; the verifier forbids reading them, and JITs
// clobber them, so programs cannot rely on either.
package interp
