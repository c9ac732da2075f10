//go:build linux

package kdiff

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Bloom filters with a zero seed in both kernels: the same answers to
// every test, false positives included, so the same bit array and hashes;
// and the same errnos for what a bloom filter refuses.
func TestBloomFilterMatchesKernel(t *testing.T) {
	k := linuxLikeSim(t)
	for _, c := range []struct {
		valueSize, maxEntries uint32
		extra                 uint64
	}{
		{4, 40, 0},  // jhash2, 5 functions
		{6, 40, 3},  // jhash of bytes, 3 functions
		{8, 500, 1}, // one function: many false positives
	} {
		t.Run(fmt.Sprintf("value %d bytes, %d entries, map_extra %d", c.valueSize, c.maxEntries, c.extra), func(t *testing.T) {
			spec := &ebpf.MapSpec{Type: ebpf.BloomFilter, ValueSize: c.valueSize, MaxEntries: c.maxEntries,
				MapExtra: c.extra, Flags: uapi.BPF_F_ZERO_SEED}
			km, sm := mapsInBoth(t, k, spec)
			worlds := [2]trieOps{km, sm}
			rng := rand.New(rand.NewPCG(uint64(c.valueSize), c.extra))
			value := func() []byte {
				v := make([]byte, c.valueSize)
				for i := range v {
					v[i] = byte(rng.IntN(8))
				}
				return v
			}
			positives := 0
			for i := range 4000 {
				var what string
				var errs [2]error
				switch op := rng.IntN(20); {
				case op < 6:
					v, flags := value(), ebpf.MapUpdateFlags(0)
					if rng.IntN(8) == 0 {
						flags = ebpf.MapUpdateFlags(1 + rng.IntN(3))
					}
					what = fmt.Sprintf("push %x flags %d", v, flags)
					for j, w := range worlds {
						errs[j] = w.Update(nil, v, flags)
					}
				case op < 18:
					v := value()
					what = fmt.Sprintf("peek %x", v)
					for j, w := range worlds {
						errs[j] = w.Lookup(nil, append([]byte(nil), v...))
					}
				default:
					what = "pop, delete, next key"
					out := make([]byte, c.valueSize)
					for j, w := range worlds {
						m := w.(interface{ LookupAndDelete(key, valueOut any) error })
						if errs[j] = m.LookupAndDelete(nil, out); errs[j] == nil {
							if errs[j] = w.Delete(nil); errs[j] == nil {
								errs[j] = w.NextKey(nil, out)
							}
						}
					}
				}
				if errnoOf(errs[0]) != errnoOf(errs[1]) || (errs[0] == nil) != (errs[1] == nil) {
					t.Fatalf("op %d, %s: kernel %v, bpfsim %v", i, what, errs[0], errs[1])
				}
				if what[:4] == "peek" && errs[0] == nil {
					positives++
				}
			}
			t.Logf("4,000 operations alike; %d peeks said maybe", positives)
		})
	}
}

// Push and peek calls become direct calls of the filter's functions, and a
// pop is refused, as in the kernel.
func TestBloomFilterCallsMatchKernel(t *testing.T) {
	k := linuxLikeSim(t)
	km, sm := mapsInBoth(t, k, &ebpf.MapSpec{Type: ebpf.BloomFilter, ValueSize: 8, MaxEntries: 4})
	prog := func(fd int, ids ...int32) []insn.Insn {
		p := []insn.Insn{movImm(insn.R1, 0), {Code: insn.STX | insn.MEM | insn.DW, Dst: insn.R10, Src: insn.R1, Off: -8}}
		for _, id := range ids {
			p = append(p, fpPlus(insn.R2, -8)...)
			p = append(p, lddwMap(insn.R1, fd)...)
			if id == uapi.FuncMapPushElem {
				p = append(p, movImm(insn.R3, 0))
			}
			p = append(p, callHelper(id))
		}
		return append(p, movImm(insn.R0, 0), insn.Insn{Code: insn.JMP | insn.EXIT})
	}
	sameXlated(t, k, loadInKernel(t, ebpf.SocketFilter, prog(km.FD(), uapi.FuncMapPushElem, uapi.FuncMapPeekElem)),
		loadInSim(t, k, ebpf.SocketFilter, prog(sm.FD(), uapi.FuncMapPushElem, uapi.FuncMapPeekElem)))
	spec := func(fd int) *ebpf.ProgramSpec {
		return specOf(t, ebpf.SocketFilter, prog(fd, uapi.FuncMapPopElem))
	}
	_, kerr := ebpf.NewProgram(spec(km.FD()))
	sp, serr := k.NewProgram(spec(sm.FD()))
	if serr == nil {
		sp.Close()
	}
	if kerr == nil || errnoOf(kerr) != errnoOf(serr) {
		t.Fatalf("pop from a bloom filter: kernel %v, bpfsim %v", kerr, serr)
	}
}
