package sim_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// Kfunc calls whose offset or id names no kfunc are refused by this
// machine's kernel and by bpfsim alike: errno and whole log.
func TestKfuncCallOffsetsAreTheKernels(t *testing.T) {
	needKernel(t)
	kernelBTF, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skipf("no kernel BTF: %v", err)
	}
	var fn *btf.Func
	if err := kernelBTF.TypeByName("bpf_iter_num_destroy", &fn); err != nil {
		t.Skipf("this kernel has no bpf_iter_num_destroy: %v", err)
	}
	kernelID, err := kernelBTF.TypeID(fn)
	if err != nil {
		t.Fatal(err)
	}
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	simID, ok := k.KfuncID("bpf_iter_num_destroy")
	if !ok {
		t.Fatal("no bpf_iter_num_destroy")
	}
	for _, tc := range KfuncCallOffsetRefusals {
		t.Run(tc.Name, func(t *testing.T) {
			kimm, simm := int32(kernelID), int32(simID)
			if tc.Imm != 0 {
				kimm, simm = tc.Imm, tc.Imm
			}
			kp, kerr := ebpf.NewProgramWithOptions(kfuncCallAt(kimm, tc.Off), ebpf.ProgramOptions{LogLevel: ebpf.LogLevelBranch})
			if kerr == nil {
				kp.Close()
				t.Fatal("the kernel loaded it")
			}
			sp, serr := k.NewProgramWithOptions(kfuncCallAt(simm, tc.Off), sim.ProgramOptions{LogLevel: ebpf.LogLevelBranch})
			if serr == nil {
				sp.Close()
				t.Fatal("bpfsim loaded it")
			}
			if !errors.Is(kerr, tc.Errno) || !errors.Is(serr, tc.Errno) {
				t.Errorf("errnos: kernel %v, bpfsim %v; want %v", kerr, serr, tc.Errno)
			}
			var ve *ebpf.VerifierError
			if !errors.As(kerr, &ve) {
				t.Fatalf("no kernel log: %v", kerr)
			}
			var sv *verifier.Error
			if !errors.As(serr, &sv) {
				t.Fatalf("no bpfsim log: %v", serr)
			}
			// The whole logs: the refusal comes before any instruction
			// is checked.
			klog, slog := strings.Join(ve.Log, "\n"), strings.TrimSpace(sv.Log)
			if !strings.Contains(klog, tc.Msg) || klog != slog {
				t.Errorf("the kernel said\n%s\nbpfsim said\n%s", klog, slog)
			}
		})
	}
}
