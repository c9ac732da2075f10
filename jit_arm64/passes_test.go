package jit_arm64_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/bpfsim/bpfsim/jit_arm64"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/kdiff"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// TestPatchingPassMatchesTheKernelsPasses translates a varied corpus both
// ways, the kernel's passes and the one patching pass Compile uses, and
// wants the same result word for word (or the same error): kdiff's
// generated programs, the fuzz corpora's bytecode, and random programs
// with every kind of forward reference and call the JIT emits, at an
// image address near some kernel functions and far from others, and
// unknown (Translate's sizing).
func TestPatchingPassMatchesTheKernelsPasses(t *testing.T) {
	var corpus [][]insn.Insn
	for seed := uint64(0); seed < 60; seed++ {
		o := kdiff.DefaultGenOptions
		o.Length = []int{10, 60, 300}[seed%3]
		o.Calls = seed%4 != 0
		if seed%5 == 0 {
			o.Maps = kdiff.MapGenOptions{Count: 2}
		}
		insns, err := insn.FromAsm(kdiff.Generate(seed, o).Spec.Instructions)
		if err != nil {
			t.Fatal(err)
		}
		corpus = append(corpus, insns)
	}
	for _, dir := range []string{"FuzzJITMatchesInterpreter", "FuzzLoadAndRun", "FuzzRewritesKeepResults"} {
		corpus = append(corpus, fuzzCorpus(t, filepath.Join("..", "sim", "testdata", "fuzz", dir))...)
	}
	rnd := rand.New(rand.NewPCG(7, 11))
	for range 400 {
		corpus = append(corpus, randomProgram(rnd))
	}

	const near = 0xffff800010000000
	var ok, failed, patched int
	for k, insns := range corpus {
		for _, image := range []uint64{near, 0} {
			var got [2]*jit_arm64.Translation
			var errs [2]error
			for m, multi := range []bool{true, false} {
				in := testInput(insns)
				got[m], errs[m] = jit_arm64.TranslatePasses(in, image, multi)
			}
			if fmt.Sprint(errs[0]) != fmt.Sprint(errs[1]) {
				t.Fatalf("program %d, image %#x: kernel's passes: %v; patching pass: %v", k, image, errs[0], errs[1])
			}
			if errs[0] != nil {
				failed++
				continue
			}
			if !reflect.DeepEqual(got[0], got[1]) {
				t.Fatalf("program %d, image %#x: the patching pass differs\nkernel's: %+v\npatching: %+v", k, image, got[0], got[1])
			}
			ok++
			if hasForwardRefs(insns) {
				patched++
			}
		}
	}
	t.Logf("%d programs: %d translations the same, %d with forward references; %d failed the same way", len(corpus), ok, patched, failed)
	// The corpus must exercise the patching: most translations succeed.
	if ok < len(corpus) || patched < len(corpus)/2 {
		t.Fatalf("only %d translations succeeded, %d with forward references, of %d programs", ok, patched, len(corpus))
	}
}

// hasForwardRefs reports whether a program branches or calls forward.
func hasForwardRefs(insns []insn.Insn) bool {
	for _, in := range insns {
		if cl := in.Class(); (cl == insn.JMP || cl == insn.JMP32) && in.Off > 0 || in.Code == insn.JMP|insn.CALL && in.Src == insn.PseudoCall && in.Imm >= 0 {
			return true
		}
	}
	return false
}

// testInput is a program with its functions (the starts of its pseudo
// calls' targets) and kernel functions some of them within BL's reach of
// the image address the test uses, some not.
func testInput(insns []insn.Insn) *jit_arm64.Input {
	starts := []int{0}
	for i, in := range insns {
		if in.Code == insn.JMP|insn.CALL && in.Src == insn.PseudoCall {
			if t := i + 1 + int(in.Imm); t > 0 && t < len(insns) && !slices.Contains(starts, t) {
				starts = append(starts, t)
			}
		}
	}
	slices.Sort(starts)
	in := &jit_arm64.Input{Insns: insns, TailCallSlot: 0xffff800010400000, LdAbs: 0xffffffc008100000}
	for k, s := range starts {
		end := len(insns)
		if k+1 < len(starts) {
			end = starts[k+1]
		}
		in.Funcs = append(in.Funcs, jit_arm64.Func{Start: s, End: end, StackDepth: (k * 72) % 520})
	}
	target := func(imm int32) (uint64, error) {
		switch {
		case imm < -1000:
			return 0, fmt.Errorf("no function %d: %w", imm, uapi.EINVAL)
		case imm&1 == 0:
			// ±a few hundred MiB around the image: BL or not.
			return uint64(0xffff800010000000) + uint64(int64(imm%4096)*0x40000), nil
		}
		return 0xffffffc008000000 + uint64(imm&0xffff)*16, nil
	}
	in.CallTarget, in.KfuncTarget = target, target
	for i, x := range insns {
		if x.Code == insn.JMP|insn.TailCall && i%3 != 0 {
			in.DirectTailCalls = append(in.DirectTailCalls, i)
		}
	}
	return in
}

