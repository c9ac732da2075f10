//go:build linux

package kdiff

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
)

// TestDevmapHashMatchesKernel creates devmap_hash maps of every shape in
// both kernels, with the same errnos and flags; runs the same random
// updates (every flag, devices present and not, programs, a full map) and
// deletes on keys that share buckets, with the same errnos and the same
// walk, in the same order, after each step; redirects XDP packets through
// it for keys present, missing and wider than 32 bits under every flag,
// with the same verdicts; and refuses what programs may not do alike.
func TestDevmapHashMatchesKernel(t *testing.T) {
	k := linuxLikeSim(t)
	// 1<<31 entries are allowed, but the kernel would allocate and
	// zero 16 GiB of bucket heads: only the refusal past it is compared.
	for _, c := range []struct{ key, value, max, flags uint32 }{
		{4, 4, 4, 0}, {4, 8, 4, 0}, {4, 6, 4, 0}, {8, 4, 4, 0}, {4, 4, 0, 0}, {4, 4, 1 << 20, 0},
		{4, 4, 1<<31 + 1, 0}, {4, 4, 0xffffffff, 0}, {4, 4, 4, 0x80}, {4, 4, 4, 1}, {4, 4, 4, 4},
		{4, 4, 4, 8}, {4, 4, 4, 0x10}, {4, 4, 4, 0x100},
	} {
		spec := &ebpf.MapSpec{Type: ebpf.DevMapHash, KeySize: c.key, ValueSize: c.value, MaxEntries: c.max, Flags: c.flags}
		km, kErr := ebpf.NewMap(spec)
		sm, sErr := k.NewMap(spec)
		if errnoOf(kErr) != errnoOf(sErr) || (kErr == nil) != (sErr == nil) {
			t.Errorf("create %+v: kernel %v; bpfsim %v", c, kErr, sErr)
		}
		if kErr == nil && sErr == nil {
			if ki, _ := km.Info(); ki.Flags != sm.Flags() {
				t.Errorf("create %+v: flags %#x in the kernel, %#x in bpfsim", c, ki.Flags, sm.Flags())
			}
		}
		if km != nil {
			km.Close()
		}
		if sm != nil {
			sm.Close()
		}
	}

	// Five entries make eight buckets: keys 0-40 share them five deep.
	spec := &ebpf.MapSpec{Type: ebpf.DevMapHash, KeySize: 4, ValueSize: 8, MaxEntries: 5}
	km, sm := mapsInBoth(t, k, spec)
	rng := rand.New(rand.NewPCG(1, 2))
	for step := range 3000 {
		key := uint32(rng.IntN(41))
		what := ""
		var kErr, sErr error
		if rng.IntN(3) == 0 {
			what = fmt.Sprintf("delete %d", key)
			kErr, sErr = km.Delete(key), sm.Delete(key)
		} else {
			// Mostly lo; now and then no device, another device, or
			// a program fd (the kernel's refusal of a bad one is
			// bpfsim's of every one).
			ifindex := []uint32{1, 1, 1, 1, 0, 999}[rng.IntN(6)]
			fd := []int32{0, 0, 0, 0, -1, 1000}[rng.IntN(6)]
			flags := ebpf.MapUpdateFlags([]uint64{0, 0, 1, 2, 4}[rng.IntN(5)])
			value := binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, ifindex), uint32(fd))
			what = fmt.Sprintf("update %d ifindex %d fd %d flags %d", key, ifindex, fd, flags)
			kErr, sErr = km.Update(key, value, flags), sm.Update(key, value, flags)
		}
		if errnoOf(kErr) != errnoOf(sErr) || (kErr == nil) != (sErr == nil) {
			t.Fatalf("step %d, %s: kernel %v; bpfsim %v", step, what, kErr, sErr)
		}
		if kw, sw := nextKeyWalks(t, km.NextKey, sm.NextKey, 42); kw != sw {
			t.Fatalf("step %d, after %s: the kernel walks %s, bpfsim %s", step, what, kw, sw)
		}
	}
	for key := range uint32(41) {
		var kv, sv [8]byte
		kErr, sErr := km.Lookup(key, &kv), sm.Lookup(key, &sv)
		if errnoOf(kErr) != errnoOf(sErr) || kv != sv {
			t.Errorf("lookup %d: kernel % x (%v); bpfsim % x (%v)", key, kv, kErr, sv, sErr)
		}
	}
	// The next key after a missing one is the first.
	for _, key := range []uint32{41, 99, 0xffffffff} {
		var kn, sn uint32
		kErr, sErr := km.NextKey(key, &kn), sm.NextKey(key, &sn)
		if errnoOf(kErr) != errnoOf(sErr) || kn != sn {
			t.Errorf("next key after %d: kernel %d (%v); bpfsim %d (%v)", key, kn, kErr, sn, sErr)
		}
	}

	// Programs, on new maps: keys 0 and 7 hold lo; 15 shares 7's bucket
	// and is missing.
	km, sm = mapsInBoth(t, k, &ebpf.MapSpec{Type: ebpf.DevMapHash, KeySize: 4, ValueSize: 8, MaxEntries: 8})
	for _, key := range []uint32{0, 7} {
		if err := km.Put(key, uint64(1)); err != nil {
			t.Fatal(err)
		}
		if err := sm.Put(key, uint64(1)); err != nil {
			t.Fatal(err)
		}
	}
	pkt := make([]byte, 60)
	for _, key := range []int64{7, 15, 0, 99, 7 + 1<<32, -1} {
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
	programsMayOnlyRedirectAndRead(t, k, km.FD(), sm.FD(), 7)
}

