package sim_test

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
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

// innerLookupProgram returns the value at inner[ctx.inner] of the map at
// outer[ctx.outer], -1 if the inner lookup fails and -2 if the outer one
// does. Its context is two u32: outer key, inner key.
func innerLookupProgram(t testing.TB, outer *sim.Map, valueSize asm.Size) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R1, asm.R6, 0, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R1, asm.Word),
		asm.LoadMem(asm.R1, asm.R6, 4, asm.Word),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, 0).WithReference("outer"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.Mov.Imm(asm.R7, -2),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Reg(asm.R1, asm.R0),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.Mov.Imm(asm.R7, -1),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R7, asm.R0, 0, valueSize),
		asm.Mov.Reg(asm.R0, asm.R7).WithSymbol("out"),
		asm.Return(),
	}
	return associate(t, "outer", outer, insns)
}

func loadSyscall(t testing.TB, k *sim.Kernel, insns asm.Instructions) *sim.Program {
	t.Helper()
	p, err := k.NewProgram(&ebpf.ProgramSpec{Name: "inner_lookup", Type: ebpf.Syscall, Flags: uapi.BPF_F_SLEEPABLE, Instructions: insns, License: "GPL"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

type keys struct{ Outer, Inner uint32 }

func runKeys(t testing.TB, p *sim.Program, cpu int, outer, inner uint32) int64 {
	t.Helper()
	res, err := p.Test(&sim.RunOptions{Context: keys{outer, inner}, CPU: uint32(cpu)})
	if err != nil {
		t.Fatal(err)
	}
	return int64(res.R0)
}

func wantErrno(t testing.TB, what string, err error, want syscall.Errno) {
	t.Helper()
	if want == 0 {
		if err != nil {
			t.Errorf("%s: %v, want success", what, err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Errorf("%s: %v, want %v", what, err, want)
	}
}

func TestSeed001HandleSysEnterReadsTheInnerArray(t *testing.T) {
	k := newKernel(t, nil)
	outer := newMapT(t, k, outerSpec("outer_arr_dyn", ebpf.ArrayOfMaps, 3, intArray("inner", 1, uapi.BPF_F_INNER_MAP)))
	p := loadSeed001(t, k, outer)
	if got, err := p.Run(nil); err != nil || int32(got) != -1 {
		t.Errorf("empty slot: %d, %v; want -1", int32(got), err)
	}
	inner := newMapT(t, k, intArray("inner_map5", 5, uapi.BPF_F_INNER_MAP))
	if err := inner.Put(uint32(0), uint32(42)); err != nil {
		t.Fatal(err)
	}
	if err := outer.Put(uint32(0), inner); err != nil {
		t.Fatal(err)
	}
	if got, err := p.Run(nil); err != nil || got != 42 {
		t.Errorf("inner[0]: %d, %v; want 42", got, err)
	}
}

// "Dynamic inner array map entries": with BPF_F_INNER_MAP, arrays of any
// size live under one outer map, and each lookup is bounded by the real
// inner array's max_entries.
func TestSeed001DynamicInnerArraySizesUnderOneOuterMap(t *testing.T) {
	for _, typ := range []ebpf.MapType{ebpf.ArrayOfMaps, ebpf.HashOfMaps} {
		t.Run(typ.String(), func(t *testing.T) {
			k := newKernel(t, nil)
			outer := newMapT(t, k, outerSpec("outer", typ, 3, intArray("tmpl", 1, uapi.BPF_F_INNER_MAP)))
			sizes := []uint32{1, 3, 5}
			for i, n := range sizes {
				inner := newMapT(t, k, intArray("inner", n, uapi.BPF_F_INNER_MAP))
				for j := uint32(0); j < n; j++ {
					if err := inner.Put(j, uint32(100*i)+j); err != nil {
						t.Fatal(err)
					}
				}
				wantErrno(t, "storing an inner array", outer.Put(uint32(i), inner), 0)
			}
			p := loadSyscall(t, k, innerLookupProgram(t, outer, asm.Word))
			x := p.Xlated()
			if !strings.Contains(x, "call array_map_lookup_elem#") {
				t.Errorf("the inner lookup is not a direct call of array_map_lookup_elem:\n%s", x)
			}
			for i, n := range sizes {
				for j := uint32(0); j < 6; j++ {
					want := int64(-1)
					if j < n {
						want = int64(100*i) + int64(j)
					}
					if got := runKeys(t, p, 0, uint32(i), j); got != want {
						t.Errorf("outer[%d] (%d entries), inner[%d] = %d, want %d", i, n, j, got, want)
					}
				}
			}
			// The flags must match: an array without BPF_F_INNER_MAP
			// does not fit.
			plain := newMapT(t, k, intArray("plain", 1, 0))
			wantErrno(t, "an inner array without BPF_F_INNER_MAP", outer.Put(uint32(0), plain), uapi.EINVAL)
		})
	}
}

// Without BPF_F_INNER_MAP an inner ARRAY's lookup is inlined with the
// template's max_entries, so every inner array must have it: another size
// is EINVAL.
func TestSeed001InnerArrayOfAnotherSizeIsEINVALWithoutInnerMapFlag(t *testing.T) {
	for _, typ := range []ebpf.MapType{ebpf.ArrayOfMaps, ebpf.HashOfMaps} {
		t.Run(typ.String(), func(t *testing.T) {
			k := newKernel(t, nil)
			outer := newMapT(t, k, outerSpec("outer", typ, 2, intArray("tmpl", 4, 0)))
			for _, c := range []struct {
				name string
				spec *ebpf.MapSpec
				want syscall.Errno
			}{
				{"same size", intArray("same", 4, 0), 0},
				{"larger", intArray("larger", 8, 0), uapi.EINVAL},
				{"smaller", intArray("smaller", 2, 0), uapi.EINVAL},
				{"with BPF_F_INNER_MAP", intArray("flagged", 4, uapi.BPF_F_INNER_MAP), uapi.EINVAL},
				{"other value size", &ebpf.MapSpec{Name: "wide", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4}, uapi.EINVAL},
				{"other type", &ebpf.MapSpec{Name: "hash", Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 4}, uapi.EINVAL},
			} {
				inner := newMapT(t, k, c.spec)
				wantErrno(t, c.name, outer.Put(uint32(1), inner), c.want)
			}
			same := newMapT(t, k, intArray("same", 4, 0))
			if err := same.Put(uint32(3), uint32(33)); err != nil {
				t.Fatal(err)
			}
			wantErrno(t, "store", outer.Put(uint32(0), same), 0)
			p := loadSyscall(t, k, innerLookupProgram(t, outer, asm.Word))
			x := p.Xlated()
			if strings.Contains(x, "array_map_lookup_elem") || strings.Count(x, "if r0 >= 0x4 goto") != 1 {
				t.Errorf("the inner lookup is not inlined with the template's max_entries:\n%s", x)
			}
			for j, want := range []int64{0, 0, 0, 33, -1} {
				if got := runKeys(t, p, 0, 0, uint32(j)); got != want {
					t.Errorf("inner[%d] = %d, want %d", j, got, want)
				}
			}
			if got := runKeys(t, p, 0, 1, 0); got != 0 {
				t.Errorf("outer[1] (the same-size array), inner[0]: %d, want 0", got)
			}
			wantErrno(t, "delete", outer.Delete(uint32(1)), 0)
			if got := runKeys(t, p, 0, 1, 0); got != -2 {
				t.Errorf("deleted outer slot: %d, want -2", got)
			}
		})
	}
}

// "Relax max_entries check for most of the inner map types": hash inner
// maps of any size fit a hash template, since the verifier never uses
// their max_entries.
func TestSeed001HashInnerMapsMayDifferInMaxEntries(t *testing.T) {
	hash := func(name string, n uint32, typ ebpf.MapType) *ebpf.MapSpec {
		return &ebpf.MapSpec{Name: name, Type: typ, KeySize: 4, ValueSize: 8, MaxEntries: n}
	}
	for _, typ := range []ebpf.MapType{ebpf.ArrayOfMaps, ebpf.HashOfMaps} {
		t.Run(typ.String(), func(t *testing.T) {
			k := newKernel(t, nil)
			outer := newMapT(t, k, outerSpec("outer", typ, 4, hash("tmpl", 16, ebpf.Hash)))
			for i, n := range []uint32{1, 16, 1000} {
				inner := newMapT(t, k, hash("inner", n, ebpf.Hash))
				if err := inner.Put(uint32(7), uint64(1000+i)); err != nil {
					t.Fatal(err)
				}
				wantErrno(t, "a hash inner map of another size", outer.Put(uint32(i), inner), 0)
			}
			wantErrno(t, "a per-CPU hash", outer.Put(uint32(3), newMapT(t, k, hash("pcpu", 16, ebpf.PerCPUHash))), uapi.EINVAL)
			wantErrno(t, "a hash with BPF_F_NO_PREALLOC", outer.Put(uint32(3), newMapT(t, k,
				&ebpf.MapSpec{Name: "noprealloc", Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 16, Flags: uapi.BPF_F_NO_PREALLOC})), uapi.EINVAL)
			p := loadSyscall(t, k, innerLookupProgram(t, outer, asm.DWord))
			if x := p.Xlated(); !strings.Contains(x, "call __htab_map_lookup_elem#") {
				t.Errorf("the inner hash lookup is not inlined:\n%s", x)
			}
			for i := 0; i < 3; i++ {
				if got := runKeys(t, p, 0, uint32(i), 7); got != int64(1000+i) {
					t.Errorf("outer[%d], key 7 = %d, want %d", i, got, 1000+i)
				}
				if got := runKeys(t, p, 0, uint32(i), 8); got != -1 {
					t.Errorf("outer[%d], key 8 = %d, want -1", i, got)
				}
			}
		})
	}
}

// Per-CPU arrays as inner maps: the kernel's rule lets them differ from
// the template in max_entries (bpf_map_meta_equal), although the per-CPU
// array lookup it would inline embeds the template's. bpfsim accepts what
// the kernel accepts and calls percpu_array_map_lookup_elem instead, which
// bounds the index by the real array.
func TestPercpuInnerArraysOfAnotherSizeAreLookedUpByCall(t *testing.T) {
	k := newKernel(t, &sim.Options{CPUs: 2})
	pcpu := func(n uint32) *ebpf.MapSpec {
		return &ebpf.MapSpec{Name: "pcpu", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: n}
	}
	outer := newMapT(t, k, outerSpec("outer", ebpf.ArrayOfMaps, 2, pcpu(8)))
	small := newMapT(t, k, pcpu(2))
	if err := small.Put(uint32(1), []uint64{10, 11}); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "a smaller per-CPU inner array", outer.Put(uint32(0), small), 0)
	p := loadSyscall(t, k, innerLookupProgram(t, outer, asm.DWord))
	if x := p.Xlated(); !strings.Contains(x, "call percpu_array_map_lookup_elem#") {
		t.Errorf("the per-CPU inner lookup is not a call:\n%s", x)
	}
	for _, c := range []struct {
		cpu   int
		inner uint32
		want  int64
	}{{0, 1, 10}, {1, 1, 11}, {1, 0, 0}, {0, 2, -1}, {1, 7, -1}} {
		if got := runKeys(t, p, c.cpu, 0, c.inner); got != c.want {
			t.Errorf("CPU %d, inner[%d] = %d, want %d", c.cpu, c.inner, got, c.want)
		}
	}
}

// An inner map replaced while a program on another CPU still uses it: the
// program keeps a valid map to the end of its run, and the old map's
// memory goes only after the grace period, although its id goes at once
// (the outer map's reference and the last handle are gone).
func TestSeed001InnerMapReplacedWhileAProgramOnAnotherCPUUsesTheOldOne(t *testing.T) {
	for _, typ := range []ebpf.MapType{ebpf.ArrayOfMaps, ebpf.HashOfMaps} {
		t.Run(typ.String(), func(t *testing.T) {
			k := newKernel(t, &sim.Options{CPUs: 2})
			entered, release := make(chan struct{}), make(chan struct{})
			var first atomic.Bool
			first.Store(true)
			const pause = 211 // a helper id of our own: it waits for the test
			if err := k.RegisterHelper(&sim.Helper{ID: pause, Name: "test_pause", Proto: verifier.UncheckedProto,
				Fn: func(*interp.Machine, uint64, uint64, uint64, uint64, uint64) (uint64, error) {
					if first.CompareAndSwap(true, false) {
						entered <- struct{}{}
						<-release
					}
					return 0, nil
				}}); err != nil {
				t.Fatal(err)
			}
			outer := newMapT(t, k, outerSpec("outer", typ, 1, intArray("tmpl", 2, 0)))
			old, err := k.NewMap(intArray("old", 2, 0))
			if err != nil {
				t.Fatal(err)
			}
			replacement := newMapT(t, k, intArray("new", 2, 0))
			if err := old.Put(uint32(1), uint32(111)); err != nil {
				t.Fatal(err)
			}
			if err := replacement.Put(uint32(1), uint32(222)); err != nil {
				t.Fatal(err)
			}
			wantErrno(t, "store the old map", outer.Put(uint32(0), old), 0)
			// inner = outer[0]; pause; return inner[1]
			p := loadSyscall(t, k, associate(t, "outer", outer, asm.Instructions{
				asm.StoreImm(asm.RFP, -4, 0, asm.Word),
				asm.StoreImm(asm.RFP, -8, 1, asm.Word),
				asm.LoadMapPtr(asm.R1, 0).WithReference("outer"),
				asm.Mov.Reg(asm.R2, asm.RFP),
				asm.Add.Imm(asm.R2, -4),
				asm.FnMapLookupElem.Call(),
				asm.JEq.Imm(asm.R0, 0, "fail"),
				asm.Mov.Reg(asm.R6, asm.R0),
				asm.BuiltinFunc(pause).Call(),
				asm.Mov.Reg(asm.R1, asm.R6),
				asm.Mov.Reg(asm.R2, asm.RFP),
				asm.Add.Imm(asm.R2, -8),
				asm.FnMapLookupElem.Call(),
				asm.JEq.Imm(asm.R0, 0, "fail"),
				asm.LoadMem(asm.R0, asm.R0, 0, asm.Word),
				asm.Return(),
				asm.Mov.Imm(asm.R0, -1).WithSymbol("fail"),
				asm.Return(),
			}))
			type result struct {
				r0  uint32
				err error
			}
			done := make(chan result)
			go func() {
				r, err := p.Run(&sim.RunOptions{CPU: 1})
				done <- result{r, err}
			}()
			<-entered
			// The program on CPU 1 holds the old map. Drop the last
			// handle on it and replace it: the update waits for the
			// programs running meanwhile (maybe_wait_bpf_programs), so
			// it returns only once the program is done.
			oldID, oldAddr := old.ID(), old.Address()
			old.Close()
			replaced := make(chan error, 1)
			go func() { replaced <- outer.Put(uint32(0), replacement) }()
			waitForIDGone(t, k, oldID)
			select {
			case err := <-replaced:
				t.Fatalf("the update returned (%v) while a program that could see the old map was running", err)
			case <-time.After(20 * time.Millisecond): // it keeps waiting
			}
			var id uint32
			if err := outer.Lookup(uint32(0), &id); err != nil || id != replacement.ID() {
				t.Errorf("outer[0] = map %d, %v; want the replacement, %d", id, err, replacement.ID())
			}
			for _, live := range k.MapIDs() {
				if live == oldID {
					t.Errorf("the old map's id %d is still listed without references", oldID)
				}
			}
			if _, ok := k.Memory().AreaOf(oldAddr); !ok {
				t.Fatal("the old map was freed while a program uses it")
			}
			close(release)
			r := <-done
			if r.err != nil || r.r0 != 111 {
				t.Errorf("the running program read %d, %v; want the old map's 111", r.r0, r.err)
			}
			wantErrno(t, "replace", <-replaced, 0)
			k.SynchronizeRCU()
			if _, ok := k.Memory().AreaOf(oldAddr); ok {
				t.Error("the old map is not freed after the grace period")
			}
			if got, err := p.Run(&sim.RunOptions{CPU: 1}); err != nil || got != 222 {
				t.Errorf("a later run read %d, %v; want the replacement's 222", got, err)
			}
		})
	}
}

const mapInMapObject = "testdata/mapinmap.bpf.o"

// Maps of maps declared in C with BTF (__array(values, ...)): cilium/ebpf
// reads the inner map template and the initial inner maps, which the
// collection creates first and stores by name.
func TestELFMapsOfMapsWithBTF(t *testing.T) {
	spec, err := ebpf.LoadCollectionSpec(mapInMapObject)
	if err != nil {
		t.Fatal(err)
	}
	if in := spec.Maps["outer_arr_dyn"].InnerMap; in == nil || in.Flags != uapi.BPF_F_INNER_MAP || in.MaxEntries != 1 {
		t.Fatalf("outer_arr_dyn's inner map template: %+v", in)
	}
	k := newKernel(t, nil)
	c, err := k.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sizes := map[string]uint32{"inner_map3": 3, "inner_map4": 3, "inner_map5": 5}
	for i, name := range []string{"inner_map3", "inner_map4", "inner_map5"} {
		var id uint32
		if err := c.Maps["outer_arr_dyn"].Lookup(uint32(i), &id); err != nil || id != c.Maps[name].ID() {
			t.Errorf("outer_arr_dyn[%d] = map %d, %v; want %s (%d)", i, id, err, name, c.Maps[name].ID())
		}
		for j := uint32(0); j < sizes[name]; j++ {
			if err := c.Maps[name].Put(j, uint32(10*i)+j); err != nil {
				t.Fatal(err)
			}
		}
	}
	lookup := c.Programs["lookup_dyn"]
	for i, name := range []string{"inner_map3", "inner_map4", "inner_map5"} {
		for j := uint32(0); j < 6; j++ {
			want := int64(-1)
			if j < sizes[name] {
				want = int64(10*i) + int64(j)
			}
			if got := int64(int32(runKeys(t, lookup, 0, uint32(i), j))); got != want {
				t.Errorf("lookup_dyn(%d, %d) = %d, want %d", i, j, got, want)
			}
		}
	}
	// A hash of maps starts empty; its inner arrays come from its
	// template's spec.
	count := c.Programs["count_fixed"]
	if got := int32(runKeys(t, count, 0, 77, 0)); got != -2 {
		t.Errorf("count_fixed on an empty hash of maps = %d, want -2", got)
	}
	innerSpec := spec.Maps["outer_hash"].InnerMap.Copy()
	innerSpec.Name = "inner" // bpfsim refuses names longer than 15 bytes
	inner, err := k.NewMap(innerSpec)
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	if err := c.Maps["outer_hash"].Update(uint32(77), inner, ebpf.UpdateNoExist); err != nil {
		t.Fatal(err)
	}
	for n := int64(1); n <= 3; n++ {
		if got := runKeys(t, count, 0, 77, 2); got != n {
			t.Errorf("count_fixed run %d = %d", n, got)
		}
	}
	var v uint64
	if err := inner.Lookup(uint32(2), &v); err != nil || v != 3 {
		t.Errorf("inner[2] = %d, %v; want 3", v, err)
	}
	var opened *sim.Map
	if err := c.Maps["outer_hash"].Lookup(uint32(77), &opened); err != nil || opened.ID() != inner.ID() {
		t.Fatalf("Lookup into **Map: %v", err)
	}
	defer opened.Close()
	if err := opened.Lookup(uint32(2), &v); err != nil || v != 3 {
		t.Errorf("inner[2] through the opened handle = %d, %v", v, err)
	}
}

func TestMapOfMapsTemplatesAndReferences(t *testing.T) {
	k := newKernel(t, nil)
	// A type without map_meta_equal cannot be an inner map: ENOTSUPP.
	if err := k.RegisterMapType(fifoType); err != nil {
		t.Fatal(err)
	}
	_, err := k.NewMap(outerSpec("outer", ebpf.ArrayOfMaps, 1, &ebpf.MapSpec{Name: "fifo", Type: fifoTypeID, ValueSize: 8, MaxEntries: 4}))
	wantErrno(t, "a queue of a type without MetaEqual as template", err, uapi.ENOTSUPP)
	_, err = k.NewMap(&ebpf.MapSpec{Name: "outer", Type: ebpf.HashOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	wantErrno(t, "no template", err, uapi.EBADF)
	_, err = k.NewMap(&ebpf.MapSpec{Name: "outer", Type: ebpf.ArrayOfMaps, KeySize: 4, ValueSize: 8, MaxEntries: 1, InnerMap: intArray("t", 1, 0)})
	wantErrno(t, "value_size 8", err, uapi.EINVAL)

	// The template lives only as long as the creation: its id goes.
	before := len(k.MapIDs())
	outer := newMapT(t, k, outerSpec("outer", ebpf.ArrayOfMaps, 2, intArray("tmpl", 1, 0)))
	if n := len(k.MapIDs()); n != before+1 {
		t.Errorf("%d maps after creating one outer map, want %d: the template is still alive", n, before+1)
	}
	// Each slot holds a reference on its inner map, until the outer map
	// is freed.
	inner, err := k.NewMap(intArray("inner", 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	innerID := inner.ID()
	wantErrno(t, "store in slot 0", outer.Put(uint32(0), inner), 0)
	wantErrno(t, "store in slot 1", outer.Put(uint32(1), inner), 0)
	inner.Close()
	k.SynchronizeRCU()
	reopened, err := k.NewMapFromID(innerID)
	if err != nil {
		t.Fatalf("the inner map went with its last handle although the outer map holds it: %v", err)
	}
	reopened.Close()
	outer.Close()
	k.SynchronizeRCU()
	if _, err := k.NewMapFromID(innerID); !errors.Is(err, uapi.ENOENT) {
		t.Errorf("the inner map outlived its outer map: %v", err)
	}
	// A handle on another kernel's map is no map of this one.
	other := newKernel(t, nil)
	foreign := newMapT(t, other, intArray("foreign", 1, 0))
	outer2 := newMapT(t, k, outerSpec("outer2", ebpf.HashOfMaps, 2, intArray("tmpl", 1, 0)))
	wantErrno(t, "a map of another kernel", outer2.Put(uint32(0), foreign), uapi.EBADF)
	wantErrno(t, "a closed handle", outer2.Put(uint32(0), reopened), uapi.EBADF)
}

// Programs on two CPUs read through an outer map while user space keeps
// replacing and deleting its inner maps and closing them: every read
// sees one of the inner maps whole (value 1 or 2) or an empty slot, never
// a freed map.
func TestInnerMapsReplacedUnderConcurrentPrograms(t *testing.T) {
	for _, typ := range []ebpf.MapType{ebpf.ArrayOfMaps, ebpf.HashOfMaps} {
		t.Run(typ.String(), func(t *testing.T) {
			k := newKernel(t, &sim.Options{CPUs: 3})
			outer := newMapT(t, k, outerSpec("outer", typ, 1, intArray("tmpl", 2, 0)))
			p := loadSyscall(t, k, innerLookupProgram(t, outer, asm.Word))
			stop := make(chan struct{})
			errs := make(chan error, 2)
			var wg sync.WaitGroup
			for cpu := 1; cpu <= 2; cpu++ {
				wg.Add(1)
				go func(cpu int) {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						res, err := p.Test(&sim.RunOptions{Context: keys{0, 1}, CPU: uint32(cpu)})
						if err != nil {
							errs <- err
							return
						}
						if r := int64(res.R0); r != 1 && r != 2 && r != -2 {
							errs <- fmt.Errorf("CPU %d read %d", cpu, r)
							return
						}
					}
				}(cpu)
			}
			for i := 0; i < 300; i++ {
				inner, err := k.NewMap(intArray("inner", 2, 0))
				if err != nil {
					t.Fatal(err)
				}
				if err := inner.Put(uint32(1), uint32(1+i%2)); err != nil {
					t.Fatal(err)
				}
				if err := outer.Put(uint32(0), inner); err != nil {
					t.Fatal(err)
				}
				inner.Close()
				if i%7 == 0 {
					if err := outer.Delete(uint32(0)); err != nil {
						t.Fatal(err)
					}
				}
			}
			close(stop)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			p.Close()
			outer.Close()
			k.SynchronizeRCU()
			if ids := k.MapIDs(); len(ids) != 0 {
				t.Errorf("maps left after everything was closed: %v", ids)
			}
		})
	}
}

// waitForIDGone waits until the map id is no longer listed: the inner map
// put by an update running on another goroutine.
func waitForIDGone(t *testing.T, k *sim.Kernel, id uint32) {
	t.Helper()
	for i := 0; ; i++ {
		if !slices.Contains(k.MapIDs(), id) {
			return
		}
		if i == 10000 {
			t.Fatalf("map %d is still listed", id)
		}
		time.Sleep(time.Millisecond)
	}
}
