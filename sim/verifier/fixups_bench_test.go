package verifier_test

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/kdiff"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// benchProgram is a generated XDP program of about a thousand
// instructions (ALU including signed division, branches, loops, stack and
// packet accesses, bpf-to-bpf calls), verified for real.
func benchProgram(b *testing.B) ([]insn.Insn, *verifier.Result) {
	b.Helper()
	opts := kdiff.DefaultGenOptions
	pt, ok := verifier.ProgTypeFor(ebpf.XDP, ebpf.AttachNone)
	if !ok {
		b.Fatal("XDP is not verifiable")
	}
	for seed := uint64(1); seed < 400; seed++ {
		opts.Length = 100 + int(seed%8)*50
		insns, err := insn.FromAsm(kdiff.Generate(seed, opts).Spec.Instructions)
		if err != nil {
			b.Fatal(err)
		}
		if len(insns) < 900 || len(insns) > 1100 {
			continue
		}
		res, err := verifier.Verify(insns, &verifier.Config{
			Type:          pt,
			Helper:        func(id int32) *verifier.FuncProto { return verifier.HelperProtos[id] },
			GPLCompatible: true,
			NumCPUs:       2,
		})
		if err == nil {
			return insns, res
		}
	}
	b.Fatal("no generated program verified")
	return nil, nil
}

// BenchmarkFixups runs every rewrite pass on a verified program of about
// a thousand instructions.
func BenchmarkFixups(b *testing.B) {
	insns, res := benchProgram(b)
	guards, dead := 0, 0
	for i, in := range insns {
		if (in.Class() == insn.ALU || in.Class() == insn.ALU64) && (in.Op() == insn.DIV || in.Op() == insn.MOD) && in.Source() == insn.X {
			guards++
		}
		if !res.Aux[i].Seen {
			dead++
		}
	}
	for b.Loop() {
		p := verifier.NewProg(insns, res)
		if err := verifier.Fixup(p, &verifier.FixupConfig{Calls: &calls{}}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(insns)), "insns")
	b.ReportMetric(float64(guards), "guards")
	b.ReportMetric(float64(dead), "dead")
}

// BenchmarkFixupsInlining is the worst case for patching: a thousand
// instructions, a hundred map lookups each inlined as seven, jumps around
// all of them.
func BenchmarkFixupsInlining(b *testing.B) {
	m := &maps.Map{Type: &maps.Type{Name: "inline"}}
	m.Ops = &genMap{seq: make([]insn.Insn, 6)} // plus the call: seven
	var insns []insn.Insn
	for len(insns) < 990 {
		insns = append(insns,
			jeqInsn(9), // over the block
			movInsn(insn.R1, 0), movInsn(insn.R2, 0), movInsn(insn.R3, 0), movInsn(insn.R4, 0),
			helperInsn(uapi.FuncMapLookupElem),
			movInsn(insn.R5, 0), movInsn(insn.R6, 0), movInsn(insn.R7, 0), movInsn(insn.R8, 0))
	}
	insns = append(insns, movInsn(insn.R0, 0), exitInsn())
	p := seenProg(insns)
	res := &verifier.Result{Aux: p.Aux, Subprogs: p.Subprogs}
	for i := range res.Aux {
		if insns[i].Code == insn.JMP|insn.CALL {
			res.Aux[i].MapPtr = m
		}
	}
	for b.Loop() {
		p := verifier.NewProg(insns, res)
		if err := verifier.Fixup(p, &verifier.FixupConfig{Calls: &calls{}}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(insns)), "insns")
}

// BenchmarkVerify is the verification of BenchmarkFixups's program, for
// scale.
func BenchmarkVerify(b *testing.B) {
	insns, _ := benchProgram(b)
	pt, _ := verifier.ProgTypeFor(ebpf.XDP, ebpf.AttachNone)
	for b.Loop() {
		if _, err := verifier.Verify(insns, &verifier.Config{
			Type:          pt,
			Helper:        func(id int32) *verifier.FuncProto { return verifier.HelperProtos[id] },
			GPLCompatible: true,
			NumCPUs:       2,
		}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyStraightLine verifies test_tag's longest program kinds:
// 4,096 moves of random constants, and 2,048 loads of a map pointer. Its
// ns/insn is the verifier's cost per instruction where no path splits.
func BenchmarkVerifyStraightLine(b *testing.B) {
	pt, _ := verifier.ProgTypeFor(ebpf.SocketFilter, ebpf.AttachNone)
	m := &maps.Map{Type: &maps.Type{Name: "array"}, Attr: maps.Attr{Type: uapi.MapTypeArray, KeySize: 4, ValueSize: 4, MaxEntries: 1}}
	for _, kind := range []string{"mov", "lddw"} {
		b.Run(kind, func(b *testing.B) {
			var insns []insn.Insn
			var refs []verifier.MapRef
			for i := 0; len(insns) < 4095; i++ {
				if kind == "mov" {
					insns = append(insns, insn.Insn{Code: insn.ALU64 | insn.MOV | insn.K, Dst: uint8(i % 10), Imm: int32(i * 2654435761)})
					continue
				}
				refs = append(refs, verifier.MapRef{Insn: len(insns), Map: m})
				insns = append(insns, insn.Insn{Code: insn.LD | insn.IMM | insn.DW, Dst: uint8(i % 10), Src: insn.PseudoMapFD}, insn.Insn{})
			}
			insns = append(insns, insn.Insn{Code: insn.JMP | insn.EXIT})
			for b.Loop() {
				res, err := verifier.Verify(insns, &verifier.Config{Type: pt, Maps: refs, GPLCompatible: true, NumCPUs: 2})
				if err != nil {
					b.Fatal(err)
				}
				verifier.AdoptProg(insns, res).Release()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(insns)), "ns/insn")
		})
	}
}
