package sim_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/kfunc"
	"github.com/bpfsim/bpfsim/sim/vmlinuxbtf"
)

// modAdd is the module's kfunc mod_add.
func modAdd() *kfunc.Func {
	return &kfunc.Func{Name: "mod_add", Fn: func(_ *interp.Machine, a, b, _, _, _ uint64) (uint64, error) {
		return uint64(uint32(a + b)), nil
	}}
}

// A module's kfunc is called by name, through the module's BTF in the
// program's fd_array, and the program holds the module while it lives.
func TestModuleKfuncs(t *testing.T) {
	spec, err := ebpf.LoadCollectionSpec("testdata/module_core.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	for name, kernel := range buildKernels(t) {
		for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
			t.Run(fmt.Sprintf("%s/%v", name, rt), func(t *testing.T) { testModuleKfuncs(t, spec, kernel, rt) })
		}
	}
}

func testModuleKfuncs(t *testing.T, spec *ebpf.CollectionSpec, kernel []byte, rt sim.Runtime) {
	k, err := sim.NewKernel(&sim.Options{Runtime: rt})
	if err != nil {
		t.Fatal(err)
	}
	load := func() (*sim.Program, error) { return k.NewProgram(spec.Programs["call_mod_add"]) }
	if _, err := load(); !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "calls kfunc mod_add, which is not simulated") {
		t.Fatalf("without the module: %v", err)
	}
	m, err := k.LoadModule(buildModule(t, kernel).spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := load(); err == nil {
		t.Fatal("loaded before the module registered its kfunc")
	}
	if err := m.RegisterKfunc(modAdd()); err != nil {
		t.Fatal(err)
	}
	p, err := load()
	if err != nil {
		t.Fatal(err)
	}
	ctx := make([]byte, 8)
	binary.LittleEndian.PutUint32(ctx, 0xffff_fff0)
	binary.LittleEndian.PutUint32(ctx[4:], 0x25)
	res, err := p.Test(&sim.RunOptions{Context: ctx})
	if err != nil {
		t.Fatal(err)
	}
	if res.R0 != 0x15 {
		t.Errorf("mod_add(0xfffffff0, 0x25) = %#x, want 0x15", res.R0)
	}
	// The program holds the module: rmmod says it is in use
	// until the program is freed.
	if err := k.UnloadModule("mod"); !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("unloading a module in use: %v, want EAGAIN", err)
	}
	p.Close()
	k.SynchronizeRCU()
	if err := k.UnloadModule("mod"); err != nil {
		t.Fatal(err)
	}
	if _, err := load(); err == nil {
		t.Fatal("loaded after the module was unloaded")
	}
	// Loaded again, the module registers its kfunc again.
	m, err = k.LoadModule(buildModule(t, kernel).spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterKfunc(modAdd()); err != nil {
		t.Fatal(err)
	}
	if p, err = load(); err != nil {
		t.Fatal(err)
	}
	p.Close()
}

func TestModuleKfuncRegistrationRules(t *testing.T) {
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := k.LoadModule(buildModule(t, vmlinuxbtf.Raw()).spec)
	if err != nil {
		t.Fatal(err)
	}
	u64 := &btf.Int{Name: "long long unsigned int", Size: 8}
	for _, tc := range []struct {
		name  string
		f     *kfunc.Func
		errno unix.Errno
	}{
		{"a function the module's BTF lacks", &kfunc.Func{Name: "mod_sub", Fn: modAdd().Fn}, unix.ENOENT},
		{"the kernel's own kfunc", &kfunc.Func{Name: "bpf_iter_num_new", Fn: modAdd().Fn}, unix.ENOENT},
		{"a prototype unlike the BTF's", &kfunc.Func{Name: "mod_add", Fn: modAdd().Fn, Proto: &btf.FuncProto{Return: u64}}, unix.EINVAL},
		{"no function", &kfunc.Func{Name: "mod_add"}, unix.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := m.RegisterKfunc(tc.f); !errors.Is(err, tc.errno) {
				t.Fatalf("got %v, want %v", err, tc.errno)
			}
		})
	}
	if err := m.RegisterKfunc(modAdd()); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterKfunc(modAdd()); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("twice: %v, want EEXIST", err)
	}
	// A vmlinux kfunc may not take a module kfunc's name either.
	err = k.RegisterKfunc(&kfunc.Func{Name: "mod_add", Proto: &btf.FuncProto{Return: u64}, Fn: modAdd().Fn})
	if !errors.Is(err, unix.EEXIST) {
		t.Fatalf("a vmlinux kfunc named as the module's: %v, want EEXIST", err)
	}
}

// kfuncCallAt is a kfunc call with the BTF id imm in the BTF at fd_array
// index off, in a program that returns what it returns.
func kfuncCallAt(imm int32, off int16) *ebpf.ProgramSpec {
	return &ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{
		asm.Mov.Imm(asm.R1, 1),
		asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call), Src: asm.PseudoKfuncCall, Constant: int64(imm), Offset: off},
		asm.Return(),
	}}
}

