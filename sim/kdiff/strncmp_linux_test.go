//go:build linux

package kdiff

import (
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// bpf_strncmp in both kernels: syscall programs compare the string their
// context holds with a constant string in a read-only map, with the same
// results; and the verifier refuses the same second arguments with the
// same messages (ARG_PTR_TO_CONST_STR: a frozen read-only map, a constant
// offset, a NUL before the value's end).
func TestStrncmpIsTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	value := make([]byte, 32)
	copy(value, "bash\x00bpfsim\x00")
	unterminated := []byte("0123456789abcdef0123456789abcdef")
	type mapKind struct {
		flags  uint32
		freeze bool
		value  []byte
	}
	rodata := mapKind{uapi.BPF_F_RDONLY_PROG, true, value}
	newMaps := func(mk mapKind) (*ebpf.Map, *sim.Map) {
		spec := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 32, MaxEntries: 1, Flags: mk.flags}
		km, sm := mapsInBoth(t, k, spec)
		if err := km.Put(uint32(0), mk.value); err != nil {
			t.Fatal(err)
		}
		if err := sm.Put(uint32(0), mk.value); err != nil {
			t.Fatal(err)
		}
		if mk.freeze {
			if err := km.Freeze(); err != nil {
				t.Fatal(err)
			}
			if err := sm.Freeze(); err != nil {
				t.Fatal(err)
			}
		}
		return km, sm
	}
	// prog copies the context's 16 bytes to the stack and compares size
	// of them with the string at r3, which arg sets up.
	prog := func(size int32, arg asm.Instructions) asm.Instructions {
		insns := asm.Instructions{
			asm.LoadMem(asm.R4, asm.R1, 0, asm.DWord), asm.StoreMem(asm.RFP, -16, asm.R4, asm.DWord),
			asm.LoadMem(asm.R4, asm.R1, 8, asm.DWord), asm.StoreMem(asm.RFP, -8, asm.R4, asm.DWord),
			asm.LoadMem(asm.R6, asm.R1, 0, asm.Byte),
		}
		insns = append(insns, arg...)
		return append(insns, asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, -16), asm.Mov.Imm(asm.R2, size),
			asm.FnStrncmp.Call(), asm.Return())
	}
	at := func(off uint32) func(fd int) asm.Instructions {
		return func(fd int) asm.Instructions { return asm.Instructions{asm.LoadMapValue(asm.R3, fd, off)} }
	}
	for _, c := range []struct {
		name string
		mk   mapKind
		s1   string
		size int32
		arg  func(fd int) asm.Instructions
	}{
		{"equal", rodata, "bash", 5, at(0)},
		{"shorter", rodata, "bas", 5, at(0)},
		{"greater", rodata, "zz", 5, at(0)},
		{"the first bytes only", rodata, "bpfXYZ", 3, at(5)},
		{"equal up to a shared NUL", rodata, "bash\x00garbage", 16, at(0)},
		{"a size of one", rodata, "b", 1, at(5)},
		{"not frozen", mapKind{uapi.BPF_F_RDONLY_PROG, false, value}, "bash", 5, at(0)},
		{"writable by programs", mapKind{0, true, value}, "bash", 5, at(0)},
		{"no NUL", mapKind{uapi.BPF_F_RDONLY_PROG, true, unterminated}, "0123", 4, at(0)},
		{"the empty string at the value's end", rodata, "", 1, at(31)},
		{"on the stack", rodata, "bash", 5, func(int) asm.Instructions {
			return asm.Instructions{asm.Mov.Reg(asm.R3, asm.RFP), asm.Add.Imm(asm.R3, -16)}
		}},
		{"a variable offset", rodata, "bash", 5, func(fd int) asm.Instructions {
			return asm.Instructions{asm.LoadMapValue(asm.R3, fd, 0), asm.And.Imm(asm.R6, 1), asm.Add.Reg(asm.R3, asm.R6)}
		}},
		{"a size of zero", rodata, "bash", 0, at(0)},
	} {
		t.Run(c.name, func(t *testing.T) {
			km, sm := newMaps(c.mk)
			ctx := make([]byte, 16)
			copy(ctx, c.s1)
			kp, kerr := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Syscall, License: "GPL", Flags: uapi.BPF_F_SLEEPABLE, Instructions: prog(c.size, c.arg(km.FD()))})
			sp, serr := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Syscall, License: "GPL", Flags: uapi.BPF_F_SLEEPABLE, Instructions: prog(c.size, c.arg(sm.FD()))})
			if (kerr == nil) != (serr == nil) || kerr != nil && !strings.Contains(serr.Error(), LastLogLine(kerr)) {
				t.Fatalf("kernel: %v; bpfsim: %v", LastLogLine(kerr), serr)
			}
			if kerr != nil {
				t.Logf("refused alike: %s", LastLogLine(kerr))
				return
			}
			defer kp.Close()
			defer sp.Close()
			kr, kerr := kp.Run(&ebpf.RunOptions{Context: ctx})
			sr, serr := sp.Run(&sim.RunOptions{Context: ctx})
			if kerr != nil || serr != nil || kr != sr {
				t.Errorf("kernel %d (%v); bpfsim %d (%v)", int32(kr), kerr, int32(sr), serr)
			}
		})
	}
}
