package kdiff

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// ringbufRefMaps are the maps the reference tracking programs use, by
// the names their instructions refer to.
var ringbufRefMaps = map[string]*ebpf.MapSpec{
	"rb":    {Type: ebpf.RingBuf, MaxEntries: 4096},
	"rb2":   {Type: ebpf.RingBuf, MaxEntries: 4096},
	"arr":   {Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 1},
	"progs": {Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 1},
}

// reserveInsns reserves size bytes of ring "rb" into R0.
func reserveInsns(size int32) asm.Instructions {
	return asm.Instructions{
		asm.LoadMapPtr(asm.R1, 0).WithReference("rb"),
		asm.Mov.Imm(asm.R2, size),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnRingbufReserve.Call(),
	}
}

// commitInsns submits (or discards) the record in reg.
func commitInsns(reg asm.Register, discard bool) asm.Instructions {
	fn := asm.FnRingbufSubmit
	if discard {
		fn = asm.FnRingbufDiscard
	}
	return asm.Instructions{asm.Mov.Reg(asm.R1, reg), asm.Mov.Imm(asm.R2, 0), fn.Call()}
}

func seq(parts ...asm.Instructions) asm.Instructions {
	var out asm.Instructions
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

var (
	nullOut = asm.Instructions{asm.JEq.Imm(asm.R0, 0, "out"), asm.Mov.Reg(asm.R6, asm.R0)}
	exit0   = asm.Instructions{asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return()}
)

// ringbufRefCases are programs that reserve ring buffer records, each
// with a way of keeping or breaking the rule that every record reserved
// is submitted or discarded exactly once, on every path.
//
// errno and msg are what this machine's kernel (Linux 6.18) answered;
// TestRingbufReferencesAreTrackedLikeTheKernel asks it again where it can.
var ringbufRefCases = []struct {
	name  string
	errno uapi.Errno
	msg   string
	insns asm.Instructions
}{
	{"submit after a null check", 0, "", seq(reserveInsns(16), nullOut,
		asm.Instructions{asm.StoreImm(asm.R6, 0, 7, asm.Word)}, commitInsns(asm.R6, false), exit0)},
	{"discard after a null check", 0, "", seq(reserveInsns(16), nullOut, commitInsns(asm.R6, true), exit0)},
	{"a record of zero bytes", 0, "", seq(reserveInsns(0), nullOut, commitInsns(asm.R6, false), exit0)},
	{"the record is never committed", uapi.EINVAL, "BPF_EXIT instruction in main prog would lead to reference leak", seq(reserveInsns(16), exit0)},
	{"committed on one path only", uapi.EINVAL, "BPF_EXIT instruction in main prog would lead to reference leak", seq(reserveInsns(16), nullOut,
		asm.Instructions{asm.LoadMem(asm.R2, asm.R6, 0, asm.DWord), asm.JEq.Imm(asm.R2, 0, "out")},
		commitInsns(asm.R6, false), exit0)},
	{"submit without a null check", uapi.EACCES, "R1 type=ringbuf_mem_or_null expected=ringbuf_mem", seq(reserveInsns(16), commitInsns(asm.R0, false), exit0)},
	{"submit twice", uapi.EACCES, "R1 type=scalar expected=ringbuf_mem", seq(reserveInsns(16), nullOut, commitInsns(asm.R6, false), commitInsns(asm.R6, true), exit0)},
	{"write after submit", uapi.EACCES, "R6 invalid mem access 'scalar'", seq(reserveInsns(16), nullOut, commitInsns(asm.R6, false),
		asm.Instructions{asm.StoreImm(asm.R6, 0, 1, asm.Word)}, exit0)},
	{"write past the record", uapi.EACCES, "R6 min value is outside of the allowed memory range", seq(reserveInsns(16), nullOut,
		asm.Instructions{asm.StoreImm(asm.R6, 14, 1, asm.Word)}, commitInsns(asm.R6, false), exit0)},
	{"submit a moved pointer", uapi.EINVAL, "R1 must have zero offset when passed to release func or trusted arg to kfunc", seq(reserveInsns(16), nullOut,
		asm.Instructions{asm.Add.Imm(asm.R6, 8)}, commitInsns(asm.R6, false), exit0)},
	{"arithmetic before the null check", uapi.EACCES, "R0 pointer arithmetic on ringbuf_mem_or_null prohibited, null-check it first", seq(reserveInsns(16),
		asm.Instructions{asm.Add.Imm(asm.R0, 8)}, exit0)},
	{"a size that is not constant", uapi.EACCES, "R2 is not a known constant'", seq(asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 12, asm.Word), // ingress_ifindex
		asm.And.Imm(asm.R2, 15),
		asm.LoadMapPtr(asm.R1, 0).WithReference("rb"),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnRingbufReserve.Call(),
	}, nullOut, commitInsns(asm.R6, false), exit0)},
	{"a spilled copy is released too", uapi.EACCES, "R1 invalid mem access 'scalar'", seq(reserveInsns(16), nullOut,
		asm.Instructions{asm.StoreMem(asm.RFP, -8, asm.R6, asm.DWord)}, commitInsns(asm.R6, false),
		asm.Instructions{asm.LoadMem(asm.R1, asm.RFP, -8, asm.DWord), asm.StoreImm(asm.R1, 0, 1, asm.Word)}, exit0)},
	{"two records, both committed", 0, "", seq(reserveInsns(16), nullOut, reserveInsns(8),
		asm.Instructions{asm.JEq.Imm(asm.R0, 0, "drop"), asm.Mov.Reg(asm.R7, asm.R0)},
		commitInsns(asm.R7, false), commitInsns(asm.R6, false), exit0,
		label("drop", commitInsns(asm.R6, true)), asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()})},
	{"two records, the second leaked", uapi.EINVAL, "BPF_EXIT instruction in main prog would lead to reference leak", seq(reserveInsns(16), nullOut, reserveInsns(8),
		commitInsns(asm.R6, false), exit0)},
	{"a record as another ring's data", 0, "", seq(reserveInsns(16), nullOut, asm.Instructions{
		asm.StoreImm(asm.R6, 0, 5, asm.Word),
		asm.StoreImm(asm.R6, 8, 6, asm.Word),
		asm.LoadMapPtr(asm.R1, 0).WithReference("rb2"),
		asm.Mov.Reg(asm.R2, asm.R6),
		asm.Mov.Imm(asm.R3, 16),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnRingbufOutput.Call(),
	}, commitInsns(asm.R6, false), exit0)},
	{"a tail call while holding a record", uapi.EINVAL, "tail_call would lead to reference leak", seq(asm.Instructions{asm.Mov.Reg(asm.R7, asm.R1)}, reserveInsns(16), nullOut,
		asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.R7),
			asm.LoadMapPtr(asm.R2, 0).WithReference("progs"),
			asm.Mov.Imm(asm.R3, 0),
			asm.FnTailCall.Call(),
		}, commitInsns(asm.R6, false), exit0)},
	{"a tail call after committing", 0, "", seq(asm.Instructions{asm.Mov.Reg(asm.R7, asm.R1)}, reserveInsns(16), nullOut,
		commitInsns(asm.R6, false), asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.R7),
			asm.LoadMapPtr(asm.R2, 0).WithReference("progs"),
			asm.Mov.Imm(asm.R3, 0),
			asm.FnTailCall.Call(),
		}, exit0)},
	{"reserve in an array", uapi.EINVAL, "cannot pass map_type 2 into func bpf_ringbuf_reserve#131", seq(asm.Instructions{
		asm.LoadMapPtr(asm.R1, 0).WithReference("arr"),
		asm.Mov.Imm(asm.R2, 8),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnRingbufReserve.Call(),
	}, exit0)},
	{"submit a map value", uapi.EACCES, "R1 type=map_value expected=ringbuf_mem", seq(asm.Instructions{
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, 0).WithReference("arr"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
	}, commitInsns(asm.R0, false), exit0)},
	{"null checked through a copy", 0, "", seq(reserveInsns(16), asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R0),
		asm.JEq.Imm(asm.R6, 0, "out"),
	}, commitInsns(asm.R0, false), exit0)},
	{"a record in a loop, committed every time", 0, "", seq(asm.Instructions{asm.Mov.Imm(asm.R8, 0)},
		label("loop", reserveInsns(8)),
		asm.Instructions{asm.JEq.Imm(asm.R0, 0, "next"), asm.Mov.Reg(asm.R6, asm.R0)},
		asm.Instructions{asm.StoreMem(asm.R6, 0, asm.R8, asm.DWord)}, commitInsns(asm.R6, false),
		asm.Instructions{
			asm.Add.Imm(asm.R8, 1).WithSymbol("next"),
			asm.JLT.Imm(asm.R8, 4, "loop"),
		}, exit0)},
	{"a record in a loop, the last one leaked", uapi.EINVAL, "BPF_EXIT instruction in main prog would lead to reference leak", seq(asm.Instructions{asm.Mov.Imm(asm.R8, 0)},
		label("loop", reserveInsns(8)),
		asm.Instructions{asm.JEq.Imm(asm.R0, 0, "next"), asm.Mov.Reg(asm.R6, asm.R0), asm.JEq.Imm(asm.R8, 3, "out")},
		commitInsns(asm.R6, false),
		asm.Instructions{
			asm.Add.Imm(asm.R8, 1).WithSymbol("next"),
			asm.JLT.Imm(asm.R8, 4, "loop"),
		}, exit0)},
}

