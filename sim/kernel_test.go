package sim_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

func newKernel(t testing.TB, opts *sim.Options) *sim.Kernel {
	t.Helper()
	k, err := sim.NewKernel(opts)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func load(t testing.TB, k *sim.Kernel, typ ebpf.ProgramType, insns asm.Instructions) *sim.Program {
	t.Helper()
	p, err := k.NewProgram(testSpec(t, typ, insns))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// testSpec is the spec of a test program: GPL, and sleepable if it is a
// syscall program, as the kernel requires of those.
func testSpec(t testing.TB, typ ebpf.ProgramType, insns asm.Instructions) *ebpf.ProgramSpec {
	spec := &ebpf.ProgramSpec{Name: t.Name(), Type: typ, Instructions: insns, License: "GPL"}
	switch typ {
	case ebpf.Syscall:
		spec.Flags = uapi.BPF_F_SLEEPABLE
	case ebpf.SkLookup:
		spec.AttachType = ebpf.AttachSkLookup
	case ebpf.Tracing:
		// The tracing programs bpfsim loads: iterators.
		spec.AttachType, spec.AttachTo = ebpf.AttachTraceIter, "bpf_map_elem"
	}
	return spec
}

// loadUnverified loads insns without the verifier, to see what happens when
// such a program runs anyway.
func loadUnverified(t testing.TB, k *sim.Kernel, typ ebpf.ProgramType, insns asm.Instructions) *sim.Program {
	t.Helper()
	p, err := k.NewProgramWithOptions(&ebpf.ProgramSpec{Name: t.Name(), Type: typ, Instructions: insns, License: "GPL"},
		sim.ProgramOptions{Unverified: true})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// refused checks that the verifier refuses insns with EACCES and a last log
// line containing want, and returns the program loaded unverified.
func refused(t testing.TB, k *sim.Kernel, typ ebpf.ProgramType, insns asm.Instructions, want string) *sim.Program {
	t.Helper()
	_, err := k.NewProgram(testSpec(t, typ, insns))
	var ve *verifier.Error
	if !errors.As(err, &ve) || !errors.Is(err, uapi.EACCES) || !strings.Contains(ve.Msg, want) {
		t.Errorf("load: got %v, want the verifier to refuse it with EACCES: %q", err, want)
	}
	return loadUnverified(t, k, typ, insns)
}

// xdpPass reads data and data_end from xdp_md, copies the first packet byte
// into r0 if there is one, and writes 0xee into the second.
var xdpFirstByte = asm.Instructions{
	asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // data
	asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
	asm.Mov.Imm(asm.R0, -1),
	asm.Mov.Reg(asm.R4, asm.R2),
	asm.Add.Imm(asm.R4, 2),
	asm.JGT.Reg(asm.R4, asm.R3, "out"),
	asm.LoadMem(asm.R0, asm.R2, 0, asm.Byte),
	asm.StoreImm(asm.R2, 1, 0xee, asm.Byte),
	asm.Return().WithSymbol("out"),
}

func TestXDPTestRun(t *testing.T) {
	k := newKernel(t, nil)
	p := load(t, k, ebpf.XDP, xdpFirstByte)
	in := bytes.Repeat([]byte{0x42}, 64)
	out := make([]byte, 64)
	ret, err := p.Run(&sim.RunOptions{Data: in, DataOut: out})
	if err != nil {
		t.Fatal(err)
	}
	if ret != 0x42 {
		t.Errorf("retval = %#x, want 0x42", ret)
	}
	if out[1] != 0xee || out[0] != 0x42 || out[2] != 0x42 {
		t.Errorf("output packet starts % x", out[:4])
	}
	if in[1] != 0x42 {
		t.Error("the caller's input was modified")
	}
}

func TestXDPContextRules(t *testing.T) {
	k := newKernel(t, nil)
	for _, c := range []struct {
		name  string
		insns asm.Instructions
		want  string
	}{
		{"8-byte load of a field", asm.Instructions{asm.LoadMem(asm.R0, asm.R1, 0, asm.DWord), asm.Return()}, "invalid bpf_context access off=0 size=8"},
		{"load past the end", asm.Instructions{asm.LoadMem(asm.R0, asm.R1, 24, asm.Word), asm.Return()}, "invalid bpf_context access off=24 size=4"},
		{"store to a field", asm.Instructions{asm.StoreImm(asm.R1, 0, 1, asm.Word), asm.Mov.Imm(asm.R0, 0), asm.Return()}, "invalid bpf_context access off=0 size=4"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := refused(t, k, ebpf.XDP, c.insns, c.want).Run(&sim.RunOptions{Data: make([]byte, 14)})
			var f *mem.Fault
			if !errors.As(err, &f) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want a fault saying %q", err, c.want)
			}
		})
	}
	t.Run("ingress_ifindex is loopback", func(t *testing.T) {
		p := load(t, k, ebpf.XDP, asm.Instructions{asm.LoadMem(asm.R0, asm.R1, 12, asm.Word), asm.Return()})
		if ret, err := p.Run(&sim.RunOptions{Data: make([]byte, 14)}); err != nil || ret != 1 {
			t.Errorf("got %d, %v", ret, err)
		}
	})
}

func TestTestRunInputChecks(t *testing.T) {
	k := newKernel(t, nil)
	xdp := load(t, k, ebpf.XDP, asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()})
	sys := load(t, k, ebpf.Syscall, asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()})
	for _, c := range []struct {
		name string
		p    *sim.Program
		opts *sim.RunOptions
		want error
	}{
		{"packet shorter than ETH_HLEN", xdp, &sim.RunOptions{Data: make([]byte, 13)}, uapi.EINVAL},
		{"packet longer than a page allows", xdp, &sim.RunOptions{Data: make([]byte, sim.XDPMaxData+1)}, uapi.EINVAL},
		{"short DataOut", xdp, &sim.RunOptions{Data: make([]byte, 20), DataOut: make([]byte, 10)}, uapi.ENOSPC},
		{"CPU that does not exist", xdp, &sim.RunOptions{Data: make([]byte, 20), CPU: 9}, uapi.EINVAL},
		{"unknown flags", xdp, &sim.RunOptions{Data: make([]byte, 20), Flags: 1}, uapi.EINVAL},
		{"syscall with data", sys, &sim.RunOptions{Data: make([]byte, 20)}, uapi.EINVAL},
		{"syscall repeated", sys, &sim.RunOptions{Repeat: 2}, uapi.EINVAL},
		{"syscall context over U16_MAX", sys, &sim.RunOptions{Context: make([]byte, 1<<16)}, uapi.EINVAL},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := c.p.Run(c.opts); !errors.Is(err, c.want) {
				t.Errorf("got %v, want %v", err, c.want)
			}
		})
	}
}

