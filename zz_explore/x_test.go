package zz

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

func TestExplore(t *testing.T) {
	ks, _ := btf.LoadKernelSpec()
	kf := func(name string) asm.Instruction {
		var fn *btf.Func
		if err := ks.TypeByName(name, &fn); err != nil {
			t.Fatal(err)
		}
		id, _ := ks.TypeID(fn)
		return asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call), Src: asm.PseudoKfuncCall, Constant: int64(id)}
	}
	for _, typ := range []ebpf.ProgramType{ebpf.SocketFilter, ebpf.Kprobe, ebpf.TracePoint, ebpf.RawTracepoint, ebpf.XDP, ebpf.SchedCLS, ebpf.SchedACT, ebpf.CGroupSKB, ebpf.Syscall, ebpf.PerfEvent, ebpf.CGroupSock} {
		for _, prog := range []asm.Instructions{
			{asm.FnGetCurrentTaskBtf.Call(), asm.LoadMem(asm.R0, asm.R0, 0, asm.Word), asm.Mov.Imm(asm.R0, 0), asm.Return()},
			{asm.FnGetCurrentTaskBtf.Call(), asm.Mov.Reg(asm.R1, asm.R0), kf("bpf_task_acquire"), asm.JEq.Imm(asm.R0, 0, "o"), asm.Mov.Reg(asm.R1, asm.R0), kf("bpf_task_release"), asm.Mov.Imm(asm.R0, 0).WithSymbol("o"), asm.Return()},
		} {
			flags := uint32(0)
			if typ == ebpf.Syscall {
				flags = 1 << 4
			}
			p, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{Type: typ, License: "GPL", Instructions: prog, Flags: flags}, ebpf.ProgramOptions{LogLevel: 1})
			if err != nil {
				fmt.Printf("%v: %v\n", typ, err)
			} else {
				fmt.Printf("%v: ok\n", typ)
				p.Close()
			}
		}
	}
	p, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{Type: ebpf.Kprobe, License: "GPL", Instructions: asm.Instructions{asm.FnGetCurrentTaskBtf.Call(), asm.Mov.Reg(asm.R6, asm.R0), asm.LoadMem(asm.R0, asm.R6, 0, asm.Word), asm.LoadMem(asm.R1, asm.R6, 1280, asm.DWord), asm.LoadMem(asm.R0, asm.R1, 0, asm.Word), asm.Mov.Imm(asm.R0, 0), asm.Return()}}, ebpf.ProgramOptions{LogLevel: 3})
	fmt.Println(err)
	if p != nil {
		fmt.Println(p.VerifierLog)
	}
}
