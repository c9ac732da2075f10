package kdiff

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// withFuncInfo gives ins, the first instruction of a function, BTF func
// info: the kernel wants it for programs with callbacks.
func withFuncInfo(ins asm.Instruction, name string, params int) asm.Instruction {
	return withLinkage(ins, name, params, btf.StaticFunc)
}

func withLinkage(ins asm.Instruction, name string, params int, linkage btf.FuncLinkage) asm.Instruction {
	long := &btf.Int{Name: "long", Size: 8, Encoding: btf.Signed}
	ps := make([]btf.FuncParam, params)
	for i := range ps {
		ps[i] = btf.FuncParam{Name: string(rune('a' + i)), Type: long}
	}
	return btf.WithFuncMetadata(ins, &btf.Func{Name: name, Linkage: linkage,
		Type: &btf.FuncProto{Return: &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}, Params: ps}})
}

// loadFunc loads the address of function sym into dst (BPF_PSEUDO_FUNC).
func loadFunc(dst asm.Register, sym string) asm.Instruction {
	return asm.Instruction{OpCode: asm.LoadImmOp(asm.DWord), Src: asm.PseudoFunc, Dst: dst, Constant: -1}.WithReference(sym)
}

// callLoop calls bpf_loop(nrLoops, sym, fp+ctxOff, flags); the ctx is
// NULL when ctxOff is 0.
func callLoop(nrLoops asm.Instruction, sym string, ctxOff int32, flags asm.Instruction) asm.Instructions {
	ctx := asm.Instructions{asm.Mov.Reg(asm.R3, asm.RFP), asm.Add.Imm(asm.R3, ctxOff)}
	if ctxOff == 0 {
		ctx = asm.Instructions{asm.Mov.Imm(asm.R3, 0)}
	}
	out := asm.Instructions{nrLoops, loadFunc(asm.R2, sym)}
	out = append(out, ctx...)
	return append(out, flags, asm.FnLoop.Call())
}

// sumCallback adds its index to the u64 its ctx points to and stops
// (returns 1) after index stop.
func sumCallback(sym string, stop int32) asm.Instructions {
	return asm.Instructions{
		withFuncInfo(asm.LoadMem(asm.R3, asm.R2, 0, asm.DWord), sym, 2).WithSymbol(sym),
		asm.Add.Reg(asm.R3, asm.R1),
		asm.StoreMem(asm.R2, 0, asm.R3, asm.DWord),
		asm.Mov.Imm(asm.R0, 0),
		asm.JLT.Imm(asm.R1, stop, sym+"_ret"),
		asm.Mov.Imm(asm.R0, 1),
		asm.Return().WithSymbol(sym + "_ret"),
	}
}

// loopMain zeroes the u64 at fp-8, runs body, and returns R0*1000 plus
// that u64.
func loopMain(body asm.Instructions, funcs ...asm.Instructions) asm.Instructions {
	out := asm.Instructions{
		withFuncInfo(asm.Mov.Imm(asm.R6, 0), "main", 1),
		asm.StoreMem(asm.RFP, -8, asm.R6, asm.DWord),
		asm.Mov.Reg(asm.R9, asm.R1),
	}
	out = append(out, body...)
	out = append(out,
		asm.LoadMem(asm.R1, asm.RFP, -8, asm.DWord),
		asm.Mul.Imm(asm.R0, 1000),
		asm.Add.Reg(asm.R0, asm.R1),
		asm.Return(),
	)
	for _, f := range funcs {
		out = append(out, f...)
	}
	return out
}

var (
	flags0 = asm.Mov.Imm(asm.R4, 0)
	// packetLoops is nr_loops from the packet's first byte (xdp_md's
	// data is a packet pointer: its first byte is read after a bounds
	// check in the body), kept in R7.
	packetLoops = asm.Mov.Reg(asm.R1, asm.R7)
)

