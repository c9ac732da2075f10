package sim_test

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
)

// cookieSummer adds bpf_get_attach_cookie's result to an array's only
// value.
func cookieSummer(fd int) asm.Instructions {
	return asm.Instructions{
		asm.FnGetAttachCookie.Call(),
		asm.Mov.Reg(asm.R6, asm.R0),
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, -4, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, fd),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Reg(asm.R1, asm.R6),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}
}

// Each run through a tracing link reads that link's cookie: one program
// attached twice to a tracepoint runs once per link, each time with its
// own; closing one link leaves the other's; an fentry program reads its
// link's; a test run, attached through nothing, reads 0.
func TestAttachCookiesAreTheLinks(t *testing.T) {
	k := newKernel(t, nil)
	m, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	sum := func() uint64 {
		t.Helper()
		var v uint64
		if err := m.Lookup(uint32(0), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	tp := &sim.Tracepoint{Name: "bpfsim_cookie_test", Proto: &btf.FuncProto{Return: &btf.Void{}}}
	if err := k.RegisterTracepoint(tp); err != nil {
		t.Fatal(err)
	}
	p, err := k.NewProgram(tpSpec("bpfsim_cookie_test", cookieSummer(m.FD())))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	l7, err := k.AttachTracing(sim.TracingOptions{Program: p, Cookie: 7})
	if err != nil {
		t.Fatal(err)
	}
	l9, err := k.AttachTracing(sim.TracingOptions{Program: p, Cookie: 9})
	if err != nil {
		t.Fatal(err)
	}
	defer l9.Close()
	if err := tp.Fire(0, nil); err != nil {
		t.Fatal(err)
	}
	if got := sum(); got != 16 {
		t.Errorf("after a firing through both links: %d, want 7+9", got)
	}
	l7.Close()
	if err := tp.Fire(1, nil); err != nil {
		t.Fatal(err)
	}
	if got := sum(); got != 25 {
		t.Errorf("after a firing through the cookie 9 link alone: %d, want 25", got)
	}

	fentry, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFEntry, AttachTo: "bpf_fentry_test1",
		License: "GPL", Instructions: cookieSummer(m.FD())})
	if err != nil {
		t.Fatal(err)
	}
	defer fentry.Close()
	lf, err := k.AttachTracing(sim.TracingOptions{Program: fentry, Cookie: 100})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := k.TracedFunc("bpf_fentry_test1")
	if _, err := f.Call(0, 1); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	if got := sum(); got != 125 {
		t.Errorf("after an fentry run with cookie 100: %d, want 125", got)
	}

	kprobe, err := k.NewProgram(testSpec(t, ebpf.Kprobe, cookieSummer(m.FD())))
	if err != nil {
		t.Fatal(err)
	}
	defer kprobe.Close()
	if _, err := kprobe.Test(&sim.RunOptions{Context: make([]byte, 168)}); err != nil {
		t.Fatal(err)
	}
	if got := sum(); got != 125 {
		t.Errorf("after a kprobe test run: %d, want no cookie added", got)
	}
}
