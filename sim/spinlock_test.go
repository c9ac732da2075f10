package sim_test

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
)

// lockedPair is a value whose two counters a program only bumps together,
// under the value's bpf_spin_lock: struct { u32 a; struct bpf_spin_lock
// l; u32 b; }.
var lockedPair = func() *ebpf.MapSpec {
	u32 := &btf.Int{Name: "unsigned int", Size: 4}
	lock := &btf.Struct{Name: "bpf_spin_lock", Size: 4, Members: []btf.Member{{Name: "val", Type: u32}}}
	val := &btf.Struct{Name: "pair", Size: 12, Members: []btf.Member{
		{Name: "a", Type: u32}, {Name: "l", Type: lock, Offset: 32}, {Name: "b", Type: u32, Offset: 64}}}
	return &ebpf.MapSpec{Name: "pair", Type: ebpf.Array, KeySize: 4, ValueSize: 12, MaxEntries: 1, Key: u32, Value: val}
}()

// lockedBump is a program that adds 1 to both counters of pair[0] under
// its lock, with enough work in between that runs on other CPUs overlap;
// locked false leaves the lock out, to show that the counts then get lost.
func lockedBump(m *sim.Map, locked bool) asm.Instructions {
	bump := func(off int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R6, off, asm.Word),
			asm.Mov.Imm(asm.R3, 64),
			asm.Sub.Imm(asm.R3, 1).WithSymbol("spin" + string(rune('a'+off))),
			asm.JNE.Imm(asm.R3, 0, "spin"+string(rune('a'+off))),
			asm.Add.Imm(asm.R2, 1),
			asm.StoreMem(asm.R6, off, asm.R2, asm.Word),
		}
	}
	lockCall := func(fn asm.BuiltinFunc) asm.Instructions {
		if !locked {
			return nil
		}
		return asm.Instructions{asm.Mov.Reg(asm.R1, asm.R6), asm.Add.Imm(asm.R1, 4), fn.Call()}
	}
	var insns asm.Instructions
	insns = append(insns,
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Reg(asm.R6, asm.R0),
	)
	insns = append(insns, lockCall(asm.FnSpinLock)...)
	insns = append(insns, bump(0)...)
	insns = append(insns, bump(8)...)
	insns = append(insns, lockCall(asm.FnSpinUnlock)...)
	return append(insns, asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return())
}

// Programs on four CPUs bump the two counters of one value under its
// bpf_spin_lock, interpreted and JITed: no bump is lost, and user space,
// reading with BPF_F_LOCK while they run, never sees the counters differ.
// Without the lock the same program loses bumps, which shows that the
// runs really overlap; on a busy machine the goroutines may take turns
// for a whole round, so the unlocked round is tried a few times.
func TestSpinLockSerialisesProgramsOnAllCPUs(t *testing.T) {
	const cpus, runs = 4, 3000
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		v, torn := bumpOnCPUs(t, rt, true, cpus, runs)
		if v[0] != cpus*runs || v[2] != cpus*runs || torn > 0 {
			t.Errorf("%v with the lock: counters %d and %d, want %d; %d reads saw them differ", rt, v[0], v[2], cpus*runs, torn)
		}
		if runtime.GOMAXPROCS(0) < 2 {
			t.Logf("%v: one OS thread runs Go code here, so runs cannot overlap: the unlocked control is not run", rt)
			continue
		}
		lost := false
		for attempt := 0; attempt < 10 && !lost; attempt++ {
			v, _ := bumpOnCPUs(t, rt, false, cpus, runs)
			lost = v[0] != cpus*runs || v[2] != cpus*runs
			t.Logf("%v without the lock, round %d: counters %d and %d of %d", rt, attempt, v[0], v[2], cpus*runs)
		}
		if !lost {
			t.Errorf("%v without the lock: no bump was lost in 10 rounds, so the runs did not overlap and the test proves nothing", rt)
		}
	}
}

// bumpOnCPUs runs lockedBump runs times on each of cpus CPUs at once and
// returns the value afterwards and, with the lock, how many BPF_F_LOCK
// reads made meanwhile saw the counters differ. The lock word must read
// as 0 from user space.
func bumpOnCPUs(t *testing.T, rt sim.Runtime, locked bool, cpus uint32, runs int) (v [3]uint32, torn int) {
	t.Helper()
	k := newKernel(t, &sim.Options{CPUs: int(cpus), Runtime: rt})
	m := newMap(t, k, lockedPair)
	p := load(t, k, ebpf.XDP, lockedBump(m, locked))
	var wg sync.WaitGroup
	for cpu := uint32(0); cpu < cpus; cpu++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < runs; i++ {
				if _, err := p.Run(&sim.RunOptions{CPU: cpu, Data: make([]byte, 14)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	if locked {
		for i := 0; i < 200; i++ {
			var r [3]uint32
			if err := m.LookupWithFlags(uint32(0), &r, ebpf.LookupLock); err != nil {
				t.Fatal(err)
			}
			if r[0] != r[2] || r[1] != 0 {
				torn++
			}
		}
	}
	wg.Wait()
	if err := m.Lookup(uint32(0), &v); err != nil {
		t.Fatal(err)
	}
	if v[1] != 0 {
		t.Errorf("%v: user space read the lock word as %#x, want it hidden (0)", rt, v[1])
	}
	return v, torn
}

// A run that stops while its program holds a lock (here its instruction
// budget runs out inside the locked region) releases the lock, so the
// next program to take it does not spin for ever.
func TestSpinLockHeldByAStoppedRunIsReleased(t *testing.T) {
	k := newKernel(t, &sim.Options{CPUs: 2})
	m := newMap(t, k, lockedPair)
	insns := asm.Instructions{
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Reg(asm.R6, asm.R0),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Add.Imm(asm.R1, 4),
		asm.FnSpinLock.Call(),
		asm.Mov.Imm(asm.R7, 1000),
		asm.Sub.Imm(asm.R7, 1).WithSymbol("loop"),
		asm.JNE.Imm(asm.R7, 0, "loop"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Add.Imm(asm.R1, 4),
		asm.FnSpinUnlock.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}
	p := load(t, k, ebpf.XDP, insns)
	if _, err := p.Run(&sim.RunOptions{CPU: 0, Data: make([]byte, 14), MaxInsns: 100}); err == nil {
		t.Fatal("a run of 100 instructions finished a program of 2,000")
	}
	done := make(chan error, 1)
	go func() {
		_, err := p.Run(&sim.RunOptions{CPU: 1, Data: make([]byte, 14)})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the lock the stopped run held is still held")
	}
}
