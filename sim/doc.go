// Package sim is the simulated kernel: the part of Linux that loads BPF
// programs and runs them, without a kernel, without root and on any OS.
//
// A Kernel owns one simulated address space (package mem), a fixed set of
// simulated CPUs, the helper table, a simulated clock, a seeded random
// number generator and a trace buffer. Programs come from cilium/ebpf
// (ProgramSpec, asm.Instructions) or raw bytecode; they are checked (package
// verifier), prepared for the interpreter (package interp) and run with
// Program.Run in the style of cilium/ebpf and BPF_PROG_TEST_RUN.
//
// Kernel counterparts: kernel/bpf/syscall.c (loading), kernel/bpf/core.c
// (running), kernel/bpf/helpers.c and kernel/trace/bpf_trace.c (helpers),
// net/bpf/test_run.c (test runs).
//
// Concurrency: a Kernel is safe for concurrent use. Each simulated CPU runs
// one program at a time; runs on different CPUs proceed in parallel on
// different goroutines and share memory exactly as CPUs do, so a BPF program
// that races on plain loads and stores shows up under `go test -race`.
package sim
