package sim_test

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// tailCaller returns a program that tail calls slot idx of the prog array
// at arrayFD and returns ret if the tail call falls through.
func tailCaller(arrayFD int, idx, ret int32) asm.Instructions {
	return asm.Instructions{
		asm.LoadMapPtr(asm.R2, arrayFD),
		asm.Mov.Imm(asm.R3, idx),
		asm.FnTailCall.Call(),
		asm.Mov.Imm(asm.R0, ret),
		asm.Return(),
	}
}

func retProg(ret int32) asm.Instructions {
	return asm.Instructions{asm.Mov.Imm(asm.R0, ret), asm.Return()}
}

func newProgArrayMap(t *testing.T, k *sim.Kernel, n uint32) *sim.Map {
	t.Helper()
	m, err := k.NewMap(progArraySpec(n))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func runXDP(t *testing.T, p *sim.Program) uint32 {
	t.Helper()
	ret, err := p.Run(&sim.RunOptions{Data: make([]byte, 64)})
	if err != nil {
		t.Fatal(err)
	}
	return ret
}

func TestTailCallChainBoundsAndEmptySlots(t *testing.T) {
	k := newKernel(t, nil)
	pa := newProgArrayMap(t, k, 4)
	a := load(t, k, ebpf.XDP, tailCaller(pa.FD(), 1, 10))
	b := load(t, k, ebpf.XDP, tailCaller(pa.FD(), 2, 20))
	c := load(t, k, ebpf.XDP, retProg(30))
	far := load(t, k, ebpf.XDP, tailCaller(pa.FD(), 4, 40))
	huge := load(t, k, ebpf.XDP, tailCaller(pa.FD(), -1, 50))
	if got := runXDP(t, a); got != 10 {
		t.Fatalf("empty slot: got %d, want the fall-through 10", got)
	}
	if err := pa.Put(uint32(1), b); err != nil {
		t.Fatal(err)
	}
	if got := runXDP(t, a); got != 20 {
		t.Fatalf("a -> b, b's slot empty: got %d, want 20", got)
	}
	if err := pa.Put(uint32(2), c); err != nil {
		t.Fatal(err)
	}
	if got := runXDP(t, a); got != 30 {
		t.Fatalf("a -> b -> c: got %d, want 30", got)
	}
	if got := runXDP(t, far); got != 40 {
		t.Fatalf("index == max_entries: got %d, want the fall-through", got)
	}
	if got := runXDP(t, huge); got != 50 {
		t.Fatalf("index 0xffffffff: got %d, want the fall-through", got)
	}
	// A change of slot is seen by the next run.
	if err := pa.Put(uint32(2), a); err != nil {
		t.Fatal(err)
	}
	if got := runXDP(t, b); got != 10 {
		// b -> a -> b -> a ... until the limit: after 33 tail calls the
		// 34th program runs, a (b is every odd one), and its tail
		// call falls through.
		t.Fatalf("b <-> a until the limit: got %d, want 10", got)
	}
	if err := pa.Delete(uint32(1)); err != nil {
		t.Fatal(err)
	}
	if got := runXDP(t, a); got != 10 {
		t.Fatalf("after delete: got %d, want 10", got)
	}
}

// counting returns a program that adds one to counters[id], then makes
// empties tail calls into slot emptySlot and one into slot self, and
// returns 7.
func counting(countersFD, arrayFD int, id int32, empties int, emptySlot, self int32) asm.Instructions {
	in := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.StoreImm(asm.R10, -4, int64(id), asm.Word),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, countersFD),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
	}
	for i := 0; i < empties; i++ {
		in = append(in, asm.Mov.Reg(asm.R1, asm.R6), asm.LoadMapPtr(asm.R2, arrayFD), asm.Mov.Imm(asm.R3, emptySlot), asm.FnTailCall.Call())
	}
	return append(in,
		asm.Mov.Reg(asm.R1, asm.R6), asm.LoadMapPtr(asm.R2, arrayFD), asm.Mov.Imm(asm.R3, self), asm.FnTailCall.Call(),
		asm.Mov.Imm(asm.R0, 7).WithSymbol("out"),
		asm.Return(),
	)
}

