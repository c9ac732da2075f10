package mem_test

import (
	"testing"

	"github.com/bpfsim/bpfsim/sim/mem"
)

// BenchmarkTLBHit is a load whose page is cached: the cost every program
// memory access pays.
func BenchmarkTLBHit(b *testing.B) {
	s := mem.New()
	addr, _ := s.Vmalloc(mem.PageSize, mem.PermRW, "bench")
	tlb := s.NewTLB()
	tlb.Load64(addr)
	b.ResetTimer()
	var sum uint64
	for i := 0; i < b.N; i++ {
		v, _ := tlb.Load64(addr + uint64(i&511)*8)
		sum += v
	}
	_ = sum
}

// BenchmarkTLBMiss walks the page table on every access: 64 pages cycled
// through one TLB slot.
func BenchmarkTLBMiss(b *testing.B) {
	s := mem.New()
	addr, _ := s.Vmalloc(64*64*mem.PageSize, mem.PermRW, "bench")
	tlb := s.NewTLB()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Pages 64 apart map to the same slot of the 64-entry TLB.
		tlb.Load64(addr + uint64(i&63)*64*mem.PageSize)
	}
	b.ReportMetric(float64(tlb.Misses)/float64(b.N), "misses/op")
}

// BenchmarkKernelRead is a kernel-side copy of 256 bytes (helpers, test
// runs).
func BenchmarkKernelRead(b *testing.B) {
	s := mem.New()
	addr, _ := s.Vmalloc(mem.PageSize, mem.PermRW, "bench")
	buf := make([]byte, 256)
	b.SetBytes(256)
	for i := 0; i < b.N; i++ {
		if err := s.Read(addr+100, buf); err != nil {
			b.Fatal(err)
		}
	}
}
