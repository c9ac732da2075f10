package devmap

import (
	"sync"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/mem"
)

// valueSlot is one element's value in simulated memory.
type valueSlot struct {
	addr uint64
	raw  []byte // aliases simulated memory
}

// valueSlab hands out values of one size from whole pages of simulated
// memory, as the kernel kmallocs an element per update. A freed value
// goes back only after a grace period (call_rcu), so a program that
// looked it up before keeps reading the old contents meanwhile.
type valueSlab struct {
	k     maps.Kernel
	size  uint64
	name  string
	mu    sync.Mutex
	pages []uint64
	spare []valueSlot
	freed bool // free has run: late grace period callbacks drop their slot
}

func newValueSlab(k maps.Kernel, valueSize uint32, name string) *valueSlab {
	return &valueSlab{k: k, size: (uint64(valueSize) + 7) &^ 7, name: name}
}

func (s *valueSlab) alloc() (valueSlot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.spare) == 0 {
		page, err := s.k.Memory().Vmalloc(mem.PageSize, mem.PermRW, s.name)
		if err != nil {
			return valueSlot{}, err
		}
		raw, err := s.k.Memory().Bytes(page, mem.PageSize)
		if err != nil {
			s.k.Memory().Free(page)
			return valueSlot{}, err
		}
		s.pages = append(s.pages, page)
		// Lowest address on top, so values fill a page in order.
		for off := mem.PageSize - s.size; ; off -= s.size {
			s.spare = append(s.spare, valueSlot{addr: page + off, raw: raw[off : off+s.size : off+s.size]})
			if off < s.size {
				break
			}
		}
	}
	v := s.spare[len(s.spare)-1]
	s.spare = s.spare[:len(s.spare)-1]
	return v, nil
}

// freeAfterGracePeriod returns v once no program can hold its address.
func (s *valueSlab) freeAfterGracePeriod(v valueSlot) {
	s.k.CallRCU(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.freed {
			mem.Fill(v.raw, 0)
			s.spare = append(s.spare, v)
		}
	})
}

// free unmaps every page.
func (s *valueSlab) free() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.pages {
		s.k.Memory().Free(p)
	}
	s.pages, s.spare, s.freed = nil, nil, true
}
