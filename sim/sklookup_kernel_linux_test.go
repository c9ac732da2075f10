package sim_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// skLookupCtx is a struct bpf_sk_lookup for a test run.
func skLookupCtx(family, protocol uint32, remote, local []byte, remotePort uint16, localPort uint32) []byte {
	b := make([]byte, verifier.SkLookupSize)
	le := binary.LittleEndian
	le.PutUint32(b[8:], family)
	le.PutUint32(b[12:], protocol)
	if len(remote) == 4 {
		copy(b[16:], remote)
		copy(b[40:], local)
	} else {
		copy(b[20:], remote)
		copy(b[44:], local)
	}
	le.PutUint16(b[36:], remotePort)
	le.PutUint32(b[60:], localPort)
	return b
}

// skLookupLoad is an sk_lookup program that loads size bytes at off of
// its context (sign-extending with sx, or stores with store) and puts the
// value in the map's only element.
func skLookupLoad(fd int, off int16, size asm.Size, sx, store bool) asm.Instructions {
	load := asm.LoadMem(asm.R6, asm.R1, off, size)
	switch {
	case sx:
		load = asm.LoadMemSX(asm.R6, asm.R1, off, size)
	case store:
		load = asm.StoreImm(asm.R1, off, 1, size)
	}
	return asm.Instructions{
		asm.Mov.Imm(asm.R6, 0),
		load,
		asm.StoreMem(asm.RFP, -8, asm.R6, asm.DWord),
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, -12, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, fd),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -12),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnMapUpdateElem.Call(),
		asm.Mov.Imm(asm.R0, 1),
		asm.Return(),
	}
}

// Every load, sign-extending load and store of every offset and size of
// struct bpf_sk_lookup is allowed or refused as this machine's kernel
// allows or refuses it (but the socket, sk, which bpfsim refuses naming
// it); each allowed load is rewritten into the same xlated code, and
// reads the same value in a test run on IPv4 and IPv6 contexts.
func TestSkLookupContextAccessesAreTheKernels(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, &sim.Options{HardWire: verifier.HardWireFromSeen})
	arr := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1}
	km, err := ebpf.NewMap(arr)
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	sm, err := k.NewMap(arr)
	if err != nil {
		t.Fatal(err)
	}
	defer sm.Close()
	ctxs := [][]byte{
		skLookupCtx(unix.AF_INET, unix.IPPROTO_TCP, []byte{10, 1, 2, 3}, []byte{192, 168, 4, 5}, 0xbeef, 443),
		skLookupCtx(unix.AF_INET6, unix.IPPROTO_UDP, bytes.Repeat([]byte{0xa1, 0xb2, 0xc3, 0xd4}, 4), bytes.Repeat([]byte{0x11, 0x22, 0x33, 0x44}, 4), 0x1234, 53),
	}
	spec := func(insns asm.Instructions) *ebpf.ProgramSpec {
		return &ebpf.ProgramSpec{Type: ebpf.SkLookup, AttachType: ebpf.AttachSkLookup, License: "GPL", Instructions: insns}
	}
	allowed := 0
	for off := int16(0); off < verifier.SkLookupSize+8; off++ {
		for _, size := range []asm.Size{asm.Byte, asm.Half, asm.Word, asm.DWord} {
			for _, mode := range []string{"load", "sign-extending load", "store"} {
				if mode == "sign-extending load" && size == asm.DWord {
					continue
				}
				what := fmt.Sprintf("%s of %d bytes at %d", mode, size.Sizeof(), off)
				kp, kerr := ebpf.NewProgram(spec(skLookupLoad(km.FD(), off, size, mode == "sign-extending load", mode == "store")))
				sp, serr := k.NewProgram(spec(skLookupLoad(sm.FD(), off, size, mode == "sign-extending load", mode == "store")))
				if off < 8 && kerr == nil {
					// sk, a socket: bpfsim says it lacks sockets.
					if serr == nil || !strings.Contains(serr.Error(), "not simulated") {
						t.Errorf("%s: the kernel allows it; bpfsim: %v, want it refused as not simulated", what, serr)
					}
					kp.Close()
					continue
				}
				if (kerr == nil) != (serr == nil) {
					t.Errorf("%s: the kernel: %v; bpfsim: %v", what, kerr, serr)
				}
				if kerr != nil || serr != nil {
					if kp != nil {
						kp.Close()
					}
					if sp != nil {
						sp.Close()
					}
					continue
				}
				allowed++
				kx, err := kdiff.KernelXlated(kp)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := kdiff.SameXlated(k, kx, sp.Instructions()); err != nil && !errors.Is(err, kdiff.ErrNoKernelSymbols) {
					t.Errorf("%s: %v", what, err)
				}
				for i, ctx := range ctxs {
					kret, err := kp.Run(&ebpf.RunOptions{Context: ctx})
					if err != nil {
						t.Fatalf("%s: %v", what, err)
					}
					var kv, sv uint64
					if err := km.Lookup(uint32(0), &kv); err != nil {
						t.Fatal(err)
					}
					sres, err := sp.Test(&sim.RunOptions{Context: ctx})
					if err != nil {
						t.Fatalf("%s: %v", what, err)
					}
					if err := sm.Lookup(uint32(0), &sv); err != nil {
						t.Fatal(err)
					}
					if kv != sv || uint32(sres.R0) != kret {
						t.Errorf("%s, context %d: read %#x, returned %d; the kernel %#x, %d", what, i, sv, sres.R0, kv, kret)
					}
				}
				kp.Close()
				sp.Close()
			}
		}
	}
	t.Logf("%d accesses allowed in both", allowed)
	if allowed < 100 {
		t.Errorf("only %d accesses compared", allowed)
	}
}

