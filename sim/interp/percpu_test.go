package interp_test

import (
	"errors"
	"testing"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// percpuMove is BPF_MOV64_PERCPU_REG: dst = src + this CPU's per-CPU
// offset.
func percpuMove(dst, src uint8) insn.Insn {
	return insn.Insn{Code: insn.ALU64 | insn.MOV | insn.X, Dst: dst, Src: src, Off: -1}
}

func TestPercpuMoveAddsTheCPUsOffset(t *testing.T) {
	vm := newTestVM(t)
	p, err := interp.Compile(prog(ldImm64(1, 0xffff_8000_0010_0000), percpuMove(0, 1), exit()), noHelpers)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []uint64{0, 256 << 10, 3 * 256 << 10} {
		vm.m.PercpuOffset = off
		if r0, err := vm.m.Run(p, 0, 0); err != nil || r0 != 0xffff_8000_0010_0000+off {
			t.Errorf("offset %#x: r0 = %#x, %v", off, r0, err)
		}
	}
}

// Only the 64-bit move has a per-CPU form.
func TestPercpuMoveIs64BitOnly(t *testing.T) {
	in := insn.Insn{Code: insn.ALU | insn.MOV | insn.X, Dst: 0, Src: 1, Off: -1}
	if _, err := interp.Compile(prog(in, exit()), noHelpers); !errors.Is(err, uapi.EINVAL) {
		t.Fatalf("got %v, want EINVAL", err)
	}
}
