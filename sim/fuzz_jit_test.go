package sim_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/kdiff"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// FuzzJITMatchesInterpreter loads arbitrary bytecode as a verified XDP or
// syscall program into two kernels, one interpreting and one JITing, and
// runs it on arbitrary input in both: load errors, return values, output
// data and run errors must agree, and a program one kernel verified must
// be JITed by the other (the JIT supports everything the verifier lets
// through, but for may_goto and legacy packet loads). Programs that read
// stack they never wrote see what the stack held, so only their loading
// is compared. The two kernels
// hold the same maps at the same fds, so mutated programs reach them. The
// corpus is kept under testdata/fuzz/FuzzJITMatchesInterpreter.
func FuzzJITMatchesInterpreter(f *testing.F) {
	for seed := uint64(0); seed < 8; seed++ {
		p := kdiff.Generate(seed, kdiff.DefaultGenOptions)
		if code, err := insn.FromAsm(p.Spec.Instructions); err == nil {
			f.Add(uint8(0), insn.Encode(code), p.Packet)
		}
	}
	kernels := [2]*sim.Kernel{}
	for i, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		k, err := sim.NewKernel(&sim.Options{CPUs: 2, MemoryLimit: 64 << 20, Runtime: rt, TailCallCount: interp.CountSuccesses})
		if err != nil {
			f.Fatal(err)
		}
		kernels[i] = k
	}
	f.Fuzz(func(t *testing.T, typ uint8, code, data []byte) { jitDiff(t, kernels, typ, code, data) })
}

// jitDiff is one input of FuzzJITMatchesInterpreter.
func jitDiff(t testing.TB, kernels [2]*sim.Kernel, typ uint8, code, data []byte) {
	types := []ebpf.ProgramType{ebpf.XDP, ebpf.Syscall}
	pt := types[int(typ)%len(types)]
	var load sim.ProgramOptions
	if pt == ebpf.Syscall {
		load.Flags = uapi.BPF_F_SLEEPABLE
	}
	var progs [2]*sim.Program
	var errs [2]error
	for i, k := range kernels {
		progs[i], errs[i] = k.LoadBytecodeWithOptions(pt, "fuzz", code, load)
		if progs[i] != nil {
			defer progs[i].Close()
		}
		if errs[0] != nil {
			// Both kernels verify with the same verifier and maps: the
			// JIT kernel would refuse it too, and verifying mutated
			// programs is most of the cost of an input.
			return
		}
	}
	if (errs[0] == nil) != (errs[1] == nil) {
		t.Fatalf("interpreter kernel: %v; JIT kernel: %v", errs[0], errs[1])
	}
	if errs[0] != nil {
		return
	}
	if progs[1].Runtime() != sim.RuntimeJIT && !errors.Is(progs[1].JITError(), uapi.ENOTSUPP) {
		t.Fatalf("a verified program was not JITed: %v\n%s", progs[1].JITError(), progs[1].Xlated())
	}
	if progs[0].ReadsUninitializedStack() {
		// Such a program sees whatever the stack held: the runtimes
		// differ as two kernels would.
		return
	}
	// Each runtime runs the program on CPU 0 and CPU 1, whose stacks
	// and buffers lie at different addresses: a program whose
	// results differ between them depends on addresses (a verified
	// privileged program may leak them) or on its CPU, so the
	// runtimes cannot be compared on it.
	var res [2][2]*sim.RunResult
	var runErrs [2][2]error
	for i, p := range progs {
		for cpu := range 2 {
			opts := &sim.RunOptions{Data: data, MaxInsns: 1 << 22, CPU: uint32(cpu)}
			if pt == ebpf.Syscall {
				opts = &sim.RunOptions{Context: data, MaxInsns: 1 << 22, CPU: uint32(cpu)}
			}
			res[i][cpu], runErrs[i][cpu] = p.Test(opts)
		}
	}
	same := func(a, b *sim.RunResult) bool {
		return a.R0 == b.R0 && bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Context, b.Context)
	}
	for cpu := range 2 {
		e0, e1 := runErrs[0][cpu], runErrs[1][cpu]
		switch {
		case (e0 == nil) != (e1 == nil):
			t.Fatalf("CPU %d: interpreter: %v; JIT: %v\n%s", cpu, e0, e1, progs[0].Xlated())
		case e0 != nil:
			return
		}
	}
	if !same(res[0][0], res[0][1]) {
		return // address- or CPU-dependent
	}
	for cpu := range 2 {
		a, b := res[0][cpu], res[1][cpu]
		if !same(a, b) {
			t.Fatalf("CPU %d: interpreter r0 %#x, JIT r0 %#x; data %x and %x; context %x and %x\n%s",
				cpu, a.R0, b.R0, a.Data, b.Data, a.Context, b.Context, progs[0].Xlated())
		}
	}
}
