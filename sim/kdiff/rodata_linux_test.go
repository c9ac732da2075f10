//go:build linux

package kdiff

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// A load from a map programs cannot write (BPF_F_RDONLY_PROG) and user
// space has frozen, at a constant offset, gives the verifier the value
// itself (bpf_map_direct_read): a branch on it is decided, and the branch
// not taken is neither checked nor kept. Each case has a dead branch that
// reads an uninitialised register, so that exploring it fails the load:
// the verdict, the errno and, when both accept, the xlated code must be the
// kernel's.
func TestReadOnlyMapValuesAreKnownLikeInTheKernel(t *testing.T) {
	k := linuxLikeSim(t)
	// The value: a u32 7 at offset 0, an s32 -16 at offset 4.
	value := []byte{7, 0, 0, 0, 0xf0, 0xff, 0xff, 0xff}
	// branchOn loads the word at off (sign-extending with ldsx) from the
	// value r1 points to, and leaves the program only through "ok" if
	// it is want.
	branchOn := func(off int16, ldsx bool, want int32) asm.Instructions {
		load := asm.LoadMem(asm.R2, asm.R1, off, asm.Word)
		if ldsx {
			load = asm.LoadMemSX(asm.R2, asm.R1, off, asm.Word)
		}
		return asm.Instructions{
			load,
			asm.JEq.Imm(asm.R2, want, "ok"),
			asm.Mov.Reg(asm.R0, asm.R5), // R5 !read_ok, if explored
			asm.Return(),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("ok"),
			asm.Return(),
		}
	}
	direct := func(body asm.Instructions) func(fd int) asm.Instructions {
		return func(fd int) asm.Instructions {
			return append(asm.Instructions{asm.LoadMapValue(asm.R1, fd, 0)}, body...)
		}
	}
	lookedUp := func(body asm.Instructions) func(fd int) asm.Instructions {
		return func(fd int) asm.Instructions {
			return append(asm.Instructions{
				asm.StoreImm(asm.RFP, -4, 0, asm.Word),
				asm.LoadMapPtr(asm.R1, fd),
				asm.Mov.Reg(asm.R2, asm.RFP),
				asm.Add.Imm(asm.R2, -4),
				asm.FnMapLookupElem.Call(),
				asm.JNE.Imm(asm.R0, 0, "found"),
				asm.Return(),
				asm.Mov.Reg(asm.R1, asm.R0).WithSymbol("found"),
			}, body...)
		}
	}
	const rdonly = uapi.BPF_F_RDONLY_PROG
	for _, c := range []struct {
		name    string
		flags   uint32
		entries uint32
		freeze  bool
		prog    func(fd int) asm.Instructions
	}{
		{"frozen read-only global", rdonly, 1, true, direct(branchOn(0, false, 7))},
		{"frozen read-only global, sign-extending load", rdonly, 1, true, direct(branchOn(4, true, -16))},
		{"frozen read-only global, through a lookup", rdonly, 1, true, lookedUp(branchOn(0, false, 7))},
		{"read-only global not frozen", rdonly, 1, false, direct(branchOn(0, false, 7))},
		{"frozen global programs may write", 0, 1, true, direct(branchOn(0, false, 7))},
		{"frozen read-only array of two", rdonly, 2, true, lookedUp(branchOn(0, false, 7))},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: c.entries, Flags: c.flags}
			km, sm := mapsInBoth(t, k, spec)
			for _, put := range []func(k, v any) error{km.Put, sm.Put} {
				if err := put(uint32(0), value); err != nil {
					t.Fatal(err)
				}
			}
			if c.freeze {
				if err := km.Freeze(); err != nil {
					t.Fatal(err)
				}
				if err := sm.Freeze(); err != nil {
					t.Fatal(err)
				}
			}
			kp, kerr := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.RawTracepoint, License: "GPL", Instructions: c.prog(km.FD())})
			sp, serr := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.RawTracepoint, License: "GPL", Instructions: c.prog(sm.FD())})
			if errnoOf(kerr) != errnoOf(serr) {
				t.Fatalf("kernel: %v\nbpfsim: %v", kerr, serr)
			}
			if kerr != nil {
				t.Logf("both refuse (%v)", errnoOf(kerr))
				return
			}
			defer kp.Close()
			defer sp.Close()
			kx, err := KernelXlated(kp)
			if err != nil {
				t.Fatal(err)
			}
			sameXlated(t, k, kx, sp.Instructions())
			t.Logf("both accept:\n%s", insn.Dump(sp.Instructions(), nil))
		})
	}
}
