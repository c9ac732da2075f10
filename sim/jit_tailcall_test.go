package sim_test

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/jit_arm64/a64"
	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// directState reads a JITed program's one direct tail call site: the
// bypass and target words and the literal.
func directState(t *testing.T, k *sim.Kernel, p *sim.Program) (skip, tail bool, lit uint64) {
	t.Helper()
	sites := p.JITImage().DirectTailCalls()
	if len(sites) != 1 {
		t.Fatalf("%d direct tail call sites, want 1", len(sites))
	}
	s := sites[0]
	var b [8]byte
	word := func(addr uint64) uint32 {
		if err := k.Memory().Read(addr, b[:4]); err != nil {
			t.Fatal(err)
		}
		return binary.LittleEndian.Uint32(b[:4])
	}
	bypass, target := word(s.Bypass), word(s.Target)
	wantSkip, _ := a64.B(int32((s.Out - s.Bypass) / 4))
	wantTail, _ := a64.B(int32((s.Stub - s.Target) / 4))
	switch {
	case bypass == wantSkip:
		skip = true
	case bypass != a64.NOP:
		t.Fatalf("bypass holds %#08x", bypass)
	}
	switch {
	case target == wantTail:
		tail = true
	case target != a64.NOP:
		t.Fatalf("target holds %#08x", target)
	}
	if err := k.Memory().Read(s.Literal, b[:]); err != nil {
		t.Fatal(err)
	}
	return skip, tail, binary.LittleEndian.Uint64(b[:])
}

// TestDirectTailCallsFollowTheSlotThroughSeed001sStates: a JITed tail
// call with a constant prog array and index jumps through patched code.
// It starts skipping (state C); installing a program patches the tail and
// then removes the skip (B); replacing it changes only the literal;
// deleting it restores the skip, then removes the tail (C again). Each
// state returns what the slot's program returns, or falls through.
func TestDirectTailCallsFollowTheSlotThroughSeed001sStates(t *testing.T) {
	k := newKernel(t, &sim.Options{Runtime: sim.RuntimeJIT})
	pa := newProgArrayMap(t, k, 2)
	ret := func(v int32) *sim.Program {
		return load(t, k, ebpf.XDP, asm.Instructions{asm.Mov.Imm(asm.R0, v), asm.Return()})
	}
	a, b := ret(1), ret(2)
	caller := load(t, k, ebpf.XDP, asm.Instructions{
		asm.LoadMapPtr(asm.R2, pa.FD()),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnTailCall.Call(),
		asm.Mov.Imm(asm.R0, 99),
		asm.Return(),
	})
	if caller.Runtime() != sim.RuntimeJIT {
		t.Fatalf("caller not JITed: %v", caller.JITError())
	}
	check := func(step string, want uint32, wantSkip, wantTail bool, target *sim.Program) {
		t.Helper()
		if got := runXDP(t, caller); got != want {
			t.Fatalf("%s: returned %d, want %d", step, got, want)
		}
		skip, tail, lit := directState(t, k, caller)
		if skip != wantSkip || tail != wantTail {
			t.Fatalf("%s: skip %v tail %v, want %v %v", step, skip, tail, wantSkip, wantTail)
		}
		ids := caller.DirectTailCallTargets()
		switch {
		case target == nil && ids[0] != 0:
			t.Fatalf("%s: the site targets program %d", step, ids[0])
		case target != nil && (ids[0] != target.ID() || lit != target.JITImage().TailCallEntry()):
			t.Fatalf("%s: site targets %d at %#x, want %d at %#x", step, ids[0], lit, target.ID(), target.JITImage().TailCallEntry())
		}
	}
	check("empty slot (C)", 99, true, false, nil)
	if err := pa.Put(uint32(0), a); err != nil {
		t.Fatal(err)
	}
	check("installed (C→D→B)", 1, false, true, a)
	if err := pa.Put(uint32(0), b); err != nil {
		t.Fatal(err)
	}
	check("replaced (B→B')", 2, false, true, b)
	if err := pa.Delete(uint32(0)); err != nil {
		t.Fatal(err)
	}
	check("removed (B→C)", 99, true, false, nil)

	// A slot filled before the caller is JITed is installed by the
	// fix-up that follows the JIT.
	if err := pa.Put(uint32(1), a); err != nil {
		t.Fatal(err)
	}
	late := load(t, k, ebpf.XDP, asm.Instructions{
		asm.LoadMapPtr(asm.R2, pa.FD()),
		asm.Mov.Imm(asm.R3, 1),
		asm.FnTailCall.Call(),
		asm.Mov.Imm(asm.R0, 99),
		asm.Return(),
	})
	if got := runXDP(t, late); got != 1 {
		t.Fatalf("fixed up at load: returned %d, want 1", got)
	}
	if skip, tail, _ := directState(t, k, late); skip || !tail {
		t.Fatalf("fixed up at load: skip %v tail %v", skip, tail)
	}
}