// label puts sym on the first of insns.
func label(sym string, insns asm.Instructions) asm.Instructions {
	out := append(asm.Instructions(nil), insns...)
	out[0] = out[0].WithSymbol(sym)
	return out
}

// ringbufRefSpec is the program of a case, with its maps' fds.
func ringbufRefSpec(t testing.TB, insns asm.Instructions, fds map[string]int) *ebpf.ProgramSpec {
	t.Helper()
	insns = append(asm.Instructions(nil), insns...)
	for i := range insns {
		if ref := insns[i].Reference(); ref != "" && insns[i].IsLoadFromMap() {
			fd, ok := fds[ref]
			if !ok {
				t.Fatalf("no map %q", ref)
			}
			insns[i] = asm.LoadMapPtr(insns[i].Dst, fd).WithSymbol(insns[i].Symbol())
		}
	}
	return &ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: insns}
}

// bpfsim's verifier gives each reference tracking program the verdict the
// kernel gave it: this runs on any machine.
func TestRingbufReferenceVerdicts(t *testing.T) {
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	fds := map[string]int{}
	for name, spec := range ringbufRefMaps {
		m, err := k.NewMap(spec)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		fds[name] = m.FD()
	}
	for _, c := range ringbufRefCases {
		t.Run(c.name, func(t *testing.T) {
			wantVerdict(t, k, ringbufRefSpec(t, c.insns, fds), c.errno, c.msg)
		})
	}
}
