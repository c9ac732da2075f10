package verifier_test

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// Each xdp_md field a program reads becomes the kernel's loads from the
// xdp_buff behind it (xdp_convert_ctx_access), with the program's own
// registers; other instructions stay.
func TestXDPContextLoadsBecomeXDPBuffLoads(t *testing.T) {
	ldx := func(size uint8, dst, src uint8, off int16) insn.Insn {
		return insn.Insn{Code: insn.LDX | insn.MEM | size, Dst: dst, Src: src, Off: off}
	}
	exit := []insn.Insn{{Code: insn.ALU64 | insn.MOV | insn.K, Dst: 0, Imm: 2}, {Code: insn.JMP | insn.EXIT}}
	for _, c := range []struct {
		field string
		off   int16
		want  []insn.Insn
	}{
		{"data", 0, []insn.Insn{ldx(insn.DW, 3, 1, 0)}},
		{"data_end", 4, []insn.Insn{ldx(insn.DW, 3, 1, 8)}},
		{"data_meta", 8, []insn.Insn{ldx(insn.DW, 3, 1, 16)}},
		{"ingress_ifindex", 12, []insn.Insn{ldx(insn.DW, 3, 1, 32), ldx(insn.DW, 3, 3, 0), ldx(insn.W, 3, 3, 224)}},
		{"rx_queue_index", 16, []insn.Insn{ldx(insn.DW, 3, 1, 32), ldx(insn.W, 3, 3, 8)}},
	} {
		t.Run(c.field, func(t *testing.T) {
			pt, _ := verifier.ProgTypeFor(ebpf.XDP, ebpf.AttachNone)
			prog := append([]insn.Insn{ldx(insn.W, 3, 1, c.off)}, exit...)
			res, err := verifier.Verify(prog, &verifier.Config{Type: pt, GPLCompatible: true, NumCPUs: 1})
			if err != nil {
				t.Fatal(err)
			}
			p := verifier.NewProg(prog, res)
			fixup(t, p, verifier.FixupConfig{Type: pt})
			want := append(append([]insn.Insn(nil), c.want...), exit...)
			if got := dump(p.Insns); got != dump(want) {
				t.Fatalf("got\n%s\nwant\n%s", got, dump(want))
			}
			// Without the program type the loads stay as written.
			p = verifier.NewProg(prog, res)
			fixup(t, p, verifier.FixupConfig{})
			if got := dump(p.Insns); got != dump(prog) {
				t.Fatalf("without a type: got\n%s", got)
			}
		})
	}
}