// TestRemovingADirectTailCallTargetWaitsForRunningPrograms: deleting the
// slot of a direct tail call restores the skip at once, then waits for a
// grace period before removing the tail (bpf_arch_poke_desc_update's
// synchronize_rcu), so the delete returns only after a program running
// on another CPU, which may be between the two, has finished; that
// program then skips the tail call.
func TestRemovingADirectTailCallTargetWaitsForRunningPrograms(t *testing.T) {
	k := newKernel(t, &sim.Options{CPUs: 2, Runtime: sim.RuntimeJIT})
	entered, release := make(chan struct{}), make(chan struct{})
	const pause = 211
	if err := k.RegisterHelper(&sim.Helper{ID: pause, Name: "test_pause", Proto: verifier.UncheckedProto,
		Fn: func(*interp.Machine, uint64, uint64, uint64, uint64, uint64) (uint64, error) {
			entered <- struct{}{}
			<-release
			return 0, nil
		}}); err != nil {
		t.Fatal(err)
	}
	pa := newProgArrayMap(t, k, 1)
	target := load(t, k, ebpf.XDP, retProg(2))
	if err := pa.Put(uint32(0), target); err != nil {
		t.Fatal(err)
	}
	caller := load(t, k, ebpf.XDP, append(asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.BuiltinFunc(pause).Call(),
		asm.Mov.Reg(asm.R1, asm.R6),
	}, tailCaller(pa.FD(), 0, 1)...))
	if ids := caller.DirectTailCallTargets(); len(ids) != 1 || ids[0] != target.ID() {
		t.Fatalf("direct targets %v, want [%d]", ids, target.ID())
	}
	done := make(chan uint32)
	go func() {
		ret, err := caller.Run(&sim.RunOptions{Data: make([]byte, 64), CPU: 1})
		if err != nil {
			t.Error(err)
		}
		done <- ret
	}()
	<-entered
	deleted := make(chan error)
	go func() { deleted <- pa.Delete(uint32(0)) }()
	select {
	case err := <-deleted:
		t.Fatalf("the delete returned (%v) while a program that may be past the skip runs", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if got := <-done; got != 1 {
		t.Errorf("the caller returned %d, want 1 (the tail call skipped)", got)
	}
	if err := <-deleted; err != nil {
		t.Fatal(err)
	}
	if ids := caller.DirectTailCallTargets(); ids[0] != 0 {
		t.Fatalf("after the delete the site targets %d", ids[0])
	}
}

// TestJITRunsConcurrentlyWithPatchingLoadsAndFrees runs a JITed caller on
// every CPU while another goroutine keeps swapping its direct tail call's
// target and loading and freeing programs in the same packs: every run
// returns a value one of the states allows, and the race detector stays
// quiet (text patching goes through aliases; the emulator sees each word
// as before or after).
func TestJITRunsConcurrentlyWithPatchingLoadsAndFrees(t *testing.T) {
	const cpus = 4
	k := newKernel(t, &sim.Options{CPUs: cpus, Runtime: sim.RuntimeJIT})
	pa := newProgArrayMap(t, k, 1)
	a, b := load(t, k, ebpf.XDP, retProg(2)), load(t, k, ebpf.XDP, retProg(3))
	caller := load(t, k, ebpf.XDP, tailCaller(pa.FD(), 0, 1))
	stop := make(chan struct{})
	errs := make(chan error, cpus+1)
	for cpu := 0; cpu < cpus; cpu++ {
		go func() {
			for {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				ret, err := caller.Run(&sim.RunOptions{Data: make([]byte, 64), CPU: uint32(cpu)})
				if err != nil || (ret != 1 && ret != 2 && ret != 3) {
					errs <- fmt.Errorf("CPU %d: returned %d, %v (a %#x b %#x caller %#x sites %+v)", cpu, ret, err, a.JITImage().Entry(), b.JITImage().Entry(), caller.JITImage().Entry(), caller.JITImage().DirectTailCalls())
					return
				}
			}
		}()
	}
	go func() {
		for i := 0; i < 300; i++ {
			var err error
			switch i % 3 {
			case 0:
				err = pa.Put(uint32(0), a)
			case 1:
				err = pa.Put(uint32(0), b)
			default:
				err = pa.Delete(uint32(0))
			}
			if err == nil {
				var p *sim.Program
				if p, err = k.LoadInsns(ebpf.XDP, "churn", []insn.Insn{{Code: insn.ALU64 | insn.MOV | insn.K, Imm: int32(i)}, {Code: insn.JMP | insn.EXIT}}); err == nil {
					err = p.Close()
				}
			}
			if err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}()
	if err := <-errs; err != nil {
		close(stop)
		t.Fatal(err)
	}
	close(stop)
	for i := 0; i < cpus; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestHelpersCalledAfterADirectTailCallSeeTheirOwnProgram: a direct tail
// call changes programs without the kernel seeing it, yet a helper called
// by the target sees the target's instruction as its call site, as in the
// interpreter.
func TestHelpersCalledAfterADirectTailCallSeeTheirOwnProgram(t *testing.T) {
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) {
			k := newKernel(t, &sim.Options{Runtime: rt})
			var pcs []int
			const probe = 212
			if err := k.RegisterHelper(&sim.Helper{ID: probe, Name: "test_probe", Proto: verifier.UncheckedProto,
				Fn: func(m *interp.Machine, _, _, _, _, _ uint64) (uint64, error) {
					pcs = append(pcs, m.PC())
					return 5, nil
				}}); err != nil {
				t.Fatal(err)
			}
			pa := newProgArrayMap(t, k, 1)
			target := load(t, k, ebpf.XDP, asm.Instructions{
				asm.Mov.Imm(asm.R6, 1),
				asm.Mov.Imm(asm.R7, 2),
				asm.BuiltinFunc(probe).Call(),
				asm.Return(),
			})
			if err := pa.Put(uint32(0), target); err != nil {
				t.Fatal(err)
			}
			caller := load(t, k, ebpf.XDP, append(asm.Instructions{
				asm.Mov.Reg(asm.R6, asm.R1),
				asm.BuiltinFunc(probe).Call(),
				asm.Mov.Reg(asm.R1, asm.R6),
			}, tailCaller(pa.FD(), 0, 1)...))
			if got := runXDP(t, caller); got != 5 {
				t.Fatalf("returned %d, want the target's 5", got)
			}
			if len(pcs) != 2 || pcs[0] != 1 || pcs[1] != 2 {
				t.Fatalf("helper call sites %v, want [1 2] (the caller's, then the target's)", pcs)
			}
		})
	}
}