// nextKeyWalks lists the keys NextKey gives from the start, as the kernel and
// bpfsim give them, at most limit of them.
func nextKeyWalks(t *testing.T, kNext, sNext func(key, next any) error, limit int) (kernel, bpfsim string) {
	t.Helper()
	list := func(next func(key, next any) error) string {
		var b strings.Builder
		var key any
		for range limit {
			var n uint32
			err := next(key, &n)
			if err != nil {
				fmt.Fprintf(&b, "(%v)", errnoOf(err))
				break
			}
			fmt.Fprintf(&b, "%d ", n)
			key = n
		}
		return b.String()
	}
	return list(kNext), list(sNext)
}

// programsMayOnlyRedirectAndRead loads, in both kernels, programs that look
// up key in a devmap-like map and read or write the value, and programs
// that update and delete its elements: the same verdicts, results and
// refusals.
func programsMayOnlyRedirectAndRead(t *testing.T, k *sim.Kernel, kFD, sFD int, key int32) {
	t.Helper()
	pkt := make([]byte, 60)
	lookup := func(fd int, tail ...asm.Instruction) asm.Instructions {
		return append(asm.Instructions{asm.Mov.Imm(asm.R7, key), asm.StoreMem(asm.RFP, -4, asm.R7, asm.Word),
			asm.LoadMapPtr(asm.R1, fd), asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -4), asm.FnMapLookupElem.Call(),
			asm.Mov.Reg(asm.R6, asm.R0), asm.Mov.Imm(asm.R0, 77), asm.JEq.Imm(asm.R6, 0, "out")}, tail...)
	}
	for name, tail := range map[string][]asm.Instruction{
		"read the ifindex":    {asm.LoadMem(asm.R0, asm.R6, 0, asm.Word), asm.Return().WithSymbol("out")},
		"read the prog id":    {asm.LoadMem(asm.R0, asm.R6, 4, asm.Word), asm.Return().WithSymbol("out")},
		"read past the value": {asm.LoadMem(asm.R0, asm.R6, 8, asm.Word), asm.Return().WithSymbol("out")},
		"write the value":     {asm.StoreMem(asm.R6, 0, asm.R7, asm.Word), asm.Return().WithSymbol("out")},
	} {
		kr, sr, kErr, sErr := runInBoth(k, ebpf.XDP, lookup(kFD, tail...), lookup(sFD, tail...), pkt)
		if (kErr == nil) != (sErr == nil) || kr != sr || kErr != nil && !strings.Contains(sErr.Error(), LastLogLine(kErr)) {
			t.Errorf("lookup and %s: kernel %d (%v); bpfsim %d (%v)", name, kr, kErr, sr, sErr)
		}
	}
	update := func(fd int) asm.Instructions {
		return asm.Instructions{asm.Mov.Imm(asm.R7, 0), asm.StoreMem(asm.RFP, -8, asm.R7, asm.DWord),
			asm.LoadMapPtr(asm.R1, fd), asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -8), asm.Mov.Reg(asm.R3, asm.R2),
			asm.Mov.Imm(asm.R4, 0), asm.FnMapUpdateElem.Call(), asm.Return()}
	}
	del := func(fd int) asm.Instructions {
		return asm.Instructions{asm.Mov.Imm(asm.R7, 0), asm.StoreMem(asm.RFP, -8, asm.R7, asm.DWord),
			asm.LoadMapPtr(asm.R1, fd), asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -8),
			asm.FnMapDeleteElem.Call(), asm.Return()}
	}
	for name, prog := range map[string]func(int) asm.Instructions{"update": update, "delete": del} {
		_, _, kErr, sErr := runInBoth(k, ebpf.XDP, prog(kFD), prog(sFD), pkt)
		if kErr == nil || sErr == nil || !strings.Contains(sErr.Error(), LastLogLine(kErr)) {
			t.Errorf("%s from a program: kernel %v; bpfsim %v", name, kErr, sErr)
		}
	}
}

