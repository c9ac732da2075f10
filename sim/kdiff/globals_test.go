package kdiff

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

var (
	btfLong = &btf.Int{Name: "long", Size: 8, Encoding: btf.Signed}
	btfInt  = &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	xdpMD   = &btf.Struct{Name: "xdp_md", Size: 24}
)

// globalFunc gives ins, a function's first instruction, BTF func info of
// a global function returning ret with params.
func globalFunc(ins asm.Instruction, name string, ret btf.Type, params ...btf.Type) asm.Instruction {
	ps := make([]btf.FuncParam, len(params))
	for i, t := range params {
		ps[i] = btf.FuncParam{Name: string(rune('a' + i)), Type: t}
	}
	return btf.WithFuncMetadata(ins.WithSymbol(name), &btf.Func{Name: name, Linkage: btf.GlobalFunc,
		Type: &btf.FuncProto{Return: ret, Params: ps}})
}

// globalCases are programs with global functions, accepted or refused
// as this machine's kernel (Linux 6.18) answered.
var globalCases = []struct {
	name  string
	errno uapi.Errno
	msg   string
	insns asm.Instructions
}{
	{"a scalar and a nullable pointer", 0, "", asm.Instructions{
		withFuncInfo(asm.Mov.Imm(asm.R1, 5), "main", 1),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.Call.Label("g"),
		asm.Return(),
		globalFunc(asm.Mov.Reg(asm.R0, asm.R1), "g", btfInt, btfLong, &btf.Pointer{Target: btfLong}),
		asm.JEq.Imm(asm.R2, 0, "gout"),
		asm.LoadMem(asm.R0, asm.R2, 0, asm.DWord),
		asm.Return().WithSymbol("gout"),
	}},
	{"the pointer used without a null check", uapi.EACCES, "R2 invalid mem access 'mem_or_null'", asm.Instructions{
		withFuncInfo(asm.Mov.Imm(asm.R1, 5), "main", 1),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.Call.Label("g"),
		asm.Return(),
		globalFunc(asm.LoadMem(asm.R0, asm.R2, 0, asm.DWord), "g", btfInt, btfLong, &btf.Pointer{Target: btfLong}),
		asm.Return(),
	}},
	{"a scalar where a pointer is expected", uapi.EINVAL, "Caller passes invalid args into func#1 ('g')", asm.Instructions{
		withFuncInfo(asm.Mov.Imm(asm.R1, 5), "main", 1),
		asm.Mov.Imm(asm.R2, 7),
		asm.Call.Label("g"),
		asm.Return(),
		globalFunc(asm.Mov.Imm(asm.R0, 0), "g", btfInt, btfLong, &btf.Pointer{Target: btfLong}),
		asm.Return(),
	}},
	{"a pointer where a scalar is expected", uapi.EINVAL, "Caller passes invalid args into func#1 ('g')", asm.Instructions{
		withFuncInfo(asm.Mov.Reg(asm.R1, asm.RFP), "main", 1),
		asm.Call.Label("g"),
		asm.Return(),
		globalFunc(asm.Mov.Imm(asm.R0, 0), "g", btfInt, btfLong),
		asm.Return(),
	}},
	{"the context", 0, "", asm.Instructions{
		withFuncInfo(asm.Call.Label("g"), "main", 1),
		asm.Return(),
		globalFunc(asm.LoadMem(asm.R0, asm.R1, 12, asm.Word), "g", btfInt, &btf.Pointer{Target: xdpMD}),
		asm.Return(),
	}},
	{"no context where one is expected", uapi.EINVAL, "Caller passes invalid args into func#1 ('g')", asm.Instructions{
		withFuncInfo(asm.Mov.Reg(asm.R1, asm.RFP), "main", 1),
		asm.Add.Imm(asm.R1, -8),
		asm.StoreImm(asm.RFP, -8, 0, asm.Word),
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.Call.Label("g"),
		asm.Return(),
		globalFunc(asm.Mov.Imm(asm.R0, 0), "g", btfInt, &btf.Pointer{Target: xdpMD}),
		asm.Return(),
	}},
	{"a result that is no scalar", uapi.EINVAL, "At subprogram exit the register R0 is not a scalar value (ctx)", asm.Instructions{
		withFuncInfo(asm.Call.Label("g"), "main", 1),
		asm.Mov.Imm(asm.R0, 2),
		asm.Return(),
		globalFunc(asm.Mov.Reg(asm.R0, asm.R1), "g", btfInt, &btf.Pointer{Target: xdpMD}),
		asm.Return(),
	}},
	{"void result", uapi.EINVAL, "Caller passes invalid args into func#1 ('g')", asm.Instructions{
		withFuncInfo(asm.Call.Label("g"), "main", 1),
		asm.Return(),
		globalFunc(asm.Mov.Imm(asm.R0, 0), "g", &btf.Void{}, btfLong),
		asm.Return(),
	}},
	{"the caller relies on the result's value", uapi.EACCES, "R0 invalid mem access 'scalar'", asm.Instructions{
		withFuncInfo(asm.Mov.Imm(asm.R1, 1), "main", 1),
		asm.Call.Label("g"),
		asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord),
		asm.Return(),
		globalFunc(asm.Mov.Imm(asm.R0, 0), "g", btfInt, btfLong),
		asm.Return(),
	}},
	{"a global calling a global", 0, "", asm.Instructions{
		withFuncInfo(asm.Mov.Imm(asm.R1, 3), "main", 1),
		asm.Call.Label("g"),
		asm.Return(),
		globalFunc(asm.Add.Imm(asm.R1, 1), "g", btfInt, btfLong),
		asm.Call.Label("h"),
		asm.Return(),
		globalFunc(asm.Mov.Reg(asm.R0, asm.R1), "h", btfInt, btfLong),
		asm.Add.Imm(asm.R0, 10),
		asm.Return(),
	}},
	{"what the caller passes does not bound the global's argument", uapi.EINVAL, "math between fp pointer and register with unbounded min value is not allowed", asm.Instructions{
		withFuncInfo(asm.Mov.Imm(asm.R1, 3), "main", 1),
		asm.StoreImm(asm.RFP, -16, 0, asm.Word),
		asm.Call.Label("g"),
		asm.Return(),
		globalFunc(asm.Mov.Reg(asm.R2, asm.RFP), "g", btfInt, btfLong),
		asm.Add.Reg(asm.R2, asm.R1),
		asm.LoadMem(asm.R0, asm.R2, -16, asm.Byte),
		asm.Return(),
	}},
}

// bpfsim gives each program with global functions the kernel's verdict:
// this runs on any machine.
func TestGlobalFunctionVerdicts(t *testing.T) {
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range globalCases {
		t.Run(c.name, func(t *testing.T) {
			wantVerdict(t, k, &ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: c.insns}, c.errno, c.msg)
		})
	}
}
