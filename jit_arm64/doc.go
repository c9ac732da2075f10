// Package jit_arm64 is bpfsim's arm64 back end. It will hold the A64
// instruction encoder (subpackage a64), the BPF JIT that turns verified
// programs into A64 code (arch/arm64/net/bpf_jit_comp.c) and the emulator
// that runs that code on the simulated address space.
//
// Today it holds the text patching that the JIT's memory management needs
// (patching.go, arch/arm64/kernel/patching.c): JIT images live in pages that
// are read-only and executable, so they are written only through a
// temporary writable alias of one page at a time, and the BPF glue that the
// prog pack allocator (sim/progpack) calls (patching_bpf.go:
// bpf_arch_text_copy, bpf_arch_text_invalidate and jit_fill_hole).
package jit_arm64