// TestMayGotoCountsTheSameJITed: a may_goto loop runs BPF_MAX_LOOPS
// times in both runtimes, in the main program and in a function, each
// frame with its own counter (kept on the stack with atomic adds, which
// the verifier does not track, so the loop converges at once).
func TestMayGotoCountsTheSameJITed(t *testing.T) {
	mayGoto := asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.JumpOp(0xe0)), Offset: 2}
	back := asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Ja), Offset: -3}
	count := asm.Instructions{
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R1, 1),
		mayGoto,
		asm.StoreXAdd(asm.RFP, asm.R1, asm.DWord),
		back,
	}
	count[4].Offset = -8
	var prog asm.Instructions
	prog = append(prog, count...)
	prog = append(prog,
		asm.Call.Label("fn"),
		asm.LoadMem(asm.R1, asm.RFP, -8, asm.DWord),
		asm.Add.Reg(asm.R0, asm.R1),
		asm.Return(),
	)
	fn := append(asm.Instructions{}, count...)
	fn[0] = fn[0].WithSymbol("fn")
	prog = append(prog, fn...)
	prog = append(prog, asm.LoadMem(asm.R0, asm.RFP, -8, asm.DWord), asm.Return())
	for _, rt := range []sim.Runtime{sim.RuntimeInterpreter, sim.RuntimeJIT} {
		t.Run(rt.String(), func(t *testing.T) {
			k := newKernel(t, &sim.Options{Runtime: rt})
			p, err := k.NewProgramWithOptions(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: prog}, sim.ProgramOptions{Runtime: rt})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if got := runXDP(t, p); got != 2*(8<<20) {
				t.Fatalf("returned %d, want %d (two frames of BPF_MAX_LOOPS)", got, 2*(8<<20))
			}
		})
	}
}

// TestHelpersOfJITedProgramsSeeTheirCallSite: a JITed program is compiled
// for the interpreter only when something needs it; a helper it calls, in
// a program reached by a tail call or run directly, still sees the
// program and the pc of its call.
func TestHelpersOfJITedProgramsSeeTheirCallSite(t *testing.T) {
	k := newKernel(t, &sim.Options{Runtime: sim.RuntimeJIT})
	const site = 212 // a helper of our own: returns its call site's pc
	if err := k.RegisterHelper(&sim.Helper{ID: site, Name: "test_site", Proto: verifier.UncheckedProto,
		Fn: func(m *interp.Machine, _, _, _, _, _ uint64) (uint64, error) {
			if m.Program().Insns()[m.PC()].Code != insn.JMP|insn.CALL {
				return 0, fmt.Errorf("pc %d is not a call", m.PC())
			}
			return uint64(m.PC()), nil
		}}); err != nil {
		t.Fatal(err)
	}
	pa := newProgArrayMap(t, k, 1)
	target := load(t, k, ebpf.XDP, asm.Instructions{
		asm.Mov.Imm(asm.R0, 0),
		asm.BuiltinFunc(site).Call(),
		asm.Add.Imm(asm.R0, 40),
		asm.Return(),
	})
	defer target.Close()
	if target.Runtime() != sim.RuntimeJIT {
		t.Fatalf("target runs on %v", target.Runtime())
	}
	if err := pa.Put(uint32(0), target); err != nil {
		t.Fatal(err)
	}
	caller := load(t, k, ebpf.XDP, tailCaller(pa.FD(), 0, 1))
	defer caller.Close()
	for _, c := range []struct {
		name string
		p    *sim.Program
	}{{"through a tail call", caller}, {"directly", target}} {
		ret, err := c.p.Run(&sim.RunOptions{Data: make([]byte, 64)})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if ret != 41 { // the call is the program's second instruction
			t.Errorf("%s: returned %d, want 41", c.name, ret)
		}
	}
}
