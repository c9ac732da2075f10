//go:build linux

package kdiff

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
)

// The fix-up pass turns a bpf_redirect_map call whose map it knows into a
// direct call of the map type's redirect (do_misc_fixups:
// ops->map_redirect), and leaves the helper when two maps meet at the
// call: both programs must come out as the kernel's, and still redirect
// as its.
func TestRedirectMapCallsAreTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	spec := &ebpf.MapSpec{Type: ebpf.DevMap, KeySize: 4, ValueSize: 4, MaxEntries: 4}
	km, sm := mapsInBoth(t, k, spec)
	km2, sm2 := mapsInBoth(t, k, spec)
	if err := km.Put(uint32(0), uint32(1)); err != nil {
		t.Fatal(err)
	}
	if err := sm.Put(uint32(0), uint32(1)); err != nil {
		t.Fatal(err)
	}
	oneMap := func(fd, _ int) asm.Instructions {
		return asm.Instructions{asm.LoadMapPtr(asm.R1, fd), asm.Mov.Imm(asm.R2, 0), asm.Mov.Imm(asm.R3, 0),
			asm.FnRedirectMap.Call(), asm.Return()}
	}
	// The map depends on the packet's length: the call site sees two.
	twoMaps := func(fd, fd2 int) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 4, asm.Word), asm.LoadMem(asm.R3, asm.R1, 0, asm.Word), asm.Sub.Reg(asm.R2, asm.R3),
			asm.LoadMapPtr(asm.R1, fd), asm.JGT.Imm(asm.R2, 50, "call"), asm.LoadMapPtr(asm.R1, fd2),
			asm.Mov.Imm(asm.R2, 0).WithSymbol("call"), asm.Mov.Imm(asm.R3, 0), asm.FnRedirectMap.Call(), asm.Return(),
		}
	}
	for name, prog := range map[string]func(int, int) asm.Instructions{"one map": oneMap, "two maps": twoMaps} {
		t.Run(name, func(t *testing.T) {
			kp, sp := loadXDPXlatedAlike(t, k, prog(km.FD(), km2.FD()), prog(sm.FD(), sm2.FD()))
			for _, n := range []int{60, 40} {
				pkt := make([]byte, n)
				kr, kErr := kp.Run(&ebpf.RunOptions{Data: pkt})
				sr, sErr := sp.Run(&sim.RunOptions{Data: pkt})
				if kErr != nil || sErr != nil || kr != sr {
					t.Errorf("%d-byte packet: kernel %d (%v); bpfsim %d (%v)", n, kr, kErr, sr, sErr)
				}
			}
		})
	}
}

// loadXDPXlatedAlike loads an XDP program in both kernels (kInsns naming
// the kernel's maps, sInsns bpfsim's), checks that they come out as the
// same xlated code, and returns both, closed when the test ends.
func loadXDPXlatedAlike(t *testing.T, k *sim.Kernel, kInsns, sInsns asm.Instructions) (*ebpf.Program, *sim.Program) {
	t.Helper()
	kp, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: kInsns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kp.Close() })
	sp, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: sInsns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	kx, err := KernelXlated(kp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := SameXlated(k, kx, sp.Instructions()); errors.Is(err, ErrNoKernelSymbols) {
		t.Skipf("kernel-differential test skipped: %v", err)
	} else if err != nil {
		t.Error(err)
	}
	return kp, sp
}
