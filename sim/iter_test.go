package sim_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/kfunc"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// iterRefusals are the programs of testdata/iter_refused.bpf.o and the
// last line of this machine's kernel's log for each ("" for accepted);
// TestIterRefusalsAreTheKernels checks them against the kernel.
var iterRefusals = map[string]string{
	"accepted":      "",
	"index_checked": "",
	"nested":        "",
	// The index read from the iterator is unknown.
	"index_unchecked": "math between fp pointer and register with unbounded min value is not allowed",
	// The counter the loop bumps is widened to unknown.
	"counter_widened":         "invalid unbounded variable-offset read from stack R2",
	"create_twice":            "expected uninitialized iter_num as arg #0",
	"destroy_without_create":  "expected an initialized iter_num as arg #0",
	"next_without_create":     "expected an initialized iter_num as arg #0",
	"next_after_destroy":      "expected an initialized iter_num as arg #0",
	"leaked":                  "BPF_EXIT instruction in main prog would lead to reference leak",
	"leaked_by_subprog":       "BPF_EXIT instruction in main prog would lead to reference leak",
	"next_without_null_check": "R0 invalid mem access 'scalar'", // the drained path comes first
	"next_written":            "R0 cannot write into rdonly_mem",
	"next_read_past_its_end":  "R0 min value is outside of the allowed memory range",
	"next_used_after_destroy": "R7 invalid mem access 'scalar'",
	"slot_read":               "invalid read from stack off -8+0 size 8",
	// A store or a helper's write over the iterator breaks it.
	"slot_written":           "expected an initialized iter_num as arg #0",
	"slot_written_by_helper": "expected an initialized iter_num as arg #0",
	"variable_offset":        "expected uninitialized iter_num as arg #0",
	"misaligned":             "expected uninitialized iter_num as arg #0",
	"in_map_value":           "arg#0 expected pointer to an iterator on stack",
	"null_iterator":          "arg#0 expected pointer to an iterator on stack",
	// A static function may make, advance or destroy its caller's
	// iterator, and a bpf_loop callback have one of its own; a global
	// function cannot take one (its stack slot is no readable memory).
	"next_in_static_callee":     "",
	"destroy_in_static_callee":  "",
	"new_in_static_callee":      "",
	"iterator_in_loop_callback": "",
	"next_in_global_callee":     "Caller passes invalid args into func#1 ('global_sum_rest')",
}

func TestVerifierRefusesIteratorMisuseInCompiledPrograms(t *testing.T) {
	checkRefusals(t, "testdata/iter_refused.bpf.o", iterRefusals)
}

// iterOut is struct out of testdata/iter.bpf.c.
type iterOut struct {
	RC, Count     int32
	Sum           int64
	First, Last   int32
	After, After2 int32
}

const iterNotRun = 0x7eadbeef

// runIterProgram runs program prog of testdata/iter.bpf.o on pkt in a
// new kernel of runtime rt and returns the struct out it wrote.
func runIterProgram(t *testing.T, rt sim.Runtime, prog string, pkt []byte) iterOut {
	t.Helper()
	k := newKernel(t, &sim.Options{Runtime: rt})
	coll, err := k.NewCollection(loadOneProgram(t, "testdata/iter.bpf.o", prog))
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	opts := &sim.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt))}
	if ret, err := coll.Programs[prog].Run(opts); err != nil || ret != 3 {
		t.Fatalf("run: %d, %v", ret, err)
	}
	var got iterOut
	if _, err := binary.Decode(opts.DataOut[24:], binary.LittleEndian, &got); err != nil {
		t.Fatal(err)
	}
	return got
}

