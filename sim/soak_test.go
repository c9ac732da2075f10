package sim_test

import (
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
)

// TestSoakCreatesAndDropsObjectsWithoutLeaks creates and drops objects in
// random orders across processes: maps of several types, programs that
// use them, dups, opens by id in other processes, processes that exit with
// fds open. At the end, with every process closed, the kernel must hold
// nothing, and the memory it uses must not have grown with the number of
// objects made.
func TestSoakCreatesAndDropsObjectsWithoutLeaks(t *testing.T) {
	objects := 100_000
	if raceEnabled || testing.Short() {
		objects = 10_000
	}
	k := newKernel(t, nil)
	rnd := rand.New(rand.NewPCG(1, 2))
	mapSpecs := []*ebpf.MapSpec{
		{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4},
		{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 4},
		{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4},
		{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4, Flags: 1 /* BPF_F_NO_PREALLOC */},
		{Type: ebpf.PerCPUHash, KeySize: 4, ValueSize: 8, MaxEntries: 4},
	}
	type proc struct {
		p    *sim.Process
		maps []*sim.Map
		// holders are maps whose values are objects: perf event arrays
		// and maps of maps.
		holders []*sim.Map
		progs   []*sim.Program
	}
	procs := make([]*proc, 4)
	for i := range procs {
		procs[i] = &proc{p: k.NewProcess()}
	}
	// The kernel's caches fill on first use (the per-CPU allocator's
	// first chunk, the CPUs' test-run buffers) and stay, as in Linux:
	// memory is measured against a kernel that has used them once.
	warm, err := k.NewMap(mapSpecs[1])
	if err != nil {
		t.Fatal(err)
	}
	warmProg, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: updateFirstKey(warm.FD())})
	if err != nil {
		t.Fatal(err)
	}
	for cpu := range k.NumCPUs() {
		if _, err := warmProg.Run(&sim.RunOptions{Data: make([]byte, 64), CPU: uint32(cpu)}); err != nil {
			t.Fatal(err)
		}
	}
	warmProg.Close()
	warm.Close()
	if err := k.CheckLeaks(); err != nil {
		t.Fatal(err)
	}
	backedAtStart := k.Memory().Backed()
	var baseline runtime.MemStats
	made, peakLive := 0, 0
	for made < objects {
		pr := procs[rnd.IntN(len(procs))]
		switch op := rnd.IntN(100); {
		case op < 30: // a new map, with a value written
			m, err := pr.p.NewMap(mapSpecs[rnd.IntN(len(mapSpecs))])
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Put(uint32(rnd.IntN(4)), make([]byte, 8*percpuCopies(m, k))); err != nil {
				t.Fatal(err)
			}
			pr.maps = append(pr.maps, m)
			made++
		case op < 34: // a perf event, installed in a perf event array of the process, then its fd closed
			m, err := pr.p.NewMap(&ebpf.MapSpec{Type: ebpf.PerfEventArray})
			if err != nil {
				t.Fatal(err)
			}
			cpu := rnd.IntN(k.NumCPUs())
			e, err := pr.p.NewPerfEvent(cpu, 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Put(uint32(cpu), uint32(e.FD())); err != nil {
				t.Fatal(err)
			}
			e.Close()
			pr.holders = append(pr.holders, m)
			made += 2
		case op < 38 && len(pr.maps) > 0: // an outer map holding one of the process's maps
			inner := pr.maps[rnd.IntN(len(pr.maps))]
			spec := &ebpf.MapSpec{Type: ebpf.HashOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 2,
				InnerMap: &ebpf.MapSpec{Type: inner.Type(), KeySize: inner.KeySize(), ValueSize: inner.ValueSize(), MaxEntries: inner.MaxEntries(), Flags: inner.Flags()}}
			if rnd.IntN(2) == 0 {
				spec.Type = ebpf.ArrayOfMaps
			}
			outer, err := pr.p.NewMap(spec)
			if err != nil {
				t.Fatal(err)
			}
			if err := outer.Put(uint32(rnd.IntN(2)), inner); err != nil {
				t.Fatal(err)
			}
			pr.holders = append(pr.holders, outer)
			made++
		case op < 50 && len(pr.maps) > 0: // a program that updates one of the process's maps
			m := pr.maps[rnd.IntN(len(pr.maps))]
			p, err := pr.p.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: updateFirstKey(m.FD())})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Run(&sim.RunOptions{Data: make([]byte, 64)}); err != nil {
				t.Fatal(err)
			}
			pr.progs = append(pr.progs, p)
			made++
		case op < 54: // a program that tail calls itself through a prog array holding it: a cycle only the array's uref release breaks
			pa, err := pr.p.NewMap(&ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 2})
			if err != nil {
				t.Fatal(err)
			}
			p, err := pr.p.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{
				asm.LoadMapPtr(asm.R2, pa.FD()),
				asm.Mov.Imm(asm.R3, 0),
				asm.FnTailCall.Call(),
				asm.Mov.Imm(asm.R0, 2),
				asm.Return(),
			}})
			if err != nil {
				t.Fatal(err)
			}
			if err := pa.Put(uint32(0), p); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Run(&sim.RunOptions{Data: make([]byte, 64)}); err != nil {
				t.Fatal(err)
			}
			pr.holders = append(pr.holders, pa)
			pr.progs = append(pr.progs, p)
			made += 2
		case op < 58 && len(pr.maps) > 0: // a dup
			c, err := pr.maps[rnd.IntN(len(pr.maps))].Clone()
			if err != nil {
				t.Fatal(err)
			}
			pr.maps = append(pr.maps, c)
		case op < 64 && len(pr.maps) > 0: // the map opened by id in another process
			other := procs[rnd.IntN(len(procs))]
			m, err := other.p.NewMapFromID(pr.maps[rnd.IntN(len(pr.maps))].ID())
			if err != nil {
				t.Fatal(err)
			}
			other.maps = append(other.maps, m)
		case op < 82 && len(pr.maps) > 0: // close a map handle
			i := rnd.IntN(len(pr.maps))
			pr.maps[i].Close()
			pr.maps = append(pr.maps[:i], pr.maps[i+1:]...)
		case op < 86 && len(pr.holders) > 0: // close a perf event array (its file's events go) or a map of maps
			i := rnd.IntN(len(pr.holders))
			pr.holders[i].Close()
			pr.holders = append(pr.holders[:i], pr.holders[i+1:]...)
		case op < 96 && len(pr.progs) > 0: // unload a program
			i := rnd.IntN(len(pr.progs))
			pr.progs[i].Close()
			pr.progs = append(pr.progs[:i], pr.progs[i+1:]...)
		case op >= 96: // the process exits with whatever it has open
			pr.p.Close()
			*pr = proc{p: k.NewProcess()}
		}
		if live := k.Objects().Maps; live > peakLive {
			peakLive = live
		}
		if made >= objects/10 && baseline.HeapAlloc == 0 {
			k.SynchronizeRCU()
			runtime.GC()
			runtime.ReadMemStats(&baseline)
		}
	}
	for _, pr := range procs {
		pr.p.Close()
	}
	if err := k.CheckLeaks(); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var end runtime.MemStats
	runtime.ReadMemStats(&end)
	t.Logf("%d objects made, at most %d maps alive at once; heap %d KiB after a tenth, %d KiB at the end; simulated memory backed: %d KiB",
		made, peakLive, baseline.HeapAlloc>>10, end.HeapAlloc>>10, k.Memory().Backed()>>10)
	if b := k.Memory().Backed(); b != backedAtStart {
		t.Errorf("simulated memory backed: %d KiB at the start, %d KiB with nothing left", backedAtStart>>10, b>>10)

	}
	if end.HeapAlloc > baseline.HeapAlloc+32<<20 {
		t.Errorf("the heap grew from %d to %d KiB while nothing was left alive", baseline.HeapAlloc>>10, end.HeapAlloc>>10)
	}
}

// percpuCopies is how many values a map takes per key from user space.
func percpuCopies(m *sim.Map, k *sim.Kernel) int {
	if m.Type() == ebpf.PerCPUArray || m.Type() == ebpf.PerCPUHash {
		return k.NumCPUs()
	}
	return 1
}

// updateFirstKey writes 1 under key 0 of the map at fd.
func updateFirstKey(fd int) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.R10, -4, 0, asm.Word),
		asm.Mov.Imm(asm.R0, 1),
		asm.StoreMem(asm.R10, -16, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, fd),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.Mov.Reg(asm.R3, asm.R10),
		asm.Add.Imm(asm.R3, -16),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnMapUpdateElem.Call(),
		asm.Mov.Imm(asm.R0, 2),
		asm.Return(),
	}
}
