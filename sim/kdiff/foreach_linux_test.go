//go:build linux

package kdiff

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Each bpf_for_each_map_elem program is loaded in this machine's kernel
// and in bpfsim: the same verdict, errno and message; for programs both
// accept, the same xlated code (the call of the map type's walk,
// bpf_for_each_array_elem or bpf_for_each_hash_elem, or of the generic
// helper when the call site sees several maps) and the same number of
// instructions processed. Then each accepted program runs on filled maps,
// on CPU 0, CPU 1 and CPU 0 again, with an empty packet and with packets
// whose first byte is 0 and 1: the same return values and, afterwards,
// the same contents of every map (values the callbacks incremented,
// elements they deleted), in the kernel, in bpfsim's interpreter and in
// its JIT.
func TestForEachMapElemMatchesKernel(t *testing.T) {
	kern, err := OpenKernel()
	if err != nil {
		t.Skipf("skipped: this machine cannot load BPF programs: %v", err)
	}
	ncpu := kern.PossibleCPUs()
	if kern.PinnableCPUs() < 2 {
		t.Skip("skipped: the runs need CPUs 0 and 1")
	}
	k := linuxLikeSim(t)
	interp, err := NewSimCPUs(ncpu)
	if err != nil {
		t.Fatal(err)
	}
	jit, err := NewSimWith(&sim.Options{CPUs: ncpu, Runtime: sim.RuntimeJIT})
	if err != nil {
		t.Fatal(err)
	}
	kfds, sfds := map[string]int{}, map[string]int{}
	for _, spec := range forEachMaps {
		km, sm := mapsInBoth(t, k, spec)
		kfds[spec.Name], sfds[spec.Name] = km.FD(), sm.FD()
	}
	accepted, runs := 0, 0
	for _, c := range forEachCases {
		t.Run(c.name, func(t *testing.T) {
			kp, kerr := ebpf.NewProgramWithOptions(forEachSpec(t, c.insns, kfds), ebpf.ProgramOptions{LogLevel: ebpf.LogLevelBranch, LogSizeStart: 1 << 20})
			if kp != nil {
				defer kp.Close()
			}
			sp, serr := k.NewProgram(forEachSpec(t, c.insns, sfds))
			if sp != nil {
				defer sp.Close()
			}
			if errnoOf(kerr) != errnoOf(serr) || verifierMessage(kerr) != verifierMessage(serr) {
				t.Fatalf("verdicts differ\nkernel: %v: %s\nbpfsim: %v: %s", errnoOf(kerr), verifierMessage(kerr), errnoOf(serr), verifierMessage(serr))
			}
			if c.errno != errnoOf(kerr) || c.msg != verifierMessage(kerr) {
				t.Errorf("the kernel answers %v: %s; the table (TestForEachMapElemVerdicts) says %v: %s",
					errnoOf(kerr), verifierMessage(kerr), c.errno, c.msg)
			}
			if kerr != nil {
				return
			}
			accepted++
			sameProgram(t, k, c.name, kp, sp)
			for _, pkt := range [][]byte{{}, make([]byte, 14), append([]byte{1}, make([]byte, 13)...)} {
				p := &Program{
					Spec:   &ebpf.ProgramSpec{Name: "foreach", Type: ebpf.XDP, License: "GPL", Instructions: c.insns},
					Packet: pkt,
					Maps:   forEachMaps,
					Before: forEachFill(),
					Runs:   []int{0, 1, 0},
				}
				want := kern.Run(p)
				if want.Rejected != nil || want.MapErr != nil {
					t.Fatalf("the kernel: %v %v", want.Rejected, want.MapErr)
				}
				for _, s := range []struct {
					name string
					sim  *Sim
				}{{"interpreter", interp}, {"JIT", jit}} {
					if d := Diff(want, s.sim.Run(p)); d != "" {
						t.Errorf("packet %x, %s:\n%s", pkt, s.name, d)
					}
				}
				runs++
			}
		})
	}
	t.Logf("%d of %d programs accepted by both; %d of them compared in %d runs", accepted, len(forEachCases), accepted, runs)
}

// BenchmarkForEachMapElem is one element of a walk of a 1,024-element
// array and of a hash holding 1,024 keys, whose callback folds the key
// and value into a stack slot (foldCallback), on bpfsim interpreted and,
// through BPF_PROG_TEST_RUN with repeat, on this machine's kernel.
func BenchmarkForEachMapElem(b *testing.B) {
	const n = 1024
	for _, spec := range []*ebpf.MapSpec{
		{Name: "arr", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: n},
		{Name: "hash", Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: n},
	} {
		insns := walkMain(walk(spec.Name, "cb", flags0), foldCallback("cb", -1, nil))
		fill := func(update func(k, v []byte) error) {
			for i := uint32(0); i < n; i++ {
				k := binary.LittleEndian.AppendUint32(nil, i*2654435761)
				if spec.Type == ebpf.Array {
					k = binary.LittleEndian.AppendUint32(nil, i)
				}
				if err := update(k, binary.LittleEndian.AppendUint64(nil, uint64(i))); err != nil {
					b.Fatal(err)
				}
			}
		}
		pkt := make([]byte, 64)
		b.Run(spec.Name+"/bpfsim", func(b *testing.B) {
			k, err := sim.NewKernel(nil)
			if err != nil {
				b.Fatal(err)
			}
			m, err := k.NewMap(spec)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			fill(func(key, v []byte) error { return m.Update(key, v, 0) })
			p, err := k.NewProgram(forEachSpec(b, insns, map[string]int{spec.Name: m.FD()}))
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			reportSimRepeat(b, p, pkt, n, "ns/element")
		})
		b.Run(spec.Name+"/kernel", func(b *testing.B) {
			if _, err := OpenKernel(); err != nil {
				b.Skipf("skipped: this machine cannot load BPF programs: %v", err)
			}
			m, err := ebpf.NewMap(spec)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			fill(func(key, v []byte) error { return m.Update(key, v, 0) })
			p, err := ebpf.NewProgram(forEachSpec(b, insns, map[string]int{spec.Name: m.FD()}))
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			reportKernelRepeat(b, p, pkt, n, "ns/element")
		})
	}
}

