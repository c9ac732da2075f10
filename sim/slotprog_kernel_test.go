package sim_test

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// slotValue is struct bpf_devmap_val and struct bpf_cpumap_val: the
// ifindex or the queue size, then a program's fd (its id when read).
type slotValue struct {
	First uint32
	Prog  uint32
}

// Programs in devmap, devmap_hash and cpumap slots: XDP programs loaded
// for devmaps, for cpumaps and for neither, a socket filter, and an fd of
// a map, each stored with and without a device or queue; the same errnos
// in this machine's kernel and in bpfsim, a lookup that reads back the
// stored program's id, and the slot's reference that keeps the program
// after its last fd closes.
func TestSlotProgramsAreTheKernels(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	ret := asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()}
	progSpecs := map[string]*ebpf.ProgramSpec{
		"xdp":          {Type: ebpf.XDP, License: "GPL", Instructions: ret},
		"xdp/devmap":   {Type: ebpf.XDP, AttachType: ebpf.AttachXDPDevMap, License: "GPL", Instructions: ret},
		"xdp/cpumap":   {Type: ebpf.XDP, AttachType: ebpf.AttachXDPCPUMap, License: "GPL", Instructions: ret},
		"socketfilter": {Type: ebpf.SocketFilter, License: "GPL", Instructions: ret},
	}
	type world struct {
		fds   map[string]uint32
		ids   map[string]uint32
		close func()
		put   func(typ ebpf.MapType, v slotValue) (error, uint32)
	}
	kernel := world{fds: map[string]uint32{}, ids: map[string]uint32{}}
	bpfsim := world{fds: map[string]uint32{}, ids: map[string]uint32{}}
	var kprogs []*ebpf.Program
	var sprogs []*sim.Program
	for name, spec := range progSpecs {
		kp, err := ebpf.NewProgram(spec)
		if err != nil {
			t.Fatalf("kernel %s: %v", name, err)
		}
		sp, err := k.NewProgram(spec)
		if err != nil {
			t.Fatalf("bpfsim %s: %v", name, err)
		}
		kprogs, sprogs = append(kprogs, kp), append(sprogs, sp)
		kernel.fds[name], bpfsim.fds[name] = uint32(kp.FD()), uint32(sp.FD())
		ki, _ := kp.Info()
		kid, _ := ki.ID()
		kernel.ids[name], bpfsim.ids[name] = uint32(kid), sp.ID()
	}
	other := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}
	km, err := ebpf.NewMap(other)
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	sm, err := k.NewMap(other)
	if err != nil {
		t.Fatal(err)
	}
	kernel.fds["a map"], bpfsim.fds["a map"] = uint32(km.FD()), uint32(sm.FD())
	kernel.ids["a map"], bpfsim.ids["a map"] = 0, 0

	stored := 0
	var keep *sim.Map // a devmap holding the devmap program, kept past the programs' close
	for _, typ := range []ebpf.MapType{ebpf.DevMap, ebpf.DevMapHash, ebpf.CPUMap} {
		spec := &ebpf.MapSpec{Type: typ, KeySize: 4, ValueSize: 8, MaxEntries: 2}
		kmap, err := ebpf.NewMap(spec)
		if err != nil {
			t.Fatal(err)
		}
		smap, err := k.NewMap(spec)
		if err != nil {
			t.Fatal(err)
		}
		first := uint32(1) // loopback, or a queue of one
		for _, name := range []string{"xdp", "xdp/devmap", "xdp/cpumap", "socketfilter", "a map"} {
			for _, f := range []uint32{first, 0} {
				if typ != ebpf.CPUMap && f == 0 && name != "xdp" {
					continue
				}
				kErr := kmap.Put(uint32(0), slotValue{f, kernel.fds[name]})
				sErr := smap.Put(uint32(0), slotValue{f, bpfsim.fds[name]})
				what := fmt.Sprintf("%v, %s with %d", typ, name, f)
				if errnoName(kErr) != errnoName(sErr) {
					t.Errorf("%s: kernel %v, bpfsim %v", what, kErr, sErr)
					continue
				}
				if kErr != nil {
					continue
				}
				var kv, sv slotValue
				kErr, sErr = kmap.Lookup(uint32(0), &kv), smap.Lookup(uint32(0), &sv)
				if errnoName(kErr) != errnoName(sErr) {
					t.Errorf("%s: lookup: kernel %v, bpfsim %v", what, kErr, sErr)
					continue
				}
				kHas, sHas := kv.Prog != 0 && kv.Prog == kernel.ids[name], sv.Prog != 0 && sv.Prog == bpfsim.ids[name]
				if kErr == nil && (kHas != sHas || kv.First != sv.First) {
					t.Errorf("%s: read back kernel %+v (id %d), bpfsim %+v (id %d)", what, kv, kernel.ids[name], sv, bpfsim.ids[name])
				}
				if kHas && sHas {
					stored++
				}
			}
		}
		kmap.Close()
		if typ == ebpf.DevMap {
			if err := smap.Put(uint32(1), slotValue{1, bpfsim.fds["xdp/devmap"]}); err != nil {
				t.Fatal(err)
			}
			keep = smap
			continue
		}
		smap.Close()
	}
	if stored != 3 {
		t.Errorf("%d map types stored their program in both kernels, want 3", stored)
	}
	for _, p := range kprogs {
		p.Close()
	}
	for _, p := range sprogs {
		p.Close()
	}
	// The slot's reference keeps the program: it can be opened by id.
	p, err := k.NewProgramFromID(bpfsim.ids["xdp/devmap"])
	if err != nil {
		t.Fatalf("the devmap program is gone with its fds: %v", err)
	}
	p.Close()
	// The map's free puts it.
	keep.Close()
	sm.Close()
	if err := k.CheckLeaks(); err != nil {
		t.Error(err)
	}
}