// fuzzCorpus reads the bytecode of a fuzz corpus: each file's first
// []byte value.
func fuzzCorpus(t *testing.T, dir string) [][]insn.Insn {
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]insn.Insn
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			lit, ok := strings.CutPrefix(line, "[]byte(")
			if !ok {
				continue
			}
			s, err := strconv.Unquote(strings.TrimSuffix(lit, ")"))
			if err != nil {
				t.Fatalf("%s: %v", f.Name(), err)
			}
			s = s[:len(s)/insn.Size*insn.Size]
			if insns, err := insn.Decode([]byte(s)); err == nil && len(insns) > 0 {
				out = append(out, insns)
			}
			break
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no programs", dir)
	}
	return out
}

// randomProgram is 1 to 4 functions of random instructions the JIT
// translates: ALU and jumps of every kind with awkward immediates, loads,
// stores, atomics, lddw, exits, helper, kfunc, bpf-to-bpf and tail calls,
// legacy packet loads and may_goto. Jumps stay in their function, so
// translation succeeds.
func randomProgram(rnd *rand.Rand) []insn.Insn {
	nf := 1 + rnd.IntN(4)
	lens := make([]int, nf)
	for f := range lens {
		lens[f] = 2 + rnd.IntN([]int{8, 60, 400}[rnd.IntN(3)])
	}
	starts := make([]int, nf+1)
	for f := range nf {
		starts[f+1] = starts[f] + lens[f]
	}
	var prog []insn.Insn
	imm := func() int32 {
		switch rnd.IntN(6) {
		case 0:
			return int32(rnd.IntN(16)) - 8
		case 1:
			return int32(rnd.IntN(4096))
		case 2:
			return -int32(rnd.IntN(4097))
		case 3:
			return int32(1) << rnd.IntN(32)
		case 4:
			return int32(rnd.Uint32() & 0xffff0000)
		}
		return int32(rnd.Uint32())
	}
	r := func() uint8 { return uint8(rnd.IntN(11)) }
	aluOps := []uint8{insn.MOV, insn.ADD, insn.SUB, insn.MUL, insn.DIV, insn.MOD, insn.AND, insn.OR, insn.XOR, insn.LSH, insn.RSH, insn.ARSH}
	jmpOps := []uint8{insn.JEQ, insn.JNE, insn.JGT, insn.JGE, insn.JLT, insn.JLE, insn.JSGT, insn.JSGE, insn.JSLT, insn.JSLE, insn.JSET}
	sizes := []uint8{insn.B, insn.H, insn.W, insn.DW}
	for f := range nf {
		start, end := starts[f], starts[f+1]
		// off returns a jump offset from i to a random instruction of
		// the function (never the second half of an lddw: targets are
		// chosen before the code, so lddw goes only where no jump lands
		// in practice is not guaranteed; the JIT does not mind).
		off := func(i int) int {
			return start + rnd.IntN(end-start) - (i + 1)
		}
		for len(prog) < end {
			i := len(prog)
			if i == end-1 {
				prog = append(prog, insn.Insn{Code: insn.JMP | insn.EXIT})
				break
			}
			var in insn.Insn
			switch k := rnd.IntN(20); {
			case k < 5:
				cl := []uint8{insn.ALU, insn.ALU64}[rnd.IntN(2)]
				op := aluOps[rnd.IntN(len(aluOps))]
				in = insn.Insn{Code: cl | op | insn.K, Dst: r(), Imm: imm()}
				if op == insn.DIV || op == insn.MOD {
					in.Off = int16(rnd.IntN(2))
				}
				if rnd.IntN(3) == 0 {
					in.Code |= insn.X
					in.Src, in.Imm = r(), 0
				}
				if op == insn.MOV && in.Code&insn.X != 0 && cl == insn.ALU64 && rnd.IntN(3) == 0 {
					in.Off = []int16{8, 16, 32}[rnd.IntN(3)]
				}
			case k == 5:
				in = insn.Insn{Code: []uint8{insn.ALU, insn.ALU64}[rnd.IntN(2)] | insn.END, Dst: r(), Imm: []int32{16, 32, 64}[rnd.IntN(3)]}
				if in.Class() == insn.ALU && rnd.IntN(2) == 0 {
					in.Code |= insn.ToBE
				}
			case k == 6:
				in = insn.Insn{Code: []uint8{insn.ALU, insn.ALU64}[rnd.IntN(2)] | insn.NEG, Dst: r()}
			case k < 10:
				cl := []uint8{insn.JMP, insn.JMP32}[rnd.IntN(2)]
				in = insn.Insn{Code: cl | jmpOps[rnd.IntN(len(jmpOps))], Dst: r(), Imm: imm(), Off: int16(off(i))}
				if rnd.IntN(2) == 0 {
					in.Code |= insn.X
					in.Src, in.Imm = r(), 0
				}
			case k == 10:
				in = insn.Insn{Code: insn.JMP | insn.JA, Off: int16(off(i))}
				if rnd.IntN(3) == 0 {
					in = insn.Insn{Code: insn.JMP32 | insn.JA, Imm: int32(off(i))}
				}
			case k == 11:
				if rnd.IntN(2) == 0 {
					in = insn.Insn{Code: insn.JMP | insn.EXIT}
				} else {
					in = insn.Insn{Code: insn.JMP | insn.JCOND, Src: insn.MayGoto, Off: int16(off(i))}
				}
			case k == 12:
				switch rnd.IntN(5) {
				case 0:
					in = insn.Insn{Code: insn.JMP | insn.CALL, Imm: int32(rnd.IntN(600)) - 100}
				case 1:
					in = insn.Insn{Code: insn.JMP | insn.CALL, Imm: uapi.FuncGetSmpProcessorID}
				case 2:
					in = insn.Insn{Code: insn.JMP | insn.CALL, Src: insn.PseudoKfuncCall, Imm: imm() & 0x7fff}
				case 3:
					in = insn.Insn{Code: insn.JMP | insn.CALL, Src: insn.PseudoCall, Imm: int32(starts[rnd.IntN(nf)] - (i + 1))}
				default:
					in = insn.Insn{Code: insn.JMP | insn.TailCall}
				}
			case k == 13:
				size := sizes[rnd.IntN(3)]
				if rnd.IntN(2) == 0 {
					in = insn.Insn{Code: insn.LD | insn.ABS | size, Imm: imm()}
				} else {
					// not R2, which the JIT cannot add an unencodable
					// imm to (x1 is its scratch register)
					in = insn.Insn{Code: insn.LD | insn.IND | size, Src: []uint8{0, 1, 3, 4, 5, 6, 7, 8, 9, 10}[rnd.IntN(10)], Imm: imm()}
				}
			case k < 17:
				size := sizes[rnd.IntN(4)]
				o := int16(imm())
				switch rnd.IntN(4) {
				case 0:
					in = insn.Insn{Code: insn.LDX | insn.MEM | size, Dst: r(), Src: r(), Off: o}
				case 1:
					in = insn.Insn{Code: insn.LDX | insn.MEMSX | sizes[rnd.IntN(3)], Dst: r(), Src: r(), Off: o}
				case 2:
					in = insn.Insn{Code: insn.STX | insn.MEM | size, Dst: r(), Src: r(), Off: o}
				default:
					in = insn.Insn{Code: insn.ST | insn.MEM | size, Dst: r(), Off: o, Imm: imm()}
				}
			case k == 17:
				ops := []int32{insn.ADD, insn.OR, insn.XOR, insn.AND, insn.ADD | insn.Fetch, insn.AND | insn.Fetch, insn.Xchg, insn.Cmpxchg}
				size := sizes[2+rnd.IntN(2)]
				in = insn.Insn{Code: insn.STX | insn.ATOMIC | size, Dst: r(), Src: r(), Off: int16(imm()), Imm: ops[rnd.IntN(len(ops))]}
				if rnd.IntN(4) == 0 {
					in.Imm = []int32{insn.LoadAcq, insn.StoreRel}[rnd.IntN(2)]
					in.Code = insn.STX | insn.ATOMIC | sizes[rnd.IntN(4)]
				}
			default:
				if i+2 < end {
					v := rnd.Uint64()
					if rnd.IntN(2) == 0 {
						v = 0xffff800000000000 | v&0xffffffffffff
					}
					prog = append(prog, insn.Insn{Code: insn.LD | insn.IMM | insn.DW, Dst: r(), Imm: int32(uint32(v))},
						insn.Insn{Imm: int32(uint32(v >> 32))})
					continue
				}
				in = insn.Insn{Code: insn.ALU64 | insn.MOV | insn.K, Dst: r(), Imm: imm()}
			}
			prog = append(prog, in)
		}
	}
	// Only R0-R10 are valid where the JIT checks; r() never gives more.
	return prog
}
