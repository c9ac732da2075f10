package sim_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// slotRecorder is an fentry or fexit program that stores its first n
// context slots in the array m at base+i, NULL-ness only for the slots in
// asBool.
func slotRecorder(m *sim.Map, n int, base int32, asBool map[int]bool) asm.Instructions {
	insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	for i := 0; i < n; i++ {
		skip, zero := fmt.Sprintf("s%d", i), fmt.Sprintf("z%d", i)
		insns = append(insns, asm.LoadMem(asm.R7, asm.R6, int16(8*i), asm.DWord))
		if asBool[i] {
			insns = append(insns, asm.JEq.Imm(asm.R7, 0, zero), asm.Mov.Imm(asm.R7, 1), asm.Mov.Imm(asm.R0, 0).WithSymbol(zero))
		}
		insns = append(insns,
			asm.Mov.Imm(asm.R1, base+int32(i)),
			asm.StoreMem(asm.RFP, -4, asm.R1, asm.Word),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, skip),
			asm.StoreMem(asm.R0, 0, asm.R7, asm.DWord),
			asm.Mov.Imm(asm.R0, 0).WithSymbol(skip),
		)
	}
	return append(insns, asm.Mov.Imm(asm.R0, 0), asm.Return())
}

func tracingProg(t *testing.T, k *sim.Kernel, at ebpf.AttachType, fn string, insns asm.Instructions) (*sim.Program, error) {
	t.Helper()
	return k.NewProgram(&ebpf.ProgramSpec{Name: "trace", Type: ebpf.Tracing, AttachType: at, AttachTo: fn, License: "GPL", Instructions: insns})
}

// A test run of an fentry or fexit program calls the kernel's
// bpf_fentry_test1 to 10 with bpf_prog_test_run_tracing's arguments: the
// fexit programs attached to them see each argument and return value, an
// fentry program reads through a kernel object, interpreted and JITed;
// closing a link detaches its program.
func TestFexitProgramsSeeTheTestFunctions(t *testing.T) {
	want := [][]uint64{ // arguments, then the return value
		{1, 2}, {2, 3, 5}, {4, 5, 6, 15}, {7, 8, 9, 10, 34}, {11, 12, 13, 14, 15, 65},
		{16, 17, 18, 19, 20, 21, 111}, {0, 0}, {1, 0}, {1, 0}, {0, 0},
	}
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) {
			k := newKernel(t, &sim.Options{Runtime: rt})
			seen, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 11 * 8})
			if err != nil {
				t.Fatal(err)
			}
			var links []*sim.TracingLink
			for fn := 1; fn <= 10; fn++ {
				asBool := map[int]bool{}
				if fn == 8 || fn == 9 {
					asBool[0] = true // kernel stack addresses
				}
				p, err := tracingProg(t, k, ebpf.AttachTraceFExit, fmt.Sprintf("bpf_fentry_test%d", fn), slotRecorder(seen, len(want[fn-1]), int32(fn*8), asBool))
				if err != nil {
					t.Fatalf("test%d: %v", fn, err)
				}
				defer p.Close()
				l, err := k.AttachTracing(sim.TracingOptions{Program: p})
				if err != nil {
					t.Fatal(err)
				}
				links = append(links, l)
			}
			// test8's arg->a, read through the kernel object: NULL, so
			// 0; stored at slot 0.
			deref, err := tracingProg(t, k, ebpf.AttachTraceFEntry, "bpf_fentry_test8", append(asm.Instructions{
				asm.LoadMem(asm.R1, asm.R1, 0, asm.DWord),
				asm.LoadMem(asm.R7, asm.R1, 0, asm.DWord),
				asm.Add.Imm(asm.R7, 100),
				asm.Mov.Imm(asm.R1, 0),
				asm.StoreMem(asm.RFP, -4, asm.R1, asm.Word),
				asm.LoadMapPtr(asm.R1, seen.FD()),
				asm.Mov.Reg(asm.R2, asm.RFP),
				asm.Add.Imm(asm.R2, -4),
				asm.FnMapLookupElem.Call(),
				asm.JEq.Imm(asm.R0, 0, "out"),
				asm.StoreMem(asm.R0, 0, asm.R7, asm.DWord),
			}, asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return()))
			if err != nil {
				t.Fatal(err)
			}
			defer deref.Close()
			dl, err := k.AttachTracing(sim.TracingOptions{Program: deref})
			if err != nil {
				t.Fatal(err)
			}
			res, err := deref.Test(&sim.RunOptions{})
			if err != nil || res.R0 != 0 {
				t.Fatalf("test run: %v, %v", res, err)
			}
			var v uint64
			if err := seen.Lookup(uint32(0), &v); err != nil || v != 100 {
				t.Errorf("arg->a + 100 read by the fentry program: %d, %v; want 100", v, err)
			}
			for fn := 1; fn <= 10; fn++ {
				for i, w := range want[fn-1] {
					if err := seen.Lookup(uint32(fn*8+i), &v); err != nil || v != w {
						t.Errorf("test%d slot %d: %d, %v; want %d", fn, i, v, err, w)
					}
				}
			}
			// Detached, the programs see nothing more.
			for _, l := range append(links, dl) {
				l.Close()
			}
			if err := seen.Put(uint32(8), uint64(77)); err != nil {
				t.Fatal(err)
			}
			if _, err := deref.Test(&sim.RunOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := seen.Lookup(uint32(8), &v); err != nil || v != 77 {
				t.Errorf("a detached program ran: %d, %v", v, err)
			}
			if _, err := deref.Test(&sim.RunOptions{Context: make([]byte, 8)}); !errors.Is(err, uapi.EINVAL) {
				t.Errorf("test run with a context: %v, want EINVAL", err)
			}
		})
	}
}

