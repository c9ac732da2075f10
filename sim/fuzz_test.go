package sim_test

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/kdiff"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// FuzzLoadAndRun loads arbitrary bytecode as a raw, XDP or syscall program
// on one long-lived kernel and runs it on arbitrary input. Loading may fail
// and running may fault, but only with the kernel's errnos, and never by
// panicking or by corrupting the kernel for the next input. The corpus is
// kept under testdata/fuzz/FuzzLoadAndRun.
func FuzzLoadAndRun(f *testing.F) {
	for seed := uint64(0); seed < 6; seed++ {
		p := kdiff.Generate(seed, kdiff.DefaultGenOptions)
		if code, err := insn.FromAsm(p.Spec.Instructions); err == nil {
			f.Add(uint8(1), insn.Encode(code), p.Packet)
		}
	}
	f.Add(uint8(0), insn.Encode([]insn.Insn{{Code: 0x71, Dst: 0, Src: 1}, {Code: 0x95}}), []byte{7})
	f.Add(uint8(2), insn.Encode([]insn.Insn{{Code: 0x79, Dst: 0, Src: 1}, {Code: 0x95}}), make([]byte, 8))

	k, err := sim.NewKernel(&sim.Options{CPUs: 1, MemoryLimit: 64 << 20})
	if err != nil {
		f.Fatal(err)
	}
	types := []ebpf.ProgramType{ebpf.UnspecifiedProgram, ebpf.XDP, ebpf.Syscall}
	f.Fuzz(func(t *testing.T, typ uint8, code, data []byte) {
		pt := types[int(typ)%len(types)]
		prog, err := k.LoadBytecode(pt, "fuzz", code)
		if err != nil {
			if !errors.Is(err, uapi.EINVAL) && !errors.Is(err, uapi.E2BIG) {
				t.Fatalf("load failed without EINVAL or E2BIG: %v", err)
			}
			return
		}
		opts := &sim.RunOptions{Data: data, MaxInsns: 20000}
		if pt == ebpf.Syscall {
			opts = &sim.RunOptions{Context: data, MaxInsns: 20000}
		}
		res, err := prog.Test(opts)
		if err != nil {
			var f *mem.Fault
			if !errors.As(err, &f) && !errors.Is(err, uapi.EINVAL) && !errors.Is(err, uapi.E2BIG) {
				t.Fatalf("run failed with an unexpected error: %v", err)
			}
			return
		}
		if pt != ebpf.Syscall && len(res.Data) != len(data) {
			t.Fatalf("%d bytes in, %d out", len(data), len(res.Data))
		}
	})
}