func TestSyscallContextIsCopiedBack(t *testing.T) {
	k := newKernel(t, nil)
	// ctx->b = ctx->a * 2; return ctx->a
	p := load(t, k, ebpf.Syscall, asm.Instructions{
		asm.LoadMem(asm.R0, asm.R1, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.R0),
		asm.LSh.Imm(asm.R2, 1),
		asm.StoreMem(asm.R1, 4, asm.R2, asm.Word),
		asm.Return(),
	})
	type args struct{ A, B uint32 }
	var out args
	ret, err := p.Run(&sim.RunOptions{Context: args{A: 21}, ContextOut: &out})
	if err != nil || ret != 21 || out != (args{21, 42}) {
		t.Errorf("ret %d, out %+v, err %v", ret, out, err)
	}
}

func TestRawProgramsSeeMemoryAndLength(t *testing.T) {
	k := newKernel(t, nil)
	// r0 = r2 + mem[0]; mem[1] = 9
	p := load(t, k, ebpf.UnspecifiedProgram, asm.Instructions{
		asm.LoadMem(asm.R0, asm.R1, 0, asm.Byte),
		asm.Add.Reg(asm.R0, asm.R2),
		asm.StoreImm(asm.R1, 1, 9, asm.Byte),
		asm.Return(),
	})
	res, err := p.Test(&sim.RunOptions{Data: []byte{5, 0, 0}})
	if err != nil || res.R0 != 8 || !bytes.Equal(res.Data, []byte{5, 9, 0}) {
		t.Errorf("got %+v, %v", res, err)
	}
	// Reading past the input runs into the guard page within 8 bytes.
	over := load(t, k, ebpf.UnspecifiedProgram, asm.Instructions{asm.LoadMem(asm.R0, asm.R1, 16, asm.Byte), asm.Return()})
	_, err = over.Run(&sim.RunOptions{Data: []byte{1, 2, 3, 4, 5, 6, 7, 8}})
	var f *mem.Fault
	if !errors.As(err, &f) || f.PC != 0 {
		t.Errorf("read past the input: %v", err)
	}
}

