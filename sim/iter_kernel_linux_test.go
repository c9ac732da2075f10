package sim_test

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
)

// The kernel gives each program of testdata/iter_refused.bpf.o the
// verdict, the errno and the message bpfsim gives it.
func TestIterRefusalsAreTheKernels(t *testing.T) {
	checkRefusalsAreTheKernels(t, "testdata/iter_refused.bpf.o", iterRefusals)
}

// iterCmd is struct cmd of testdata/iter.bpf.c; the packet starts with
// it, and struct out (32 bytes) follows.
type iterCmd struct {
	Start, End   int32
	Brk          uint32
	Start2, End2 int32
	Pad          uint32
}

// iterCase is one run of a program of testdata/iter.bpf.o.
type iterCase struct {
	prog string
	cmd  iterCmd
}

// iterCases drive bpf_iter_num_new's checks (a reversed range is
// -EINVAL; a range of more than BPF_MAX_LOOPS values -E2BIG, computed in
// 64 bits; both leave an iterator that yields nothing), next's ends
// (NULL once done, and after; a range that starts at INT_MIN, whose
// first value is computed past a wrap; one that ends at INT_MAX), loops
// left early, nested loops, loops in a subprogram and a global function,
// and values indexing a table.
func iterCases() []iterCase {
	const maxLoops = 8 << 20
	var cs []iterCase
	for _, r := range [][3]int32{
		{0, 10, 0}, {5, 5, 0}, {10, 5, 0}, {-5, 5, 0}, {-5, -6, 0}, {0, 1, 0},
		{0, maxLoops, 10}, {0, maxLoops + 1, 0}, {-1, maxLoops, 3}, {-2, maxLoops, 0},
		{math.MinInt32, math.MinInt32 + 5, 0}, {math.MinInt32, math.MinInt32, 0},
		{math.MaxInt32 - 3, math.MaxInt32, 0}, {math.MaxInt32, math.MaxInt32, 0},
		{math.MinInt32, math.MaxInt32, 0}, {math.MaxInt32, math.MinInt32, 0},
		{3, 70, 2}, {3, 70, 1}, {3, 70, 67}, {3, 70, 68}, {0, 20000, 0},
	} {
		cs = append(cs, iterCase{"range", iterCmd{Start: r[0], End: r[1], Brk: uint32(r[2])}})
	}
	for _, r := range [][4]int32{{0, 3, 0, 4}, {2, 5, -3, 3}, {0, 0, 0, 5}, {0, 4, 5, 2}, {-2, 2, 0, 100}} {
		cs = append(cs, iterCase{"nested", iterCmd{Start: r[0], End: r[1], Start2: r[2], End2: r[3]}})
	}
	for _, r := range [][2]int32{{0, 10}, {-7, 7}, {5, 3}, {0, 1000}, {100, 0x10000 + 5}} {
		cs = append(cs, iterCase{"functions", iterCmd{Start: r[0], End: r[1]}})
	}
	for _, r := range [][2]int32{{0, 16}, {-4, 20}, {3, 9}, {9, 3}, {15, 17}} {
		cs = append(cs, iterCase{"table", iterCmd{Start: r[0], End: r[1]}})
	}
	for _, r := range [][3]int32{{0, 0, 0}, {5, 3, 2}, {300, 15, 7}, {255, 16, 256}} {
		cs = append(cs, iterCase{"callchains", iterCmd{Start: r[0], End: r[1], Brk: uint32(r[2])}})
	}
	for _, r := range [][2]int32{{0, 0}, {16, 99}, {40, 7}, {255, 0}, {300, 200}} {
		cs = append(cs, iterCase{"for_loop", iterCmd{End: r[0], Brk: uint32(r[1])}})
	}
	// bits: {stop after, words, source (0 NULL, 1 stack, 2 the map)}.
	for _, r := range [][3]int32{
		{0, 1, 0}, {0, 0, 1}, {0, 1, 1}, {0, 2, 1}, {0, 3, 1}, {0, 4, 1}, {3, 4, 1}, {1, 1, 1},
		{0, 0, 2}, {0, 1, 2}, {0, 2, 2}, {0, 64, 2}, {0, 511, 2}, {5, 511, 2}, {0, 512, 2}, {0, -1, 2},
	} {
		cs = append(cs, iterCase{"bits", iterCmd{Start: r[0], End: r[1], Brk: uint32(r[2])}})
	}
	return cs
}

// iterWords is what the bits cases walk: the words map's value, and the
// four words at the packet's end the program copies to its stack.
func iterWords() (value []byte, pkt [32]byte) {
	value = make([]byte, 4096)
	x := uint64(0x9e3779b97f4a7c15)
	for i := 0; i < len(value); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		// Sparse words, so that the walks are not all bits.
		binary.LittleEndian.PutUint64(value[i:], x&(x>>3)&(x>>11))
	}
	copy(pkt[:], value[8*100:])
	pkt[0] = 0 // a word with no bit set before others that have some
	binary.LittleEndian.PutUint64(pkt[:], 0)
	return value, pkt
}

// runIterCases runs every case through run and prints verdicts and
// output packets, a line each.
func runIterCases(t *testing.T, run func(prog string, pkt, out []byte) (uint32, []byte, error)) string {
	var b strings.Builder
	for _, c := range iterCases() {
		pkt := make([]byte, 96)
		if _, err := binary.Encode(pkt, binary.LittleEndian, c.cmd); err != nil {
			t.Fatal(err)
		}
		_, words := iterWords()
		copy(pkt[56:], words[:])
		ret, out, err := run(c.prog, pkt, make([]byte, len(pkt)))
		if err != nil {
			t.Fatalf("%s %+v: %v", c.prog, c.cmd, err)
		}
		fmt.Fprintf(&b, "%s %+v: %d %x\n", c.prog, c.cmd, ret, out)
	}
	return b.String()
}

// Loops over numeric iterators give the kernel's results, interpreted
// and JITed: bpf_iter_num_new's errors, next's ends and wrap-arounds,
// early exits, nested loops, loops in functions.
func TestIterNumIsTheKernels(t *testing.T) {
	coll := kernelCollection(t, "testdata/iter.bpf.o")
	value, _ := iterWords()
	if err := coll.Maps["words"].Update(uint32(0), value, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	want := runIterCases(t, func(prog string, pkt, out []byte) (uint32, []byte, error) {
		opts := &ebpf.RunOptions{Data: pkt, DataOut: out}
		ret, err := coll.Programs[prog].Run(opts)
		return ret, opts.DataOut, err
	})
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) {
			sc := simCollection(t, newKernel(t, &sim.Options{Runtime: rt}), "testdata/iter.bpf.o")
			if err := sc.Maps["words"].Update(uint32(0), value, ebpf.UpdateAny); err != nil {
				t.Fatal(err)
			}
			compareLines(t, runIterCases(t, func(prog string, pkt, out []byte) (uint32, []byte, error) {
				opts := &sim.RunOptions{Data: pkt, DataOut: out}
				ret, err := sc.Programs[prog].Run(opts)
				return ret, opts.DataOut, err
			}), want)
		})
	}
}
