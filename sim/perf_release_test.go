package sim_test

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// outputTo returns a raw tracepoint program that writes 8 bytes to slot
// index of the perf event array at fd and returns the helper's result.
func outputTo(fd int, index int32) *ebpf.ProgramSpec {
	return &ebpf.ProgramSpec{Type: ebpf.RawTracepoint, License: "GPL", Instructions: asm.Instructions{
		asm.Mov.Imm(asm.R0, 7),
		asm.StoreMem(asm.R10, -8, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R2, fd),
		asm.Mov.Imm(asm.R3, index),
		asm.Mov.Reg(asm.R4, asm.R10),
		asm.Add.Imm(asm.R4, -8),
		asm.Mov.Imm(asm.R5, 8),
		asm.FnPerfEventOutput.Call(),
		asm.Return(),
	}}
}

// TestPerfEventsLiveAsLongAsTheFileThatAddedThemUnlessPreserved is seed
// 001's "Introduce BPF_F_PRESERVE_ELEMS for perf event array": an event
// stays in the array while the map file it was added through is open (a
// dup keeps the file open); then it goes, unless the map has
// BPF_F_PRESERVE_ELEMS, with which it stays until the map is freed.
func TestPerfEventsLiveAsLongAsTheFileThatAddedThemUnlessPreserved(t *testing.T) {
	const enoent = -2
	for _, tc := range []struct {
		name     string
		flags    uint32
		survives bool
	}{
		{"without BPF_F_PRESERVE_ELEMS", 0, false},
		{"with BPF_F_PRESERVE_ELEMS", uapi.BPF_F_PRESERVE_ELEMS, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newKernel(t, &sim.Options{CPUs: 2})
			adder, other := k.NewProcess(), k.NewProcess()
			a, err := adder.NewMap(&ebpf.MapSpec{Type: ebpf.PerfEventArray, Flags: tc.flags})
			if err != nil {
				t.Fatal(err)
			}
			dup, err := a.Clone()
			if err != nil {
				t.Fatal(err)
			}
			b, err := other.NewMapFromID(a.ID()) // another file on the map
			if err != nil {
				t.Fatal(err)
			}
			e0, err := adder.NewPerfEvent(0, 1)
			if err != nil {
				t.Fatal(err)
			}
			e1, err := other.NewPerfEvent(1, 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Put(uint32(0), uint32(e0.FD())); err != nil {
				t.Fatal(err)
			}
			if err := b.Put(uint32(1), uint32(e1.FD())); err != nil {
				t.Fatal(err)
			}
			// The programs, loaded by a third process, hold the map; the
			// slots' events are what change.
			viewer, err := k.NewMapFromID(a.ID())
			if err != nil {
				t.Fatal(err)
			}
			p0, err := k.NewProgram(outputTo(viewer.FD(), 0))
			if err != nil {
				t.Fatal(err)
			}
			defer p0.Close()
			p1, err := k.NewProgram(outputTo(viewer.FD(), 1))
			if err != nil {
				t.Fatal(err)
			}
			defer p1.Close()
			viewer.Close()
			output := func(p *sim.Program, cpu uint32) int32 {
				t.Helper()
				ret, err := p.Run(&sim.RunOptions{Context: make([]byte, 8), CPU: cpu})
				if err != nil {
					t.Fatal(err)
				}
				return int32(ret)
			}
			want := func(survives bool) int32 {
				if survives {
					return 0
				}
				return enoent
			}
			// The events' own fds do not matter: the slots hold them.
			e0.Close()
			e1.Close()
			a.Close()
			if got := output(p0, 0); got != 0 {
				t.Fatalf("with a dup of the adding fd still open, output to slot 0 returned %d", got)
			}
			dup.Close() // the adding file's last fd
			k.SynchronizeRCU()
			if got := output(p0, 0); got != want(tc.survives) {
				t.Fatalf("after the adding file closed, output to slot 0 returned %d; want %d", got, want(tc.survives))
			}
			if got := output(p1, 1); got != 0 {
				t.Fatalf("slot 1, added through another file still open, returned %d", got)
			}
			if !tc.survives && e0.Event().Refs() != 0 {
				t.Fatalf("removed event still has %d references", e0.Event().Refs())
			}
			adder.Close()
			other.Close() // b's file: slot 1 goes unless preserved
			k.SynchronizeRCU()
			if got := output(p1, 1); got != want(tc.survives) {
				t.Fatalf("after every map fd closed, output to slot 1 returned %d; want %d", got, want(tc.survives))
			}
			p0.Close()
			p1.Close()
			if err := k.CheckLeaks(); err != nil {
				t.Fatal(err)
			}
			if e0.Event().Refs() != 0 || e1.Event().Refs() != 0 {
				t.Fatalf("after the map's free: event refs %d %d, want 0", e0.Event().Refs(), e1.Event().Refs())
			}
		})
	}
}