func TestLoadRejectsWhatTheKernelCannotRun(t *testing.T) {
	k := newKernel(t, nil)
	for _, c := range []struct {
		name  string
		typ   ebpf.ProgramType
		insns asm.Instructions
		want  string
	}{
		{"stack trace helper", ebpf.XDP, asm.Instructions{asm.FnGetStackid.Call(), asm.Return()}, "bpf_get_stackid#27"},
		{"unknown helper id", ebpf.XDP, asm.Instructions{asm.BuiltinFunc(100000).Call(), asm.Return()}, "invalid func unknown#100000"},
		{"unresolved map reference", ebpf.XDP, asm.Instructions{asm.LoadMapPtr(asm.R1, 0).WithReference("counters"), asm.Return()}, `map "counters", which is not a bpfsim map`},
		{"program type", ebpf.LSM, asm.Instructions{asm.Return()}, "program type LSM"},
		{"last insn", ebpf.XDP, asm.Instructions{asm.Mov.Imm(asm.R0, 1)}, "last insn is not an exit or jmp"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := k.NewProgram(&ebpf.ProgramSpec{Type: c.typ, Instructions: c.insns})
			if !errors.Is(err, uapi.EINVAL) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want EINVAL naming %q", err, c.want)
			}
		})
	}
	if _, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP}); !errors.Is(err, uapi.E2BIG) {
		t.Errorf("empty program: %v", err)
	}
	if _, err := k.LoadBytecode(ebpf.XDP, "odd", []byte{1, 2, 3}); !errors.Is(err, uapi.EINVAL) {
		t.Errorf("odd-sized bytecode: %v", err)
	}
}

func TestHelpers(t *testing.T) {
	t.Run("ktime_get_ns reads the simulated clock", func(t *testing.T) {
		clock := sim.NewVirtualClock()
		k := newKernel(t, &sim.Options{Clock: clock})
		p := load(t, k, ebpf.Syscall, asm.Instructions{asm.FnKtimeGetNs.Call(), asm.Return()})
		first, _ := p.Test(nil)
		clock.Advance(1500 * time.Millisecond)
		second, _ := p.Test(nil)
		if first.R0 != sim.BootTime || second.R0 != sim.BootTime+1_500_000_000 {
			t.Errorf("times %d, %d", first.R0, second.R0)
		}
	})
	t.Run("get_smp_processor_id is the CPU the run asked for", func(t *testing.T) {
		k := newKernel(t, &sim.Options{CPUs: 4})
		p := load(t, k, ebpf.Syscall, asm.Instructions{asm.FnGetSmpProcessorId.Call(), asm.Return()})
		for cpu := uint32(0); cpu < 4; cpu++ {
			if ret, err := p.Run(&sim.RunOptions{CPU: cpu}); err != nil || ret != cpu {
				t.Errorf("CPU %d: got %d, %v", cpu, ret, err)
			}
		}
	})
	t.Run("get_prandom_u32 is deterministic per seed and per CPU", func(t *testing.T) {
		draw := func(seed uint64, cpu uint32) []uint32 {
			k := newKernel(t, &sim.Options{Seed: seed, CPUs: 2})
			p := load(t, k, ebpf.Syscall, asm.Instructions{asm.FnGetPrandomU32.Call(), asm.Return()})
			var out []uint32
			for i := 0; i < 4; i++ {
				v, err := p.Run(&sim.RunOptions{CPU: cpu})
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, v)
			}
			return out
		}
		a, b := draw(7, 0), draw(7, 0)
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("same seed, different numbers: %v %v", a, b)
		}
		if fmt.Sprint(a) == fmt.Sprint(draw(8, 0)) || fmt.Sprint(a) == fmt.Sprint(draw(7, 1)) {
			t.Error("another seed or CPU gave the same numbers")
		}
		if a[0] == a[1] && a[1] == a[2] {
			t.Errorf("not random: %v", a)
		}
	})
}