// The range program of testdata/iter.bpf.o loops over bpf_iter_num_new's
// ranges and gets every value once, in order, then NULL; a loop left
// early resumes where it stopped; a reversed range is -EINVAL and one
// longer than BPF_MAX_LOOPS -E2BIG, both yielding nothing; the values
// near INT_MIN and INT_MAX are the ints they should be. Interpreted and
// JITed.
func TestIterNumRangesYieldEachValueOnce(t *testing.T) {
	const maxLoops = 8 << 20
	for _, c := range []struct {
		name       string
		start, end int32
		brk        uint32
		want       iterOut
	}{
		{"ten values", 0, 10, 0, iterOut{0, 10, 45, 0, 9, iterNotRun, iterNotRun}},
		{"empty", 5, 5, 0, iterOut{0, 0, 0, iterNotRun, iterNotRun, iterNotRun, iterNotRun}},
		{"reversed", 10, 5, 0, iterOut{-int32(uapi.EINVAL), 0, 0, iterNotRun, iterNotRun, iterNotRun, iterNotRun}},
		{"negative", -5, 5, 0, iterOut{0, 10, -5, -5, 4, iterNotRun, iterNotRun}},
		{"left after two, resumed", 3, 70, 2, iterOut{0, 2, 7, 3, 4, 5, 6}},
		{"the most values", 0, maxLoops, 10, iterOut{0, 10, 45, 0, 9, 10, 11}},
		{"one value too many", 0, maxLoops + 1, 0, iterOut{-int32(uapi.E2BIG), 0, 0, iterNotRun, iterNotRun, iterNotRun, iterNotRun}},
		{"the whole int range", math.MinInt32, math.MaxInt32, 0, iterOut{-int32(uapi.E2BIG), 0, 0, iterNotRun, iterNotRun, iterNotRun, iterNotRun}},
		{"from INT_MIN", math.MinInt32, math.MinInt32 + 3, 0, iterOut{0, 3, 3*math.MinInt32 + 3, math.MinInt32, math.MinInt32 + 2, iterNotRun, iterNotRun}},
		{"up to INT_MAX", math.MaxInt32 - 2, math.MaxInt32, 0, iterOut{0, 2, 2*math.MaxInt32 - 3, math.MaxInt32 - 2, math.MaxInt32 - 1, iterNotRun, iterNotRun}},
	} {
		for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
			t.Run(c.name+"/"+rt.String(), func(t *testing.T) {
				pkt := make([]byte, 64)
				binary.LittleEndian.PutUint32(pkt[0:], uint32(c.start))
				binary.LittleEndian.PutUint32(pkt[4:], uint32(c.end))
				binary.LittleEndian.PutUint32(pkt[8:], c.brk)
				if got := runIterProgram(t, rt, "range", pkt); got != c.want {
					t.Errorf("got %+v, want %+v", got, c.want)
				}
			})
		}
	}
}

// countdownKfuncs declare an iterator of a subsystem's own: struct
// bpf_iter_countdown, whose _next yields n-1 down to 0.
func countdownKfuncs() []*kfunc.Func {
	u64 := &btf.Int{Name: "u64", Size: 8}
	it := &btf.Pointer{Target: &btf.Struct{Name: "bpf_iter_countdown", Size: 8, Members: []btf.Member{{Name: "n", Type: u64}}}}
	param := btf.FuncParam{Name: "it", Type: it}
	return []*kfunc.Func{
		{Name: "bpf_iter_countdown_new", Flags: kfunc.IterNew,
			Proto: &btf.FuncProto{Return: &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}, Params: []btf.FuncParam{param, {Name: "n", Type: u64}}},
			Fn: func(m *interp.Machine, it, n, _, _, _ uint64) (uint64, error) {
				if f := m.TLB.Store64(it, n); f != nil {
					return 0, f
				}
				return 0, nil
			}},
		{Name: "bpf_iter_countdown_next", Flags: kfunc.IterNext | kfunc.RetNull,
			Proto: &btf.FuncProto{Return: &btf.Pointer{Target: u64}, Params: []btf.FuncParam{param}},
			Fn: func(m *interp.Machine, it, _, _, _, _ uint64) (uint64, error) {
				n, f := m.TLB.Load64(it)
				if f == nil && n > 0 {
					f = m.TLB.Store64(it, n-1)
				}
				if f != nil {
					return 0, f
				}
				if n == 0 {
					return 0, nil
				}
				return it, nil
			}},
		{Name: "bpf_iter_countdown_destroy", Flags: kfunc.IterDestroy,
			Proto: &btf.FuncProto{Return: (*btf.Void)(nil), Params: []btf.FuncParam{param}},
			Fn:    func(*interp.Machine, uint64, uint64, uint64, uint64, uint64) (uint64, error) { return 0, nil }},
	}
}

