package verifier_test

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"

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
	xdp, _ := verifier.ProgTypeFor(ebpf.XDP)
	cfg := func(prune bool) *verifier.Config {
		return &verifier.Config{
			Type:           xdp,
			Helper:         func(id int32) *verifier.FuncProto { return verifier.HelperProtos[id] },
			GPLCompatible:  true,
			NumCPUs:        2,
			Limit:          200_000,
			DisablePruning: !prune,
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
