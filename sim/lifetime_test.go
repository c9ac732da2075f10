package sim_test

import (
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// Object lifetimes in bpfsim alone; lifetime_kernel_linux_test.go plays
// the same kinds of scenarios against the kernel.

// innerOutputTo returns a raw tracepoint program that writes 8 bytes to
// slot index of the perf event array in outer[0] and returns the helper's
// result, or 100 if outer[0] is empty.
func innerOutputTo(outerFD int, index int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.StoreImm(asm.R10, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, outerFD),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "none"),
		asm.Mov.Reg(asm.R2, asm.R0),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R3, index),
		asm.Mov.Imm(asm.R0, 7),
		asm.StoreMem(asm.R10, -16, asm.R0, asm.DWord),
		asm.Mov.Reg(asm.R4, asm.R10),
		asm.Add.Imm(asm.R4, -16),
		asm.Mov.Imm(asm.R5, 8),
		asm.FnPerfEventOutput.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 100).WithSymbol("none"),
		asm.Return(),
	}
}

// TestPerfEventArrayIsAnInnerMapWhoseEventsGoWithTheirFile: the kernel
// accepts a perf event array as an inner map (bpf_map_meta_equal); an
// outer map's reference keeps the array, but its events still go with
// the map file they were installed through, unless BPF_F_PRESERVE_ELEMS.
func TestPerfEventArrayIsAnInnerMapWhoseEventsGoWithTheirFile(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags uint32
		after int32
	}{
		{"without BPF_F_PRESERVE_ELEMS", 0, -int32(uapi.ENOENT)},
		{"with BPF_F_PRESERVE_ELEMS", uapi.BPF_F_PRESERVE_ELEMS, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newKernel(t, &sim.Options{CPUs: 2})
			perf := &ebpf.MapSpec{Type: ebpf.PerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: 2, Flags: tc.flags}
			outer, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 1, InnerMap: perf})
			if err != nil {
				t.Fatalf("a perf event array template: %v", err)
			}
			defer outer.Close()
			inner, err := k.NewMap(perf)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := k.NewPerfEvent(1, 1)
			if err != nil {
				t.Fatal(err)
			}
			defer ev.Close()
			if err := inner.Put(uint32(1), ev); err != nil {
				t.Fatal(err)
			}
			if err := outer.Put(uint32(0), inner); err != nil {
				t.Fatalf("storing a perf event array: %v", err)
			}
			p, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.RawTracepoint, License: "GPL", Instructions: innerOutputTo(outer.FD(), 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			run := func() int32 {
				t.Helper()
				ret, err := p.Run(&sim.RunOptions{Context: make([]byte, 8), CPU: 1})
				if err != nil {
					t.Fatal(err)
				}
				return int32(ret)
			}
			if got := run(); got != 0 {
				t.Fatalf("output through the outer map returned %d, want 0", got)
			}
			inner.Close() // the file the event came through; the outer map keeps the array
			if got := run(); got != tc.after {
				t.Fatalf("after the inner map's fd closed, output returned %d, want %d", got, tc.after)
			}
			if err := outer.Delete(uint32(0)); err != nil {
				t.Fatal(err)
			}
			if got := run(); got != 100 {
				t.Fatalf("after the delete the program found a map (returned %d)", got)
			}
		})
	}
}

// TestProgramLeavingAProgArraySlotLosesItsIDAtOnce: the kernel puts a
// program taken out of a prog array slot at once (prog_fd_array_put_ptr
// calls bpf_prog_put: "bpf_prog is freed after one RCU or tasks trace
// grace period"), so a program held only by the slot leaves the id list
// when the syscall returns, even while a program on another CPU, which
// may have read the slot, is still running. Its memory and maps go after
// the grace period, when that program has finished.
//
// Interpreted: a JITed caller's tail call through that constant slot is
// direct, and taking its target away waits for a grace period
// (synchronize_rcu in bpf_arch_poke_desc_update), so the delete would
// wait for the paused program, as in the kernel
// (TestRemovingADirectTailCallTargetWaitsForRunningPrograms).
func TestProgramLeavingAProgArraySlotLosesItsIDAtOnce(t *testing.T) {
	for _, how := range []string{"delete", "replace", "last fd closed"} {
		t.Run(how, func(t *testing.T) {
			k := newKernel(t, &sim.Options{CPUs: 2, Runtime: sim.RuntimeInterpreter})
			entered, release := make(chan struct{}), make(chan struct{})
			const pause = 211 // a helper of our own: it waits for the test
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
			other := load(t, k, ebpf.XDP, retProg(3))
			defer other.Close()
			if err := pa.Put(uint32(0), target); err != nil {
				t.Fatal(err)
			}
			id := target.ID()
			target.Close() // the slot holds it alone
			// pause; then tail call slot 0; else return 1
			caller := load(t, k, ebpf.XDP, append(asm.Instructions{
				asm.Mov.Reg(asm.R6, asm.R1),
				asm.BuiltinFunc(pause).Call(),
				asm.Mov.Reg(asm.R1, asm.R6),
			}, tailCaller(pa.FD(), 0, 1)...))
			defer caller.Close()
			done := make(chan uint32)
			go func() {
				ret, err := caller.Run(&sim.RunOptions{Data: make([]byte, 64), CPU: 1})
				if err != nil {
					t.Error(err)
				}
				done <- ret
			}()
			<-entered // CPU 1 is inside its read-side section
			live := k.LivePrograms()
			var err error
			switch how {
			case "delete":
				err = pa.Delete(uint32(0))
			case "replace":
				err = pa.Put(uint32(0), other)
			case "last fd closed":
				err = pa.Close() // the caller holds the map; its slots are cleared
			}
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(k.ProgramIDs(), id) {
				t.Errorf("after the slot let it go, program %d is still listed", id)
			}
			if k.LivePrograms() != live {
				t.Errorf("the program was freed while a program that may reach it runs: %d live, want %d", k.LivePrograms(), live)
			}
			close(release)
			want := uint32(1)
			if how == "replace" {
				want = 3
			}
			if got := <-done; got != want {
				t.Errorf("the caller returned %d, want %d", got, want)
			}
			k.SynchronizeRCU()
			if k.LivePrograms() != live-1 {
				t.Errorf("after the grace period %d programs live, want %d", k.LivePrograms(), live-1)
			}
		})
	}
}
