package sim_test

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
)

// pair is a hash value whose two halves user space always writes equal: a
// program that ever sees them differ has seen a torn value.
type pair struct{ A, B uint64 }

// Programs on three CPUs count runs in an array (atomically) and in a
// per-CPU array (plainly), and read a hash map that user space keeps
// updating and deleting from a fourth goroutine. No count may be lost and
// no value may be seen torn, by programs or by user space.
func TestProgramsAndUserSpaceShareMapsWithoutLossOrTearing(t *testing.T) {
	const (
		cpus    = 3
		runs    = 2000
		keys    = 8
		workers = cpus
		adds    = 1000 // atomic adds per run, so that runs on different CPUs overlap
	)
	k := newKernel(t, &sim.Options{CPUs: cpus + 1})
	total := newMap(t, k, &ebpf.MapSpec{Name: "total", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	perCPU := newMap(t, k, &ebpf.MapSpec{Name: "per_cpu", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	pairs := newMap(t, k, &ebpf.MapSpec{Name: "pairs", Type: ebpf.Hash, KeySize: 4, ValueSize: 16, MaxEntries: keys})

	// ctx: u32 key. Returns 1 if the pair at key was torn, else 0.
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		// total[0] += 1, atomically, adds times
		asm.LoadMapPtr(asm.R1, total.FD()).WithReference("total"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "fail"),
		asm.Mov.Imm(asm.R1, 1),
		asm.Mov.Imm(asm.R7, adds),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord).WithSymbol("add"),
		asm.Sub.Imm(asm.R7, 1),
		asm.JNE.Imm(asm.R7, 0, "add"),
		// per_cpu[0] += 1, plainly: only this CPU touches its copy
		asm.LoadMapPtr(asm.R1, perCPU.FD()).WithReference("per_cpu"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "fail"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		// v = pairs[ctx->key]; torn if v->A != v->B
		asm.LoadMem(asm.R2, asm.R6, 0, asm.Word),
		asm.StoreMem(asm.RFP, -8, asm.R2, asm.Word),
		asm.LoadMapPtr(asm.R1, pairs.FD()).WithReference("pairs"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "ok"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.LoadMem(asm.R2, asm.R0, 8, asm.DWord),
		asm.JNE.Reg(asm.R1, asm.R2, "torn"),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("ok"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("torn"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("fail"),
		asm.Return(),
	}
	for name, m := range map[string]*sim.Map{"total": total, "per_cpu": perCPU, "pairs": pairs} {
		insns = associate(t, name, m, insns)
	}
	p := load(t, k, ebpf.Syscall, insns)

	var stop atomic.Bool
	var userTorn, userOps atomic.Int64
	var writer sync.WaitGroup
	writer.Add(1)
	go func() {
		defer writer.Done()
		r := rand.New(rand.NewPCG(1, 2))
		for !stop.Load() {
			key := uint32(r.IntN(keys))
			switch r.IntN(3) {
			case 0:
				x := r.Uint64()
				_ = pairs.Put(key, pair{x, x})
			case 1:
				_ = pairs.Delete(key)
			default:
				var v pair
				if pairs.Lookup(key, &v) == nil && v.A != v.B {
					userTorn.Add(1)
				}
			}
			userOps.Add(1)
		}
	}()

	var wg sync.WaitGroup
	var progTorn, failed atomic.Int64
	for cpu := uint32(0); cpu < workers; cpu++ {
		wg.Add(1)
		go func(cpu uint32) {
			defer wg.Done()
			ctx := make([]byte, 4)
			for i := 0; i < runs; i++ {
				binary.LittleEndian.PutUint32(ctx, uint32(i%keys))
				ret, err := p.Run(&sim.RunOptions{CPU: cpu, Context: ctx})
				switch {
				case err != nil:
					t.Error(err)
					return
				case ret == 1:
					progTorn.Add(1)
				case ret == 2:
					failed.Add(1)
				}
			}
		}(cpu)
	}
	wg.Wait()
	stop.Store(true)
	writer.Wait()

	var sum uint64
	if err := total.Lookup(uint32(0), &sum); err != nil || sum != workers*runs*adds {
		t.Errorf("the atomic total is %d, %v; want %d", sum, err, workers*runs*adds)
	}
	var per []uint64
	if err := perCPU.Lookup(uint32(0), &per); err != nil {
		t.Fatal(err)
	}
	var perSum uint64
	for cpu, n := range per {
		perSum += n
		if cpu < workers && n != runs {
			t.Errorf("CPU %d counted %d runs, want %d", cpu, n, runs)
		}
	}
	if perSum != workers*runs {
		t.Errorf("per-CPU counts add up to %d, want %d", perSum, workers*runs)
	}
	if progTorn.Load() != 0 || userTorn.Load() != 0 || failed.Load() != 0 {
		t.Errorf("torn values: %d seen by programs, %d by user space; %d failed lookups", progTorn.Load(), userTorn.Load(), failed.Load())
	}
	if userOps.Load() == 0 {
		t.Error("user space never ran alongside the programs")
	}
}
