package sim_test

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
)

// Hash maps end to end: programs and user space share a HASH and a
// PERCPU_HASH through the helpers and the cilium/ebpf-style handles.

// countProgram counts calls per key in a hash map: it looks key up, adds
// one to the value it finds, or inserts 1 with BPF_NOEXIST; it returns the
// new count. With del it deletes the key instead and returns the helper's
// result.
func countProgram(m *sim.Map, key int32, del bool) asm.Instructions {
	insns := asm.Instructions{
		asm.StoreImm(asm.RFP, -4, int64(key), asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()).WithReference("m"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
	}
	if del {
		return associateM(m, append(insns, asm.FnMapDeleteElem.Call(), asm.Return()))
	}
	insns = append(insns,
		asm.FnMapLookupElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "found"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreMem(asm.RFP, -16, asm.R1, asm.DWord),
		asm.LoadMapPtr(asm.R1, m.FD()).WithReference("m"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -16),
		asm.Mov.Imm(asm.R4, 1), // BPF_NOEXIST
		asm.FnMapUpdateElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(asm.R0, 1),
		asm.Return().WithSymbol("out"),
		asm.Mov.Imm(asm.R1, 1).WithSymbol("found"),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord),
		asm.Return(),
	)
	return associateM(m, insns)
}

func associateM(m *sim.Map, insns asm.Instructions) asm.Instructions {
	if err := insns.AssociateMap("m", m); err != nil {
		panic(err)
	}
	return insns
}

func loadProg(t *testing.T, k *sim.Kernel, insns asm.Instructions) *sim.Program {
	t.Helper()
	p, err := k.NewProgram(&ebpf.ProgramSpec{Name: "count", Type: ebpf.Syscall, Flags: 1 << 4 /* BPF_F_SLEEPABLE */, Instructions: insns, License: "GPL"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestProgramsAndUserSpaceShareAHashMapInTheSimulatedKernel(t *testing.T) {
	k := newKernel(t, nil)
	m, err := k.NewMap(&ebpf.MapSpec{Name: "counts", Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	inc := loadProg(t, k, countProgram(m, 7, false))
	for want := uint32(1); want <= 3; want++ {
		if got, err := inc.Run(nil); err != nil || got != want {
			t.Fatalf("run %d returned %d, %v", want, got, err)
		}
	}
	var v uint64
	if err := m.Lookup(uint32(7), &v); err != nil || v != 3 {
		t.Errorf("user space sees %d, %v; want 3", v, err)
	}
	if err := m.Put(uint32(9), uint64(100)); err != nil {
		t.Fatal(err)
	}
	var keys []uint32
	var key uint32
	var value uint64
	it := m.Iterate()
	for it.Next(&key, &value) {
		keys = append(keys, key)
	}
	if err := it.Err(); err != nil || len(keys) != 2 {
		t.Errorf("iterated %v, %v; want keys 7 and 9", keys, err)
	}
	del := loadProg(t, k, countProgram(m, 7, true))
	if got, err := del.Run(nil); err != nil || got != 0 {
		t.Fatalf("delete returned %d, %v", got, err)
	}
	if got, _ := del.Run(nil); int32(got) != -2 {
		t.Errorf("second delete returned %d, want -ENOENT", int32(got))
	}
	if err := m.Lookup(uint32(7), &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("lookup of the deleted key: %v", err)
	}
	k.SynchronizeRCU()
	if got, err := inc.Run(nil); err != nil || got != 1 {
		t.Errorf("count after the delete restarts at %d, %v; want 1", got, err)
	}
}

func TestPercpuHashInTheSimulatedKernel(t *testing.T) {
	k := newKernel(t, nil)
	m, err := k.NewMap(&ebpf.MapSpec{Name: "pcounts", Type: ebpf.PerCPUHash, KeySize: 4, ValueSize: 8, MaxEntries: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	inc := loadProg(t, k, countProgram(m, 1, false))
	for i := 0; i < 2; i++ {
		if _, err := inc.Run(&sim.RunOptions{CPU: 1}); err != nil {
			t.Fatal(err)
		}
	}
	var per []uint64
	if err := m.Lookup(uint32(1), &per); err != nil {
		t.Fatal(err)
	}
	if len(per) != 2 || per[0] != 0 || per[1] != 2 {
		t.Errorf("per-CPU values %v, want [0 2]", per)
	}
	if err := m.Put(uint32(1), []uint64{5, 6}); err != nil {
		t.Fatal(err)
	}
	if got, err := inc.Run(&sim.RunOptions{CPU: 0}); err != nil || got != 6 {
		t.Errorf("CPU 0 counts to %d, %v; want 6", got, err)
	}
}
