// Package itlbexp reproduces, on the A64 emulator's instruction-TLB model
// (jit_arm64/emu), the experiment of the arm64 prog pack series ("bpf,
// arm64: use BPF prog pack allocator in BPF JIT", the performance analysis
// of its cover letter): 160 BPF programs loaded (8 per process by 20
// stresser processes), 100 of them (5 per process) triggered in a loop by
// system calls while other code runs, with and without the prog pack
// allocator, comparing iTLB-load-misses and ITLB_WALK per instruction and
// the memory the JIT images take.
//
// It lives under jit_arm64 because it is arm64's experiment: it places
// images with sim/progpack using jit_arm64's text patcher and runs them on
// the A64 emulator, while sim/progpack stays independent of any JIT.
// scripts/itlb-experiment runs it from the command line.
//
// What is modelled: the program count and the trigger pattern of the
// series' stress tool (puranjaymohan/BPF-Allocator-Bench): each instance
// attaches its 8 programs to system call tracepoints and kprobes and loops
// over 5 system calls (getpgid, getgid, getuid, getpriority, geteuid);
// tracepoints are shared, so one call runs the program every instance
// attached there, 20 per call (Config.SharedHooks), and each program calls
// a helper (bpf_printk there, charged kernel text here, Config.Helper); the
// placement of every image by progpack exactly as the kernel places it
// (NoPacks: its own page-rounded 4 KiB-mapped allocation; Packs: 64-byte
// chunks of 2 MiB packs, block-mapped or, for comparison, page-mapped);
// real execution of every image, so that the pages a run fetches from are
// the image's own; and an L1 iTLB plus unified L2 of a Neoverse N1-class
// core with 4 KiB and 2 MiB entries (emu.ITLBConfig). The programs are
// pluggable (Loader): generated A64 stand-ins of realistic size until the
// arm64 JIT's output plugs in.
//
// What is not: the series ran 32 CPUs under KVM building Python with gcc
// (make -j32) and counted system wide; its stressers sleep 100 ms after
// each pass of their loop, and its openat and unlinkat programs also fire
// on gcc's own system calls, neither of which is modelled. Here one CPU runs everything, and
// the other code is charged, not executed (emu.CPU.ChargeFetch): the
// stresser's user loop, the system call's kernel path in block-mapped
// kernel text, and time slices of gcc's cc1 in 4 KiB-mapped user text
// (DefaultOther). Their working sets, their instruction counts, and how
// often gcc gets the CPU are guesses, configurable in Config.Other; the
// absolute rates depend on them entirely, and so does the size of the
// reduction (the more iTLB misses other code causes, the smaller the share
// packs can remove). The data side's use of the unified L2 TLB, ASIDs
// (each process's user text gets distinct addresses instead), the cost of
// a walk and hence the series' 1.92% faster build are not modelled. The
// series reports iTLB-load-misses per second; per 1,000 instructions is
// the closest rate a model without time has.
package itlbexp
