//go:build linux

package kdiff

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// trieOps are the user-space operations on an LPM trie, in either kernel.
type trieOps interface {
	Update(key, value any, flags ebpf.MapUpdateFlags) error
	Lookup(key, valueOut any) error
	Delete(key any) error
	NextKey(key, nextKeyOut any) error
}

// Random updates (every flag, overlapping prefixes, lengths past the
// trie's), deletes, lookups and walks with get_next_key on the same LPM
// trie in this machine's kernel and in bpfsim: every errno, every value
// found and every key order must agree.
func TestLPMTrieMatchesKernel(t *testing.T) {
	k := linuxLikeSim(t)
	for _, c := range []struct {
		dataSize, maxEntries uint32
		ops                  int
	}{
		{1, 6, 3000},   // one byte of address: prefixes collide all the time
		{2, 40, 3000},  // a small address space
		{4, 200, 5000}, // IPv4, addresses from a few /8s
	} {
		t.Run(fmt.Sprintf("data %d bytes, %d entries", c.dataSize, c.maxEntries), func(t *testing.T) {
			spec := &ebpf.MapSpec{Type: ebpf.LPMTrie, KeySize: 4 + c.dataSize, ValueSize: 4,
				MaxEntries: c.maxEntries, Flags: uapi.BPF_F_NO_PREALLOC}
			km, sm := mapsInBoth(t, k, spec)
			worlds := [2]trieOps{km, sm}
			rng := rand.New(rand.NewPCG(uint64(c.dataSize), 7))
			maxBits := 8 * c.dataSize
			randKey := func() []byte {
				key := make([]byte, 4+c.dataSize)
				bits := uint32(rng.IntN(int(maxBits) + 1))
				if rng.IntN(20) == 0 {
					bits = maxBits + 1 + uint32(rng.IntN(3)) // invalid
				}
				binary.LittleEndian.PutUint32(key, bits)
				for i := range c.dataSize {
					key[4+i] = byte(rng.IntN(4) * 64) // few distinct bytes
				}
				if c.dataSize > 1 {
					key[4+c.dataSize-1] = byte(rng.IntN(256))
				}
				return key
			}
			walk := func(w trieOps, from []byte) (string, error) {
				out := ""
				next := make([]byte, 4+c.dataSize)
				var cur any
				if from != nil {
					cur = from
				}
				for range c.maxEntries + 2 {
					if err := w.NextKey(cur, next); err != nil {
						return out, err
					}
					out += fmt.Sprintf(" %x", next)
					cur = append([]byte(nil), next...)
				}
				return out, nil
			}
			for i := range c.ops {
				var what string
				var res [2]string
				var errs [2]error
				switch op := rng.IntN(10); {
				case op < 5:
					key, v := randKey(), rng.Uint32()
					flags := ebpf.MapUpdateFlags(rng.IntN(4))
					what = fmt.Sprintf("update %x flags %d", key, flags)
					for j, w := range worlds {
						errs[j] = w.Update(key, v, flags)
					}
				case op < 7:
					key := randKey()
					what = fmt.Sprintf("delete %x", key)
					for j, w := range worlds {
						errs[j] = w.Delete(key)
					}
				case op < 9:
					key := randKey()
					what = fmt.Sprintf("lookup %x", key)
					for j, w := range worlds {
						var v uint32
						errs[j] = w.Lookup(key, &v)
						res[j] = fmt.Sprint(v)
					}
				default:
					var from []byte
					if rng.IntN(2) == 0 {
						from = randKey()
					}
					what = fmt.Sprintf("walk from %x", from)
					for j, w := range worlds {
						res[j], errs[j] = walk(w, from)
					}
				}
				if errnoOf(errs[0]) != errnoOf(errs[1]) || (errs[0] == nil) != (errs[1] == nil) || res[0] != res[1] {
					t.Fatalf("op %d, %s: kernel %q %v, bpfsim %q %v", i, what, res[0], errs[0], res[1], errs[1])
				}
			}
			full, _ := walk(worlds[0], nil)
			t.Logf("%d operations alike; the trie ends with:%s", c.ops, full)
		})
	}
}

