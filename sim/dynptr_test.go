package sim_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// Helper ids of the dynptr helpers, which cilium/ebpf's asm names too.
const (
	fnDynptrFromMem        = asm.BuiltinFunc(uapi.FuncDynptrFromMem)
	fnRingbufReserveDynptr = asm.BuiltinFunc(uapi.FuncRingbufReserveDynptr)
	fnRingbufSubmitDynptr  = asm.BuiltinFunc(uapi.FuncRingbufSubmitDynptr)
	fnRingbufDiscardDynptr = asm.BuiltinFunc(uapi.FuncRingbufDiscardDynptr)
	fnDynptrRead           = asm.BuiltinFunc(uapi.FuncDynptrRead)
	fnDynptrWrite          = asm.BuiltinFunc(uapi.FuncDynptrWrite)
	fnDynptrData           = asm.BuiltinFunc(uapi.FuncDynptrData)
)

// localDynptr makes a local dynptr at fp-48 over the 16-byte value of
// the array buf (bpf_dynptr_from_mem takes map values only), which it
// fills with 0x1122334455667788 and 0 and keeps in r7: r0 is from_mem's
// result.
func localDynptr(buf int, size, flags int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, -84, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, buf),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -84),
		asm.FnMapLookupElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "found"),
		asm.Return(),
		asm.Mov.Reg(asm.R7, asm.R0).WithSymbol("found"),
		asm.LoadImm(asm.R1, 0x1122334455667788, asm.DWord),
		asm.StoreMem(asm.R7, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.R7, 8, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R7),
		asm.Mov.Imm(asm.R2, size),
		asm.Mov.Imm(asm.R3, flags),
		asm.Mov.Reg(asm.R4, asm.RFP),
		asm.Add.Imm(asm.R4, -48),
		fnDynptrFromMem.Call(),
	}
}

// readDynptr reads n bytes at off of the dynptr at fp-48 into fp-8
// (zeroed first) and returns the helper's result in r0, the bytes in r6.
func readDynptr(off, n int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, -8),
		asm.Mov.Imm(asm.R2, n),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -48),
		asm.Mov.Imm(asm.R4, off),
		asm.Mov.Imm(asm.R5, 0),
		fnDynptrRead.Call(),
		asm.LoadMem(asm.R6, asm.RFP, -8, asm.DWord),
	}
}

// A local dynptr reads and writes its memory within its size, and its
// helpers fail with the kernel's errnos outside it or with flags.
func TestLocalDynptrReadsAndWritesWithinItsSize(t *testing.T) {
	type dynCase struct {
		name   string
		insns  asm.Instructions
		r0, r6 uint64
	}
	casesFor := func(buf int) []dynCase {
		return []dynCase{
			{"read whole", append(localDynptr(buf, 16, 0), readDynptr(0, 8)...), 0, 0x1122334455667788},
			{"read at offset", append(localDynptr(buf, 16, 0), readDynptr(4, 4)...), 0, 0x11223344},
			{"read past the end", append(localDynptr(buf, 16, 0), readDynptr(12, 8)...), errno(uapi.E2BIG), 0},
			{"read of a smaller dynptr", append(localDynptr(buf, 4, 0), readDynptr(0, 8)...), errno(uapi.E2BIG), 0},
			{"from_mem with flags", append(localDynptr(buf, 16, 1), readDynptr(0, 8)...), errno(uapi.EINVAL), 0},
			{"write then read", append(append(append(localDynptr(buf, 16, 0),
				asm.Mov.Imm(asm.R1, 0x55),
				asm.StoreMem(asm.RFP, -56, asm.R1, asm.DWord),
			), dynptrWriteCall(-48, 2, -56, 1)...), readDynptr(0, 8)...), 0, 0x1122334455557788},
			{"data pointer", append(localDynptr(buf, 16, 0),
				asm.Mov.Reg(asm.R1, asm.RFP),
				asm.Add.Imm(asm.R1, -48),
				asm.Mov.Imm(asm.R2, 8),
				asm.Mov.Imm(asm.R3, 8),
				fnDynptrData.Call(),
				asm.Mov.Imm(asm.R6, 0),
				asm.JEq.Imm(asm.R0, 0, "null"),
				asm.Mov.Imm(asm.R1, 7),
				asm.StoreMem(asm.R0, 0, asm.R1, asm.Byte),
				asm.LoadMem(asm.R6, asm.R7, 8, asm.DWord),
				asm.Mov.Imm(asm.R0, 0).WithSymbol("null"),
			), 0, 7},
			{"data pointer out of range", append(localDynptr(buf, 16, 0),
				asm.Mov.Reg(asm.R1, asm.RFP),
				asm.Add.Imm(asm.R1, -48),
				asm.Mov.Imm(asm.R2, 12),
				asm.Mov.Imm(asm.R3, 8),
				fnDynptrData.Call(),
				asm.Mov.Reg(asm.R6, asm.R0),
			), 0, 0},
		}
	}
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		k := newKernel(t, &sim.Options{Runtime: rt})
		out := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 1})
		buf := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 1})
		for _, c := range casesFor(buf.FD()) {
			t.Run(rt.String()+"/"+c.name, func(t *testing.T) {
				insns := append(c.insns[:len(c.insns):len(c.insns)], storeR0R6(out.FD())...)
				p, err := k.NewProgram(testSpec(t, ebpf.XDP, insns))
				if err != nil {
					t.Fatal(err)
				}
				defer p.Close()
				runXDP(t, p)
				var got [2]uint64
				if err := out.Lookup(uint32(0), &got); err != nil {
					t.Fatal(err)
				}
				if got != [2]uint64{c.r0, c.r6} {
					t.Errorf("r0, r6 = %#x, %#x; want %#x, %#x", got[0], got[1], c.r0, c.r6)
				}
			})
		}
	}
}