// KfuncCallOffsetRefusals are kfunc calls whose offset names no module
// BTF, with the kernel's errnos and messages (find_kfunc_desc_btf):
// checked against this machine's kernel by
// TestKfuncCallOffsetsAreTheKernels.
var KfuncCallOffsetRefusals = []struct {
	Name string
	Off  int16
	// Imm, if not 0, is the call's BTF id; else a kfunc's.
	Imm   int32
	Errno unix.Errno
	Msg   string
}{
	{"a negative offset", -1, 0, unix.EINVAL, "negative offset disallowed for kernel module function call"},
	{"an offset without fd_array", 1, 0, unix.EPROTO, "kfunc offset > 0 without fd_array is invalid"},
	{"a BTF id that is no function", 0, 1, unix.EINVAL, "kernel btf_id 1 is not a function"},
}

func TestKfuncCallOffsetsNamingNoModuleAreRefused(t *testing.T) {
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, ok := k.KfuncID("bpf_iter_num_destroy")
	if !ok {
		t.Fatal("no bpf_iter_num_destroy")
	}
	for _, tc := range KfuncCallOffsetRefusals {
		t.Run(tc.Name, func(t *testing.T) {
			imm := int32(id)
			if tc.Imm != 0 {
				imm = tc.Imm
			}
			_, err := k.NewProgram(kfuncCallAt(imm, tc.Off))
			if !errors.Is(err, tc.Errno) || !strings.Contains(err.Error(), tc.Msg) {
				t.Fatalf("got %v, want %v with %q", err, tc.Errno, tc.Msg)
			}
		})
	}
}

// BenchmarkModuleKfuncCall measures a test run of call_mod_add: two
// context loads and a call of the module's kfunc. No kernel figure: this
// machine has no module with a kfunc to call.
func BenchmarkModuleKfuncCall(b *testing.B) {
	spec, err := ebpf.LoadCollectionSpec("testdata/module_core.bpf.o")
	if err != nil {
		b.Fatal(err)
	}
	t := &testing.T{}
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		b.Run(rt.String(), func(b *testing.B) {
			k, err := sim.NewKernel(&sim.Options{Runtime: rt})
			if err != nil {
				b.Fatal(err)
			}
			m, err := k.LoadModule(buildModule(t, vmlinuxbtf.Raw()).spec)
			if err != nil {
				b.Fatal(err)
			}
			if err := m.RegisterKfunc(modAdd()); err != nil {
				b.Fatal(err)
			}
			p, err := k.NewProgram(spec.Programs["call_mod_add"])
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			// A syscall program runs once a test run, as in the kernel:
			// the figure includes the test run's set-up.
			opts := &sim.RunOptions{Context: make([]byte, 8)}
			for b.Loop() {
				if _, err := p.Test(opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLoadModule measures a module's load: its BTF read, relocated
// onto the simulated kernel's and read again by cilium/ebpf.
func BenchmarkLoadModule(b *testing.B) {
	spec := buildModule(&testing.T{}, vmlinuxbtf.Raw()).spec
	k, err := sim.NewKernel(nil)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := k.LoadModule(spec); err != nil {
			b.Fatal(err)
		}
		if err := k.UnloadModule(spec.Name); err != nil {
			b.Fatal(err)
		}
	}
}

// Programs calling a module's kfunc load, run on several CPUs and close
// while another goroutine keeps trying to unload the module: every
// unload meanwhile is EAGAIN, the counts add up, and once the last
// program is freed the module unloads.
func TestModuleKfuncsUnderConcurrentLoadsAndUnloads(t *testing.T) {
	spec, err := ebpf.LoadCollectionSpec("testdata/module_core.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	const cpus, loads = 3, 20
	k, err := sim.NewKernel(&sim.Options{CPUs: cpus})
	if err != nil {
		t.Fatal(err)
	}
	m, err := k.LoadModule(buildModule(t, vmlinuxbtf.Raw()).spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterKfunc(modAdd()); err != nil {
		t.Fatal(err)
	}
	// One program that lives through the whole test keeps the module in.
	keeper, err := k.NewProgram(spec.Programs["call_mod_add"])
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	unloadErrs := make(chan error, 1)
	go func() {
		defer close(unloadErrs)
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := k.UnloadModule("mod"); !errors.Is(err, unix.EAGAIN) {
				unloadErrs <- fmt.Errorf("unload while in use: %v", err)
				return
			}
		}
	}()
	errs := make(chan error, cpus)
	for cpu := 0; cpu < cpus; cpu++ {
		go func(cpu int) {
			ctx := make([]byte, 8)
			for i := 0; i < loads; i++ {
				p, err := k.NewProgram(spec.Programs["call_mod_add"])
				if err != nil {
					errs <- err
					return
				}
				binary.LittleEndian.PutUint32(ctx, uint32(cpu))
				binary.LittleEndian.PutUint32(ctx[4:], uint32(i))
				res, err := p.Test(&sim.RunOptions{Context: ctx, CPU: uint32(cpu)})
				p.Close()
				if err != nil {
					errs <- err
					return
				}
				if res.R0 != uint64(cpu+i) {
					errs <- fmt.Errorf("CPU %d run %d: %d", cpu, i, res.R0)
					return
				}
			}
			errs <- nil
		}(cpu)
	}
	for cpu := 0; cpu < cpus; cpu++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	if err := <-unloadErrs; err != nil {
		t.Fatal(err)
	}
	keeper.Close()
	k.SynchronizeRCU()
	if err := k.UnloadModule("mod"); err != nil {
		t.Fatalf("unload after every program was freed: %v", err)
	}
}
