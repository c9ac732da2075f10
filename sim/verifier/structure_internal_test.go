package verifier

import (
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim/insn"
)

// TestStraightLineCheckAgreesWithTheFullChecks: wherever the one-scan
// structure check answers, the full checks accept the program with the
// same functions; on random programs of moves, lddw pairs (some
// malformed), exits and jumps.
func TestStraightLineCheckAgreesWithTheFullChecks(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	answered := 0
	for range 20000 {
		var p []insn.Insn
		for n := 1 + rnd.IntN(12); len(p) < n; {
			switch rnd.IntN(8) {
			case 0, 1, 2:
				p = append(p, insn.Insn{Code: insn.ALU64 | insn.MOV | insn.K, Dst: uint8(rnd.IntN(10)), Imm: rnd.Int32()})
			case 3, 4:
				second := insn.Insn{Imm: rnd.Int32()}
				if rnd.IntN(8) == 0 {
					second.Code = uint8(rnd.IntN(256)) // malformed
				}
				p = append(p, insn.Insn{Code: insn.LD | insn.IMM | insn.DW, Src: uint8(rnd.IntN(7)), Imm: rnd.Int32()}, second)
			case 5:
				p = append(p, insn.Insn{Code: insn.JMP | insn.EXIT})
			case 6:
				p = append(p, insn.Insn{Code: insn.JMP | insn.JA, Off: int16(rnd.IntN(5) - 2)})
			default:
				p = append(p, insn.Insn{Code: uint8(rnd.IntN(256)), Imm: rnd.Int32()})
			}
		}
		if rnd.IntN(4) != 0 {
			p = append(p, insn.Insn{Code: insn.JMP | insn.EXIT})
		}
		subs, ok := checkStraightLine(p)
		if !ok {
			continue
		}
		answered++
		full, err := findSubprogs(p)
		if err == nil {
			err = checkSubprogs(p, full)
		}
		if err == nil {
			err = checkLdImm64(p)
		}
		if err != nil || !reflect.DeepEqual(subs, full) {
			t.Fatalf("%v: one scan says %v, the full checks %v, %v", p, subs, full, err)
		}
	}
	if answered < 1000 {
		t.Fatalf("only %d programs took the one-scan path", answered)
	}
}

// TestStraightCFGAgreesWithTheWalk: the one-scan control flow check gives
// the verdict and message the walk gives (which a log at level 2 forces),
// on random straight-line programs with exits anywhere.
func TestStraightCFGAgreesWithTheWalk(t *testing.T) {
	pt, _ := ProgTypeFor(ebpf.SocketFilter, ebpf.AttachNone)
	rnd := rand.New(rand.NewPCG(3, 4))
	for range 5000 {
		var p []insn.Insn
		for n := 1 + rnd.IntN(10); len(p) < n; {
			switch rnd.IntN(5) {
			case 0:
				p = append(p, insn.Insn{Code: insn.JMP | insn.EXIT})
			case 1:
				p = append(p, insn.Insn{Code: insn.LD | insn.IMM | insn.DW, Dst: uint8(rnd.IntN(10)), Imm: rnd.Int32()}, insn.Insn{Imm: rnd.Int32()})
			default:
				p = append(p, insn.Insn{Code: insn.ALU64 | insn.MOV | insn.K, Dst: uint8(rnd.IntN(10)), Imm: rnd.Int32()})
			}
		}
		var msg [2]string
		for i, level := range []int{0, 2} {
			_, err := Verify(p, &Config{Type: pt, LogLevel: level, GPLCompatible: true, NumCPUs: 1})
			if err != nil {
				msg[i] = err.Error()
			}
		}
		if msg[0] != msg[1] {
			t.Fatalf("%v: %q at log level 0, %q at level 2", p, msg[0], msg[1])
		}
	}
}
