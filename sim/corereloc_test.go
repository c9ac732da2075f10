package sim_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/kdiff"
	"github.com/bpfsim/bpfsim/sim/kfunc"
)

// testdata/core.bpf.o holds programs written as against vmlinux.h, whose
// every field access is a CO-RE relocation (see core.bpf.c).
const coreObject = "testdata/core.bpf.o"

// skbCtxSize is sizeof(struct __sk_buff); skbMarkOff and skbCb2Off are
// offsetof mark and cb[2].
const (
	skbCtxSize = 192
	skbMarkOff = 8
	skbCb2Off  = 56
)

// corePacket is an Ethernet frame of 64 bytes carrying IPv4, with 0xab as
// its second byte.
func corePacket() []byte {
	pkt := make([]byte, 64)
	pkt[1] = 0xab
	binary.BigEndian.PutUint16(pkt[12:], 0x0800)
	return pkt
}

// tcCoreFacts is what tc_core's relocations that ask questions answer on
// the simulated kernel, as core.bpf.c folds them: tstamp exists, cb is 20
// bytes, tstamp is at 152, struct bpf_sock exists and is 80 bytes,
// BPF_FUNC_map_lookup_elem exists, the made-up helper does not, and
// BPF_FUNC_ktime_get_ns is 5.
const tcCoreFacts = 1 | 20<<2 | 152<<8 | 1<<16 | 1<<17 | 5<<19 | 80<<24

func loadCoreSpec(t *testing.T) *ebpf.CollectionSpec {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(coreObject)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func TestCORERelocatedProgramsRunWithTheKernelsLayouts(t *testing.T) {
	spec := loadCoreSpec(t)
	// ETH_P_IP as __sk_buff's protocol has it: network order in a u32.
	const v = 64 + 0x0008<<16
	x86Regs := make([]byte, 21*8)
	binary.LittleEndian.PutUint64(x86Regs[14*8:], 0x1122334455) // di
	arm64Regs := make([]byte, 34*8)
	binary.LittleEndian.PutUint64(arm64Regs[0:], 0x66778899) // x0
	for _, tc := range []struct {
		prog     string
		opts     sim.RunOptions
		want     uint32
		wantMark uint32 // for tc programs: the mark and cb[2] after the run
		wantCb2  uint32
	}{
		{prog: "xdp_core", opts: sim.RunOptions{Data: corePacket()}, want: 2<<24 | 64<<8 | 0xab},
		{prog: "tc_core", opts: sim.RunOptions{Data: corePacket()}, want: tcCoreFacts ^ v, wantMark: v ^ 0x5a5a, wantCb2: 64},
		{prog: "tc_core_guarded", opts: sim.RunOptions{Data: corePacket()}, want: 1},
		{prog: "kprobe_x86", opts: sim.RunOptions{Context: x86Regs}, want: 0x22334455},
		{prog: "kprobe_arm64", opts: sim.RunOptions{Context: arm64Regs}, want: 0x66778899},
	} {
		t.Run(tc.prog, func(t *testing.T) {
			k, err := sim.NewKernel(nil)
			if err != nil {
				t.Fatal(err)
			}
			p, err := k.NewProgram(spec.Programs[tc.prog])
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			opts := tc.opts
			ctxOut := make([]byte, skbCtxSize)
			if p.Type() == ebpf.SchedCLS {
				opts.Context, opts.ContextOut = make([]byte, skbCtxSize), ctxOut
			}
			res, err := p.Test(&opts)
			if err != nil {
				t.Fatal(err)
			}
			if uint32(res.R0) != tc.want {
				t.Errorf("returned %#x, want %#x", uint32(res.R0), tc.want)
			}
			if p.Type() != ebpf.SchedCLS {
				return
			}
			if got := binary.LittleEndian.Uint32(ctxOut[skbMarkOff:]); got != tc.wantMark {
				t.Errorf("mark %#x, want %#x", got, tc.wantMark)
			}
			if got := binary.LittleEndian.Uint32(ctxOut[skbCb2Off:]); got != tc.wantCb2 {
				t.Errorf("cb[2] %#x, want %#x", got, tc.wantCb2)
			}
		})
	}
}

func TestCORERelocationWithoutTargetIsRefusedWhereItRuns(t *testing.T) {
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = k.NewProgram(loadCoreSpec(t).Programs["tc_core_missing"])
	if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), `"__sk_buff"[0:4]`) || !strings.Contains(err.Error(), "invalid func unknown#195896080") {
		t.Fatalf("loading a program that reads a field no kernel has: %v, want EINVAL, naming the relocation (the type and the field's accessor) and the poisoned call", err)
	}
}