func errno(e uapi.Errno) uint64 { return uint64(-int64(e)) }

// storeR0R6 stores r0 and r6 in the array's element 0 and returns 0.
func storeR0R6(fd int) asm.Instructions {
	return asm.Instructions{
		asm.StoreMem(asm.RFP, -64, asm.R0, asm.DWord),
		asm.StoreMem(asm.RFP, -72, asm.R6, asm.DWord),
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, -76, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, fd),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -76),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R1, asm.RFP, -64, asm.DWord),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.RFP, -72, asm.DWord),
		asm.StoreMem(asm.R0, 8, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}
}

// A ring buffer dynptr's record reaches the reader when submitted and is
// skipped when discarded; a reservation that fails must still be given
// back, and giving it back is a no-op.
func TestRingbufDynptrSubmitsAndDiscards(t *testing.T) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) {
			k := newKernel(t, &sim.Options{Runtime: rt})
			rb := newMap(t, k, &ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: 4096})
			prog := func(size int32, commit asm.BuiltinFunc) *sim.Program {
				insns := asm.Instructions{
					asm.LoadMapPtr(asm.R1, rb.FD()),
					asm.Mov.Imm(asm.R2, size),
					asm.Mov.Imm(asm.R3, 0),
					asm.Mov.Reg(asm.R4, asm.RFP),
					asm.Add.Imm(asm.R4, -16),
					fnRingbufReserveDynptr.Call(),
					asm.Mov.Reg(asm.R6, asm.R0),
					asm.LoadImm(asm.R1, 0x0102030405060708, asm.DWord),
					asm.StoreMem(asm.RFP, -24, asm.R1, asm.DWord),
				}
				insns = append(insns, dynptrWriteCall(-16, 0, -24, 8)...)
				insns = append(insns,
					asm.Mov.Reg(asm.R1, asm.RFP),
					asm.Add.Imm(asm.R1, -16),
					asm.Mov.Imm(asm.R2, 0),
					commit.Call(),
					asm.Mov.Reg(asm.R0, asm.R6),
					asm.Return(),
				)
				p, err := k.NewProgram(testSpec(t, ebpf.XDP, insns))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { p.Close() })
				return p
			}
			rd, err := sim.NewRingbufReader(rb)
			if err != nil {
				t.Fatal(err)
			}
			defer rd.Close()
			if r := runXDP(t, prog(8, fnRingbufSubmitDynptr)); r != 0 {
				t.Errorf("reserve of 8 bytes: %d", int32(r))
			}
			if r := runXDP(t, prog(16, fnRingbufDiscardDynptr)); r != 0 {
				t.Errorf("reserve of 16 bytes: %d", int32(r))
			}
			if r := runXDP(t, prog(8192, fnRingbufSubmitDynptr)); int32(r) != -int32(uapi.EINVAL) {
				t.Errorf("reserve larger than the ring: %d, want -EINVAL", int32(r))
			}
			recs, err := sim.ReadRecords[uint64](rd)
			if err != nil || len(recs) != 1 || recs[0] != 0x0102030405060708 {
				t.Errorf("records %#x, %v; want the submitted one only", recs, err)
			}
		})
	}
}

