package verifier_test

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/kdiff"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// FuzzPruningKeepsVerdicts verifies arbitrary XDP programs twice, with
// state pruning and exploring every path, and requires the same verdict:
// pruning that accepted a program full exploration rejects would be
// unsound, the other way round too strict. Programs that exhaust the
// budget either way prove nothing and are skipped. The corpus is kept under
// testdata/fuzz/FuzzPruningKeepsVerdicts.
func FuzzPruningKeepsVerdicts(f *testing.F) {
	for seed := uint64(0); seed < 8; seed++ {
		o := kdiff.DefaultGenOptions
		o.Length = 20 + int(seed)*10
		p := kdiff.Generate(seed, o)
		if code, err := insn.FromAsm(p.Spec.Instructions); err == nil {
			f.Add(insn.Encode(code))
		}
	}
	// A bpf_loop: the callback's visits converge by pruning at the call,
	// or, without pruning, end after R1's count.
	loop, err := insn.FromAsm(asm.Instructions{
		asm.StoreImm(asm.RFP, -8, 0, asm.Word),
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.Mov.Imm(asm.R1, 5),
		asm.Instruction{OpCode: asm.LoadImmOp(asm.DWord), Src: asm.PseudoFunc, Dst: asm.R2, Constant: -1}.WithReference("cb"),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnLoop.Call(),
		asm.Return(),
		asm.LoadMem(asm.R3, asm.R2, 0, asm.DWord).WithSymbol("cb"),
		asm.Add.Reg(asm.R3, asm.R1),
		asm.StoreMem(asm.R2, 0, asm.R3, asm.DWord),
		asm.Mov.Imm(asm.R0, 0),
		asm.JLT.Imm(asm.R1, 3, "ret"),
		asm.Mov.Imm(asm.R0, 1),
		asm.Return().WithSymbol("ret"),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(insn.Encode(loop))
	xdp, _ := verifier.ProgTypeFor(ebpf.XDP, ebpf.AttachNone)
	cfg := func(prune bool) *verifier.Config {
		return &verifier.Config{
			Type:           xdp,
			Helper:         func(id int32) *verifier.FuncProto { return verifier.HelperProtos[id] },
			GPLCompatible:  true,
			NumCPUs:        2,
			Limit:          200_000,
			DisablePruning: !prune,
			FuncInfo:       true, // callbacks need it
		}
	}
	f.Fuzz(func(t *testing.T, code []byte) {
		insns, err := insn.Decode(code)
		if err != nil || len(insns) > 4096 {
			return
		}
		_, errPruned := verifier.Verify(insns, cfg(true))
		_, errFull := verifier.Verify(insns, cfg(false))
		if exhausted(errPruned) || exhausted(errFull) {
			return
		}
		if (errPruned == nil) != (errFull == nil) {
			t.Fatalf("pruning changed the verdict: with pruning %v, without %v\n%s", errPruned, errFull, insn.Dump(insns, nil))
		}
	})
}

// exhausted reports a verification that ran out of budget (instructions
// or pending branches) or found a loop: without pruning, loops never end.
func exhausted(err error) bool {
	var ve *verifier.Error
	if !errors.As(err, &ve) {
		return false
	}
	return errors.Is(err, uapi.E2BIG) || errors.Is(err, uapi.EFAULT) ||
		(errors.Is(err, uapi.EINVAL) && len(ve.Msg) > 20 && ve.Msg[:20] == "infinite loop detect")
}
