package sim_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// An sk_lookup program drops TCP lookups for local port 443 over IPv4 and
// passes the rest; the IPv6 addresses of an IPv4 lookup read 0, those of
// an IPv6 lookup read as given; the context comes back with no socket
// selected.
func TestSkLookupProgramsReadTheirLookup(t *testing.T) {
	k := newKernel(t, nil)
	const afInet, afInet6, tcp = 2, 10, 6
	p := load(t, k, ebpf.SkLookup, asm.Instructions{
		asm.Mov.Imm(asm.R0, 1), // SK_PASS
		asm.LoadMem(asm.R2, asm.R1, 8, asm.Word),
		asm.JNE.Imm(asm.R2, afInet, "out"),
		asm.LoadMem(asm.R2, asm.R1, 12, asm.Byte),
		asm.JNE.Imm(asm.R2, tcp, "out"),
		asm.LoadMem(asm.R2, asm.R1, 60, asm.Half),
		asm.JNE.Imm(asm.R2, 443, "out"),
		asm.LoadMem(asm.R2, asm.R1, 44+12, asm.Word), // local_ip6[3]
		asm.JNE.Imm(asm.R2, 0, "out"),
		asm.Mov.Imm(asm.R0, 0), // SK_DROP
		asm.Return().WithSymbol("out"),
	})
	ip6 := bytes.Repeat([]byte{0xfe, 0x80, 0, 1}, 4)
	for _, c := range []struct {
		name string
		ctx  []byte
		want uint64
	}{
		{"IPv4 to 443", skLookupCtx(afInet, tcp, []byte{10, 0, 0, 1}, []byte{10, 0, 0, 2}, 5000, 443), 0},
		{"IPv4 to 80", skLookupCtx(afInet, tcp, []byte{10, 0, 0, 1}, []byte{10, 0, 0, 2}, 5000, 80), 1},
		{"UDP to 443", skLookupCtx(afInet, 17, []byte{10, 0, 0, 1}, []byte{10, 0, 0, 2}, 5000, 443), 1},
		{"IPv6 to 443", skLookupCtx(afInet6, tcp, ip6, ip6, 5000, 443), 1},
	} {
		out := make([]byte, len(c.ctx))
		res, err := p.Test(&sim.RunOptions{Context: c.ctx, ContextOut: out})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if res.R0 != c.want || !bytes.Equal(out, c.ctx) {
			t.Errorf("%s: %d, context out %x; want %d and the context as given", c.name, res.R0, out, c.want)
		}
	}
	// The socket is not simulated; the verdict must be SK_DROP or SK_PASS.
	for name, insns := range map[string]asm.Instructions{
		"sk":             {asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord), asm.Mov.Imm(asm.R0, 1), asm.Return()},
		"a verdict of 2": {asm.Mov.Imm(asm.R0, 2), asm.Return()},
	} {
		if _, err := k.NewProgram(testSpec(t, ebpf.SkLookup, insns)); !errors.Is(err, uapi.EINVAL) {
			t.Errorf("%s: %v, want EINVAL", name, err)
		}
	}
	if _, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SkLookup, License: "GPL", Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}}); !errors.Is(err, uapi.EINVAL) {
		t.Errorf("without BPF_SK_LOOKUP as its expected attach type: %v, want EINVAL", err)
	}
}