// readFirstByte puts the packet's first byte in R7 (0 if the packet is
// empty).
var readFirstByte = asm.Instructions{
	asm.Mov.Imm(asm.R7, 0),
	asm.LoadMem(asm.R2, asm.R9, 0, asm.Word),
	asm.LoadMem(asm.R3, asm.R9, 4, asm.Word),
	asm.Mov.Reg(asm.R4, asm.R2),
	asm.Add.Imm(asm.R4, 1),
	asm.JGT.Reg(asm.R4, asm.R3, "nobyte"),
	asm.LoadMem(asm.R7, asm.R2, 0, asm.Byte),
	asm.Mov.Imm(asm.R5, 0).WithSymbol("nobyte"),
}

// bpfLoopCases are programs that call bpf_loop, accepted or refused.
// errno and msg are what this machine's kernel (Linux 6.18) answered;
var bpfLoopCases = []struct {
	name  string
	errno uapi.Errno
	msg   string
	insns asm.Instructions
}{
	{"a sum until the callback stops", 0, "",
		loopMain(callLoop(asm.Mov.Imm(asm.R1, 10), "cb", -8, flags0), sumCallback("cb", 6))},
	{"as many loops as the packet says", 0, "",
		loopMain(append(readFirstByte, callLoop(packetLoops, "cb", -8, flags0)...), sumCallback("cb", 200))},
	{"a NULL context", 0, "",
		loopMain(callLoop(asm.Mov.Imm(asm.R1, 3), "cb", 0, flags0), asm.Instructions{
			withFuncInfo(asm.Mov.Imm(asm.R0, 0), "cb", 2).WithSymbol("cb"),
			asm.Return(),
		})},
	{"no loops", 0, "",
		loopMain(callLoop(asm.Mov.Imm(asm.R1, 0), "cb", -8, flags0), sumCallback("cb", 6))},
	{"more loops than allowed", 0, "",
		loopMain(callLoop(asm.Mov.Imm(asm.R1, 1<<24), "cb", -8, flags0), sumCallback("cb", 6))},
	{"two calls, two callbacks", 0, "",
		loopMain(append(callLoop(asm.Mov.Imm(asm.R1, 4), "cb", -8, flags0),
			callLoop(asm.Mov.Imm(asm.R1, 5), "cb2", -8, flags0)...), sumCallback("cb", 100), sumCallback("cb2", 2))},
	{"a callback that loops itself", 0, "",
		loopMain(callLoop(asm.Mov.Imm(asm.R1, 3), "outer", -8, flags0), asm.Instructions{
			withFuncInfo(asm.Mov.Reg(asm.R6, asm.R2), "outer", 2).WithSymbol("outer"),
			asm.Mov.Imm(asm.R1, 4),
			loadFunc(asm.R2, "cb"),
			asm.Mov.Reg(asm.R3, asm.R6),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnLoop.Call(),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}, sumCallback("cb", 100))},
	{"the callback returns 2", uapi.EINVAL, "At callback return the register R0 has smin=2 smax=2 should have been in [0, 1]",
		loopMain(callLoop(asm.Mov.Imm(asm.R1, 3), "cb", -8, flags0), asm.Instructions{
			withFuncInfo(asm.Mov.Imm(asm.R0, 2), "cb", 2).WithSymbol("cb"),
			asm.Return(),
		})},
	{"the callback returns its index", uapi.EINVAL, "At callback return the register R0 has unknown scalar value should have been in [0, 1]",
		loopMain(callLoop(asm.Mov.Imm(asm.R1, 3), "cb", -8, flags0), asm.Instructions{
			withFuncInfo(asm.Mov.Reg(asm.R0, asm.R1), "cb", 2).WithSymbol("cb"),
			asm.Return(),
		})},
	{"the callback returns what its context holds, always 0", 0, "",
		loopMain(callLoop(asm.Mov.Imm(asm.R1, 3), "cb", -8, flags0), asm.Instructions{
			withFuncInfo(asm.LoadMem(asm.R0, asm.R2, 0, asm.DWord), "cb", 2).WithSymbol("cb"),
			asm.Return(),
		})},
	{"the callback returns a stack pointer", uapi.EINVAL, "cannot return stack pointer to the caller",
		loopMain(callLoop(asm.Mov.Imm(asm.R1, 3), "cb", -8, flags0), asm.Instructions{
			withFuncInfo(asm.Mov.Reg(asm.R0, asm.R2), "cb", 2).WithSymbol("cb"),
			asm.Return(),
		})},
	{"the callback writes past its context", uapi.EACCES, "invalid write to stack R2 off=0 size=8",
		loopMain(callLoop(asm.Mov.Imm(asm.R1, 3), "cb", -8, flags0), asm.Instructions{
			withFuncInfo(asm.StoreMem(asm.R2, 8, asm.R1, asm.DWord), "cb", 2).WithSymbol("cb"),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		})},
	{"no function", uapi.EACCES, "R2 type=scalar expected=func",
		loopMain(asm.Instructions{
			asm.Mov.Imm(asm.R1, 3), asm.Mov.Imm(asm.R2, 0), asm.Mov.Imm(asm.R3, 0), asm.Mov.Imm(asm.R4, 0), asm.FnLoop.Call(),
		})},
	{"a context that is no stack pointer", uapi.EACCES, "R3 type=scalar expected=fp",
		loopMain(asm.Instructions{asm.Mov.Imm(asm.R1, 3), loadFunc(asm.R2, "cb"), asm.Mov.Imm(asm.R3, 5), flags0, asm.FnLoop.Call()},
			sumCallback("cb", 6))},
	{"no BTF func info", uapi.EINVAL, "missing btf func_info", asm.Instructions{
		asm.Mov.Imm(asm.R1, 1),
		loadFunc(asm.R2, "cb"),
		asm.Mov.Imm(asm.R3, 0),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnLoop.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("cb"),
		asm.Return(),
	}},
	{"a global callback", uapi.EINVAL, "callback function not static",
		loopMain(callLoop(asm.Mov.Imm(asm.R1, 3), "cb", -8, flags0), asm.Instructions{
			withLinkage(asm.Mov.Imm(asm.R0, 0), "cb", 2, btf.GlobalFunc).WithSymbol("cb"),
			asm.Return(),
		})},
	{"a counter the callback bumps: imprecise scalars widened", 0, "",
		loopMain(callLoop(asm.Mov.Imm(asm.R1, 100), "cb", -8, flags0), asm.Instructions{
			withFuncInfo(asm.LoadMem(asm.R3, asm.R2, 0, asm.DWord), "cb", 2).WithSymbol("cb"),
			asm.Add.Imm(asm.R3, 1),
			asm.StoreMem(asm.R2, 0, asm.R3, asm.DWord),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		})},
	{"flags set: the helper runs, and refuses them", 0, "",
		loopMain(callLoop(asm.Mov.Imm(asm.R1, 3), "cb", -8, asm.Mov.Imm(asm.R4, 1)), sumCallback("cb", 6))},
	{"flags from the packet: the helper calls the callback", 0, "",
		loopMain(append(readFirstByte, callLoop(asm.Mov.Imm(asm.R1, 9), "cb", -8, asm.Mov.Reg(asm.R4, asm.R7))...), sumCallback("cb", 5))},
	{"a callback chosen by the packet: the helper calls it", 0, "",
		loopMain(append(readFirstByte,
			asm.Mov.Imm(asm.R1, 9),
			loadFunc(asm.R2, "cb"),
			asm.JEq.Imm(asm.R7, 0, "chosen"),
			loadFunc(asm.R2, "cb2"),
			asm.Mov.Reg(asm.R3, asm.RFP).WithSymbol("chosen"),
			asm.Add.Imm(asm.R3, -8),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnLoop.Call(),
		), sumCallback("cb", 5), sumCallback("cb2", 2))},
	{"more loops than allowed, through the helper", 0, "",
		loopMain(append(readFirstByte, callLoop(asm.Mov.Imm(asm.R1, 1<<24), "cb", -8, asm.Mov.Reg(asm.R4, asm.R7))...), sumCallback("cb", 5))},
}

// bpfsim gives each bpf_loop program the kernel's verdict: this runs on
// any machine.
func TestBpfLoopVerdicts(t *testing.T) {
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range bpfLoopCases {
		t.Run(c.name, func(t *testing.T) {
			wantVerdict(t, k, &ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: c.insns}, c.errno, c.msg)
		})
	}
}