// Test runs of sk_lookup programs: the same verdicts, errnos and contexts
// out as this machine's kernel's, for good and bad contexts.
func TestSkLookupTestRunsAreTheKernels(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	// SK_PASS for an even remote port.
	insns := asm.Instructions{
		asm.LoadMem(asm.R0, asm.R1, 36, asm.Half),
		asm.Xor.Imm(asm.R0, 1),
		asm.And.Imm(asm.R0, 1),
		asm.Return(),
	}
	spec := &ebpf.ProgramSpec{Type: ebpf.SkLookup, AttachType: ebpf.AttachSkLookup, License: "GPL", Instructions: insns}
	kp, err := ebpf.NewProgram(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer kp.Close()
	sp := load(t, newKernel(t, nil), ebpf.SkLookup, insns)
	v4 := skLookupCtx(unix.AF_INET, unix.IPPROTO_TCP, []byte{10, 0, 0, 1}, []byte{10, 0, 0, 2}, 0x5000, 80)
	with := func(b []byte, off int, v uint32) []byte {
		c := append([]byte(nil), b...)
		binary.LittleEndian.PutUint32(c[off:], v)
		return c
	}
	for _, c := range []struct {
		name      string
		ctx, data []byte
	}{
		{"IPv4, an even port", v4, nil},
		{"IPv4, an odd port", with(v4, 36, 0x5001), nil},
		{"IPv6", skLookupCtx(unix.AF_INET6, unix.IPPROTO_UDP, make([]byte, 16), make([]byte, 16), 7, 53), nil},
		{"a family over 16 bits", with(v4, 8, 0x10000|unix.AF_INET), nil},
		{"another family", with(v4, 8, unix.AF_UNIX), nil},
		{"a port over 16 bits", with(v4, 60, 70000), nil},
		{"an interface", with(v4, 64, 1), nil},
		{"a socket", with(v4, 0, 1), nil},
		{"data", v4, make([]byte, 14)},
		{"no context", nil, nil},
		{"a short context", v4[:40], nil},
		{"a long context", append(append([]byte(nil), v4...), 0, 0, 0, 0), nil},
		{"a long context, not zero", append(append([]byte(nil), v4...), 0, 1, 0, 0), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			kout, sout := make([]byte, verifier.SkLookupSize), make([]byte, verifier.SkLookupSize)
			kopts, sopts := &ebpf.RunOptions{Context: c.ctx, Data: c.data}, &sim.RunOptions{Data: c.data}
			if c.ctx != nil {
				kopts.ContextOut, sopts.Context, sopts.ContextOut = kout, c.ctx, sout
			}
			kret, kerr := kp.Run(kopts)
			sres, serr := sp.Test(sopts)
			var sret uint32
			if sres != nil {
				sret = uint32(sres.R0)
			}
			if errnoOf(kerr) != errnoOf(serr) || kret != sret || !bytes.Equal(kout, sout) {
				t.Errorf("bpfsim: %d, %v, context out %x\nkernel: %d, %v, context out %x", sret, serr, sout, kret, kerr, kout)
			}
		})
	}
}
