package mem

import (
	"sync"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// PercpuUnitSize is the size of one CPU's unit in a per-CPU chunk. As in
// mm/percpu.c, a chunk holds one unit per possible CPU back to back, so
// CPU c's copy of any per-CPU object lies c*PercpuUnitSize bytes after
// CPU 0's: that distance is the CPU's per-CPU offset
// (__per_cpu_offset[c]), the same for every chunk.
const PercpuUnitSize = 256 << 10

// PercpuMaxAlloc is the largest per-CPU object, PCPU_MIN_UNIT_SIZE in the
// kernel: per-CPU map values larger than this are E2BIG.
const PercpuMaxAlloc = 32 << 10

// Percpu allocates per-CPU memory (alloc_percpu): each allocation returns
// one address, CPU 0's copy, and every CPU's copy is zeroed. It is safe for
// concurrent use.
type Percpu struct {
	space *Space
	cpus  int

	mu     sync.Mutex
	chunks []*percpuChunk
	// free lists by size (rounded to 8): a freed object is reused only for
	// the same size.
	free map[uint64][]uint64
}

type percpuChunk struct {
	base  uint64 // CPU 0's unit
	bytes []byte // all units
	next  uint64 // bump offset within a unit
}

// NewPercpu returns a per-CPU allocator for cpus CPUs in s.
func NewPercpu(s *Space, cpus int) *Percpu {
	return &Percpu{space: s, cpus: cpus, free: map[uint64][]uint64{}}
}

// Offset returns CPU cpu's per-CPU offset: add it to a per-CPU address to
// reach that CPU's copy.
func (p *Percpu) Offset(cpu int) uint64 { return uint64(cpu) * PercpuUnitSize }

// Alloc returns a zeroed per-CPU object of size bytes.
func (p *Percpu) Alloc(size uint64) (uint64, error) {
	if size == 0 || size > PercpuMaxAlloc {
		return 0, errors.Wrapf(uapi.E2BIG, "per-CPU object of %d bytes (at most %d)", size, PercpuMaxAlloc)
	}
	size = roundUp(size, 8)
	p.mu.Lock()
	defer p.mu.Unlock()
	if list := p.free[size]; len(list) > 0 {
		addr := list[len(list)-1]
		p.free[size] = list[:len(list)-1]
		return addr, nil
	}
	var c *percpuChunk
	if n := len(p.chunks); n > 0 && p.chunks[n-1].next+size <= PercpuUnitSize {
		c = p.chunks[n-1]
	} else {
		all := uint64(p.cpus) * PercpuUnitSize
		base, err := p.space.Vmalloc(all, PermRW, "pcpu_chunk")
		if err != nil {
			return 0, err
		}
		b, err := p.space.Bytes(base, all)
		if err != nil {
			return 0, err
		}
		c = &percpuChunk{base: base, bytes: b}
		p.chunks = append(p.chunks, c)
	}
	addr := c.base + c.next
	c.next += size
	return addr, nil
}

// Free zeroes every CPU's copy of the object at addr and makes it
// available again (free_percpu).
func (p *Percpu) Free(addr, size uint64) {
	size = roundUp(size, 8)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.chunks {
		if addr >= c.base && addr < c.base+PercpuUnitSize {
			off := addr - c.base
			for cpu := 0; cpu < p.cpus; cpu++ {
				Fill(c.bytes[off+p.Offset(cpu):off+p.Offset(cpu)+size], 0)
			}
			p.free[size] = append(p.free[size], addr)
			return
		}
	}
}

// Bytes returns CPU cpu's copy of the size-byte object at addr, for the
// kernel's direct access.
func (p *Percpu) Bytes(addr, size uint64, cpu int) ([]byte, error) {
	return p.space.Bytes(addr+p.Offset(cpu), size)
}