func TestTailCallLimitIs33PerInvocation(t *testing.T) {
	for _, c := range []struct {
		name    string
		runtime sim.Runtime
		empties int
		runs    uint64 // how many times the program runs in one invocation
	}{
		// 1 + 33 tail calls, then the 34th falls through.
		{"self tail call", sim.RuntimeInterpreter, 0, 34},
		{"self tail call, JIT", sim.RuntimeJIT, 0, 34},
		// In the interpreter tail calls into an empty slot count too
		// (the count grows before the slot is read): each run uses 3
		// of the 33.
		{"two empty slots then self", sim.RuntimeInterpreter, 2, 12},
		// The arm64 JIT commits the count only when the slot holds a
		// program.
		{"two empty slots then self, JIT", sim.RuntimeJIT, 2, 34},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := newKernel(t, &sim.Options{Runtime: c.runtime})
			pa := newProgArrayMap(t, k, 2)
			counters, err := k.NewMap(countersSpec(1))
			if err != nil {
				t.Fatal(err)
			}
			p := load(t, k, ebpf.XDP, counting(counters.FD(), pa.FD(), 0, c.empties, 1, 0))
			if err := pa.Put(uint32(0), p); err != nil {
				t.Fatal(err)
			}
			for inv := uint64(1); inv <= 2; inv++ {
				if got := runXDP(t, p); got != 7 {
					t.Fatalf("returned %d, want 7", got)
				}
				var n uint64
				if err := counters.Lookup(uint32(0), &n); err != nil {
					t.Fatal(err)
				}
				// The count starts afresh with every invocation.
				if n != inv*c.runs {
					t.Fatalf("after %d invocations the program ran %d times, want %d", inv, n, inv*c.runs)
				}
			}
		})
	}
}

func TestProgArrayUserSpaceErrnos(t *testing.T) {
	k := newKernel(t, nil)
	pa := newProgArrayMap(t, k, 2)
	other, err := k.NewMap(countersSpec(1))
	if err != nil {
		t.Fatal(err)
	}
	xdp := load(t, k, ebpf.XDP, retProg(1))
	sock := load(t, k, ebpf.SocketFilter, retProg(1))
	// An unverified XDP program reads the xdp_md itself, where verified
	// ones read the xdp_buff behind it: a tail call must not mix them.
	rawXDP, err := k.NewProgramWithOptions(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: retProg(1)},
		sim.ProgramOptions{Unverified: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rawXDP.Close() })
	closed := load(t, k, ebpf.XDP, retProg(1))
	closedFD := closed.FD()
	closed.Close()
	for _, c := range []struct {
		name string
		err  error
		want uapi.Errno
	}{
		{"NOEXIST", pa.Update(uint32(0), xdp, ebpf.UpdateNoExist), uapi.EINVAL},
		{"EXIST", pa.Update(uint32(0), xdp, ebpf.UpdateExist), uapi.EINVAL},
		{"index past the end", pa.Put(uint32(2), xdp), uapi.E2BIG},
		{"index past the end with a bad fd", pa.Put(uint32(2), 9999), uapi.E2BIG},
		{"closed fd", pa.Put(uint32(0), closedFD), uapi.EBADF},
		{"map fd", pa.Put(uint32(0), other.FD()), uapi.EINVAL},
		{"first program", pa.Put(uint32(0), xdp), 0},
		{"another type", pa.Put(uint32(1), sock), uapi.EINVAL},
		{"unverified XDP program", pa.Put(uint32(1), rawXDP), uapi.EINVAL},
		{"delete empty", pa.Delete(uint32(1)), uapi.ENOENT},
		{"delete past the end", pa.Delete(uint32(2)), uapi.E2BIG},
		{"lookup empty", pa.Lookup(uint32(1), new(uint32)), uapi.ENOENT},
	} {
		if c.want == 0 && c.err != nil || c.want != 0 && !errors.Is(c.err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.err, c.want)
		}
	}
	var id uint32
	if err := pa.Lookup(uint32(0), &id); err != nil || id != xdp.ID() {
		t.Fatalf("lookup: id %d, %v; want the program's id %d", id, err, xdp.ID())
	}
	// A socket filter that uses the XDP-owned map cannot load.
	_, err = k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL", Instructions: tailCaller(pa.FD(), 0, 0)})
	if !errors.Is(err, uapi.EINVAL) {
		t.Fatalf("socket filter using an XDP prog array: %v", err)
	}
}

func TestProgramUsingAProgArrayFixesItsOwner(t *testing.T) {
	k := newKernel(t, nil)
	pa := newProgArrayMap(t, k, 1)
	load(t, k, ebpf.SocketFilter, tailCaller(pa.FD(), 0, 0))
	if err := pa.Put(uint32(0), load(t, k, ebpf.XDP, retProg(1))); !errors.Is(err, uapi.EINVAL) {
		t.Fatalf("XDP program into a map a socket filter uses: %v", err)
	}
}