// printk builds a program that stores fmt on the stack and calls
// bpf_trace_printk with up to three constant arguments.
func printk(format string, args ...int64) asm.Instructions {
	b := append([]byte(format), 0)
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	var insns asm.Instructions
	for i := 0; i < len(b); i += 8 {
		var v uint64
		for j := 7; j >= 0; j-- {
			v = v<<8 | uint64(b[i+j])
		}
		insns = append(insns, asm.LoadImm(asm.R1, int64(v), asm.DWord), asm.StoreMem(asm.RFP, int16(i-len(b)), asm.R1, asm.DWord))
	}
	insns = append(insns, asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, int32(-len(b))), asm.Mov.Imm(asm.R2, int32(len(format)+1)))
	for i, a := range args {
		insns = append(insns, asm.LoadImm(asm.R3+asm.Register(i), a, asm.DWord))
	}
	return append(insns, asm.FnTracePrintk.Call(), asm.Return())
}

func TestTracePrintk(t *testing.T) {
	for _, c := range []struct {
		name   string
		format string
		args   []int64
		want   string
		ret    int64
	}{
		{"plain", "hello", nil, "hello", 5},
		{"signed and unsigned", "%d %u %x", []int64{-1, -1, 255}, "-1 4294967295 ff", 16},
		{"long", "%ld %llu %lx", []int64{-5, -1, 1 << 40}, "-5 18446744073709551615 10000000000", 35},
		{"width and flags", "[%5d][%-3d][%05x]", []int64{42, 7, 0xab}, "[   42][7  ][000ab]", 19},
		{"percent", "100%%", nil, "100%", 4},
		{"char", "%c%c", []int64{'o', 'k'}, "ok", 2},
		{"too many specifiers", "%d %d %d %d", []int64{1, 2, 3}, "", -int64(uapi.EINVAL)},
		{"unsupported specifier", "%f", []int64{1}, "", -int64(uapi.EINVAL)},
		{"precision is not allowed", "%.2d", []int64{1}, "", -int64(uapi.EINVAL)},
		{"non-printable", "a\x01b", nil, "", -int64(uapi.EINVAL)},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := newKernel(t, nil)
			p := load(t, k, ebpf.Syscall, printk(c.format, c.args...))
			res, err := p.Test(nil)
			if err != nil {
				t.Fatal(err)
			}
			if int64(res.R0) != c.ret {
				t.Errorf("returned %d, want %d", int64(res.R0), c.ret)
			}
			msgs := k.Trace().Messages()
			if c.want == "" {
				if len(msgs) != 0 {
					t.Errorf("printed %q for an invalid format", msgs)
				}
				return
			}
			if len(msgs) != 1 || msgs[0] != c.want {
				t.Errorf("printed %q, want %q", msgs, c.want)
			}
		})
	}
	t.Run("trace_pipe format", func(t *testing.T) {
		k := newKernel(t, nil)
		if _, err := load(t, k, ebpf.Syscall, printk("hi")).Test(nil); err != nil {
			t.Fatal(err)
		}
		line := k.Trace().String()
		if !strings.Contains(line, "[000] ..... ") || !strings.HasSuffix(line, "bpf_trace_printk: hi\n") {
			t.Errorf("trace line %q", line)
		}
	})
	t.Run("%s reads a string from memory", func(t *testing.T) {
		k := newKernel(t, nil)
		// Store "ab\0" at r10-16, pass its address as the argument.
		insns := asm.Instructions{
			asm.StoreImm(asm.RFP, -16, 0x006261, asm.Word),
			asm.Mov.Reg(asm.R6, asm.RFP), asm.Add.Imm(asm.R6, -16),
		}
		body := printk("<%s>")
		body = append(body[:len(body)-2], asm.Mov.Reg(asm.R3, asm.R6), asm.FnTracePrintk.Call(), asm.Return())
		p := load(t, k, ebpf.Syscall, append(insns, body...))
		if _, err := p.Test(nil); err != nil {
			t.Fatal(err)
		}
		if msgs := k.Trace().Messages(); len(msgs) != 1 || msgs[0] != "<ab>" {
			t.Errorf("printed %q", msgs)
		}
	})
}