// What the verifier refuses of dynptrs, with the kernel's messages.
func TestDynptrRefusals(t *testing.T) {
	k := newKernel(t, nil)
	rb := newMap(t, k, &ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: 4096})
	buf := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 1}).FD()
	reserve := asm.Instructions{
		asm.LoadMapPtr(asm.R1, rb.FD()),
		asm.Mov.Imm(asm.R2, 8),
		asm.Mov.Imm(asm.R3, 0),
		asm.Mov.Reg(asm.R4, asm.RFP),
		asm.Add.Imm(asm.R4, -16),
		fnRingbufReserveDynptr.Call(),
	}
	discard := asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, -16),
		asm.Mov.Imm(asm.R2, 0),
		fnRingbufDiscardDynptr.Call(),
	}
	ret0 := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	cat := func(parts ...asm.Instructions) asm.Instructions {
		var out asm.Instructions
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	cases := []struct {
		name  string
		insns asm.Instructions
		msg   string
	}{
		{"accepted", cat(reserve, discard, ret0), ""},
		{"leak", cat(reserve, ret0), "BPF_EXIT instruction in main prog would lead to reference leak"},
		{"overwritten by a store", cat(reserve, asm.Instructions{asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord)}, discard, ret0),
			"cannot overwrite referenced dynptr"},
		{"read by a load", cat(reserve, asm.Instructions{asm.LoadMem(asm.R0, asm.RFP, -16, asm.DWord)}, discard, ret0),
			"invalid read from stack off -16+0 size 8"},
		{"reserved twice", cat(reserve, reserve, discard, ret0), "cannot overwrite referenced dynptr"},
		{"discard of nothing", cat(discard, ret0), "arg 1 is an unacquired reference"},
		{"read of nothing", cat(readDynptr(0, 8), ret0), "Expected an initialized dynptr as arg #2"},
		{"discard of a local dynptr", cat(localDynptr(buf, 16, 0), asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, -48),
			asm.Mov.Imm(asm.R2, 0),
			fnRingbufDiscardDynptr.Call(),
		}, ret0), "arg 1 is an unacquired reference"},
		{"misaligned", cat(asm.Instructions{
			asm.LoadMapPtr(asm.R1, rb.FD()),
			asm.Mov.Imm(asm.R2, 8),
			asm.Mov.Imm(asm.R3, 0),
			asm.Mov.Reg(asm.R4, asm.RFP),
			asm.Add.Imm(asm.R4, -20),
			fnRingbufReserveDynptr.Call(),
		}, ret0), "Dynptr has to be an uninitialized dynptr"},
		{"slice used after discard", cat(reserve, asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, -16),
			asm.Mov.Imm(asm.R2, 0),
			asm.Mov.Imm(asm.R3, 8),
			fnDynptrData.Call(),
			asm.Mov.Reg(asm.R6, asm.R0),
		}, discard, asm.Instructions{
			asm.JEq.Imm(asm.R6, 0, "out"),
			asm.StoreImm(asm.R6, 0, 1, asm.Byte),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
			asm.Return(),
		}), "R6 invalid mem access 'scalar'"},
		{"slice without a null check", cat(localDynptr(buf, 16, 0), asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, -48),
			asm.Mov.Imm(asm.R2, 0),
			asm.Mov.Imm(asm.R3, 8),
			fnDynptrData.Call(),
			asm.StoreImm(asm.R0, 0, 1, asm.Byte),
		}, ret0), "R0 invalid mem access 'mem_or_null'"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := k.NewProgram(testSpec(t, ebpf.XDP, c.insns))
			if c.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				p.Close()
				return
			}
			var ve *verifier.Error
			if !errors.As(err, &ve) || !strings.Contains(ve.Msg, c.msg) {
				t.Fatalf("got %v, want %q", err, c.msg)
			}
		})
	}
}

