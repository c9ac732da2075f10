//go:build linux

package kdiff

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Each program with global functions is loaded in this machine's kernel
// and in bpfsim: the same verdict, errno and message; for programs both
// accept, the same xlated code and instructions processed, and the same
// results, interpreted and JITed.
func TestGlobalFunctionsMatchKernel(t *testing.T) {
	k := linuxLikeSim(t)
	jit, err := sim.NewKernel(&sim.Options{Runtime: sim.RuntimeJIT})
	if err != nil {
		t.Fatal(err)
	}
	accepted := 0
	for _, c := range globalCases {
		t.Run(c.name, func(t *testing.T) {
			spec := &ebpf.ProgramSpec{Name: "globals", Type: ebpf.XDP, License: "GPL", Instructions: c.insns}
			if matchKernelVerdict(t, k, jit, spec, c.errno, c.msg, [][]byte{make([]byte, 14)}) {
				accepted++
			}
		})
	}
	t.Logf("%d programs accepted and run by both", accepted)
}

// A global function that may tail call may change the packet: after a
// call of it, the caller's packet pointers are unknown scalars, in this
// machine's kernel and in bpfsim; a caller that reloads them is accepted.
func TestGlobalTailCallerInvalidatesPacketPointers(t *testing.T) {
	k := linuxLikeSim(t)
	jit, err := sim.NewKernel(&sim.Options{Runtime: sim.RuntimeJIT})
	if err != nil {
		t.Fatal(err)
	}
	progs := &ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 1}
	km, sm := mapsInBoth(t, k, progs)
	jm, err := jit.NewMap(progs)
	if err != nil {
		t.Fatal(err)
	}
	defer jm.Close()
	prog := func(fd int, reload bool) asm.Instructions {
		body := asm.Instructions{
			withFuncInfo(asm.Mov.Reg(asm.R6, asm.R1), "main", 1),
			asm.LoadMem(asm.R7, asm.R1, 0, asm.Word),
			asm.LoadMem(asm.R8, asm.R1, 4, asm.Word),
			asm.Mov.Reg(asm.R2, asm.R7),
			asm.Add.Imm(asm.R2, 1),
			asm.Mov.Imm(asm.R0, 1),
			asm.JGT.Reg(asm.R2, asm.R8, "out"),
			asm.Call.Label("g"),
		}
		if reload {
			body = append(body,
				asm.LoadMem(asm.R7, asm.R6, 0, asm.Word),
				asm.LoadMem(asm.R8, asm.R6, 4, asm.Word),
				asm.Mov.Reg(asm.R2, asm.R7),
				asm.Add.Imm(asm.R2, 1),
				asm.Mov.Imm(asm.R0, 1),
				asm.JGT.Reg(asm.R2, asm.R8, "out"),
			)
		}
		return append(body,
			asm.LoadMem(asm.R0, asm.R7, 0, asm.Byte),
			asm.Return().WithSymbol("out"),
			globalFunc(asm.LoadMapPtr(asm.R2, fd), "g", btfInt, &btf.Pointer{Target: xdpMD}),
			asm.Mov.Imm(asm.R3, 0),
			asm.FnTailCall.Call(),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		)
	}
	for _, c := range []struct {
		name   string
		reload bool
		errno  uapi.Errno
		msg    string
	}{
		{"a packet pointer kept across the call", false, uapi.EACCES, "R7 invalid mem access 'scalar'"},
		{"packet pointers loaded again", true, 0, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			kspec := &ebpf.ProgramSpec{Name: "globaltail", Type: ebpf.XDP, License: "GPL", Instructions: prog(km.FD(), c.reload)}
			kp, kerr := ebpf.NewProgram(kspec)
			if kp != nil {
				kp.Close()
			}
			if errnoOf(kerr) != c.errno || verifierMessage(kerr) != c.msg {
				t.Errorf("the kernel answers %v: %s; the test says %v: %s", errnoOf(kerr), verifierMessage(kerr), c.errno, c.msg)
			}
			for _, kk := range []struct {
				k  *sim.Kernel
				fd int
			}{{k, sm.FD()}, {jit, jm.FD()}} {
				_, serr := kk.k.NewProgram(&ebpf.ProgramSpec{Name: "globaltail", Type: ebpf.XDP, License: "GPL", Instructions: prog(kk.fd, c.reload)})
				if errnoOf(kerr) != errnoOf(serr) || verifierMessage(kerr) != verifierMessage(serr) {
					t.Errorf("verdicts differ\nkernel: %v: %s\nbpfsim: %v: %s", errnoOf(kerr), verifierMessage(kerr), errnoOf(serr), verifierMessage(serr))
				}
			}
		})
	}
}
