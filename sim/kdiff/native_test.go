package kdiff_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/jit_arm64/native"
	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// rawForm turns a generated XDP program into one with the native
// harness's calling convention, r1 = the packet and r2 = its length: the
// two xdp_md loads it starts with become "r6 = r1; r7 = r1; r7 += r2".
// It runs unverified, as the UnspecifiedProgram harness type does.
func rawForm(t testing.TB, p *kdiff.Program) asm.Instructions {
	t.Helper()
	in := p.Spec.Instructions
	if in[0].OpCode.Class() != asm.LdXClass || in[0].Src != asm.R1 || in[1].Src != asm.R1 || in[1].Offset != 4 {
		t.Fatalf("seed %d: the program does not start with the xdp_md loads:\n%v", p.Seed, in[:2])
	}
	out := asm.Instructions{asm.Mov.Reg(in[0].Dst, asm.R1), asm.Mov.Reg(in[1].Dst, asm.R1), asm.Add.Reg(in[1].Dst, asm.R2)}
	return append(out, in[2:]...)
}

// nativePrograms is how many programs TestJITOutputRunsTheSameUnderQEMU
// compares; BPFSIM_NATIVE_PROGRAMS changes it.
func nativePrograms(t testing.TB) int {
	n := 2000
	if v := os.Getenv("BPFSIM_NATIVE_PROGRAMS"); v != "" {
		if _, err := fmt.Sscan(v, &n); err != nil {
			t.Fatalf("BPFSIM_NATIVE_PROGRAMS=%q: %v", v, err)
		}
	} else if testing.Short() {
		n = 200
	}
	return n
}

// TestJITOutputRunsTheSameUnderQEMU runs the arm64 JIT's code for
// generated programs three ways: natively under qemu-aarch64 (a real
// implementation of the architecture), on bpfsim's A64 emulator, and the
// BPF in bpfsim's interpreter. Return values and packets must agree, and
// the code must preserve the callee-saved registers.
func TestJITOutputRunsTheSameUnderQEMU(t *testing.T) {
	qemu, err := native.QEMU()
	if err != nil {
		t.Skipf("qemu-aarch64 unavailable, native comparison of JIT output skipped: %v", err)
	}
	ik, err := sim.NewKernel(&sim.Options{Runtime: sim.RuntimeInterpreter})
	if err != nil {
		t.Fatal(err)
	}
	jk, err := sim.NewKernel(&sim.Options{Runtime: sim.RuntimeJIT})
	if err != nil {
		t.Fatal(err)
	}
	n := nativePrograms(t)
	var cases []native.Case
	var want []sim.RunResult
	var seeds []uint64
	insns := 0
	for seed := uint64(0); len(cases) < n; seed++ {
		p := kdiff.Generate(seed, kdiff.DefaultGenOptions)
		spec := &ebpf.ProgramSpec{Name: "native", Type: ebpf.UnspecifiedProgram, License: "GPL", Instructions: rawForm(t, p)}
		ip, err := ik.NewProgram(spec)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		jp, err := jk.NewProgramWithOptions(spec, sim.ProgramOptions{Runtime: sim.RuntimeJIT})
		if err != nil {
			t.Fatalf("seed %d: JIT: %v", seed, err)
		}
		res, err := ip.Test(&sim.RunOptions{Data: p.Packet})
		if err != nil {
			t.Fatalf("seed %d: interpreter: %v", seed, err)
		}
		words := jp.JITImage().Words()
		code := make([]byte, 4*len(words))
		for i, w := range words {
			binary.LittleEndian.PutUint32(code[4*i:], w)
		}
		insns += len(words)
		cases = append(cases, native.Case{Code: code, Data: p.Packet})
		want = append(want, *res)
		seeds = append(seeds, seed)
		ip.Close()
		jp.Close()
	}
	qr, err := native.RunNative(qemu, cases, native.Options{})
	if err != nil {
		t.Fatal(err)
	}
	er, err := native.Emulate(cases)
	if err != nil {
		t.Fatal(err)
	}
	if m := native.Compare(cases, qr, er); len(m) > 0 {
		t.Fatalf("qemu and the emulator differ on %d programs; first (seed %d): %v", len(m), seeds[m[0].Index], m[0])
	}
	for i, r := range qr {
		switch {
		case r.Fault != "":
			t.Fatalf("seed %d: the JIT's code faulted under qemu: %s", seeds[i], r.Fault)
		case !r.CalleeSavedOK():
			t.Fatalf("seed %d: the JIT's code clobbered callee-saved registers (mask %#x)", seeds[i], r.Clobbered)
		case r.X0 != want[i].R0 || string(r.Data) != string(want[i].Data):
			t.Fatalf("seed %d: native r0 %#x, interpreter %#x; packets equal: %v", seeds[i], r.X0, want[i].R0, string(r.Data) == string(want[i].Data))
		}
	}
	t.Logf("%d JITed programs (%d A64 instructions) agree under qemu-aarch64, the emulator and the interpreter", len(cases), insns)
}