// An XDP program reads and rewrites its packet through a dynptr: a
// read-only slice, a writable slice, bpf_dynptr_read and bpf_dynptr_write,
// and the accessors; the packet it returns shows the writes.
func TestXDPDynptrSlicesThePacket(t *testing.T) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) {
			k := newKernel(t, &sim.Options{Runtime: rt})
			insns := asm.Instructions{
				// bpf_dynptr_from_xdp(ctx, 0, fp-16)
				asm.Mov.Imm(asm.R2, 0),
				asm.Mov.Reg(asm.R3, asm.RFP),
				asm.Add.Imm(asm.R3, -16),
				kfuncCall(t, k, "bpf_dynptr_from_xdp"),
				// r6 = bpf_dynptr_size(fp-16)
				asm.Mov.Reg(asm.R1, asm.RFP),
				asm.Add.Imm(asm.R1, -16),
				kfuncCall(t, k, "bpf_dynptr_size"),
				asm.Mov.Reg(asm.R6, asm.R0),
				// r0 = bpf_dynptr_slice_rdwr(fp-16, 2, NULL, 4)
				asm.Mov.Reg(asm.R1, asm.RFP),
				asm.Add.Imm(asm.R1, -16),
				asm.Mov.Imm(asm.R2, 2),
				asm.Mov.Imm(asm.R3, 0),
				asm.Mov.Imm(asm.R4, 4),
				kfuncCall(t, k, "bpf_dynptr_slice_rdwr"),
				asm.JEq.Imm(asm.R0, 0, "out"),
				// the slice's 4 bytes become its first byte + the size
				asm.LoadMem(asm.R1, asm.R0, 0, asm.Byte),
				asm.Add.Reg(asm.R1, asm.R6),
				asm.StoreMem(asm.R0, 0, asm.R1, asm.Word),
				// bpf_dynptr_adjust(fp-16, 8, 12); then write 0xaa at 0
				asm.Mov.Reg(asm.R1, asm.RFP),
				asm.Add.Imm(asm.R1, -16),
				asm.Mov.Imm(asm.R2, 8),
				asm.Mov.Imm(asm.R3, 12),
				kfuncCall(t, k, "bpf_dynptr_adjust"),
				asm.Mov.Imm(asm.R1, 0xaa),
				asm.StoreMem(asm.RFP, -24, asm.R1, asm.DWord),
			}
			insns = append(insns, dynptrWriteCall(-16, 0, -24, 1)...)
			insns = append(insns,
				// returns XDP_TX (3) + bpf_dynptr_size, now 4
				asm.Mov.Reg(asm.R1, asm.RFP),
				asm.Add.Imm(asm.R1, -16),
				kfuncCall(t, k, "bpf_dynptr_size"),
				asm.Add.Imm(asm.R0, 3),
				asm.Return().WithSymbol("out"),
			)
			p, err := k.NewProgram(testSpec(t, ebpf.XDP, insns))
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			pkt := make([]byte, 64)
			for i := range pkt {
				pkt[i] = byte(i)
			}
			out := make([]byte, 64)
			ret, err := p.Run(&sim.RunOptions{Data: pkt, DataOut: out})
			if err != nil {
				t.Fatal(err)
			}
			want := append([]byte(nil), pkt...)
			want[2], want[3], want[4], want[5] = 2+64, 0, 0, 0
			want[8] = 0xaa
			if ret != 7 || string(out) != string(want) {
				t.Errorf("ret %d, packet % x\nwant ret 7, packet % x", ret, out, want)
			}
		})
	}
}

// dynptrWriteCall is bpf_dynptr_write(fp+dp, off, fp+src, n, 0).
func dynptrWriteCall(dp, off, src, n int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, dp),
		asm.Mov.Imm(asm.R2, off),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, src),
		asm.Mov.Imm(asm.R4, n),
		asm.Mov.Imm(asm.R5, 0),
		fnDynptrWrite.Call(),
	}
}

// The kernel's kfuncs are registered on first use: loads racing to be
// the first all find them, once.
func TestBuiltinKfuncsRegisterOnceUnderConcurrentLoads(t *testing.T) {
	k := newKernel(t, nil)
	spec, err := ebpf.LoadCollectionSpec("testdata/dynptr_kfunc.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		go func() {
			c, err := k.NewCollectionWithOptions(spec.Copy(), sim.CollectionOptions{Programs: []string{"xdp_dynptr"}})
			if err == nil {
				c.Close()
			}
			errs <- err
		}()
	}
	for i := 0; i < 8; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	ids := map[string]bool{}
	for _, name := range []string{"bpf_dynptr_slice", "bpf_dynptr_from_xdp", "bpf_dynptr_size"} {
		id, ok := k.KfuncID(name)
		if !ok {
			t.Fatalf("%s not registered", name)
		}
		ids[fmt.Sprint(id)] = true
	}
	if len(ids) != 3 {
		t.Errorf("kfunc ids %v: not one each", ids)
	}
}
