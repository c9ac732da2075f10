package progpack

import "github.com/bpfsim/bpfsim/sim/mem"

// Stats describes the memory an Allocator holds, for comparing the two
// modes: the prog pack series for arm64 argues with the iTLB entries that
// JIT code needs (HugeMappings + PageMappings).
type Stats struct {
	Mode Mode
	// Packs is how many packs are mapped; PacksCreated and PacksFreed count
	// the packs mapped and unmapped since the Allocator was made.
	Packs                    int
	PacksCreated, PacksFreed uint64
	// ChunksUsed and ChunksFree are the 64-byte chunks of the mapped packs
	// in use and free.
	ChunksUsed, ChunksFree int
	// OwnAllocs is how many allocations of their own are mapped: images
	// and PackAlloc requests larger than a pack, or every one of them in
	// NoPacks mode. OwnBytes is their page-rounded size.
	OwnAllocs int
	OwnBytes  uint64
	// Images is how many images from Alloc are live (finalized or being
	// written); ImageBytes is the sum of their sizes (header->size).
	Images     int
	ImageBytes uint64
	// RWBuffers and RWBytes are the writable buffers of images not yet
	// finalized (Packs mode; in NoPacks mode the image itself is written).
	RWBuffers int
	RWBytes   uint64
	// MappedBytes is the executable memory mapped: packs and allocations
	// of their own.
	MappedBytes uint64
	// HugeMappings and PageMappings are the 2 MiB block entries and the
	// 4 KiB page entries that map it: the iTLB entries needed to run code
	// from all of it.
	HugeMappings, PageMappings int
	// Charged is bpf_jit_current: bytes charged for live images.
	Charged uint64
}

// Stats returns a snapshot of the Allocator's memory use.
func (a *Allocator) Stats() Stats {
	st := Stats{Mode: a.opts.Mode}
	a.mu.Lock()
	st.Packs = len(a.packs)
	st.PacksCreated, st.PacksFreed = a.packsCreated, a.packsFreed
	st.ChunksUsed = a.chunksUsed
	st.ChunksFree = len(a.packs)*ChunkCount - a.chunksUsed
	st.MappedBytes = uint64(len(a.packs)) * PackSize
	if a.opts.PageMappedPacks {
		st.PageMappings = len(a.packs) * PackSize / mem.PageSize
	} else {
		st.HugeMappings = len(a.packs)
	}
	for _, al := range a.allocs {
		if al.pack == nil {
			st.OwnAllocs++
			st.OwnBytes += al.mapped
			st.MappedBytes += al.mapped
			st.PageMappings += int(al.mapped / mem.PageSize)
		}
	}
	a.mu.Unlock()

	a.binMu.Lock()
	for _, b := range a.binaries {
		st.Images++
		st.ImageBytes += uint64(b.size)
		if b.state.Load() == writable && b.rw != b.ro {
			st.RWBuffers++
			st.RWBytes += uint64(b.size)
		}
	}
	a.binMu.Unlock()
	st.Charged = uint64(a.charged.Load())
	return st
}