// What the verifier refuses in fentry and fexit programs, with the
// kernel's errnos and messages.
func TestTracingProgramRefusals(t *testing.T) {
	k := newKernel(t, nil)
	for _, c := range []struct {
		name, fn string
		at       ebpf.AttachType
		insns    asm.Instructions
		errno    uapi.Errno
		msg      string
	}{
		{"fentry returning 1", "bpf_fentry_test1", ebpf.AttachTraceFEntry,
			asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
			uapi.EINVAL, "At program exit the register R0 has smin=1 smax=1 should have been in [0, 0]"},
		{"fentry reading the return value", "bpf_fentry_test1", ebpf.AttachTraceFEntry,
			asm.Instructions{asm.LoadMem(asm.R2, asm.R1, 8, asm.DWord), asm.Mov.Imm(asm.R0, 0), asm.Return()},
			uapi.EACCES, "invalid bpf_context access off=8 size=8"},
		{"fexit reading past the return value", "bpf_fentry_test1", ebpf.AttachTraceFExit,
			asm.Instructions{asm.LoadMem(asm.R2, asm.R1, 16, asm.DWord), asm.Mov.Imm(asm.R0, 0), asm.Return()},
			uapi.EACCES, "invalid bpf_context access off=16 size=8"},
		{"pointer argument read narrow", "bpf_fentry_test7", ebpf.AttachTraceFEntry,
			asm.Instructions{asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), asm.Mov.Imm(asm.R0, 0), asm.Return()},
			uapi.EACCES, "invalid bpf_context access off=0 size=4"},
		{"store into a kernel object", "bpf_fentry_test7", ebpf.AttachTraceFEntry,
			asm.Instructions{asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord), asm.Mov.Imm(asm.R0, 0), asm.StoreMem(asm.R2, 0, asm.R0, asm.DWord), asm.Return()},
			uapi.EACCES, "only read is supported"},
		{"seq_file helper outside an iterator", "bpf_fentry_test1", ebpf.AttachTraceFEntry,
			asm.Instructions{asm.Mov.Imm(asm.R1, 0), asm.Mov.Imm(asm.R2, 0), asm.Mov.Imm(asm.R3, 0), asm.FnSeqWrite.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return()},
			uapi.EINVAL, "program of this type cannot use helper bpf_seq_write#127"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := tracingProg(t, k, c.at, c.fn, c.insns)
			var ve *verifier.Error
			if !errors.Is(err, c.errno) || !errors.As(err, &ve) || ve.Msg != c.msg {
				t.Fatalf("error %v, want %v: %s", err, c.errno, c.msg)
			}
		})
	}
	if _, err := tracingProg(t, k, ebpf.AttachTraceFEntry, "no_such_function", asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}); !errors.Is(err, uapi.ENOENT) {
		t.Errorf("fentry of a function the kernel lacks: %v, want ENOENT", err)
	}
}

