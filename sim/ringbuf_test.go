package sim_test

import (
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
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

// A record reserved and never given back is refused at load, naming the
// reference and the call that took it; and a ring buffer serves only the
// ring buffer helpers.
func TestRingbufRefusals(t *testing.T) {
	k := newKernel(t, nil)
	rb := newMap(t, k, &ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: 4096})
	leak := asm.Instructions{
		asm.LoadMapPtr(asm.R1, rb.FD()),
		asm.Mov.Imm(asm.R2, 8),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnRingbufReserve.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}
	_, err := k.NewProgram(testSpec(t, ebpf.XDP, leak))
	var ve *verifier.Error
	if !errors.As(err, &ve) || !errors.Is(err, uapi.EINVAL) ||
		ve.Msg != "BPF_EXIT instruction in main prog would lead to reference leak" ||
		!strings.Contains(ve.Log, "Unreleased reference id=2 alloc_insn=4") {
		t.Errorf("a leaked record: %v", err)
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

// Records a program reserves, fills and submits reach the reader whole,
// also those that wrap around the end of the ring (written through the
// second mapping of its data pages); discarded ones are skipped; a
// reservation that finds the ring full gets NULL.
func TestRingbufReserveSubmitAndDiscard(t *testing.T) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) {
			k := newKernel(t, &sim.Options{Runtime: rt})
			m := newMap(t, k, &ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: 4096})
			// r8 = the packet's first 8 bytes; reserve 104 bytes, fill
			// them with r8, discard when r8 is odd, else submit;
			// return 1 when the ring was full.
			insns := asm.Instructions{
				asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
				asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
				asm.Mov.Reg(asm.R4, asm.R2),
				asm.Add.Imm(asm.R4, 8),
				asm.JGT.Reg(asm.R4, asm.R3, "short"),
				asm.LoadMem(asm.R8, asm.R2, 0, asm.DWord),
				asm.LoadMapPtr(asm.R1, m.FD()),
				asm.Mov.Imm(asm.R2, 104),
				asm.Mov.Imm(asm.R3, 0),
				asm.FnRingbufReserve.Call(),
				asm.JNE.Imm(asm.R0, 0, "got"),
				asm.Mov.Imm(asm.R0, 1),
				asm.Return(),
				asm.Mov.Reg(asm.R6, asm.R0).WithSymbol("got"),
			}
			for off := int16(0); off < 104; off += 8 {
				insns = append(insns, asm.StoreMem(asm.R6, off, asm.R8, asm.DWord))
			}
			insns = append(insns,
				asm.Mov.Reg(asm.R1, asm.R6),
				asm.Mov.Imm(asm.R2, 0),
				asm.And.Imm(asm.R8, 1),
				asm.JEq.Imm(asm.R8, 0, "submit"),
				asm.FnRingbufDiscard.Call(),
				asm.Mov.Imm(asm.R0, 0),
				asm.Return(),
				asm.FnRingbufSubmit.Call().WithSymbol("submit"),
				asm.Mov.Imm(asm.R0, 0),
				asm.Return(),
				asm.Mov.Imm(asm.R0, 2).WithSymbol("short"),
				asm.Return(),
			)
			p := load(t, k, ebpf.XDP, insns)
			rd, err := sim.NewRingbufReader(m)
			if err != nil {
				t.Fatal(err)
			}
			defer rd.Close()
			// 112 bytes a record: 36 fit in 4,096, the 37th would
			// take the producer past the consumer.
			next := uint64(0)
			read := 0
			for round := 0; round < 5; round++ {
				full := 0
				for i := 0; i < 40; i++ {
					pkt := binary.LittleEndian.AppendUint64(nil, next+uint64(i))
					r0, err := p.Run(&sim.RunOptions{Data: append(pkt, make([]byte, 6)...)})
					if err != nil {
						t.Fatal(err)
					}
					full += int(r0)
				}
				if full != 40-36 {
					t.Fatalf("round %d: %d reservations found the ring full, want 4", round, full)
				}
				for i := uint64(0); i < 36; i++ {
					v := next + i
					if v%2 == 1 {
						continue // discarded
					}
					rec, err := rd.Read()
					if err != nil {
						t.Fatalf("round %d, record %d: %v", round, v, err)
					}
					if len(rec.RawSample) != 104 {
						t.Fatalf("record %d has %d bytes", v, len(rec.RawSample))
					}
					for off := 0; off < 104; off += 8 {
						if got := uint64(rec.RawSample[off]) | uint64(rec.RawSample[off+1])<<8; got != v&0xffff {
							t.Fatalf("round %d, record %d, offset %d: %d", round, v, off, got)
						}
					}
					read++
				}
				if _, err := rd.Read(); !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("round %d: a record too many: %v", round, err)
				}
				next += 40
			}
			// 5 rounds of 36 records of 112 bytes went round the ring
			// of 4,096 bytes four times: some wrapped.
			if read != 5*18 {
				t.Errorf("%d records read, want %d", read, 5*18)
			}
		})
	}
}

// ReadRecords decodes the records ready into structs, and reports one
// that does not fit.
func TestReadRecordsDecodesEveryReadyRecord(t *testing.T) {
	k := newKernel(t, nil)
	rb, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	rd, err := sim.NewRingbufReader(rb)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	// A program that outputs two 8-byte records, 1 and 2.
	var insns asm.Instructions
	for _, v := range []int32{1, 2} {
		insns = append(insns,
			asm.Mov.Imm(asm.R1, v), asm.StoreMem(asm.R10, -8, asm.R1, asm.DWord),
			asm.LoadMapPtr(asm.R1, rb.FD()), asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -8),
			asm.Mov.Imm(asm.R3, 8), asm.Mov.Imm(asm.R4, 0), asm.FnRingbufOutput.Call())
	}
	insns = append(insns, asm.Mov.Imm(asm.R0, 0), asm.Return())
	p, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: insns})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Run(&sim.RunOptions{Data: make([]byte, 64)}); err != nil {
		t.Fatal(err)
	}
	got, err := sim.ReadRecords[uint64](rd)
	if err != nil || len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("got %v, %v; want [1 2]", got, err)
	}
	if _, err := p.Run(&sim.RunOptions{Data: make([]byte, 64)}); err != nil {
		t.Fatal(err)
	}
	if got, err := sim.ReadRecords[[16]byte](rd); !errors.Is(err, uapi.EINVAL) || len(got) != 0 {
		t.Fatalf("16-byte records from 8-byte ones: %v, %v; want EINVAL", got, err)
	}
}
