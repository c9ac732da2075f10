package sim_test

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
)

// TestXDPRunsStartFromAZeroedBuffer: whatever a run wrote, the next run's
// buffer reads as zero around its packet, as the kernel's freshly
// allocated one does, also after an unverified program wrote past the
// packet.
func TestXDPRunsStartFromAZeroedBuffer(t *testing.T) {
	k := newKernel(t, nil)
	// r0 = the byte 100 past data_end; then that byte = 0xff.
	p := loadUnverified(t, k, ebpf.XDP, asm.Instructions{
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
		asm.LoadMem(asm.R0, asm.R3, 100, asm.Byte),
		asm.StoreImm(asm.R3, 100, 0xff, asm.Byte),
		asm.Return(),
	})
	defer p.Close()
	for run := range 3 {
		got, err := p.Run(&sim.RunOptions{Data: make([]byte, 64)})
		if err != nil {
			t.Fatal(err)
		}
		if got != 0 {
			t.Fatalf("run %d read %#x past the packet, left by the previous run", run, got)
		}
	}
}