func TestRegisterHelperExtendsTheTable(t *testing.T) {
	k := newKernel(t, nil)
	err := k.RegisterHelper(&sim.Helper{ID: 5, Fn: nil})
	if !errors.Is(err, uapi.EINVAL) {
		t.Errorf("nil function: %v", err)
	}
	err = k.RegisterHelper(&sim.Helper{ID: uapi.FuncKtimeGetNs, Fn: func(*interp.Machine, uint64, uint64, uint64, uint64, uint64) (uint64, error) { return 0, nil }})
	if !errors.Is(err, uapi.EEXIST) {
		t.Errorf("duplicate id: %v", err)
	}
	err = k.RegisterHelper(&sim.Helper{ID: 108, Fn: func(_ *interp.Machine, a, _, _, _, _ uint64) (uint64, error) { return a * 3, nil }})
	if err != nil {
		t.Fatal(err)
	}
	p := load(t, k, ebpf.Syscall, asm.Instructions{asm.Mov.Imm(asm.R1, 14), asm.BuiltinFunc(108).Call(), asm.Return()})
	if ret, err := p.Run(nil); err != nil || ret != 42 {
		t.Errorf("got %d, %v", ret, err)
	}
}

// Programs on different CPUs run in parallel and share memory like CPUs:
// atomic adds from every CPU to one packet-independent counter all land.
func TestConcurrentRunsOnDifferentCPUs(t *testing.T) {
	k := newKernel(t, &sim.Options{CPUs: 4})
	// Each run does 1000 iterations of: stack counter += 1 (atomic), then
	// returns the counter.
	p := load(t, k, ebpf.Syscall, asm.Instructions{
		asm.Mov.Imm(asm.R4, 0),
		asm.StoreMem(asm.RFP, -8, asm.R4, asm.DWord),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R1, 1000),
		asm.Mov.Imm(asm.R2, 1).WithSymbol("loop"),
		asm.StoreXAdd(asm.R3, asm.R2, asm.DWord),
		asm.Sub.Imm(asm.R1, 1),
		asm.JNE.Imm(asm.R1, 0, "loop"),
		asm.LoadMem(asm.R0, asm.RFP, -8, asm.DWord),
		asm.Return(),
	})
	var wg sync.WaitGroup
	errs := make(chan error, 4*50)
	for cpu := uint32(0); cpu < 4; cpu++ {
		wg.Add(1)
		go func(cpu uint32) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				ret, err := p.Run(&sim.RunOptions{CPU: cpu})
				if err == nil && ret != 1000 {
					err = fmt.Errorf("CPU %d counted %d", cpu, ret)
				}
				if err != nil {
					errs <- err
				}
			}
		}(cpu)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// simCollection loads the object at path into k, closed when the test
// ends.
func simCollection(t *testing.T, k *sim.Kernel, path string) *sim.Collection {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := k.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// compareLines reports the first ten lines in which got (bpfsim's
// output) and want (the kernel's) differ.
func compareLines(t *testing.T, got, want string) {
	t.Helper()
	if got == want {
		return
	}
	gl, wl := strings.Split(got, "\n"), strings.Split(want, "\n")
	n := 0
	for i := range wl {
		if i < len(gl) && gl[i] != wl[i] && n < 10 {
			t.Errorf("bpfsim: %s\nkernel: %s", gl[i], wl[i])
			n++
		}
	}
	if n == 0 {
		t.Errorf("bpfsim printed %d lines, the kernel %d", len(gl), len(wl))
	}
}

// checkRefusals loads each program of the object at path on its own:
// want maps each to the message its load must fail with, "" for one that
// loads.
func checkRefusals(t *testing.T, path string, want map[string]string) {
	k := newKernel(t, nil)
	for name, msg := range want {
		t.Run(name, func(t *testing.T) {
			coll, err := k.NewCollection(loadOneProgram(t, path, name))
			if msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				coll.Close()
				return
			}
			if err == nil {
				coll.Close()
				t.Fatalf("loaded, want %q", msg)
			}
			if !strings.Contains(err.Error(), msg) {
				t.Fatalf("load: %v, want %q", err, msg)
			}
		})
	}
}