func TestProgramObjectsIDsAndReferences(t *testing.T) {
	k := newKernel(t, nil)
	pa := newProgArrayMap(t, k, 1)
	before := k.LivePrograms()
	p := load(t, k, ebpf.XDP, retProg(3))
	q := load(t, k, ebpf.XDP, retProg(4))
	if p.ID() == 0 || q.ID() <= p.ID() {
		t.Fatalf("ids %d %d", p.ID(), q.ID())
	}
	if err := pa.Put(uint32(0), p); err != nil {
		t.Fatal(err)
	}
	if p.Refs() != 2 {
		t.Fatalf("refs %d, want the handle's and the slot's", p.Refs())
	}
	p.Close()
	if _, err := p.Run(&sim.RunOptions{Data: make([]byte, 64)}); !errors.Is(err, uapi.EBADF) {
		t.Fatalf("run through a closed handle: %v", err)
	}
	ids := k.ProgramIDs()
	if len(ids) != 2 || ids[0] != p.ID() {
		t.Fatalf("ids %v: the program in the slot is alive", ids)
	}
	caller := load(t, k, ebpf.XDP, tailCaller(pa.FD(), 0, 9))
	if got := runXDP(t, caller); got != 3 {
		t.Fatalf("the closed handle's program in the slot: got %d, want 3", got)
	}
	if err := pa.Delete(uint32(0)); err != nil {
		t.Fatal(err)
	}
	k.SynchronizeRCU()
	for _, id := range k.ProgramIDs() {
		if id == p.ID() {
			t.Fatalf("program %d outlived its last reference", id)
		}
	}
	q.Close()
	caller.Close()
	pa.Close()
	k.SynchronizeRCU()
	if k.LivePrograms() != before {
		t.Fatalf("%d programs alive, want %d", k.LivePrograms(), before)
	}
}

func TestXlatedShowsTailCallsAsTheHelperCall(t *testing.T) {
	k := newKernel(t, nil)
	pa := newProgArrayMap(t, k, 4)
	p := load(t, k, ebpf.XDP, tailCaller(pa.FD(), 2, 0))
	x := p.Xlated()
	if !strings.Contains(x, "(85) call bpf_tail_call#12") {
		t.Fatalf("xlated:\n%s", x)
	}
	pokes := p.PokeDescriptors()
	if len(pokes) != 1 || pokes[0].Key != 2 || pokes[0].Map.ID != pa.ID() {
		t.Fatalf("poke descriptors %+v", pokes)
	}
	if in := p.Instructions()[pokes[0].Insn]; in.Imm != 12 || in.Code != 0x85 {
		t.Fatalf("poke descriptor at insn %d: %+v", pokes[0].Insn, in)
	}
	// An index the verifier does not know makes no descriptor.
	q := load(t, k, ebpf.XDP, asm.Instructions{
		asm.LoadMapPtr(asm.R2, pa.FD()),
		asm.LoadMem(asm.R3, asm.R1, 0, asm.Word),
		asm.FnTailCall.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	})
	if len(q.PokeDescriptors()) != 0 {
		t.Fatalf("descriptors for a variable index: %+v", q.PokeDescriptors())
	}
}

// A program reached by a tail call on one CPU keeps running, with the maps
// it uses, while user space takes it out of its slot and closes it on
// another: its id goes at once, its maps after the run.
func TestSlotReplacedWhileItsProgramRunsOnAnotherCPU(t *testing.T) {
	k := newKernel(t, &sim.Options{CPUs: 2})
	pa := newProgArrayMap(t, k, 1)
	counters, err := k.NewMap(countersSpec(1))
	if err != nil {
		t.Fatal(err)
	}
	// target counts its runs and loops a while, so that runs overlap the
	// updates.
	target := load(t, k, ebpf.XDP, asm.Instructions{
		asm.StoreImm(asm.R10, -4, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, counters.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R6, 0),
		asm.Add.Imm(asm.R6, 1).WithSymbol("loop"),
		asm.JLT.Imm(asm.R6, 2000, "loop"),
		asm.Mov.Imm(asm.R0, 5).WithSymbol("out"),
		asm.Return(),
	})
	caller := load(t, k, ebpf.XDP, tailCaller(pa.FD(), 0, 1))
	counters.Close() // only the target holds the counters now
	var wg sync.WaitGroup
	var stop atomic.Bool
	var bad atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			ret, err := caller.Run(&sim.RunOptions{Data: make([]byte, 64), CPU: 1})
			if err != nil || (ret != 5 && ret != 1) {
				bad.Add(1)
			}
		}
	}()
	for i := 0; i < 200; i++ {
		if err := pa.Put(uint32(0), target); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := pa.Delete(uint32(0)); err != nil {
				t.Fatal(err)
			}
		}
	}
	id := target.ID()
	target.Close()
	if err := pa.Delete(uint32(0)); err != nil && !errors.Is(err, uapi.ENOENT) {
		t.Fatal(err)
	}
	stop.Store(true)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d runs failed or returned something else", bad.Load())
	}
	k.SynchronizeRCU()
	for _, x := range k.ProgramIDs() {
		if x == id {
			t.Fatal("the target outlived its references")
		}
	}
	caller.Close()
	pa.Close()
	k.SynchronizeRCU()
	if n := len(k.MapIDs()); n != 0 {
		t.Fatalf("%d maps left: %v", n, k.MapIDs())
	}
	if k.LivePrograms() != 0 {
		t.Fatalf("%d programs alive", k.LivePrograms())
	}
}
