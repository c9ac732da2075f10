// Package progpack simulates the memory management of JIT images, the prog
// pack allocator of kernel/bpf/core.c: bpf_prog_pack_alloc and
// bpf_prog_pack_free, bpf_jit_binary_pack_alloc, _finalize, _free and _hdr,
// and, for comparison, the allocator they replaced (bpf_jit_binary_alloc,
// bpf_jit_binary_lock_ro and bpf_jit_binary_free).
//
// With packs (Packs mode), JIT images share 2 MiB packs of executable memory
// in the modules region, each mapped read-only and executable by one 2 MiB
// block entry, so that many programs cost one iTLB entry instead of one per
// page. A pack is carved into 64-byte chunks tracked by a bitmap; an image
// takes the first run of free chunks that fits, in the first pack that has
// one, and a new pack is mapped when none has. An image larger than a pack
// gets its own page-rounded allocation. Since the image is never writable,
// the JIT writes its code into a separate writable buffer (the RW image)
// while computing every address against the final read-only one (the RX
// image); Finalize copies the buffer into place with the architecture's
// text-copy hook and frees it. Freeing an image overwrites its chunks with
// the architecture's illegal instruction (the text-invalidate hook) and
// unmaps the pack when its last chunk goes.
//
// Without packs (NoPacks mode, Linux before 5.18 on x86 and 6.10 on arm64)
// every image is its own page-rounded allocation mapped by 4 KiB pages: the
// JIT writes it in place, Finalize makes it read-only and executable
// (set_memory_rox) and Free unmaps it.
//
// The architecture supplies the hooks (Arch) so that this package does not
// depend on a JIT: jit_arm64.Patcher provides arm64's, which write RX
// memory only through temporary writable aliases. Stats reports the memory
// both modes use, the numbers behind the iTLB comparison of the arm64 prog
// pack series.
package progpack
