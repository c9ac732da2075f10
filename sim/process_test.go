package sim_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/arraymap"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// releaseLog is an array map type that records the kernel's release hooks:
// map_release with the file being closed, map_release_uref.
type releaseLog struct {
	maps.Ops
	mu     sync.Mutex
	files  []maps.File
	urefs  int
	userOf func() int64
}

func (r *releaseLog) ReleaseFile(f maps.File) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.files = append(r.files, f)
}

func (r *releaseLog) ReleaseUref() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.urefs++
}

func (r *releaseLog) calls() ([]maps.File, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]maps.File(nil), r.files...), r.urefs
}

// newReleaseLogKernel returns a kernel whose ARRAY type is wrapped by
// releaseLog, and a function returning the log of the last map created.
func newReleaseLogKernel(t *testing.T) (*sim.Kernel, func() *releaseLog) {
	t.Helper()
	var last *releaseLog
	typ := *arraymap.Array
	typ.ID = releaseLogTypeID // a free type number on bpfsim
	typ.Name = "release_log"
	alloc := typ.Alloc
	typ.Alloc = func(k maps.Kernel, m *maps.Map) (maps.Ops, error) {
		ops, err := alloc(k, m)
		if err != nil {
			return nil, err
		}
		last = &releaseLog{Ops: ops}
		return last, nil
	}
	k := newKernel(t, nil)
	if err := k.RegisterMapType(&typ); err != nil {
		t.Fatal(err)
	}
	return k, func() *releaseLog { return last }
}

// releaseLogTypeID is a map type number no kernel has.
const releaseLogTypeID = 0x7f02

var releaseLogSpec = &ebpf.MapSpec{Type: releaseLogTypeID, KeySize: 4, ValueSize: 8, MaxEntries: 4}

func TestMapReleaseRunsOncePerFileWhenItsLastFDCloses(t *testing.T) {
	k, last := newReleaseLogKernel(t)
	a, err := k.NewMap(releaseLogSpec)
	if err != nil {
		t.Fatal(err)
	}
	log := last()
	dup, err := a.Clone()
	if err != nil {
		t.Fatal(err)
	}
	if dup.File() != a.File() || dup.FD() == a.FD() {
		t.Fatalf("a clone has fd %d on file %d; the original fd %d on file %d", dup.FD(), dup.File(), a.FD(), a.File())
	}
	byID, err := k.NewMapFromID(a.ID())
	if err != nil {
		t.Fatal(err)
	}
	if byID.File() == a.File() {
		t.Fatal("opening by id reused the file")
	}

	a.Close()
	if files, _ := log.calls(); len(files) != 0 {
		t.Fatalf("map_release ran with a dup still open: %v", files)
	}
	if err := dup.Put(uint32(1), uint64(7)); err != nil {
		t.Fatalf("the dup stopped working when the original closed: %v", err)
	}
	dup.Close()
	if files, urefs := log.calls(); len(files) != 1 || files[0] != a.File() || urefs != 0 {
		t.Fatalf("after the file's last fd: map_release saw %v, map_release_uref ran %d times; want [%d], 0", files, urefs, a.File())
	}
	byID.Close()
	if files, urefs := log.calls(); len(files) != 2 || files[1] != byID.File() || urefs != 1 {
		t.Fatalf("after the last fd: map_release saw %v, map_release_uref ran %d times", files, urefs)
	}
	if err := k.CheckLeaks(); err != nil {
		t.Fatal(err)
	}
}

