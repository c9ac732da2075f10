package sim_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// A program's bpf_ringbuf_output records reach a reader in order; a full
// ring makes the helper return -EAGAIN.
func TestRingbufOutputReachesTheReader(t *testing.T) {
	k := newKernel(t, nil)
	m := newMap(t, k, &ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: 4096})
	p := load(t, k, ebpf.XDP, asm.Instructions{
		asm.StoreImm(asm.RFP, -8, 0x11223344, asm.Word),
		asm.StoreImm(asm.RFP, -4, 0x55667788, asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.Mov.Imm(asm.R3, 8),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnRingbufOutput.Call(),
		asm.Return(),
	})
	rd, err := sim.NewRingbufReader(m)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	runs := 0
	for ; ; runs++ {
		r0, err := p.Run(&sim.RunOptions{Data: make([]byte, 14)})
		if err != nil {
			t.Fatal(err)
		}
		if int32(r0) == -int32(uapi.EAGAIN) {
			break
		}
		if r0 != 0 {
			t.Fatalf("output returned %d", int32(r0))
		}
	}
	// 16-byte records (8 of header) in 4,096 bytes, less one byte.
	if runs != 255 || rd.BufferSize() != 4096 {
		t.Fatalf("%d records fit, want 255", runs)
	}
	for i := 0; i < runs; i++ {
		rec, err := rd.Read()
		if err != nil || len(rec.RawSample) != 8 || rec.RawSample[0] != 0x44 {
			t.Fatalf("record %d: %x, %v", i, rec.RawSample, err)
		}
	}
	if _, err := rd.Read(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("reading a drained ring: %v", err)
	}
}

// What is not simulated is refused at load, naming it; and a ring buffer
// serves only the ring buffer helpers.
func TestRingbufRefusals(t *testing.T) {
	k := newKernel(t, nil)
	rb := newMap(t, k, &ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: 4096})
	reserve := asm.Instructions{
		asm.LoadMapPtr(asm.R1, rb.FD()),
		asm.Mov.Imm(asm.R2, 8),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnRingbufReserve.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}
	if _, err := k.NewProgram(testSpec(t, ebpf.XDP, reserve)); err == nil || !strings.Contains(err.Error(), "bpf_ringbuf_reserve") {
		t.Errorf("bpf_ringbuf_reserve: %v", err)
	}
	arr := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	output := asm.Instructions{
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
		asm.LoadMapPtr(asm.R1, arr.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.Mov.Imm(asm.R3, 8),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnRingbufOutput.Call(),
		asm.Return(),
	}
	if _, err := k.NewProgram(testSpec(t, ebpf.XDP, output)); !errors.Is(err, uapi.EINVAL) || !strings.Contains(err.Error(), "cannot pass map_type 2") {
		t.Errorf("bpf_ringbuf_output into an array: %v", err)
	}
	var v uint32
	if err := rb.Lookup(uint32(0), &v); err == nil {
		t.Error("a ring buffer looked up from user space")
	}
}
