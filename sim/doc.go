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
// Objects live as in the kernel. Maps, programs and perf events have ids
// and reference counts; user-space handles are fds of a Process (the
// Kernel's own methods use its first process), open files are shared by
// dups, and a process's exit closes its fds. What references a program or
// an outer map holds is the kernel's, and so are the actions on a file's
// last close (map_release) and a map's last user reference
// (map_release_uref). Memory a running program could still reach is freed
// only after an RCU grace period (rcu.go); freed memory is unmapped, so a
// stale pointer faults. Kernel.CheckLeaks says what is left.
//
// Kernel counterparts: kernel/bpf/syscall.c (loading), kernel/bpf/core.c
// (running), kernel/bpf/helpers.c and kernel/trace/bpf_trace.c (helpers;
// bpf_timer in timer.go; dynptrs and their kfuncs in dynptr.go and
// dynptr_kfuncs.go), net/core/filter.c (the packet helpers, and
// bpf_fib_lookup over the network a test describes in fib.go),
// net/bpf/test_run.c (test runs).
//
// Concurrency: a Kernel is safe for concurrent use. Each simulated CPU runs
// one program at a time; runs on different CPUs proceed in parallel on
// different goroutines and share memory exactly as CPUs do, so a BPF program
// that races on plain loads and stores shows up under `go test -race`.
package sim