// A subsystem's own iterator, registered with the iterator flags, is
// verified and run like the kernel's: a loop over it converges and sums
// what it yields.
func TestRegisteredIteratorLoops(t *testing.T) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) {
			k := newKernel(t, &sim.Options{Runtime: rt})
			for _, f := range countdownKfuncs() {
				if err := k.RegisterKfunc(f); err != nil {
					t.Fatal(err)
				}
			}
			prog := load(t, k, ebpf.XDP, asm.Instructions{
				asm.Mov.Imm(asm.R6, 0),
				asm.Mov.Reg(asm.R1, asm.RFP),
				asm.Add.Imm(asm.R1, -8),
				asm.Mov.Imm(asm.R2, 5),
				kfuncCall(t, k, "bpf_iter_countdown_new"),
				asm.Mov.Reg(asm.R1, asm.RFP).WithSymbol("loop"),
				asm.Add.Imm(asm.R1, -8),
				kfuncCall(t, k, "bpf_iter_countdown_next"),
				asm.JEq.Imm(asm.R0, 0, "done"),
				asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
				asm.Add.Reg(asm.R6, asm.R1),
				asm.Ja.Label("loop"),
				asm.Mov.Reg(asm.R1, asm.RFP).WithSymbol("done"),
				asm.Add.Imm(asm.R1, -8),
				kfuncCall(t, k, "bpf_iter_countdown_destroy"),
				asm.Mov.Reg(asm.R0, asm.R6),
				asm.Return(),
			})
			ret, err := prog.Run(&sim.RunOptions{Data: make([]byte, 64)})
			if err != nil || ret != 4+3+2+1+0 {
				t.Fatalf("run: %d, %v; want 10", ret, err)
			}
		})
	}
}

// An iterator kfunc that breaks the kernel's naming and prototype rules
// (btf_check_iter_kfuncs) is refused when registered, with EINVAL.
func TestIteratorKfuncsMustFollowTheKernelsRules(t *testing.T) {
	for _, c := range []struct {
		name   string
		modify func(fs []*kfunc.Func) *kfunc.Func
	}{
		{"misnamed", func(fs []*kfunc.Func) *kfunc.Func { fs[0].Name = "bpf_countdown_new"; return fs[0] }},
		{"named after another type", func(fs []*kfunc.Func) *kfunc.Func { fs[1].Name = "bpf_iter_num2_next"; return fs[1] }},
		{"two iterator flags", func(fs []*kfunc.Func) *kfunc.Func { fs[0].Flags |= kfunc.IterNext; return fs[0] }},
		{"next returns no pointer", func(fs []*kfunc.Func) *kfunc.Func {
			fs[1].Proto.Return = &btf.Int{Name: "int", Size: 4}
			return fs[1]
		}},
		{"destroy takes more", func(fs []*kfunc.Func) *kfunc.Func {
			fs[2].Proto.Params = append(fs[2].Proto.Params, btf.FuncParam{Name: "x", Type: &btf.Int{Name: "u64", Size: 8}})
			return fs[2]
		}},
		{"not a whole slot", func(fs []*kfunc.Func) *kfunc.Func {
			fs[0].Proto.Params[0].Type = &btf.Pointer{Target: &btf.Struct{Name: "bpf_iter_countdown", Size: 4}}
			return fs[0]
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := newKernel(t, nil)
			err := k.RegisterKfunc(c.modify(countdownKfuncs()))
			if !errors.Is(err, uapi.EINVAL) {
				t.Fatalf("register: %v, want EINVAL", err)
			}
		})
	}
}