// An inner map of an array of maps is walked: the verifier lets the
// program walk it through the template (which has its type's walk, as in
// the kernel), the call goes to the inner type's walk, and the walk runs
// on the inner map itself. Arrays (with and without BPF_F_INNER_MAP),
// hashes and LRU hashes: the same verdict, xlated code, instructions
// processed and results in the kernel and in bpfsim, interpreted and
// JITed.
func TestForEachInnerMapMatchesKernel(t *testing.T) {
	if _, err := OpenKernel(); err != nil {
		t.Skipf("skipped: this machine cannot load BPF programs: %v", err)
	}
	insns := walkMain(asm.Instructions{
		asm.StoreImm(asm.RFP, -16, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, 0).WithReference("outer"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -16),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "noinner"),
		asm.Mov.Reg(asm.R1, asm.R0),
		loadFunc(asm.R2, "cb"),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnForEachMapElem.Call(),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("noinner"),
	}, foldCallback("cb", -1, incValue))
	for _, inner := range []ebpf.MapSpec{
		{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 5},
		{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 3, Flags: uapi.BPF_F_INNER_MAP},
		{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 16, Flags: zeroSeed},
		{Type: ebpf.LRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 16, Flags: zeroSeed},
	} {
		t.Run(fmt.Sprintf("%s flags %#x", inner.Type, inner.Flags), func(t *testing.T) {
			outerSpec := &ebpf.MapSpec{Name: "outer", Type: ebpf.ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 1, InnerMap: &inner}
			k := linuxLikeSim(t)
			jit, err := sim.NewKernel(&sim.Options{Runtime: sim.RuntimeJIT})
			if err != nil {
				t.Fatal(err)
			}
			fill := func(update func(k, v []byte) error) {
				n := uint32(inner.MaxEntries)
				for i := uint32(0); i < n; i++ {
					key := binary.LittleEndian.AppendUint32(nil, i)
					if inner.Type != ebpf.Array {
						key = binary.LittleEndian.AppendUint32(nil, i*977+3)
					}
					if err := update(key, binary.LittleEndian.AppendUint64(nil, uint64(i)*1000+1)); err != nil {
						t.Fatal(err)
					}
				}
			}
			// The kernel's maps.
			ki, err := ebpf.NewMap(&inner)
			if err != nil {
				t.Fatal(err)
			}
			defer ki.Close()
			// On one CPU: an LRU hash's updates take elements from the
			// updating CPU's free list, so a fill that migrated between
			// CPUs could evict keys early, which bpfsim's fill, on one
			// CPU, never does (the cause of a rare failure of the LRU
			// case).
			if err := onCPU(0, func() { fill(func(key, v []byte) error { return ki.Update(key, v, 0) }) }); err != nil {
				t.Fatal(err)
			}
			ko, err := ebpf.NewMap(outerSpec)
			if err != nil {
				t.Fatal(err)
			}
			defer ko.Close()
			if err := ko.Update(uint32(0), ki, 0); err != nil {
				t.Fatal(err)
			}
			kp, err := ebpf.NewProgram(forEachSpec(t, insns, map[string]int{"outer": ko.FD()}))
			if err != nil {
				t.Fatalf("the kernel refused the program: %v", err)
			}
			defer kp.Close()
			// bpfsim's, interpreted and JITed.
			var progs []*sim.Program
			for _, sk := range []*sim.Kernel{k, jit} {
				si, err := sk.NewMap(&inner)
				if err != nil {
					t.Fatal(err)
				}
				defer si.Close()
				fill(func(key, v []byte) error { return si.Update(key, v, 0) })
				so, err := sk.NewMap(outerSpec)
				if err != nil {
					t.Fatal(err)
				}
				defer so.Close()
				if err := so.Update(uint32(0), si, 0); err != nil {
					t.Fatal(err)
				}
				sp, err := sk.NewProgram(forEachSpec(t, insns, map[string]int{"outer": so.FD()}))
				if err != nil {
					t.Fatalf("bpfsim refused the program: %v", err)
				}
				defer sp.Close()
				progs = append(progs, sp)
			}
			sameProgram(t, k, "walk of an inner map", kp, progs[0])
			pkt := make([]byte, 14)
			for run := 0; run < 3; run++ {
				want, err := kp.Run(&ebpf.RunOptions{Data: pkt})
				if err != nil {
					t.Fatal(err)
				}
				for i, sp := range progs {
					got, err := sp.Run(&sim.RunOptions{Data: pkt})
					if err != nil {
						t.Fatal(err)
					}
					if got != want {
						t.Errorf("run %d, %s: kernel %#x, bpfsim %#x", run, []string{"interpreter", "JIT"}[i], want, got)
					}
				}
			}
		})
	}
}
