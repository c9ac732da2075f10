package sim_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// A CPU remembers the maps its programs passed to helpers, but never past
// their free: an unverified program that keeps a freed map's address (the
// verifier would never let it) meets "not a map", as it did before the
// map was ever cached.
func TestMapCacheForgetsFreedMaps(t *testing.T) {
	k := newKernel(t, &sim.Options{CPUs: 2})
	m, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Put(uint32(0), uint32(42)); err != nil {
		t.Fatal(err)
	}
	// r0 = *bpf_map_lookup_elem(addr, &0), the address as a constant.
	prog, err := k.NewProgramWithOptions(&ebpf.ProgramSpec{
		Type:    ebpf.XDP,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadImm(asm.R1, int64(m.Address()), asm.DWord),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.LoadMem(asm.R0, asm.R0, 0, asm.Word),
			asm.Return().WithSymbol("out"),
		},
	}, sim.ProgramOptions{Unverified: true})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	run := func() (uint32, error) { return prog.Run(&sim.RunOptions{Data: make([]byte, 14), CPU: 1}) }
	for range 3 {
		if got, err := run(); err != nil || got != 42 {
			t.Fatalf("lookup through the map's address: %d, %v; want 42", got, err)
		}
	}
	m.Close()
	k.SynchronizeRCU()
	if slices := k.MapIDs(); len(slices) != 0 {
		t.Fatalf("maps still alive: %v", slices)
	}
	if got, err := run(); !errors.Is(err, uapi.EFAULT) || !strings.Contains(err.Error(), "is not a map") {
		t.Errorf("lookup in the freed map: %d, %v; want EFAULT, not a map", got, err)
	}
}