// The fix-up pass calls a devmap_hash's and a cpumap's redirect directly
// (dev_hash_map_redirect, cpu_map_redirect) and a devmap_hash lookup by
// the type's lookup function, as the kernel does: the same xlated code
// and the same verdicts.
func TestRedirectMapTypesCallsAreTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	redirect := func(fd int) asm.Instructions {
		return asm.Instructions{asm.LoadMapPtr(asm.R1, fd), asm.Mov.Imm(asm.R2, 0), asm.Mov.Imm(asm.R3, 2),
			asm.FnRedirectMap.Call(), asm.Return()}
	}
	lookup := func(fd int) asm.Instructions {
		return asm.Instructions{asm.Mov.Imm(asm.R7, 0), asm.StoreMem(asm.RFP, -4, asm.R7, asm.Word),
			asm.LoadMapPtr(asm.R1, fd), asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -4), asm.FnMapLookupElem.Call(),
			asm.Mov.Imm(asm.R0, 2), asm.Return()}
	}
	for _, c := range []struct {
		name  string
		spec  *ebpf.MapSpec
		value uint32
		prog  func(fd int) asm.Instructions
	}{
		{"devmap_hash redirect", &ebpf.MapSpec{Type: ebpf.DevMapHash, KeySize: 4, ValueSize: 4, MaxEntries: 4}, 1, redirect},
		{"devmap_hash lookup", &ebpf.MapSpec{Type: ebpf.DevMapHash, KeySize: 4, ValueSize: 4, MaxEntries: 4}, 1, lookup},
		{"devmap lookup", &ebpf.MapSpec{Type: ebpf.DevMap, KeySize: 4, ValueSize: 4, MaxEntries: 4}, 1, lookup},
		{"cpumap redirect", &ebpf.MapSpec{Type: ebpf.CPUMap, KeySize: 4, ValueSize: 4}, 64, redirect},
	} {
		t.Run(c.name, func(t *testing.T) {
			km, sm := mapsInBoth(t, k, c.spec)
			if err := km.Put(uint32(0), c.value); err != nil {
				t.Fatal(err)
			}
			if err := sm.Put(uint32(0), c.value); err != nil {
				t.Fatal(err)
			}
			kp, sp := loadXDPXlatedAlike(t, k, c.prog(km.FD()), c.prog(sm.FD()))
			pkt := make([]byte, 60)
			kr, kErr := kp.Run(&ebpf.RunOptions{Data: pkt})
			sr, sErr := sp.Run(&sim.RunOptions{Data: pkt})
			if kErr != nil || sErr != nil || kr != sr {
				t.Errorf("kernel %d (%v); bpfsim %d (%v)", kr, kErr, sr, sErr)
			}
		})
	}
}

// BenchmarkRedirectMap is a run of an XDP program that redirects through
// slot 0 of each redirect map type (set), on bpfsim interpreted and JITed
// and, through BPF_PROG_TEST_RUN with repeat, on this machine's kernel.
func BenchmarkRedirectMap(b *testing.B) {
	pkt := make([]byte, 64)
	for _, c := range []struct {
		spec  *ebpf.MapSpec
		value uint32
	}{
		{&ebpf.MapSpec{Type: ebpf.DevMap, KeySize: 4, ValueSize: 4, MaxEntries: 64}, 1},
		{&ebpf.MapSpec{Type: ebpf.DevMapHash, KeySize: 4, ValueSize: 4, MaxEntries: 64}, 1},
		{&ebpf.MapSpec{Type: ebpf.CPUMap, KeySize: 4, ValueSize: 4}, 64},
	} {
		prog := func(m interface{ FD() int }) *ebpf.ProgramSpec {
			return &ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{
				asm.LoadMapPtr(asm.R1, m.FD()), asm.Mov.Imm(asm.R2, 0), asm.Mov.Imm(asm.R3, 0),
				asm.FnRedirectMap.Call(), asm.Return()}}
		}
		for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
			b.Run(fmt.Sprintf("%v/bpfsim-%v", c.spec.Type, rt), func(b *testing.B) {
				k, err := sim.NewKernel(&sim.Options{Runtime: rt})
				if err != nil {
					b.Fatal(err)
				}
				m, err := k.NewMap(c.spec)
				if err != nil {
					b.Fatal(err)
				}
				defer m.Close()
				if err := m.Put(uint32(0), c.value); err != nil {
					b.Fatal(err)
				}
				p, err := k.NewProgram(prog(m))
				if err != nil {
					b.Fatal(err)
				}
				defer p.Close()
				reportSimRepeat(b, p, pkt, 1, "ns/run")
			})
		}
		b.Run(fmt.Sprintf("%v/kernel", c.spec.Type), func(b *testing.B) {
			if _, err := OpenKernel(); err != nil {
				b.Skipf("skipped: this machine cannot load BPF programs: %v", err)
			}
			m, err := ebpf.NewMap(c.spec)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			if err := m.Put(uint32(0), c.value); err != nil {
				b.Fatal(err)
			}
			p, err := ebpf.NewProgram(prog(m))
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			reportKernelRepeat(b, p, pkt, 1, "ns/run")
		})
	}
}
