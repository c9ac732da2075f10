package sim_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/kdiff"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// A program from an ELF object is dumped as bpftool dumps it: the
// function's signature, each source line before the instructions compiled
// from it, map lookups inlined, and calls named after the kernel function
// they reach. (sim/kdiff compares the whole dump with bpftool's.)
func TestXlatedShowsSourceLinesAndKernelFunctions(t *testing.T) {
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := ebpf.LoadCollectionSpec("testdata/maps.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	coll, err := k.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	dump := coll.Programs["count"].Xlated()
	lines := strings.Split(dump, "\n")
	if lines[0] != "int count(struct xdp_md * ctx):" {
		t.Errorf("first line %q, want the function's signature", lines[0])
	}
	for _, want := range []string{
		// The lookup in the array by_proto, inlined.
		"; __u64 *n = bpf_map_lookup_elem(&by_proto, &proto);\n" +
			fmt.Sprintf("  22: (18) r1 = map[id:%d]\n", coll.Maps["by_proto"].ID()) +
			"  24: (07) r1 += 272\n" +
			"  25: (61) r0 = *(u32 *)(r2 +0)\n" +
			"  26: (35) if r0 >= 0x100 goto pc+3\n",
		// In the hash by_source: the element lookup stays a call.
		fmt.Sprintf("(85) call __htab_map_lookup_elem#%d\n", callImm(t, k, "__htab_map_lookup_elem")),
		fmt.Sprintf("(85) call htab_map_update_elem#%d\n", callImm(t, k, "htab_map_update_elem")),
		// An empty source line prints as bpftool prints it.
		"; \n",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("the dump lacks\n%s\nin\n%s", want, dump)
		}
	}
	// Every annotation is followed by the instruction it annotates.
	for i, l := range lines {
		if strings.HasPrefix(l, ";") && (i+1 == len(lines) || !strings.Contains(lines[i+1], ": (")) {
			t.Errorf("line %d %q annotates nothing", i, l)
		}
	}
	// And the program still counts what it counted.
	packet := make([]byte, 64)
	packet[13] = 8
	if _, err := coll.Programs["count"].Run(&sim.RunOptions{Data: packet}); err != nil {
		t.Fatal(err)
	}
	var n uint64
	if err := coll.Maps["by_proto"].Lookup(uint32(8), &n); err != nil || n != 1 {
		t.Errorf("by_proto[8] = %d, %v; want 1", n, err)
	}
}

// Programs built with cilium/ebpf's asm package carry their comments and
// function metadata the same way.
func TestXlatedShowsAsmSourceAndSignatures(t *testing.T) {
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	u32 := &btf.Int{Name: "__u32", Size: 4}
	proto := &btf.FuncProto{
		Return: &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed},
		Params: []btf.FuncParam{
			{Name: "ctx", Type: &btf.Pointer{Target: &btf.Struct{Name: "xdp_md"}}},
			{Type: &btf.Const{Type: &btf.Pointer{Target: &btf.Typedef{Name: "u32_t", Type: u32}}}},
			{Name: "v", Type: &btf.Pointer{Target: (*btf.Void)(nil)}},
		},
	}
	entry := btf.WithFuncMetadata(asm.Mov.Imm(asm.R0, 2).WithSource(asm.Comment("\t\treturn XDP_PASS;")),
		&btf.Func{Name: "f", Type: proto, Linkage: btf.StaticFunc})
	p, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{
		entry,
		asm.Return(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	want := "int f(struct xdp_md * ctx, const u32_t *, void * v):\n; return XDP_PASS;\n   0: (b7) r0 = 2\n   1: (95) exit\n"
	if got := p.Xlated(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// The rewrites change how a program computes, never what: run verified
// (rewritten) and unverified (as written) on two kernels that start
// alike, a program gives the same result.
func FuzzRewritesKeepResults(f *testing.F) {
	for seed := uint64(0); seed < 8; seed++ {
		opts := kdiff.DefaultGenOptions
		p := kdiff.Generate(seed, opts)
		if code, err := insn.FromAsm(p.Spec.Instructions); err == nil {
			f.Add(insn.Encode(code), p.Packet)
		}
	}
	for _, c := range deadCodeCases {
		f.Add(insn.Encode(c.insns), make([]byte, 20))
	}
	f.Add(insn.Encode([]insn.Insn{
		helperCall(uapi.FuncGetPrandomU32),
		{Code: insn.ALU64 | insn.MOV | insn.X, Dst: insn.R1, Src: insn.R0},
		{Code: insn.ALU | insn.MOD | insn.X, Dst: insn.R1, Src: insn.R0, Off: 1},
		{Code: insn.ALU64 | insn.DIV | insn.X, Dst: insn.R0, Src: insn.R1},
		exitInsn(),
	}), make([]byte, 14))
	newKernel := func() *sim.Kernel {
		k, err := sim.NewKernel(&sim.Options{CPUs: 1, Seed: 7, MemoryLimit: 64 << 20})
		if err != nil {
			f.Fatal(err)
		}
		return k
	}
	rewritten, asWritten := newKernel(), newKernel()
	f.Fuzz(func(t *testing.T, code, data []byte) {
		if len(data) < 14 {
			return
		}
		insns, err := insn.Decode(code)
		if err != nil {
			return
		}
		pv, err := rewritten.LoadInsns(ebpf.XDP, "fuzz", insns)
		if err != nil {
			return // only what the verifier accepts is rewritten
		}
		defer pv.Close()
		pu, err := asWritten.LoadInsnsWithOptions(ebpf.XDP, "fuzz", insns, sim.ProgramOptions{Unverified: true})
		if err != nil {
			// The verifier checks only the instructions it reaches, so
			// dead code the rewrites remove may be something the
			// interpreter cannot run.
			return
		}
		defer pu.Close()
		rv, errv := pv.Test(&sim.RunOptions{Data: data, MaxInsns: 50000})
		ru, erru := pu.Test(&sim.RunOptions{Data: data, MaxInsns: 50000})
		if errors.Is(errv, uapi.E2BIG) || errors.Is(erru, uapi.E2BIG) {
			// The budget counts instructions, which the rewrites change.
			return
		}
		if (errv == nil) != (erru == nil) || errv == nil && (rv.R0 != ru.R0 || string(rv.Data) != string(ru.Data)) {
			t.Fatalf("rewritten: r0 %#x, %v; as written: r0 %#x, %v\nxlated:\n%s\nas written:\n%s",
				resR0(rv), errv, resR0(ru), erru, pv.Xlated(), pu.Xlated())
		}
	})
}

func resR0(r *sim.RunResult) uint64 {
	if r == nil {
		return 0
	}
	return r.R0
}
