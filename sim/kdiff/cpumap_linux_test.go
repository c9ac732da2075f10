//go:build linux

package kdiff

import (
	"encoding/binary"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/cpumap"
	"github.com/bpfsim/bpfsim/maps/mapstest"
	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// cpumapSim is a simulated kernel with this machine's possible CPUs, which
// a cpumap's keys are checked against.
func cpumapSim(t *testing.T) *sim.Kernel {
	t.Helper()
	linuxLikeSim(t) // skips where bpf() does not work
	n, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	k, err := sim.NewKernel(&sim.Options{CPUs: n, HardWire: verifier.HardWireFromSeen})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func cpumapVal(qsize uint32, fd int32) []byte {
	return binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, qsize), uint32(fd))
}

// TestCPUMapMatchesKernel creates cpumaps of every shape through
// cilium/ebpf in both kernels (max_entries clamped to the possible CPUs),
// with the same errnos, flags and sizes; updates slots with queue sizes
// at and past the limit, every flag and program fds the kernel cannot
// attach, looks them up, walks and deletes them with the same results;
// redirects XDP packets through it for every key and flag with the same
// verdicts; and refuses what programs may not do with a cpumap alike.
func TestCPUMapMatchesKernel(t *testing.T) {
	k := cpumapSim(t)
	for _, c := range []struct{ key, value, max, flags uint32 }{
		{4, 4, 0, 0}, {4, 4, 1, 0}, {4, 8, 2, 0}, {4, 8, 1000, 0}, {4, 6, 2, 0}, {4, 12, 2, 0}, {4, 16, 2, 0},
		{8, 4, 2, 0}, {4, 4, 2, 4}, {4, 4, 2, 1}, {4, 4, 2, 8}, {4, 4, 2, 0x10}, {4, 4, 2, 0x80}, {4, 4, 2, 0x100},
	} {
		spec := &ebpf.MapSpec{Type: ebpf.CPUMap, KeySize: c.key, ValueSize: c.value, MaxEntries: c.max, Flags: c.flags}
		km, kErr := ebpf.NewMap(spec)
		sm, sErr := k.NewMap(spec)
		if errnoOf(kErr) != errnoOf(sErr) || (kErr == nil) != (sErr == nil) {
			t.Errorf("create %+v: kernel %v; bpfsim %v", c, kErr, sErr)
		}
		if kErr == nil && sErr == nil {
			ki, _ := km.Info()
			if ki.Flags != sm.Flags() || ki.MaxEntries != sm.MaxEntries() {
				t.Errorf("create %+v: flags %#x, %d entries in the kernel; %#x, %d in bpfsim", c, ki.Flags, ki.MaxEntries, sm.Flags(), sm.MaxEntries())
			}
		}
		if km != nil {
			km.Close()
		}
		if sm != nil {
			sm.Close()
		}
	}

	spec := &ebpf.MapSpec{Type: ebpf.CPUMap, KeySize: 4, ValueSize: 8}
	km, sm := mapsInBoth(t, k, spec)
	xdp := asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}
	kProg, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: xdp})
	if err != nil {
		t.Fatal(err)
	}
	defer kProg.Close()
	sProg, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: xdp})
	if err != nil {
		t.Fatal(err)
	}
	defer sProg.Close()
	// Program fds the kernel refuses (with ENOMEM): none, a map, an XDP
	// program not made for cpumaps. Each kernel gets its own fd.
	const closedFD, mapFD, xdpFD = -100, -101, -102
	fdIn := func(fd int32, mapFD_, progFD int) int32 {
		switch fd {
		case closedFD:
			return 9999
		case mapFD:
			return int32(mapFD_)
		case xdpFD:
			return int32(progFD)
		}
		return fd
	}
	for _, c := range []struct {
		key   uint32
		qsize uint32
		fd    int32
		flags ebpf.MapUpdateFlags
	}{
		{0, 1, 0, 0}, {1, cpumap.MaxQueueSize, 0, 0}, {1, cpumap.MaxQueueSize + 1, 0, 0}, {2, 10, 0, 0}, {2, 0, 0, 0},
		{5, 1 << 31, 0, 0}, {0, 10, 0, 1}, {0, 10, 0, 2}, {0, 10, 0, 4}, {0, 10, 0, 3},
		{0, 8, -1, 0}, {0, 8, closedFD, 0}, {0, 8, mapFD, 0}, {0, 8, xdpFD, 0}, {0, 0, closedFD, 0}, {0, 3, 0, 2},
	} {
		kErr := km.Update(c.key, cpumapVal(c.qsize, fdIn(c.fd, km.FD(), kProg.FD())), c.flags)
		sErr := sm.Update(c.key, cpumapVal(c.qsize, fdIn(c.fd, sm.FD(), sProg.FD())), c.flags)
		if errnoOf(kErr) != errnoOf(sErr) || (kErr == nil) != (sErr == nil) {
			t.Errorf("update %d qsize %d fd %d flags %d: kernel %v; bpfsim %v", c.key, c.qsize, c.fd, c.flags, kErr, sErr)
		}
	}
	for _, key := range []uint32{0, 1, 2, 99} {
		var kv, sv [8]byte
		kErr, sErr := km.Lookup(key, &kv), sm.Lookup(key, &sv)
		if errnoOf(kErr) != errnoOf(sErr) || kv != sv {
			t.Errorf("lookup %d: kernel % x (%v); bpfsim % x (%v)", key, kv, kErr, sv, sErr)
		}
	}
	for _, key := range []any{nil, uint32(0), uint32(1), uint32(99)} {
		var kn, sn uint32
		kErr, sErr := km.NextKey(key, &kn), sm.NextKey(key, &sn)
		if errnoOf(kErr) != errnoOf(sErr) || kn != sn {
			t.Errorf("next key after %v: kernel %d (%v); bpfsim %d (%v)", key, kn, kErr, sn, sErr)
		}
	}

	// Programs: slot 0 is set; then slot 1 too.
	pkt := make([]byte, 60)
	for _, setOne := range []bool{false, true} {
		if setOne {
			if err := km.Update(uint32(1), cpumapVal(64, 0), 0); err != nil {
				t.Fatal(err)
			}
			if err := sm.Update(uint32(1), cpumapVal(64, 0), 0); err != nil {
				t.Fatal(err)
			}
		}
		for _, key := range []int64{0, 1, 2, 99, 1 << 32, -1} {
			for _, flags := range []int64{0, 1, 2, 3, 4, 8, 16, 24, 32, 1 << 32} {
				insns := func(fd int) asm.Instructions {
					return asm.Instructions{asm.LoadMapPtr(asm.R1, fd), asm.LoadImm(asm.R2, key, asm.DWord),
						asm.LoadImm(asm.R3, flags, asm.DWord), asm.FnRedirectMap.Call(), asm.Return()}
				}
				kr, sr, kErr, sErr := runInBoth(k, ebpf.XDP, insns(km.FD()), insns(sm.FD()), pkt)
				if kErr != nil || sErr != nil || kr != sr {
					t.Errorf("slot 1 set %v: redirect_map key %#x flags %#x: kernel %d (%v); bpfsim %d (%v)", setOne, key, flags, kr, kErr, sr, sErr)
				}
			}
		}
	}
	// Lookups, updates and deletes from programs are all refused.
	programsMayOnlyRedirectAndRead(t, k, km.FD(), sm.FD(), 0)

	for _, key := range []uint32{1, 2, 99} {
		kErr, sErr := km.Delete(key), sm.Delete(key)
		if errnoOf(kErr) != errnoOf(sErr) || (kErr == nil) != (sErr == nil) {
			t.Errorf("delete %d: kernel %v; bpfsim %v", key, kErr, sErr)
		}
	}
}

