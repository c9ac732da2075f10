package insn_test

import (
	"reflect"
	"testing"

	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// TestFromAsmEncodesLikeMarshal checks the direct encoder against
// cilium/ebpf's Marshal on generated programs (jump labels, calls to
// subprograms, 64-bit immediates, map loads by fd, cpu v4 instructions).
func TestFromAsmEncodesLikeMarshal(t *testing.T) {
	var specs []asm.Instructions
	for seed := uint64(0); seed < 300; seed++ {
		specs = append(specs, kdiff.Generate(seed, kdiff.DefaultGenOptions).Spec.Instructions)
		if vp := kdiff.GenerateVerdict(seed); vp.Spec != nil {
			specs = append(specs, vp.Spec.Instructions)
		}
	}
	specs = append(specs, asm.Instructions{
		asm.LoadMapPtr(asm.R1, 7),
		asm.LoadMapValue(asm.R2, 9, 24),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	})
	fast := 0
	for i, insns := range specs {
		want, err := insn.FromAsmMarshal(insns)
		if err != nil {
			continue
		}
		got, ok := insn.FromAsmFast(insns)
		if !ok {
			continue
		}
		fast++
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("program %d: direct encoding differs from Marshal\n%s\nwant\n%s", i, insn.Dump(got, nil), insn.Dump(want, nil))
		}
	}
	t.Logf("%d of %d programs compared", fast, len(specs))
	if fast < len(specs)*9/10 {
		t.Errorf("only %d of %d programs took the direct path", fast, len(specs))
	}
}
