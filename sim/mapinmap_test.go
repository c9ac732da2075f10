package sim_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// The xlated listing of handle__sys_enter in the commit that introduced
// BPF_F_INNER_MAP ("bpf: Allow for map-in-map with dynamic inner array map
// entries", seed 001): the outer array's lookup is inlined, the lookup in
// the dynamically sized inner array is a direct call of
// array_map_lookup_elem.
const seed001Listing = `int handle__sys_enter(void * ctx):
; int handle__sys_enter(void *ctx)
   0: (b4) w1 = 0
; int key = 0;
   1: (63) *(u32 *)(r10 -4) = r1
   2: (bf) r2 = r10
;
   3: (07) r2 += -4
; inner_map = bpf_map_lookup_elem(&outer_arr_dyn, &key);
   4: (18) r1 = map[id:468]
   6: (07) r1 += 272
   7: (61) r0 = *(u32 *)(r2 +0)
   8: (35) if r0 >= 0x3 goto pc+5
   9: (67) r0 <<= 3
  10: (0f) r0 += r1
  11: (79) r0 = *(u64 *)(r0 +0)
  12: (15) if r0 == 0x0 goto pc+1
  13: (05) goto pc+1
  14: (b7) r0 = 0
  15: (b4) w6 = -1
; if (!inner_map)
  16: (15) if r0 == 0x0 goto pc+6
  17: (bf) r2 = r10
;
  18: (07) r2 += -4
; val = bpf_map_lookup_elem(inner_map, &key);
  19: (bf) r1 = r0
  20: (85) call array_map_lookup_elem#149280
; return val ? *val : -1;
  21: (15) if r0 == 0x0 goto pc+1
; return val ? *val : -1;
  22: (61) r6 = *(u32 *)(r0 +0)
; }
  23: (bc) w0 = w6
  24: (95) exit
`

// seed001Program is handle__sys_enter as clang compiled it for the seed's
// listing, with its BTF function and line info:
//
//	int handle__sys_enter(void *ctx)
//	{
//		int key = 0;
//		inner_map = bpf_map_lookup_elem(&outer_arr_dyn, &key);
//		if (!inner_map)
//			return -1;
//		val = bpf_map_lookup_elem(inner_map, &key);
//		return val ? *val : -1;
//	}
func seed001Program(outer string) asm.Instructions {
	src := func(ins asm.Instruction, line string) asm.Instruction { return ins.WithSource(asm.Comment(line)) }
	fn := &btf.Func{Name: "handle__sys_enter", Linkage: btf.GlobalFunc, Type: &btf.FuncProto{
		Return: &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed},
		Params: []btf.FuncParam{{Name: "ctx", Type: &btf.Pointer{Target: &btf.Void{}}}},
	}}
	first := src(asm.Mov.Imm32(asm.R1, 0), "int handle__sys_enter(void *ctx)")
	return asm.Instructions{
		btf.WithFuncMetadata(first, fn),
		src(asm.StoreMem(asm.RFP, -4, asm.R1, asm.Word), "int key = 0;"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		src(asm.Add.Imm(asm.R2, -4), ""),
		src(asm.LoadMapPtr(asm.R1, 0).WithReference(outer), "inner_map = bpf_map_lookup_elem(&outer_arr_dyn, &key);"),
		asm.FnMapLookupElem.Call(),
		asm.Mov.Imm32(asm.R6, -1),
		src(asm.JEq.Imm(asm.R0, 0, "out"), "if (!inner_map)"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		src(asm.Add.Imm(asm.R2, -4), ""),
		src(asm.Mov.Reg(asm.R1, asm.R0), "val = bpf_map_lookup_elem(inner_map, &key);"),
		asm.FnMapLookupElem.Call(),
		src(asm.JEq.Imm(asm.R0, 0, "out"), "return val ? *val : -1;"),
		src(asm.LoadMem(asm.R6, asm.R0, 0, asm.Word), "return val ? *val : -1;"),
		src(asm.Mov.Reg32(asm.R0, asm.R6), "}").WithSymbol("out"),
		asm.Return(),
	}
}

var (
	listingMapID = regexp.MustCompile(`map\[id:\d+\]`)
	listingCall  = regexp.MustCompile(`(call [A-Za-z_0-9]+)#-?\d+`)
)

// normalizeListing drops what depends on the kernel: map ids and call
// immediates, and trailing blanks.
func normalizeListing(s string) string {
	s = listingMapID.ReplaceAllString(s, "map[id:N]")
	s = listingCall.ReplaceAllString(s, "$1#IMM")
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " ")
	}
	return strings.Join(lines, "\n")
}

func newMapT(t testing.TB, k *sim.Kernel, spec *ebpf.MapSpec) *sim.Map {
	t.Helper()
	m, err := k.NewMap(spec)
	if err != nil {
		t.Fatalf("map %s: %v", spec.Name, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func intArray(name string, maxEntries, flags uint32) *ebpf.MapSpec {
	return &ebpf.MapSpec{Name: name, Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: maxEntries, Flags: flags}
}

func outerSpec(name string, typ ebpf.MapType, maxEntries uint32, inner *ebpf.MapSpec) *ebpf.MapSpec {
	return &ebpf.MapSpec{Name: name, Type: typ, KeySize: 4, ValueSize: 4, MaxEntries: maxEntries, InnerMap: inner}
}

func loadSeed001(t testing.TB, k *sim.Kernel, outer *sim.Map) *sim.Program {
	t.Helper()
	insns := seed001Program("outer_arr_dyn")
	if err := insns.AssociateMap("outer_arr_dyn", outer); err != nil {
		t.Fatal(err)
	}
	p, err := k.NewProgram(&ebpf.ProgramSpec{Name: "handle__sys_enter", Type: ebpf.RawTracepoint, Instructions: insns, License: "GPL"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestSeed001HandleSysEnterXlatedIsTheSeedListing(t *testing.T) {
	k := newKernel(t, nil)
	outer := newMapT(t, k, outerSpec("outer_arr_dyn", ebpf.ArrayOfMaps, 3, intArray("inner", 1, uapi.BPF_F_INNER_MAP)))
	p := loadSeed001(t, k, outer)
	got, want := normalizeListing(p.Xlated()), normalizeListing(seed001Listing)
	if got != want {
		t.Fatalf("xlated listing differs from the seed's:\n%s", lineDiff(want, got))
	}
}

func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			b.WriteString("want: " + wl + "\n got: " + gl + "\n")
		}
	}
	return b.String()
}
