//go:build linux

package kdiff

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
)

// TestDevmapMatchesKernel creates devmaps of every shape in both kernels,
// with the same errnos and flags (BPF_F_RDONLY_PROG added); updates,
// looks up, walks and deletes their slots from user space with the same
// results; and redirects XDP packets through them with bpf_redirect_map
// for keys set, empty, past the end and wider than 32 bits, under every
// flag, with the same verdicts; and refuses what programs may not do with
// a devmap alike.
func TestDevmapMatchesKernel(t *testing.T) {
	k := linuxLikeSim(t)
	for _, c := range []struct{ key, value, max, flags uint32 }{
		{4, 4, 4, 0}, {4, 8, 4, 0}, {4, 6, 4, 0}, {4, 12, 4, 0}, {8, 4, 4, 0}, {4, 4, 0, 0},
		{4, 4, 4, 0x80}, {4, 4, 4, 1}, {4, 4, 4, 4}, {4, 4, 4, 8}, {4, 4, 4, 0x10}, {4, 4, 4, 0x100},
	} {
		spec := &ebpf.MapSpec{Type: ebpf.DevMap, KeySize: c.key, ValueSize: c.value, MaxEntries: c.max, Flags: c.flags}
		km, kErr := ebpf.NewMap(spec)
		sm, sErr := k.NewMap(spec)
		if (kErr == nil) != (sErr == nil) || errnoOf(kErr) != errnoOf(sErr) {
			t.Errorf("create %+v: kernel %v; bpfsim %v", c, kErr, sErr)
		}
		if kErr == nil && sErr == nil {
			// BPF_F_RDONLY and BPF_F_WRONLY are the fd's, not the
			// map's: neither kernel's flags show them.
			ki, _ := km.Info()
			if sf := sm.Flags(); ki.Flags != sf {
				t.Errorf("create %+v: flags %#x in the kernel, %#x in bpfsim", c, ki.Flags, sf)
			}
		}
		if km != nil {
			km.Close()
		}
		if sm != nil {
			sm.Close()
		}
	}

	spec := &ebpf.MapSpec{Type: ebpf.DevMap, KeySize: 4, ValueSize: 8, MaxEntries: 4}
	km, sm := mapsInBoth(t, k, spec)
	val := func(ifindex uint32, fd int32) []byte {
		return []byte{byte(ifindex), byte(ifindex >> 8), byte(ifindex >> 16), byte(ifindex >> 24),
			byte(fd), byte(fd >> 8), byte(fd >> 16), byte(fd >> 24)}
	}
	both := func(what string, kErr, sErr error) {
		t.Helper()
		if (kErr == nil) != (sErr == nil) || errnoOf(kErr) != errnoOf(sErr) {
			t.Errorf("%s: kernel %v; bpfsim %v", what, kErr, sErr)
		}
	}
	for _, c := range []struct {
		key   uint32
		value []byte
		flags ebpf.MapUpdateFlags
	}{
		{0, val(1, 0), 0}, {1, val(0, 0), 0}, {2, val(999, 0), 0}, {4, val(1, 0), 0}, {0, val(1, 0), 1},
		{0, val(1, 0), 2}, {0, val(1, 0), 4}, {3, val(1, -1), 0}, {1, val(0, 5), 0}, {2, val(1, 0), 2},
	} {
		both(fmt.Sprintf("update %d % x flags %d", c.key, c.value, c.flags), km.Update(c.key, c.value, c.flags), sm.Update(c.key, c.value, c.flags))
	}
	for _, key := range []uint32{0, 1, 2, 3, 4, 99} {
		var kv, sv [8]byte
		kErr, sErr := km.Lookup(key, &kv), sm.Lookup(key, &sv)
		both(fmt.Sprintf("lookup %d", key), kErr, sErr)
		if kv != sv {
			t.Errorf("lookup %d: kernel % x, bpfsim % x", key, kv, sv)
		}
	}
	for _, key := range []any{nil, uint32(0), uint32(2), uint32(3), uint32(99)} {
		var kn, sn uint32
		kErr, sErr := km.NextKey(key, &kn), sm.NextKey(key, &sn)
		both(fmt.Sprintf("next key after %v", key), kErr, sErr)
		if kn != sn {
			t.Errorf("next key after %v: kernel %d, bpfsim %d", key, kn, sn)
		}
	}
	both("delete 1", km.Delete(uint32(1)), sm.Delete(uint32(1)))
	both("delete 4", km.Delete(uint32(4)), sm.Delete(uint32(4)))
	both("delete 3", km.Delete(uint32(3)), sm.Delete(uint32(3)))

	// Programs: slot 0 holds lo, 1-3 are empty.
	pkt := make([]byte, 60)
	for _, key := range []int64{0, 1, 3, 4, 99, 1 << 32, -1} {
		for _, flags := range []int64{0, 1, 2, 3, 4, 8, 16, 24, 32, 1 << 32} {
			insns := func(fd int) asm.Instructions {
				return asm.Instructions{asm.LoadMapPtr(asm.R1, fd), asm.LoadImm(asm.R2, key, asm.DWord),
					asm.LoadImm(asm.R3, flags, asm.DWord), asm.FnRedirectMap.Call(), asm.Return()}
			}
			kr, sr, kErr, sErr := runInBoth(k, ebpf.XDP, insns(km.FD()), insns(sm.FD()), pkt)
			if kErr != nil || sErr != nil || kr != sr {
				t.Errorf("redirect_map key %#x flags %#x: kernel %d (%v); bpfsim %d (%v)", key, flags, kr, kErr, sr, sErr)
			}
		}
	}
	lookup := func(fd int, tail ...asm.Instruction) asm.Instructions {
		return append(asm.Instructions{asm.Mov.Imm(asm.R7, 0), asm.StoreMem(asm.RFP, -4, asm.R7, asm.Word),
			asm.LoadMapPtr(asm.R1, fd), asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -4), asm.FnMapLookupElem.Call(),
			asm.Mov.Reg(asm.R6, asm.R0), asm.Mov.Imm(asm.R0, 77), asm.JEq.Imm(asm.R6, 0, "out")}, tail...)
	}
	for name, tail := range map[string][]asm.Instruction{
		"read the ifindex":    {asm.LoadMem(asm.R0, asm.R6, 0, asm.Word), asm.Return().WithSymbol("out")},
		"read the prog id":    {asm.LoadMem(asm.R0, asm.R6, 4, asm.Word), asm.Return().WithSymbol("out")},
		"read past the value": {asm.LoadMem(asm.R0, asm.R6, 8, asm.Word), asm.Return().WithSymbol("out")},
		"write the value":     {asm.StoreMem(asm.R6, 0, asm.R7, asm.Word), asm.Return().WithSymbol("out")},
	} {
		kr, sr, kErr, sErr := runInBoth(k, ebpf.XDP, lookup(km.FD(), tail...), lookup(sm.FD(), tail...), pkt)
		if (kErr == nil) != (sErr == nil) || kr != sr || kErr != nil && !strings.Contains(sErr.Error(), LastLogLine(kErr)) {
			t.Errorf("lookup and %s: kernel %d (%v); bpfsim %d (%v)", name, kr, kErr, sr, sErr)
		}
	}
	update := func(fd int) asm.Instructions {
		return asm.Instructions{asm.Mov.Imm(asm.R7, 0), asm.StoreMem(asm.RFP, -8, asm.R7, asm.DWord),
			asm.LoadMapPtr(asm.R1, fd), asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -8), asm.Mov.Reg(asm.R3, asm.R2),
			asm.Mov.Imm(asm.R4, 0), asm.FnMapUpdateElem.Call(), asm.Return()}
	}
	_, _, kErr, sErr := runInBoth(k, ebpf.XDP, update(km.FD()), update(sm.FD()), pkt)
	if kErr == nil || sErr == nil || !strings.Contains(sErr.Error(), LastLogLine(kErr)) {
		t.Errorf("update from a program: kernel %v; bpfsim %v", kErr, sErr)
	}
	del := func(fd int) asm.Instructions {
		return asm.Instructions{asm.Mov.Imm(asm.R7, 0), asm.StoreMem(asm.RFP, -8, asm.R7, asm.DWord),
			asm.LoadMapPtr(asm.R1, fd), asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -8),
			asm.FnMapDeleteElem.Call(), asm.Return()}
	}
	_, _, kErr, sErr = runInBoth(k, ebpf.XDP, del(km.FD()), del(sm.FD()), pkt)
	if kErr == nil || sErr == nil || !strings.Contains(sErr.Error(), LastLogLine(kErr)) {
		t.Errorf("delete from a program: kernel %v; bpfsim %v", kErr, sErr)
	}
}

// runInBoth loads the two versions of a program (each naming its own
// kernel's maps) and runs them once on pkt.
func runInBoth(k *sim.Kernel, typ ebpf.ProgramType, kInsns, sInsns asm.Instructions, pkt []byte) (kr, sr uint32, kErr, sErr error) {
	kp, kErr := ebpf.NewProgram(&ebpf.ProgramSpec{Type: typ, License: "GPL", Instructions: kInsns})
	if kErr == nil {
		defer kp.Close()
		kr, kErr = kp.Run(&ebpf.RunOptions{Data: pkt})
	}
	sp, sErr := k.NewProgram(&ebpf.ProgramSpec{Type: typ, License: "GPL", Instructions: sInsns})
	if sErr == nil {
		defer sp.Close()
		sr, sErr = sp.Run(&sim.RunOptions{Data: pkt})
	}
	return kr, sr, kErr, sErr
}