// bpfCreateMap is BPF_MAP_CREATE without cilium/ebpf's clamping of a
// cpumap's max_entries.
func bpfCreateMap(typ, keySize, valueSize, maxEntries uint32) (int, error) {
	attr := [32]uint32{typ, keySize, valueSize, maxEntries}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_MAP_CREATE, uintptr(unsafe.Pointer(&attr[0])), unsafe.Sizeof(attr))
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

func bpfUpdateElem(fd int, key uint32, value []byte) error {
	attr := struct {
		fd         uint32
		_          uint32
		key, value uint64
		flags      uint64
	}{fd: uint32(fd), key: uint64(uintptr(unsafe.Pointer(&key))), value: uint64(uintptr(unsafe.Pointer(&value[0])))}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_MAP_UPDATE_ELEM, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		return errno
	}
	return nil
}

// TestCPUMapKeysPastThePossibleCPUsMatchKernel creates cpumaps larger than
// the possible CPUs with bpf() itself, as cilium/ebpf never does, in this
// machine's kernel and with bpfsim's cpumap type on a kernel with as many
// CPUs: keys past the CPUs are ENODEV (after the queue size's EOVERFLOW),
// keys past the map E2BIG, in both. Sizes past NR_CPUS are E2BIG in both,
// but the kernels' NR_CPUS may differ (bpfsim's is arm64's 512), so only
// sizes on the same side of both are compared.
func TestCPUMapKeysPastThePossibleCPUsMatchKernel(t *testing.T) {
	cpumapSim(t)
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	if cpumap.NRCPUs != sim.MaxCPUs {
		t.Errorf("the cpumap's NR_CPUS is %d, the kernel's %d", cpumap.NRCPUs, sim.MaxCPUs)
	}
	reg := &maps.Registry{}
	if err := reg.Register(cpumap.CPUMap); err != nil {
		t.Fatal(err)
	}
	for _, max := range []uint32{0, 1, uint32(cpus), uint32(cpus) + 2, 64, cpumap.NRCPUs + 1, 1 << 20} {
		kfd, kErr := bpfCreateMap(uint32(uapi.MapTypeCPUMap), 4, 4, max)
		sm, sErr := reg.Create(mapstest.NewKernel(cpus), maps.Attr{Type: uapi.MapTypeCPUMap, KeySize: 4, ValueSize: 4, MaxEntries: max}, 1, nil)
		if errnoOf(kErr) != errnoOf(sErr) {
			t.Errorf("create with %d entries: kernel %v; bpfsim %v", max, kErr, sErr)
		}
		if kErr != nil || sErr != nil {
			if kErr == nil {
				unix.Close(kfd)
			}
			if sErr == nil {
				sm.Ops.Free()
			}
			continue
		}
		for _, key := range []uint32{0, uint32(cpus) - 1, uint32(cpus), uint32(cpus) + 1, max - 1, max} {
			for _, qsize := range []uint32{0, 8, cpumap.MaxQueueSize + 1} {
				v := cpumapVal(qsize, 0)[:4]
				kErr, sErr := bpfUpdateElem(kfd, key, v), sm.Ops.UpdateElem(0, binary.LittleEndian.AppendUint32(nil, key), v, 0)
				if errnoOf(kErr) != errnoOf(sErr) {
					t.Errorf("%d entries: update %d qsize %d: kernel %v; bpfsim %v", max, key, qsize, kErr, sErr)
				}
			}
		}
		unix.Close(kfd)
		sm.Ops.Free()
	}
}