// An XDP program classifying packets by source address through an LPM
// trie (the kernel calls trie_lookup_elem directly): the same verdicts in
// the kernel and in bpfsim, interpreted and JITed, for addresses in and
// around a random set of prefixes.
func TestLPMTrieLookupsFromProgramsMatchKernel(t *testing.T) {
	if _, err := OpenKernel(); err != nil {
		t.Skipf("kernel comparison skipped: this machine cannot load BPF programs: %v", err)
	}
	spec := &ebpf.MapSpec{Type: ebpf.LPMTrie, KeySize: 8, ValueSize: 4, MaxEntries: 64, Flags: uapi.BPF_F_NO_PREALLOC}
	rng := rand.New(rand.NewPCG(3, 4))
	type rule struct {
		key []byte
		v   uint32
	}
	var rules []rule
	for range 64 {
		key := binary.LittleEndian.AppendUint32(nil, uint32(8+rng.IntN(25)))
		key = append(key, 10, byte(rng.IntN(4)), byte(rng.IntN(256)), byte(rng.IntN(256)))
		rules = append(rules, rule{key, uint32(rng.IntN(4))}) // an XDP action
	}
	var packets [][]byte
	for range 300 {
		pkt := make([]byte, 64)
		pkt[12], pkt[13] = 0x08, 0x00
		pkt[26], pkt[27], pkt[28], pkt[29] = byte(9+rng.IntN(2)), byte(rng.IntN(4)), byte(rng.IntN(256)), byte(rng.IntN(256))
		packets = append(packets, pkt)
	}
	prog := func(fd int) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
			asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, 34),
			asm.JGT.Reg(asm.R4, asm.R3, "pass"),
			asm.StoreImm(asm.RFP, -8, 32, asm.Word),
			asm.LoadMem(asm.R4, asm.R2, 26, asm.Word),
			asm.StoreMem(asm.RFP, -4, asm.R4, asm.Word),
			asm.LoadMapPtr(asm.R1, fd),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -8),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "pass"),
			asm.LoadMem(asm.R0, asm.R0, 0, asm.Word),
			asm.Return(),
			asm.Mov.Imm(asm.R0, 2).WithSymbol("pass"),
			asm.Return(),
		}
	}
	verdicts := func(w trieOps, run func(pkt []byte) (uint32, error)) []uint32 {
		for _, r := range rules {
			if err := w.Update(r.key, r.v, ebpf.UpdateAny); err != nil {
				t.Fatal(err)
			}
		}
		out := make([]uint32, len(packets))
		for i, pkt := range packets {
			v, err := run(pkt)
			if err != nil {
				t.Fatal(err)
			}
			out[i] = v
		}
		return out
	}
	km, err := ebpf.NewMap(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	kp, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: prog(km.FD())})
	if err != nil {
		t.Fatal(err)
	}
	defer kp.Close()
	want := verdicts(km, func(pkt []byte) (uint32, error) { return kp.Run(&ebpf.RunOptions{Data: pkt}) })
	counts := map[uint32]int{}
	for _, v := range want {
		counts[v]++
	}
	t.Logf("the kernel's verdicts, by action: %v", counts)
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		k, err := sim.NewKernel(&sim.Options{Runtime: rt})
		if err != nil {
			t.Fatal(err)
		}
		sm, err := k.NewMap(spec)
		if err != nil {
			t.Fatal(err)
		}
		sp, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: prog(sm.FD())})
		if err != nil {
			t.Fatal(err)
		}
		got := verdicts(sm, func(pkt []byte) (uint32, error) { return sp.Run(&sim.RunOptions{Data: pkt}) })
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%v: verdicts differ\nkernel: %v\nbpfsim: %v", rt, want, got)
		}
		sp.Close()
		sm.Close()
	}
}
