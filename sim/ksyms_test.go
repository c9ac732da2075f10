package sim_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
)

// callImm is the immediate of a direct call of the kernel function name.
func callImm(t *testing.T, k *sim.Kernel, name string) int64 {
	t.Helper()
	base, ok := k.KernelSymbol("__bpf_call_base")
	fn, ok2 := k.KernelSymbol(name)
	if !ok || !ok2 {
		t.Fatalf("no kernel symbol %s", name)
	}
	return int64(fn.Addr - base.Addr)
}

// The kernel's text, as /proc/kallsyms lists it: __bpf_call_base first,
// where arm64 maps the kernel image, and every call of a fixed-up program
// reaching one of its functions.
func TestKernelSymbols(t *testing.T) {
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	syms := k.KernelSymbols()
	if len(syms) < 10 || syms[0].Name != "__bpf_call_base" || syms[0].Addr != mem.VmallocStart {
		t.Fatalf("symbols start with %+v", syms[:min(len(syms), 2)])
	}
	other, err := sim.NewKernel(&sim.Options{CPUs: 7})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(other.KernelSymbols()) != fmt.Sprint(syms) {
		t.Error("two kernels lay out their text differently")
	}
	for _, s := range syms[1:] {
		if imm := callImm(t, k, s.Name); imm < 4096 || imm != int64(int32(imm)) {
			t.Errorf("%s is at __bpf_call_base%+d: a call immediate must be beyond any helper id and fit 32 bits", s.Name, imm)
		}
	}
}

// A helper registered after boot gets its function on first use, like a
// module's, and programs call it there.
func TestRegisteredHelpersBecomeKernelFunctions(t *testing.T) {
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	const id = 0x5000
	if err := k.RegisterHelper(&sim.Helper{ID: id, Name: "answer", Fn: func(_ *interp.Machine, r1, _, _, _, _ uint64) (uint64, error) {
		return 42 + r1, nil
	}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := k.KernelSymbol("answer"); ok {
		t.Fatal("the helper has a function before any program uses it")
	}
	p, err := k.LoadInsns(ebpf.XDP, "answer", []insn.Insn{mov64(insn.R1, 1), helperCall(id), exitInsn()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, ok := k.KernelSymbol("answer"); !ok {
		t.Fatal("the helper got no function")
	}
	if !strings.Contains(p.Xlated(), fmt.Sprintf("call answer#%d", callImm(t, k, "answer"))) {
		t.Errorf("the call is not direct:\n%s", p.Xlated())
	}
	if ret, err := p.Run(&sim.RunOptions{Data: make([]byte, 14)}); err != nil || ret != 43 {
		t.Errorf("got %d, %v; want 43", ret, err)
	}
}
