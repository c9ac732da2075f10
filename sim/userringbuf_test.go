package sim_test

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// drainSum is a program that drains the user ring buffer fd with flags: its callback
// adds each record's first byte (read through the dynptr) to a counter
// at fp-8 of the caller; it returns drain's result plus 1000 times the
// sum.
func drainSum(fd int, flags int32) asm.Instructions {
	fn := staticFuncBTF
	return asm.Instructions{
		btf.WithFuncMetadata(asm.Mov.Imm(asm.R1, 0), fn("main", 1)),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
		asm.LoadMapPtr(asm.R1, fd),
		asm.Instruction{OpCode: asm.LoadImmOp(asm.DWord), Src: asm.PseudoFunc, Dst: asm.R2, Constant: -1}.WithReference("cb"),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, flags),
		asm.BuiltinFunc(uapi.FuncUserRingbufDrain).Call(),
		asm.LoadMem(asm.R1, asm.RFP, -8, asm.DWord),
		asm.Mul.Imm(asm.R1, 1000),
		asm.Add.Reg(asm.R0, asm.R1),
		asm.Return(),
		// cb(dynptr, ctx): ctx += the record's first byte.
		btf.WithFuncMetadata(asm.Mov.Reg(asm.R6, asm.R2), fn("cb", 2)).WithSymbol("cb"),
		asm.Mov.Reg(asm.R3, asm.R1),
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, -1),
		asm.Mov.Imm(asm.R2, 1),
		asm.Mov.Imm(asm.R4, 0),
		asm.Mov.Imm(asm.R5, 0),
		asm.BuiltinFunc(uapi.FuncDynptrRead).Call(),
		asm.LoadMem(asm.R1, asm.RFP, -1, asm.Byte),
		asm.LoadMem(asm.R2, asm.R6, 0, asm.DWord),
		asm.Add.Reg(asm.R2, asm.R1),
		asm.StoreMem(asm.R6, 0, asm.R2, asm.DWord),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}
}

// Records user space writes reach the program's callback in order, each
// in a dynptr; discarded ones are skipped and not counted; a busy one
// stops the drain until it is submitted.
func TestUserRingbufRecordsReachTheDrainCallback(t *testing.T) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) {
			k := newKernel(t, &sim.Options{Runtime: rt})
			rb := newMap(t, k, &ebpf.MapSpec{Type: ebpf.MapType(uapi.MapTypeUserRingbuf), MaxEntries: 4096})
			w, err := sim.NewUserRingbufWriter(rb)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			p, err := k.NewProgram(testSpec(t, ebpf.XDP, drainSum(rb.FD(), 0)))
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			write := func(b byte, size uint32) sim.UserRingbufRecord {
				r, err := w.Reserve(size)
				if err != nil {
					t.Fatal(err)
				}
				r.Write([]byte{b, 1, 2, 3, 4, 5, 6, 7, 8, 9})
				return r
			}
			write(3, 1).Submit()
			write(50, 10).Discard()
			write(7, 5).Submit()
			busy := write(100, 3)
			write(11, 2).Submit()
			if got := runXDP(t, p); got != 2+10*1000 {
				t.Errorf("first drain: %d, want 2 records summing 10", got)
			}
			busy.Submit()
			if got := runXDP(t, p); got != 2+111*1000 {
				t.Errorf("second drain: %d, want 2 records summing 111", got)
			}
			if got := runXDP(t, p); got != 0 {
				t.Errorf("empty drain: %d", got)
			}
		})
	}
}
