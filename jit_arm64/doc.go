// Package jit_arm64 is bpfsim's arm64 back end, after
// arch/arm64/net/bpf_jit_comp.c and arch/arm64/kernel/patching.c.
//
// The JIT (jit.go, image.go) turns verified, fixed-up BPF into A64 code
// with the kernel's register map, prologue, epilogue and frame: a sizing
// pass, then passes against the address the image will run at (calls
// become BL when in range; one pass that patches its forward branches
// stands for the kernel's last two, with the same output), with images placed by the prog pack allocator
// (sim/progpack) and finalized through the text-copy hook. Tail calls go
// through a kernel function that reads the prog array slot; tail calls
// whose array and index the verifier knew are direct, patched as their
// slot changes with seed 001's states (the kernel's arm64 JIT has no
// direct tail calls; its x86-64 JIT does). Translate runs the passes
// without placing the code.
//
// Text patching (patching.go): JIT images live in pages that are
// read-only and executable, so they are written only through a temporary
// writable alias of one page at a time, single instructions and literals
// with one aligned store; patching_bpf.go has the hooks the prog pack
// allocator calls (bpf_arch_text_copy, bpf_arch_text_invalidate and
// jit_fill_hole).
//
// Subpackages: a64 encodes the A64 instructions the JIT emits, emu runs
// them on the simulated address space (with an instruction-TLB model),
// native runs them under qemu-aarch64 to check the emulator, itlbexp
// reproduces seed 000's iTLB experiment.
package jit_arm64
