package hashmap_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/bpfsim/bpfsim/hashmap"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/mapstest"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// elemLookupImm is the call immediate the test's kernel gives
// __htab_map_lookup_elem.
const elemLookupImm = 0x4000

func genLookup(t *testing.T, m *maps.Map) []insn.Insn {
	t.Helper()
	g, ok := m.Ops.(maps.LookupGenerator)
	if !ok {
		t.Fatalf("%s maps do not generate lookups", m.Type.Name)
	}
	seq, err := g.GenLookup(func(name string) (insn.Insn, error) {
		if name != hashmap.ElemLookupFunc {
			return insn.Insn{}, fmt.Errorf("a hash lookup calls %s", name)
		}
		return insn.Insn{Code: insn.JMP | insn.CALL, Imm: elemLookupImm}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func TestGenLookupIsTheKernelsSequence(t *testing.T) {
	k := mapstest.NewKernel(2)
	for _, c := range []struct {
		name string
		attr maps.Attr
		want string
	}{
		{"hash", maps.Attr{Type: uapi.MapTypeHash, KeySize: 6, ValueSize: 8, MaxEntries: 4},
			"0: (85) call unknown#16384\n1: (15) if r0 == 0x0 goto pc+1\n2: (07) r0 += 56\n"},
		{"per-CPU hash", maps.Attr{Type: uapi.MapTypePercpuHash, KeySize: 12, ValueSize: 8, MaxEntries: 4},
			"0: (85) call unknown#16384\n1: (15) if r0 == 0x0 goto pc+3\n2: (07) r0 += 64\n" +
				"3: (79) r0 = *(u64 *)(r0 +0)\n4: (bf) r0 = &(void __percpu *)(r0)\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newMap(t, k, c.attr)
			var b strings.Builder
			seq := genLookup(t, m)
			for i := range seq {
				fmt.Fprintf(&b, "%d: %s\n", i, insn.Format(seq, i, nil))
			}
			if got := b.String(); got != c.want {
				t.Errorf("got\n%s\nwant\n%s", got, c.want)
			}
		})
	}
}

// Run in the interpreter, with __htab_map_lookup_elem served by
// LookupElemAddr, the sequence finds what LookupElem finds.
func TestGenLookupFindsWhatLookupElemFinds(t *testing.T) {
	const cpus = 2
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
		{Type: uapi.MapTypeHash, KeySize: 6, ValueSize: 8, MaxEntries: 8},
		{Type: uapi.MapTypePercpuHash, KeySize: 4, ValueSize: 12, MaxEntries: 8},
	} {
		m := newMap(t, k, attr)
		keyOf := func(i int) []byte {
			b := make([]byte, m.KeySize)
			b[0] = byte(i)
			return b
		}
		for i := 0; i < 5; i++ {
			if err := m.Ops.UpdateElem(0, keyOf(i), make([]byte, m.ValueSize), 0); err != nil {
				t.Fatal(err)
			}
		}
		find := &interp.Helper{Name: hashmap.ElemLookupFunc, Fn: func(mc *interp.Machine, r1, r2, _, _, _ uint64) (uint64, error) {
			key := make([]byte, m.KeySize)
			if err := mc.ReadMem(r2, key); err != nil {
				return 0, err
			}
			return m.Ops.(hashmap.ElemLookuper).LookupElemAddr(key), nil
		}}
		prog := append(genLookup(t, m), insn.Insn{Code: insn.JMP | insn.EXIT})
		code, err := interp.Compile(prog, func(imm int32) (*interp.Helper, error) {
			if imm != elemLookupImm {
				return nil, fmt.Errorf("call of %d", imm)
			}
			return find, nil
		})
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
			for i := 0; i < 8; i++ { // 5 hits, 3 misses
				if err := k.Memory().Write(keyAddr, keyOf(i)); err != nil {
					t.Fatal(err)
				}
				want, err := m.Ops.LookupElem(cpu, keyOf(i))
				if err != nil {
					t.Fatal(err)
				}
				got, err := mc.Run(code, m.Addr, keyAddr)
				if err != nil || got != want {
					t.Errorf("%s key %d on CPU %d: %#x, %v; LookupElem gives %#x", m.Type.Name, i, cpu, got, err, want)
				}
			}
		}
	}
}