// The bits iterator walks the set bits of the words it was given, lowest
// first, across words, and refuses NULL, no words and more than 511.
func TestIterBitsWalksSetBitsInOrder(t *testing.T) {
	words := []uint64{0b1011, 1 << 63, 0, 1 << 5} // bits 0, 1, 3, 127, 197
	for _, c := range []struct {
		name            string
		stop, n, source int32
		want            iterOut
	}{
		{"four words", 0, 4, 1, iterOut{0, 5, 328, 0, 197, iterNotRun, iterNotRun}},
		{"two words", 0, 2, 1, iterOut{0, 4, 131, 0, 127, iterNotRun, iterNotRun}},
		{"left after two, resumed", 2, 4, 1, iterOut{0, 2, 1, 0, 1, 3, 127}},
		{"NULL", 0, 1, 0, iterOut{-int32(uapi.EINVAL), 0, 0, iterNotRun, iterNotRun, iterNotRun, iterNotRun}},
		{"no words", 0, 0, 1, iterOut{-int32(uapi.EINVAL), 0, 0, iterNotRun, iterNotRun, iterNotRun, iterNotRun}},
		{"512 words", 0, 512, 2, iterOut{-int32(uapi.E2BIG), 0, 0, iterNotRun, iterNotRun, iterNotRun, iterNotRun}},
	} {
		for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
			t.Run(c.name+"/"+rt.String(), func(t *testing.T) {
				pkt := make([]byte, 96)
				binary.LittleEndian.PutUint32(pkt[0:], uint32(c.stop))
				binary.LittleEndian.PutUint32(pkt[4:], uint32(c.n))
				binary.LittleEndian.PutUint32(pkt[8:], uint32(c.source))
				for i, w := range words {
					binary.LittleEndian.PutUint64(pkt[56+8*i:], w)
				}
				if got := runIterProgram(t, rt, "bits", pkt); got != c.want {
					t.Errorf("got %+v, want %+v", got, c.want)
				}
			})
		}
	}
}

// Iterators on several CPUs at once: each run walks its own words, and
// the memory the bits iterator allocates for more than one word comes
// and goes under every run without one run seeing another's (run with
// -race).
func TestIteratorsRunOnSeveralCPUsAtOnce(t *testing.T) {
	const cpus, runs = 3, 300
	k := newKernel(t, &sim.Options{CPUs: cpus})
	coll := simCollection(t, k, "testdata/iter.bpf.o")
	copies := func() (n int) {
		for _, a := range k.Memory().Areas() {
			if a.Name == "bpf_iter_bits" {
				n++
			}
		}
		return n
	}
	var wg sync.WaitGroup
	errs := make(chan error, cpus)
	for cpu := uint32(0); cpu < cpus; cpu++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < runs; i++ {
				// Word j of this run has bit (cpu*7+i+j)%64 set; the
				// sum of the indexes of four words follows.
				pkt := make([]byte, 96)
				binary.LittleEndian.PutUint32(pkt[4:], 4)
				binary.LittleEndian.PutUint32(pkt[8:], 1)
				want := int64(0)
				for j := 0; j < 4; j++ {
					b := (int(cpu)*7 + i + j) % 64
					binary.LittleEndian.PutUint64(pkt[56+8*j:], 1<<b)
					want += int64(64*j + b)
				}
				opts := &sim.RunOptions{Data: pkt, DataOut: make([]byte, len(pkt)), CPU: cpu}
				if _, err := coll.Programs["bits"].Run(opts); err != nil {
					errs <- err
					return
				}
				var got iterOut
				if _, err := binary.Decode(opts.DataOut[24:], binary.LittleEndian, &got); err != nil {
					errs <- err
					return
				}
				if got.Count != 4 || got.Sum != want {
					errs <- fmt.Errorf("cpu %d run %d: %d bits summing to %d, want 4 summing to %d", cpu, i, got.Count, got.Sum, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := copies(); n != 0 {
		t.Errorf("%d copies of words left allocated after every iterator was destroyed", n)
	}
}