// A load may name the types to relocate against, as with cilium/ebpf's
// ProgramOptions.KernelTypes: here a kernel whose __sk_buff has the field
// tc_core_missing reads, where the real one has the mark.
func TestKernelTypesReplaceTheSimulatedKernelsBTF(t *testing.T) {
	u32 := &btf.Int{Name: "unsigned int", Size: 4}
	skb := &btf.Struct{Name: "__sk_buff", Size: skbCtxSize, Members: []btf.Member{
		{Name: "no_such_field", Type: u32, Offset: skbMarkOff * 8},
	}}
	b, err := btf.NewBuilder([]btf.Type{skb}, nil)
	if err != nil {
		t.Fatal(err)
	}
	types, err := b.Spec()
	if err != nil {
		t.Fatal(err)
	}
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := k.NewProgramWithOptions(loadCoreSpec(t).Programs["tc_core_missing"], sim.ProgramOptions{KernelTypes: types})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := make([]byte, skbCtxSize)
	binary.LittleEndian.PutUint32(ctx[skbMarkOff:], 0x1234)
	res, err := p.Test(&sim.RunOptions{Data: corePacket(), Context: ctx})
	if err != nil {
		t.Fatal(err)
	}
	if res.R0 != 0x1234 {
		t.Fatalf("returned %#x, want the mark 0x1234", res.R0)
	}
}

// The kernel's enum bpf_func_id lists the helpers it has, and programs
// probe it (bpf_core_enum_value_exists) to choose what to call: the
// simulated kernel's lists the helpers it simulates.
func TestKernelBTFListsTheHelpersTheKernelHas(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts *sim.Options
		want map[string]bool
	}{
		{"default", nil, map[string]bool{"BPF_FUNC_unspec": true, "BPF_FUNC_map_lookup_elem": true, "BPF_FUNC_ktime_get_ns": true, "BPF_FUNC_sk_lookup_tcp": false}},
		{"bare", &sim.Options{BareHelpers: true}, map[string]bool{"BPF_FUNC_unspec": true, "BPF_FUNC_map_lookup_elem": false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := sim.NewKernel(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			spec, err := k.KernelBTF()
			if err != nil {
				t.Fatal(err)
			}
			var ids *btf.Enum
			if err := spec.TypeByName("bpf_func_id", &ids); err != nil {
				t.Fatal(err)
			}
			has := map[string]bool{}
			for _, v := range ids.Values {
				has[v.Name] = true
			}
			for name, want := range tc.want {
				if has[name] != want {
					t.Errorf("%s listed: %v, want %v", name, has[name], want)
				}
			}
		})
	}
}

// BenchmarkLoadWithCORE measures loading tc_core, whose 18 instructions
// carry 16 CO-RE relocations, and, where this machine can load BPF
// programs, the same load through cilium/ebpf into its kernel (relocating
// against /sys/kernel/btf/vmlinux, which cilium/ebpf parses once and
// caches).
func BenchmarkLoadWithCORE(b *testing.B) {
	spec, err := ebpf.LoadCollectionSpec(coreObject)
	if err != nil {
		b.Fatal(err)
	}
	ps := spec.Programs["tc_core"]
	k, err := sim.NewKernel(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("bpfsim", func(b *testing.B) {
		for b.Loop() {
			p, err := k.NewProgram(ps)
			if err != nil {
				b.Fatal(err)
			}
			p.Close()
		}
	})
	b.Run("kernel", func(b *testing.B) {
		if _, err := kdiff.OpenKernel(); err != nil {
			b.Skipf("no kernel figures: %v", err)
		}
		for b.Loop() {
			p, err := ebpf.NewProgram(ps)
			if err != nil {
				b.Fatal(err)
			}
			p.Close()
		}
	})
}

// Loads on several goroutines share the kernel's BTF while a kfunc's
// registration changes it.
func TestCORELoadsRunConcurrently(t *testing.T) {
	spec := loadCoreSpec(t)
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				p, err := k.NewProgram(spec.Programs["tc_core"])
				if err != nil {
					errs <- err
					return
				}
				p.Close()
			}
		}()
	}
	u32 := &btf.Int{Name: "unsigned int", Size: 4}
	for i := 0; i < 5; i++ {
		f := &kfunc.Func{Name: fmt.Sprintf("bpfsim_test_kfunc_%d", i), Proto: &btf.FuncProto{Return: u32},
			Fn: func(*interp.Machine, uint64, uint64, uint64, uint64, uint64) (uint64, error) { return 0, nil }}
		if err := k.RegisterKfunc(f); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
