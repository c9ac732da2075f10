package kdiff

import (
	"encoding/binary"
	"runtime"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
)

// dummyProgs are bpf_dummy_ops programs: test_1 adds 5 to the state's
// value and returns it (-1 without a state); test_2 returns a1 + a2 + a3
// + a4 as the slots hold them, and stores a1 in the state; raw returns
// one slot whole.
var dummyProgs = map[string]struct {
	member string
	insns  asm.Instructions
}{
	"add": {"test_1", asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
		asm.Mov.Imm(asm.R0, -1),
		asm.JEq.Imm(asm.R2, 0, "out"),
		asm.LoadMem(asm.R0, asm.R2, 0, asm.Word),
		asm.Add.Imm(asm.R0, 5),
		asm.StoreMem(asm.R2, 0, asm.R0, asm.Word),
		asm.Return().WithSymbol("out"),
	}},
	"sum": {"test_2", asm.Instructions{
		asm.LoadMem(asm.R6, asm.R1, 0, asm.DWord),
		asm.LoadMem(asm.R2, asm.R1, 8, asm.DWord),
		asm.StoreMem(asm.R6, 0, asm.R2, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, 16, asm.DWord),
		asm.LoadMem(asm.R4, asm.R1, 24, asm.DWord),
		asm.LoadMem(asm.R5, asm.R1, 32, asm.DWord),
		asm.Mov.Reg(asm.R0, asm.R2),
		asm.Add.Reg(asm.R0, asm.R3),
		asm.Add.Reg(asm.R0, asm.R4),
		asm.Add.Reg(asm.R0, asm.R5),
		asm.Return(),
	}},
	"raw a2": {"test_2", asm.Instructions{
		asm.LoadMem(asm.R0, asm.R1, 16, asm.DWord),
		asm.Return(),
	}},
	"sleepable": {"test_sleepable", asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
		asm.LoadMem(asm.R0, asm.R2, 0, asm.Word),
		asm.Return(),
	}},
}

// BPF_PROG_TEST_RUN of bpf_dummy_ops programs in this machine's kernel and
// in bpfsim: the arguments given as the context, the state copied in from
// user memory, written by the program and copied back, a NULL state where
// it may be one and where it may not, contexts of the wrong size and a
// state at an address with nothing there: the same return values, errnos
// and states.
func TestDummyOpsTestRunsAreTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	const userAddr = 0x7f0000001000 // the state's address in bpfsim's task
	type runCase struct {
		prog  string
		args  []uint64 // args[0] == 1: the state's address
		state int32
	}
	cases := []runCase{
		{"add", []uint64{1}, 7},
		{"add", []uint64{1}, -9},
		{"add", []uint64{0}, 0},
		{"add", []uint64{1, 2}, 0},
		{"add", []uint64{}, 0},
		{"add", []uint64{0x3000}, 0}, // nothing mapped there in either
		{"sum", []uint64{1, 1, 2, 3, 4}, 0},
		{"sum", []uint64{1, 0xffffffffffffffff, 0x10002, 0x1ff, 5}, 3},
		{"sum", []uint64{0, 1, 2, 3, 4}, 0},
		{"sum", []uint64{1, 1, 2, 3}, 0},
		{"raw a2", []uint64{1, 0, 0xabcd0002, 0, 0}, 0},
		{"sleepable", []uint64{1}, 42},
	}
	kprogs, sprogs := map[string]*ebpf.Program{}, map[string]*sim.Program{}
	for name, d := range dummyProgs {
		spec := &ebpf.ProgramSpec{Name: "dummy", Type: ebpf.StructOps, AttachTo: "bpf_dummy_ops:" + d.member, License: "GPL", Instructions: d.insns}
		if name == "sleepable" {
			spec.Flags = 1 << 4 // BPF_F_SLEEPABLE
		}
		kp, err := ebpf.NewProgram(spec.Copy())
		if err != nil {
			t.Skipf("skipped: this kernel has no bpf_dummy_ops test runs: %v", err)
		}
		defer kp.Close()
		sp, err := k.NewProgram(spec.Copy())
		if err != nil {
			t.Fatal(err)
		}
		defer sp.Close()
		kprogs[name], sprogs[name] = kp, sp
	}
	for _, c := range cases {
		kstate := new(int32)
		*kstate = c.state
		sstate := make([]byte, 4)
		binary.LittleEndian.PutUint32(sstate, uint32(c.state))
		kctx, sctx := make([]byte, 8*len(c.args)), make([]byte, 8*len(c.args))
		for i, a := range c.args {
			ka, sa := a, a
			if i == 0 && a == 1 {
				ka, sa = uint64(uintptr(unsafe.Pointer(kstate))), userAddr
			}
			binary.LittleEndian.PutUint64(kctx[8*i:], ka)
			binary.LittleEndian.PutUint64(sctx[8*i:], sa)
		}
		kret, kerr := kprogs[c.prog].Run(&ebpf.RunOptions{Context: kctx})
		runtime.KeepAlive(kstate)
		task := &sim.Task{PID: 100, TGID: 100, Comm: "dummy", Memory: []sim.UserMemory{{Addr: userAddr, Bytes: sstate}}}
		res, serr := sprogs[c.prog].Test(&sim.RunOptions{Context: sctx, Task: task})
		var sret uint32
		if res != nil {
			sret = uint32(res.R0)
		}
		if errnoOf(kerr) != errnoOf(serr) || kret != sret {
			t.Errorf("%s%v: kernel %d, %v; bpfsim %d, %v", c.prog, c.args, int32(kret), kerr, int32(sret), serr)
		}
		if got := int32(binary.LittleEndian.Uint32(sstate)); got != *kstate {
			t.Errorf("%s%v: the state is %d in the kernel, %d in bpfsim", c.prog, c.args, *kstate, got)
		}
		t.Logf("%s%v: %d, %v, state %d", c.prog, c.args, int32(kret), errnoOf(kerr), *kstate)
	}
}

// bpf_dummy_ops programs loaded at log level 2 in this machine's kernel
// and in bpfsim: stores into the state and elsewhere, a nullable state
// used untested, a sleepable program for a member that takes none; the
// same verdicts, errnos and whole logs.
func TestDummyOpsProgramsVerifyAsTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	for _, c := range []struct {
		name, member string
		flags        uint32
		insns        asm.Instructions
	}{
		{"add", "test_1", 0, dummyProgs["add"].insns},
		{"sum", "test_2", 0, dummyProgs["sum"].insns},
		{"nullable state used untested", "test_1", 0, asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.LoadMem(asm.R0, asm.R2, 0, asm.Word),
			asm.Return(),
		}},
		{"store past the state", "test_2", 0, asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
			asm.Mov.Imm(asm.R0, 0),
			asm.StoreMem(asm.R2, 2, asm.R0, asm.Word),
			asm.Return(),
		}},
		{"narrow read of a2", "test_2", 0, asm.Instructions{
			asm.LoadMem(asm.R0, asm.R1, 16, asm.Half),
			asm.Return(),
		}},
		{"sleepable test_1", "test_1", 1 << 4, asm.Instructions{
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := &ebpf.ProgramSpec{Name: "dummy", Type: ebpf.StructOps, AttachTo: "bpf_dummy_ops:" + c.member, License: "GPL", Instructions: c.insns, Flags: c.flags}
			sameVerdictAndLog(t, k, spec)
		})
	}
}