// A subsystem's own function: fentry and fexit programs attached to it
// run when Go code calls it, around the function.
func TestTracedFuncsRunTheirPrograms(t *testing.T) {
	k := newKernel(t, nil)
	u64 := &btf.Int{Name: "long long unsigned int", Size: 8}
	calls := 0
	f := &sim.TracedFunc{Name: "sched_weight", Proto: &btf.FuncProto{Return: u64, Params: []btf.FuncParam{{Name: "nice", Type: u64}}},
		Fn: func(args []uint64) uint64 { calls++; return 1024 >> args[0] }}
	if err := k.RegisterTracedFunc(f); err != nil {
		t.Fatal(err)
	}
	if err := k.RegisterTracedFunc(f); !errors.Is(err, uapi.EEXIST) {
		t.Errorf("registered twice: %v, want EEXIST", err)
	}
	seen, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	entry, err := tracingProg(t, k, ebpf.AttachTraceFEntry, "sched_weight", slotRecorder(seen, 1, 0, nil))
	if err != nil {
		t.Fatal(err)
	}
	exit, err := tracingProg(t, k, ebpf.AttachTraceFExit, "sched_weight", slotRecorder(seen, 2, 2, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*sim.Program{entry, exit} {
		l, err := k.AttachTracing(sim.TracingOptions{Program: p})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		p.Close() // the link holds it
	}
	r, err := f.Call(1, 3)
	if err != nil || r != 128 || calls != 1 {
		t.Fatalf("call: %d, %v, %d calls", r, err, calls)
	}
	for i, w := range []uint64{3, 0, 3, 128} {
		var v uint64
		if err := seen.Lookup(uint32(i), &v); err != nil || v != w {
			t.Errorf("slot %d: %d, %v; want %d", i, v, err, w)
		}
	}
}

// A call of a traced function with an fentry and an fexit program
// attached, each storing one slot in a map, against the bare call.
func BenchmarkTracedFuncCall(b *testing.B) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		k, err := sim.NewKernel(&sim.Options{Runtime: rt})
		if err != nil {
			b.Fatal(err)
		}
		f, _ := k.TracedFunc("bpf_fentry_test1")
		seen, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4})
		if err != nil {
			b.Fatal(err)
		}
		b.Run("bare/"+rt.String(), func(b *testing.B) {
			for b.Loop() {
				if _, err := f.Call(0, 1); err != nil {
					b.Fatal(err)
				}
			}
		})
		for i, at := range []ebpf.AttachType{ebpf.AttachTraceFEntry, ebpf.AttachTraceFExit} {
			p, err := k.NewProgram(&ebpf.ProgramSpec{Name: "trace", Type: ebpf.Tracing, AttachType: at, AttachTo: "bpf_fentry_test1", License: "GPL",
				Instructions: slotRecorder(seen, 1, int32(i), nil)})
			if err != nil {
				b.Fatal(err)
			}
			l, err := k.AttachTracing(sim.TracingOptions{Program: p})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
		}
		b.Run("fentry+fexit/"+rt.String(), func(b *testing.B) {
			for b.Loop() {
				if _, err := f.Call(0, 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzTracingPrograms loads fuzzed bytes as fentry and fexit programs of
// one of bpf_fentry_test1 to 10: each is refused with one of the
// verifier's errnos, or attached and test-run without failing.
func FuzzTracingPrograms(f *testing.F) {
	seeds := []asm.Instructions{
		{asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord), asm.LoadMem(asm.R3, asm.R1, 8, asm.DWord), asm.Mov.Imm(asm.R0, 0), asm.Return()},
		{asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord), asm.LoadMem(asm.R2, asm.R2, 0, asm.DWord), asm.Mov.Imm(asm.R0, 0), asm.Return()},
		{asm.LoadMem(asm.R2, asm.R1, 48, asm.DWord), asm.Mov.Reg(asm.R0, asm.R2), asm.And.Imm(asm.R0, 0), asm.Return()},
	}
	for i, s := range seeds {
		code, err := insn.FromAsm(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i*3+7), insn.Encode(code))
	}
	k := newKernel(f, &sim.Options{CPUs: 2, MemoryLimit: 64 << 20})
	f.Fuzz(func(t *testing.T, sel uint8, code []byte) {
		fn, _ := k.TracedFunc(fmt.Sprintf("bpf_fentry_test%d", 1+int(sel>>1)%10))
		at := ebpf.AttachTraceFEntry
		if sel&1 != 0 {
			at = ebpf.AttachTraceFExit
		}
		prog, err := k.LoadBytecodeWithOptions(ebpf.Tracing, "fuzz", code, sim.ProgramOptions{
			AttachBTFID: uint32(fn.BTFID()), ExpectedAttachType: uint32(at), License: "GPL"})
		if err != nil {
			if !isVerifierErrno(err) {
				t.Fatalf("load failed without one of the verifier's errnos: %v", err)
			}
			return
		}
		defer prog.Close()
		l, err := k.AttachTracing(sim.TracingOptions{Program: prog})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		// A long loop may run out of the budget, which stops the run.
		if _, err := prog.Test(&sim.RunOptions{MaxInsns: 1 << 22}); err != nil && !errors.Is(err, uapi.E2BIG) {
			t.Fatalf("a verified program failed: %v\n%s", err, prog.Xlated())
		}
	})
}
