package sim_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// dummyAdd implements bpf_dummy_ops.test_1: the state's value plus 5,
// stored back and returned; -1 without a state.
var dummyAdd = asm.Instructions{
	asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
	asm.Mov.Imm(asm.R0, -1),
	asm.JEq.Imm(asm.R2, 0, "out"),
	asm.LoadMem(asm.R0, asm.R2, 0, asm.Word),
	asm.Add.Imm(asm.R0, 5),
	asm.StoreMem(asm.R2, 0, asm.R0, asm.Word),
	asm.Return().WithSymbol("out"),
}

func argsCtx(args ...uint64) []byte {
	b := make([]byte, 8*len(args))
	for i, a := range args {
		binary.LittleEndian.PutUint64(b[8*i:], a)
	}
	return b
}

// A bpf_dummy_ops program's test run takes the member's arguments as its
// context and a state from the task's user memory, which it writes back:
// interpreted and JITed; bad contexts, states and NULLs fail with the
// kernel's errnos, and other struct_ops types have no test runs.
func TestDummyOpsTestRuns(t *testing.T) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) {
			k := newKernel(t, &sim.Options{Runtime: rt})
			prog, err := k.NewProgram(&ebpf.ProgramSpec{Name: "add", Type: ebpf.StructOps, AttachTo: "bpf_dummy_ops:test_1", License: "GPL", Instructions: dummyAdd})
			if err != nil {
				t.Fatal(err)
			}
			defer prog.Close()
			const addr = 0x10000
			state := []byte{7, 0, 0, 0}
			task := &sim.Task{PID: 5, TGID: 5, Memory: []sim.UserMemory{{Addr: addr, Bytes: state}}}
			res, err := prog.Test(&sim.RunOptions{Context: argsCtx(addr), Task: task})
			if err != nil {
				t.Fatal(err)
			}
			if res.R0 != 12 || binary.LittleEndian.Uint32(state) != 12 {
				t.Errorf("returned %d with the state %d, want 12 and 12", res.R0, binary.LittleEndian.Uint32(state))
			}
			if res, err := prog.Test(&sim.RunOptions{Context: argsCtx(0), Task: task}); err != nil || int32(res.R0) != -1 {
				t.Errorf("NULL state: %v, %v; want -1", res, err)
			}
			for _, c := range []struct {
				name  string
				ctx   []byte
				errno uapi.Errno
			}{
				{"two arguments", argsCtx(addr, 1), uapi.EINVAL},
				{"none", nil, uapi.EINVAL},
				{"state nowhere", argsCtx(0x20000), uapi.EFAULT},
				{"state across the end", argsCtx(addr + 2), uapi.EFAULT},
			} {
				if _, err := prog.Test(&sim.RunOptions{Context: c.ctx, Task: task}); !errors.Is(err, c.errno) {
					t.Errorf("%s: %v, want %v", c.name, err, c.errno)
				}
			}

			// test_2's state may not be NULL.
			sum, err := k.NewProgram(&ebpf.ProgramSpec{Name: "sum", Type: ebpf.StructOps, AttachTo: "bpf_dummy_ops:test_2", License: "GPL", Instructions: asm.Instructions{
				asm.LoadMem(asm.R0, asm.R1, 32, asm.DWord),
				asm.Return(),
			}})
			if err != nil {
				t.Fatal(err)
			}
			defer sum.Close()
			if _, err := sum.Test(&sim.RunOptions{Context: argsCtx(0, 1, 2, 3, 4), Task: task}); !errors.Is(err, uapi.EINVAL) {
				t.Errorf("test_2 without a state: %v, want EINVAL", err)
			}
			if res, err := sum.Test(&sim.RunOptions{Context: argsCtx(addr, 1, 2, 3, 4), Task: task}); err != nil || res.R0 != 4 {
				t.Errorf("test_2: %v, %v; want 4", res, err)
			}
		})
	}

	// Another type's programs, and an instance of bpf_dummy_ops.
	k := newKernel(t, nil)
	newTestOps(t, k)
	p := k.NewProcess()
	defer p.Close()
	prog := test2Prog(t, p, 0)
	if _, err := prog.Test(&sim.RunOptions{Context: argsCtx(1, 2)}); !errors.Is(err, uapi.EOPNOTSUPP) {
		t.Errorf("test run of test_ops' program: %v, want EOPNOTSUPP", err)
	}
	d, ok := k.StructOpsType("bpf_dummy_ops")
	if !ok {
		t.Fatal("no bpf_dummy_ops")
	}
	m, err := p.NewMap(&ebpf.MapSpec{Name: "dummy", Type: ebpf.StructOpsMap, KeySize: 4, MaxEntries: 1, Value: d.Type.Struct})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Put(uint32(0), make([]byte, d.ValueSize())); !errors.Is(err, uapi.EOPNOTSUPP) {
		t.Errorf("registering a bpf_dummy_ops instance: %v, want EOPNOTSUPP", err)
	}
}
