package sim_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// TestSleepableProgramsLikeKernel loads every program type bpfsim has,
// sleepable or not, using a map of each type it has (and none), in the
// kernel and in bpfsim: the verdicts, errnos and messages must be the
// kernel's (a syscall program must be sleepable; XDP, tc, socket filters
// and tracepoints may not be; sleepable programs use only some map types).
func TestSleepableProgramsLikeKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	mapSpecs := []*ebpf.MapSpec{
		nil,
		{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2},
		{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 2},
		{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 2},
		{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 2, Flags: uapi.BPF_F_NO_PREALLOC},
		{Type: ebpf.PerCPUHash, KeySize: 4, ValueSize: 8, MaxEntries: 2},
		{Type: ebpf.PerfEventArray},
		{Type: ebpf.ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 2, InnerMap: &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}},
		{Type: ebpf.HashOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 2, InnerMap: &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 1}},
	}
	types := []ebpf.ProgramType{ebpf.XDP, ebpf.SocketFilter, ebpf.SchedCLS, ebpf.Kprobe, ebpf.TracePoint, ebpf.RawTracepoint, ebpf.Syscall}
	compared := 0
	for _, ms := range mapSpecs {
		var kmap *ebpf.Map
		var smap *sim.Map
		if ms != nil {
			var err error
			if kmap, err = ebpf.NewMap(ms); err != nil {
				t.Fatal(err)
			}
			defer kmap.Close()
			if smap, err = k.NewMap(ms); err != nil {
				t.Fatal(err)
			}
			defer smap.Close()
		}
		for _, typ := range types {
			for _, flags := range []uint32{0, uapi.BPF_F_SLEEPABLE} {
				name := fmt.Sprintf("%s/flags=%#x", typ, flags)
				if ms != nil {
					name += "/" + ms.Type.String()
				}
				body := func(fd int) asm.Instructions {
					insns := asm.Instructions{}
					if ms != nil {
						insns = append(insns, asm.LoadMapPtr(asm.R1, fd))
					}
					return append(insns, asm.Mov.Imm(asm.R0, 0), asm.Return())
				}
				kfd, sfd := -1, -1
				if ms != nil {
					kfd, sfd = kmap.FD(), smap.FD()
				}
				kp, kErr := ebpf.NewProgram(&ebpf.ProgramSpec{Type: typ, Flags: flags, License: "GPL", Instructions: body(kfd)})
				if kp != nil {
					kp.Close()
				}
				sp, sErr := k.NewProgram(&ebpf.ProgramSpec{Type: typ, Flags: flags, License: "GPL", Instructions: body(sfd)})
				if sp != nil {
					sp.Close()
				}
				compared++
				if (kErr == nil) != (sErr == nil) || errnoOf(kErr) != errnoOf(sErr) {
					t.Errorf("%s: kernel %v; bpfsim %v", name, kErr, sErr)
					continue
				}
				if kErr == nil {
					continue
				}
				var ve *verifier.Error
				if !errors.As(sErr, &ve) || !strings.Contains(fmt.Sprintf("%+v", kErr), ve.Msg) {
					t.Errorf("%s: kernel %v; bpfsim %v", name, kErr, sErr)
				}
			}
		}
	}
	t.Logf("%d loads compared", compared)
}

func TestUnknownProgFlagsAreEINVAL(t *testing.T) {
	k := newKernel(t, nil)
	_, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, Flags: 1 << 12, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}})
	if !errors.Is(err, uapi.EINVAL) {
		t.Fatalf("got %v; want EINVAL", err)
	}
}
