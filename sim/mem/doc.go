// Package mem simulates the kernel's virtual address space: the one memory
// that every executor of bpfsim (the interpreter today, the arm64 JIT's
// emulator later) reads and writes.
//
// The model follows arm64 with 4 KiB pages and 48-bit kernel virtual
// addresses (the upper half, 0xffff000000000000 and up). A four-level page
// table maps 4 KiB pages; its third level can instead hold a 2 MiB huge
// mapping, the way a PMD block entry does. Every page carries read, write
// and execute permissions. Kernel objects come from a vmalloc-style
// allocator that leaves an unmapped guard page after each area, and freed
// virtual ranges are never handed out again, so a stale pointer always
// faults instead of silently reaching a new object.
//
// Faults are values: an access to an unmapped page or one that lacks the
// needed permission yields a *Fault (address, access kind, size and, when
// the executor knows it, the BPF instruction index), never a Go panic.
//
// Executors reach memory through a TLB: a small per-CPU translation cache
// that turns a virtual page number into the backing page with one compare.
// Misses walk the page table under a read lock. Mapping changes bump a
// generation counter; a TLB checks it when a program starts running (see
// TLB.Sync), which is safe because the kernel, like this simulator, never
// frees memory a running program can still reach (RCU).
//
// Kernel counterparts: arch/arm64/include/asm/memory.h (layout),
// mm/vmalloc.c (allocation and guard pages), arch/arm64/mm/pageattr.c
// (set_memory_ro/x and block splitting).
package mem
