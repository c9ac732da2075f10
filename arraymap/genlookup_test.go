package arraymap_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/mapstest"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func genLookup(t *testing.T, m *maps.Map) ([]insn.Insn, error) {
	t.Helper()
	g, ok := m.Ops.(maps.LookupGenerator)
	if !ok {
		t.Fatalf("%s maps do not generate lookups", m.Type.Name)
	}
	return g.GenLookup(func(name string) (insn.Insn, error) {
		return insn.Insn{}, fmt.Errorf("an array lookup calls %s", name)
	})
}

func dumpLines(insns []insn.Insn) string {
	var b strings.Builder
	for i := range insns {
		fmt.Fprintf(&b, "%d: %s\n", i, insn.Format(insns, i, nil))
	}
	return b.String()
}

// The sequences of array_map_gen_lookup and percpu_array_map_gen_lookup
// for a loader that bypasses Spectre v1 (root), with bpfsim's
// offsetof(struct bpf_array, value).
func TestGenLookupIsTheKernelsSequence(t *testing.T) {
	k := mapstest.NewKernel(2)
	for _, c := range []struct {
		name string
		attr maps.Attr
		want string
	}{
		{"elements of a power of two", maps.Attr{Type: uapi.MapTypeArray, KeySize: 4, ValueSize: 12, MaxEntries: 5},
			"0: (07) r1 += 272\n1: (61) r0 = *(u32 *)(r2 +0)\n2: (35) if r0 >= 0x5 goto pc+3\n3: (67) r0 <<= 4\n" +
				"4: (0f) r0 += r1\n5: (05) goto pc+1\n6: (b7) r0 = 0\n"},
		{"other elements", maps.Attr{Type: uapi.MapTypeArray, KeySize: 4, ValueSize: 20, MaxEntries: 7},
			"0: (07) r1 += 272\n1: (61) r0 = *(u32 *)(r2 +0)\n2: (35) if r0 >= 0x7 goto pc+3\n3: (27) r0 *= 24\n" +
				"4: (0f) r0 += r1\n5: (05) goto pc+1\n6: (b7) r0 = 0\n"},
		{"per-CPU", maps.Attr{Type: uapi.MapTypePercpuArray, KeySize: 4, ValueSize: 4, MaxEntries: 9},
			"0: (07) r1 += 272\n1: (61) r0 = *(u32 *)(r2 +0)\n2: (35) if r0 >= 0x9 goto pc+5\n3: (67) r0 <<= 3\n" +
				"4: (0f) r0 += r1\n5: (79) r0 = *(u64 *)(r0 +0)\n6: (bf) r0 = &(void __percpu *)(r0)\n7: (05) goto pc+1\n8: (b7) r0 = 0\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			seq, err := genLookup(t, newArray(t, k, c.attr))
			if err != nil {
				t.Fatal(err)
			}
			if got := dumpLines(seq); got != c.want {
				t.Errorf("got\n%s\nwant\n%s", got, c.want)
			}
		})
	}
}

// An inner map's size may change from one map to the next, so its
// lookups are not inlined.
func TestGenLookupDeclinesInnerMaps(t *testing.T) {
	k := mapstest.NewKernel(1)
	m := newArray(t, k, maps.Attr{Type: uapi.MapTypeArray, KeySize: 4, ValueSize: 8, MaxEntries: 3, Flags: uapi.BPF_F_INNER_MAP})
	if _, err := genLookup(t, m); !errors.Is(err, uapi.EOPNOTSUPP) {
		t.Fatalf("got %v, want EOPNOTSUPP", err)
	}
}

// Run in the interpreter on each CPU, the sequence finds what LookupElem
// finds, for every index and past the end.
func TestGenLookupFindsWhatLookupElemFinds(t *testing.T) {
	const cpus = 3
	k := mapstest.NewKernel(cpus)
	stackBase, err := k.Memory().Vmalloc(interp.StackSize, mem.PermRW, "bpf_stack")
	if err != nil {
		t.Fatal(err)
	}
	stack, err := k.Memory().Bytes(stackBase, interp.StackSize)
	if err != nil {
		t.Fatal(err)
	}
	for _, attr := range []maps.Attr{
		{Type: uapi.MapTypeArray, KeySize: 4, ValueSize: 12, MaxEntries: 5},
		{Type: uapi.MapTypeArray, KeySize: 4, ValueSize: 20, MaxEntries: 7},
		{Type: uapi.MapTypePercpuArray, KeySize: 4, ValueSize: 8, MaxEntries: 4},
	} {
		m := newArray(t, k, attr)
		seq, err := genLookup(t, m)
		if err != nil {
			t.Fatal(err)
		}
		// r1 = the map, r2 = the key's address, as at a call site.
		prog := append([]insn.Insn{}, seq...)
		prog = append(prog, insn.Insn{Code: insn.JMP | insn.EXIT})
		code, err := interp.Compile(prog, nil)
		if err != nil {
			t.Fatal(err)
		}
		for cpu := 0; cpu < cpus; cpu++ {
			mc, err := interp.NewMachine(cpu, k.Memory().NewTLB(), stackBase, stack)
			if err != nil {
				t.Fatal(err)
			}
			mc.PercpuOffset = k.Percpu().Offset(cpu)
			keyAddr := stackBase + 64
			for idx := uint32(0); idx <= attr.MaxEntries+1; idx++ {
				if err := k.Memory().Write(keyAddr, key(idx)); err != nil {
					t.Fatal(err)
				}
				want, err := m.Ops.LookupElem(cpu, key(idx))
				if err != nil {
					t.Fatal(err)
				}
				got, err := mc.Run(code, m.Addr, keyAddr)
				if err != nil || got != want {
					t.Errorf("%s[%d] on CPU %d: %#x, %v; LookupElem gives %#x", m.Type.Name, idx, cpu, got, err, want)
				}
			}
		}
	}
}