func TestMapReleaseUrefRunsWhileAProgramStillHoldsTheMap(t *testing.T) {
	k, last := newReleaseLogKernel(t)
	m, err := k.NewMap(releaseLogSpec)
	if err != nil {
		t.Fatal(err)
	}
	log := last()
	prog, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Imm(asm.R0, 2),
		asm.Return(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	id := m.ID()
	m.Close()
	if _, urefs := log.calls(); urefs != 1 {
		t.Fatalf("map_release_uref ran %d times after the last fd closed; want 1", urefs)
	}
	k.SynchronizeRCU()
	if ids := k.MapIDs(); len(ids) != 1 || ids[0] != id {
		t.Fatalf("map ids %v; the program's reference should keep map %d", ids, id)
	}
	prog.Close()
	if err := k.CheckLeaks(); err != nil {
		t.Fatal(err)
	}
}

func TestClosingAProcessClosesItsFDs(t *testing.T) {
	k := newKernel(t, nil)
	p := k.NewProcess()
	spec := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}
	var handles []*sim.Map
	for range 3 {
		m, err := p.NewMap(spec)
		if err != nil {
			t.Fatal(err)
		}
		handles = append(handles, m)
	}
	clone, err := handles[0].Clone()
	if err != nil {
		t.Fatal(err)
	}
	// Another process opens one of them by id: its file keeps the map.
	other := k.NewProcess()
	kept, err := other.NewMapFromID(handles[1].ID())
	if err != nil {
		t.Fatal(err)
	}
	if n := p.OpenFDs(); n != 4 {
		t.Fatalf("process has %d fds open; want 4", n)
	}
	p.Close()
	for i, h := range append(handles, clone) {
		if err := h.Put(uint32(0), uint32(1)); !errors.Is(err, uapi.EBADF) {
			t.Errorf("handle %d after its process exited: %v; want EBADF", i, err)
		}
		if err := h.Close(); err != nil {
			t.Errorf("closing handle %d after its process exited: %v", i, err)
		}
	}
	if _, err := p.NewMap(spec); !errors.Is(err, uapi.EBADF) {
		t.Errorf("an exited process created a map: %v", err)
	}
	k.SynchronizeRCU()
	if ids := k.MapIDs(); len(ids) != 1 || ids[0] != kept.ID() {
		t.Fatalf("maps alive %v; want only %d, open in the other process", ids, kept.ID())
	}
	if err := kept.Put(uint32(0), uint32(5)); err != nil {
		t.Fatal(err)
	}
	other.Close()
	if err := k.CheckLeaks(); err != nil {
		t.Fatal(err)
	}
}

func TestAProgramResolvesMapFDsInItsLoadersTable(t *testing.T) {
	k := newKernel(t, nil)
	a, b := k.NewProcess(), k.NewProcess()
	defer a.Close()
	defer b.Close()
	m, err := a.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	spec := &ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Imm(asm.R0, 2),
		asm.Return(),
	}}
	p, err := a.NewProgram(spec)
	if err != nil {
		t.Fatalf("the map's own process: %v", err)
	}
	p.Close()
	if _, err := b.NewProgram(spec); !errors.Is(err, uapi.EBADF) {
		t.Fatalf("another process loaded with fd %d it does not have: %v; want EBADF", m.FD(), err)
	}
}

func TestCheckLeaksNamesWhatIsLeft(t *testing.T) {
	k := newKernel(t, nil)
	m, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.CheckLeaks(); err == nil {
		t.Fatal("an open map is not a leak?")
	}
	m.Close()
	if err := k.CheckLeaks(); err != nil {
		t.Fatal(err)
	}
}

// TestProgArrayIsClearedWhenItsLastUserReferenceGoes is the kernel's
// prog_array_map_release_uref: once no fd (or pin) refers to a prog
// array, its slots empty, although the programs using it still hold it.
// That breaks the cycle of a program held by the array it tail calls
// through.
func TestProgArrayIsClearedWhenItsLastUserReferenceGoes(t *testing.T) {
	k := newKernel(t, nil)
	p := k.NewProcess()
	pa, err := p.NewMap(&ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	target, err := p.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 7), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	// The caller is loaded by the kernel's first process, through a handle
	// it closes at once: the program's own reference is no user reference.
	view, err := k.NewMapFromID(pa.ID())
	if err != nil {
		t.Fatal(err)
	}
	caller, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: asm.Instructions{
		asm.LoadMapPtr(asm.R2, view.FD()),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnTailCall.Call(),
		asm.Mov.Imm(asm.R0, 2), // reached when the slot is empty
		asm.Return(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	view.Close()
	if err := pa.Put(uint32(0), target); err != nil {
		t.Fatal(err)
	}
	run := func() uint32 {
		t.Helper()
		ret, err := caller.Run(&sim.RunOptions{Data: make([]byte, 64)})
		if err != nil {
			t.Fatal(err)
		}
		return ret
	}
	if _, err := pa.Clone(); err != nil {
		t.Fatal(err)
	}
	pa.Close()
	if got := run(); got != 7 {
		t.Fatalf("with a dup of the array's fd open, the tail call returned %d; want 7", got)
	}
	p.Close() // the dup and the target's handle go with the process
	if got := run(); got != 2 {
		t.Fatalf("after the array's last user reference, the program returned %d; want 2 (empty slot)", got)
	}
	caller.Close()
	if err := k.CheckLeaks(); err != nil {
		t.Fatal(err)
	}
}
