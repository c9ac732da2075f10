package kdiff_test

import (
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// A per-CPU inner array larger than its template, in the kernel and in
// bpfsim: the kernel's inlined lookup stops at the template's
// max_entries. (Never a smaller one: the kernel would read past its
// array of per-CPU pointers.)
func TestPercpuInnerArrayLargerThanTemplateMatchesKernel(t *testing.T) {
	k, err := kdiff.OpenKernel()
	if err != nil {
		t.Skipf("skipped: this machine cannot load BPF programs: %v", err)
	}
	pcpu := func(name string, n uint32) *ebpf.MapSpec {
		return &ebpf.MapSpec{Name: name, Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: n}
	}
	s := &kdiff.MimScenario{
		Outer:  &ebpf.MapSpec{Name: "outer", Type: ebpf.ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 1, InnerMap: pcpu("tmpl", 2)},
		Inners: []*ebpf.MapSpec{pcpu("i0", 4)},
		Spec: &ebpf.ProgramSpec{Name: "pcpu_inner", Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Word),
			asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, 4),
			asm.Mov.Imm(asm.R0, 0),
			asm.JGT.Reg(asm.R4, asm.R3, "out"),
			asm.LoadMem(asm.R6, asm.R2, 0, asm.Word), // the inner key
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, 0).WithReference("outer"),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.Mov.Imm(asm.R7, 1000),
			asm.JEq.Imm(asm.R0, 0, "ret"),
			asm.StoreMem(asm.RFP, -8, asm.R6, asm.Word),
			asm.Mov.Reg(asm.R1, asm.R0),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -8),
			asm.FnMapLookupElem.Call(),
			asm.Mov.Imm(asm.R7, 2000),
			asm.JEq.Imm(asm.R0, 0, "ret"),
			asm.LoadMem(asm.R7, asm.R0, 0, asm.Word),
			asm.Mov.Reg(asm.R0, asm.R7).WithSymbol("ret"),
			asm.Return().WithSymbol("out"),
		}},
		Steps: []kdiff.MimStep{{Kind: kdiff.MimSetSlot, Key: 0, Inner: 0}},
	}
	for i := uint32(0); i < 4; i++ {
		s.Steps = append(s.Steps, kdiff.MimStep{Kind: kdiff.MimInnerUpdate, Inner: 0, Key: i, Value: []byte{byte(10 * (i + 1)), 0, 0, 0, 0, 0, 0, 0}})
	}
	for i := byte(0); i < 5; i++ {
		s.Steps = append(s.Steps, kdiff.MimStep{Kind: kdiff.MimRun, Packet: []byte{i, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}})
	}
	sm, err := kdiff.NewSimCPUs(k.PossibleCPUs())
	if err != nil {
		t.Fatal(err)
	}
	ko, so := k.PlayMim(s), sm.PlayMim(s)
	if ko.Verdict != "accepted" || ko.Runs != 5 {
		t.Fatalf("the kernel: %s, %d runs\n%s", ko.Verdict, ko.Runs, strings.Join(ko.Lines, "\n"))
	}
	if got, want := strings.Join(so.Lines, "\n"), strings.Join(ko.Lines, "\n"); got != want {
		t.Fatalf("bpfsim (%s):\n%s\nthe kernel (%s):\n%s", so.Verdict, mimLineDiff(ko.Lines, so.Lines), ko.Verdict, want)
	}
	for _, l := range ko.Lines {
		if strings.HasPrefix(l, "run ") {
			t.Log(l)
		}
	}
}
