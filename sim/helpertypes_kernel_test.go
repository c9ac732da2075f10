package sim_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// TestHelpersAreOfferedToTheTypesTheKernelOffersThemTo calls every helper
// id from every program type bpfsim loads. The kernel looks the helper up
// in the type's func_proto table before it checks any argument, so
// "program of this type cannot use helper" tells its table apart from
// every other refusal; bpfsim must say it for the same helpers it
// simulates, and for no other.
func TestHelpersAreOfferedToTheTypesTheKernelOffersThemTo(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	const cannot = "program of this type cannot use helper"
	simulated := 0
	for id := asm.BuiltinFunc(1); id < 212; id++ {
		for _, typ := range []ebpf.ProgramType{ebpf.XDP, ebpf.SocketFilter, ebpf.SchedCLS, ebpf.SchedACT, ebpf.CGroupSKB,
			ebpf.Kprobe, ebpf.TracePoint, ebpf.RawTracepoint, ebpf.Syscall, ebpf.Tracing, ebpf.SkLookup} {
			spec := testSpec(t, typ, asm.Instructions{id.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return()})
			_, sErr := k.NewProgram(spec)
			if sErr != nil && strings.Contains(sErr.Error(), "not simulated by bpfsim yet") ||
				sErr != nil && strings.Contains(sErr.Error(), "does not implement") {
				continue // a helper bpfsim does not have at all
			}
			simulated++
			kp, kErr := ebpf.NewProgram(spec)
			if kp != nil {
				kp.Close()
			}
			kCannot := kErr != nil && strings.Contains(fmt.Sprintf("%+v", kErr), cannot)
			sCannot := sErr != nil && strings.Contains(sErr.Error(), cannot)
			if kCannot != sCannot {
				t.Errorf("%v in %s: the kernel offers it: %v (%v); bpfsim offers it: %v (%v)", id, typ, !kCannot, kErr, !sCannot, sErr)
			}
		}
	}
	t.Logf("%d (helper, type) pairs compared", simulated)
}
