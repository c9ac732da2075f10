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

// Random pushes (with every flag), peeks, pops, deletes and key walks on
// the same queue and stack in this machine's kernel and in bpfsim: every
// errno and every value must agree.
func TestQueueAndStackMatchKernel(t *testing.T) {
	k := linuxLikeSim(t)
	for _, typ := range []ebpf.MapType{ebpf.Queue, ebpf.Stack} {
		t.Run(typ.String(), func(t *testing.T) {
			km, sm := mapsInBoth(t, k, &ebpf.MapSpec{Type: typ, ValueSize: 4, MaxEntries: 5})
			worlds := [2]trieOps{km, sm}
			rng := rand.New(rand.NewPCG(uint64(typ), 1))
			for i := range 3000 {
				var what string
				var res [2]string
				var errs [2]error
				switch op := rng.IntN(10); {
				case op < 4:
					v, flags := rng.Uint32(), ebpf.MapUpdateFlags(rng.IntN(4))
					what = fmt.Sprintf("push %d flags %d", v, flags)
					for j, w := range worlds {
						errs[j] = w.Update(nil, v, flags)
					}
				case op < 6:
					what = "peek"
					for j, w := range worlds {
						var v uint32
						errs[j] = w.Lookup(nil, &v)
						res[j] = fmt.Sprint(v)
					}
				case op < 9:
					what = "pop"
					var v [2]uint32
					errs[0] = km.LookupAndDelete(nil, &v[0])
					errs[1] = sm.LookupAndDelete(nil, &v[1])
					res[0], res[1] = fmt.Sprint(v[0]), fmt.Sprint(v[1])
				default:
					what = "delete, next key"
					errs[0], errs[1] = km.Delete(nil), sm.Delete(nil)
					var nk [2]uint32
					if errnoOf(errs[0]) == errnoOf(errs[1]) {
						errs[0], errs[1] = km.NextKey(nil, &nk[0]), sm.NextKey(nil, &nk[1])
					}
				}
				if errnoOf(errs[0]) != errnoOf(errs[1]) || (errs[0] == nil) != (errs[1] == nil) || res[0] != res[1] {
					t.Fatalf("op %d, %s: kernel %q %v, bpfsim %q %v", i, what, res[0], errs[0], res[1], errs[1])
				}
			}
		})
	}
}

// Push, pop and peek calls become direct calls of the map type's functions,
// as in the kernel.
func TestQueueAndStackCallsXlateAsTheKernel(t *testing.T) {
	k := linuxLikeSim(t)
	for _, typ := range []ebpf.MapType{ebpf.Queue, ebpf.Stack} {
		t.Run(typ.String(), func(t *testing.T) {
			km, sm := mapsInBoth(t, k, &ebpf.MapSpec{Type: typ, ValueSize: 8, MaxEntries: 4})
			prog := func(fd int) []insn.Insn {
				p := []insn.Insn{movImm(insn.R1, 0), {Code: insn.STX | insn.MEM | insn.DW, Dst: insn.R10, Src: insn.R1, Off: -8}}
				for _, id := range []int32{uapi.FuncMapPushElem, uapi.FuncMapPeekElem, uapi.FuncMapPopElem} {
					p = append(p, fpPlus(insn.R2, -8)...)
					p = append(p, lddwMap(insn.R1, fd)...)
					if id == uapi.FuncMapPushElem {
						p = append(p, movImm(insn.R3, 0))
					}
					p = append(p, callHelper(id))
				}
				return append(p, movImm(insn.R0, 0), insn.Insn{Code: insn.JMP | insn.EXIT})
			}
			sameXlated(t, k, loadInKernel(t, ebpf.SocketFilter, prog(km.FD())), loadInSim(t, k, ebpf.SocketFilter, prog(sm.FD())))
		})
	}
}
