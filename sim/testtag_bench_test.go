package sim_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// The program set of the kernel's selftest test_tag
// (tools/testing/selftests/bpf/test_tag.c): socket filters of 2 to 4,096
// instructions of random 64-bit moves into r0-r9, and of 3 to 4,096
// instructions of map fd loads into r0-r9, each length five times:
// 5 × (4,095 + 4,094) = 40,945 loads.
const (
	testTagMaxInsns = 4096
	testTagRounds   = 5
	testTagPrograms = testTagRounds * ((testTagMaxInsns - 1) + (testTagMaxInsns - 2))
)

// testTagProgram writes program i of the set into buf, as test_tag fills
// its one static program buffer, and returns it with its length in
// instruction slots (an lddw takes two). Its random immediates come from
// i, so every runner loads the same programs.
func testTagProgram(i int, mapFD int, buf asm.Instructions) (asm.Instructions, int) {
	lengths := testTagMaxInsns - 1 // imm programs per round: 2..4096
	round := i / (lengths + testTagMaxInsns - 2)
	j := i % (lengths + testTagMaxInsns - 2)
	prog := buf[:0]
	if cap(prog) < testTagMaxInsns {
		prog = make(asm.Instructions, 0, testTagMaxInsns)
	}
	if j < lengths {
		rnd := rand.New(rand.NewPCG(uint64(i), uint64(round)))
		n := j + 2
		mov := asm.Mov.Imm(0, 0) // filled in place: the generator is timed too
		for k := 0; k < n-1; k++ {
			mov.Dst, mov.Constant = asm.Register(k%10), int64(int32(rnd.Uint32()))
			prog = append(prog, mov)
		}
		return append(prog, asm.Return()), n
	}
	// bpf_gen_map_prog: lddw pairs, a mov when the length is even, exit.
	n := j - lengths + 3
	slots, r := 0, 0
	ld := asm.LoadMapPtr(0, mapFD)
	for ; slots+1 < n; slots += 2 {
		ld.Dst = asm.Register(r % 10)
		prog = append(prog, ld)
		r++
	}
	if n%2 == 0 {
		prog = prog[:len(prog)-1]
		prog = append(prog, asm.Mov.Imm(asm.Register(slots%10), 42))
	}
	return append(prog, asm.Return()), n
}

// rawLen is a program's length in instruction slots (an lddw takes two).
func rawLen(prog asm.Instructions) int {
	n := 0
	for _, in := range prog {
		n += int(in.Size()) / asm.InstructionSize
	}
	return n
}

// BenchmarkTestTagLoad loads test_tag's programs, in order, through the
// whole path (verification, fix-ups, the arm64 JIT into prog packs) and
// closes each, on bpfsim and on this machine's kernel (its verifier and
// x86-64 JIT) in the same run. -benchtime 40945x runs the whole set once;
// scripts/test-tag-load.sh does.
func BenchmarkTestTagLoad(b *testing.B) {
	for _, c := range []struct {
		name    string
		runtime sim.Runtime
	}{{"bpfsim-jit", sim.RuntimeJIT}, {"bpfsim-interpreter", sim.RuntimeInterpreter}} {
		b.Run(c.name, func(b *testing.B) {
			k, err := sim.NewKernel(&sim.Options{Runtime: c.runtime})
			if err != nil {
				b.Fatal(err)
			}
			m, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
			if err != nil {
				b.Fatal(err)
			}
			loadTestTagSet(b, m.FD(), func(prog asm.Instructions) error {
				p, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL", Instructions: prog})
				if err != nil {
					return err
				}
				defer p.Close()
				if c.runtime == sim.RuntimeJIT && p.Runtime() != sim.RuntimeJIT {
					return fmt.Errorf("not JITed: %w", p.JITError())
				}
				return nil
			})
			m.Close()
			if err := k.CheckLeaks(); err != nil {
				b.Fatal(err)
			}
		})
	}
	b.Run("kernel", func(b *testing.B) {
		if _, err := kdiff.OpenKernel(); err != nil {
			b.Skipf("no kernel comparison: %v", err)
		}
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		loadTestTagSet(b, m.FD(), func(prog asm.Instructions) error {
			p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL", Instructions: prog})
			if err != nil {
				return err
			}
			return p.Close()
		})
	})
}

// loadTestTagSet loads the set's programs in order through load, which
// closes each, b.N of them, and reports programs per second and the time
// per instruction slot.
func loadTestTagSet(b *testing.B, mapFD int, load func(prog asm.Instructions) error) {
	insns, i := 0, 0
	var buf asm.Instructions
	for b.Loop() {
		prog, n := testTagProgram(i%testTagPrograms, mapFD, buf)
		buf, insns = prog, insns+n
		if err := load(prog); err != nil {
			b.Fatalf("program %d: %v", i, err)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "progs/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(insns), "ns/insn")
}

// TestTestTagProgramsAreTheSelftestsSet checks the set's size and shapes:
// the first and last programs of each kind, and that every one loads.
func TestTestTagProgramsAreTheSelftestsSet(t *testing.T) {
	if testTagPrograms != 40945 {
		t.Fatalf("%d programs, want 40945", testTagPrograms)
	}
	per := testTagPrograms / testTagRounds
	for _, c := range []struct {
		i, n int
	}{{0, 2}, {4094, 4096}, {4095, 3}, {4096, 4}, {per - 1, 4096}, {per, 2}, {testTagPrograms - 1, 4096}} {
		prog, n := testTagProgram(c.i, 3, nil)
		if got := rawLen(prog); got != c.n || n != c.n {
			t.Errorf("program %d has %d instructions (%d reported), want %d", c.i, got, n, c.n)
		}
	}
	k, err := sim.NewKernel(&sim.Options{Runtime: sim.RuntimeJIT})
	if err != nil {
		t.Fatal(err)
	}
	m, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1, 4095, 4096, 4097, per - 1} {
		prog, _ := testTagProgram(i, m.FD(), nil)
		p, err := k.NewProgramWithOptions(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL", Instructions: prog}, sim.ProgramOptions{Runtime: sim.RuntimeJIT})
		if err != nil {
			t.Fatalf("program %d: %v", i, err)
		}
		p.Close()
	}
}
