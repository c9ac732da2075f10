//go:build linux

package kdiff

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Maps of maps compared with this machine's kernel: the xlated code of the
// seed 001 program, the verifier's verdicts on accesses through inner
// maps, and the errno of every user-space operation on outer maps.

// seed001 is handle__sys_enter of seed 001: outer_arr_dyn[0], then
// inner[0], -1 if either is missing.
func seed001(outer int) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm32(asm.R1, 0),
		asm.StoreMem(asm.RFP, -4, asm.R1, asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, outer),
		asm.FnMapLookupElem.Call(),
		asm.Mov.Imm32(asm.R6, -1),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.Mov.Reg(asm.R1, asm.R0),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R6, asm.R0, 0, asm.Word),
		asm.Mov.Reg32(asm.R0, asm.R6).WithSymbol("out"),
		asm.Return(),
	}
}

func TestSeed001XlatedMatchesKernel(t *testing.T) {
	k := linuxLikeSim(t)
	for _, c := range []struct {
		name  string
		outer ebpf.MapType
		inner ebpf.MapSpec
	}{
		{"dynamic inner arrays (BPF_F_INNER_MAP): direct call", ebpf.ArrayOfMaps, ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_INNER_MAP}},
		{"fixed inner arrays: inlined", ebpf.ArrayOfMaps, ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 5}},
		{"hash of maps, inner hash", ebpf.HashOfMaps, ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 5}},
		{"hash of maps, inner per-CPU hash", ebpf.HashOfMaps, ebpf.MapSpec{Type: ebpf.PerCPUHash, KeySize: 4, ValueSize: 4, MaxEntries: 5}},
		{"array of maps, dynamic inner arrays", ebpf.HashOfMaps, ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_INNER_MAP}},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := &ebpf.MapSpec{Name: "outer_arr_dyn", Type: c.outer, KeySize: 4, ValueSize: 4, MaxEntries: 3, InnerMap: &c.inner}
			km, sm := mapsInBoth(t, k, spec)
			kinsns, err := insn.FromAsm(seed001(km.FD()))
			if err != nil {
				t.Fatal(err)
			}
			sinsns, err := insn.FromAsm(seed001(sm.FD()))
			if err != nil {
				t.Fatal(err)
			}
			sameXlated(t, k, loadInKernel(t, ebpf.RawTracepoint, kinsns), loadInSim(t, k, ebpf.RawTracepoint, sinsns))
		})
	}
}

// Accesses through inner maps: the verifier's verdict and errno in both.
func TestInnerMapVerdictsMatchKernel(t *testing.T) {
	k := linuxLikeSim(t)
	array := func(n, flags uint32) ebpf.MapSpec {
		return ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: n, Flags: flags}
	}
	// body follows "r0 = outer[0]": r0 is the outer map's value or NULL.
	lookupInner := func(key int64, check bool) asm.Instructions {
		p := asm.Instructions{
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.Mov.Reg(asm.R1, asm.R0),
			asm.StoreImm(asm.RFP, -8, key, asm.Word),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -8),
			asm.FnMapLookupElem.Call(),
		}
		if check {
			p = append(p, asm.JEq.Imm(asm.R0, 0, "out"))
		}
		return append(p, asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord), asm.Return())
	}
	for _, c := range []struct {
		name  string
		outer ebpf.MapType
		inner ebpf.MapSpec
		body  asm.Instructions
	}{
		{"outer value read before the null check", ebpf.ArrayOfMaps, array(4, 0),
			asm.Instructions{asm.LoadMem(asm.R0, asm.R0, 0, asm.Word), asm.Return()}},
		// Not compared: reading struct bpf_map fields through the inner
		// map pointer, which the kernel allows with its BTF and bpfsim,
		// without kernel BTF, refuses (mem.go).
		{"inner map struct written", ebpf.HashOfMaps, array(4, 0),
			asm.Instructions{asm.JEq.Imm(asm.R0, 0, "out"), asm.StoreImm(asm.R0, 0, 1, asm.Word), asm.Return()}},
		{"outer map value arithmetic", ebpf.ArrayOfMaps, array(4, 0),
			asm.Instructions{asm.JEq.Imm(asm.R0, 0, "out"), asm.Add.Imm(asm.R0, 8), asm.Return()}},
		{"inner array, constant key in range, no null check", ebpf.ArrayOfMaps, array(4, 0), lookupInner(3, false)},
		{"inner array, constant key out of range, no null check", ebpf.ArrayOfMaps, array(4, 0), lookupInner(4, false)},
		{"dynamic inner array, constant key, no null check", ebpf.ArrayOfMaps, array(4, uapi.BPF_F_INNER_MAP), lookupInner(0, false)},
		{"dynamic inner array, null check", ebpf.HashOfMaps, array(4, uapi.BPF_F_INNER_MAP), lookupInner(2, true)},
		{"inner hash, no null check", ebpf.HashOfMaps, ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4}, lookupInner(0, false)},
		{"inner array, value read past its end", ebpf.ArrayOfMaps, array(4, 0),
			append(lookupInner(0, true)[:7], asm.LoadMem(asm.R0, asm.R0, 8, asm.DWord), asm.Return())},
		{"update of the inner map", ebpf.ArrayOfMaps, array(4, 0), asm.Instructions{
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.Mov.Reg(asm.R1, asm.R0),
			asm.Mov.Imm(asm.R5, 0),
			asm.StoreMem(asm.RFP, -8, asm.R5, asm.DWord),
			asm.StoreMem(asm.RFP, -16, asm.R5, asm.DWord),
			asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -8),
			asm.Mov.Reg(asm.R3, asm.RFP), asm.Add.Imm(asm.R3, -16),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnMapUpdateElem.Call(),
			asm.Return(),
		}},
		{"update of the outer map", ebpf.HashOfMaps, array(4, 0), asm.Instructions{
			asm.Mov.Imm(asm.R5, 0),
			asm.StoreMem(asm.RFP, -16, asm.R5, asm.DWord),
			asm.LoadMapPtr(asm.R1, 0).WithReference("outer"),
			asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -4),
			asm.Mov.Reg(asm.R3, asm.RFP), asm.Add.Imm(asm.R3, -16),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnMapUpdateElem.Call(),
			asm.Return(),
		}},
		{"delete from the outer map", ebpf.ArrayOfMaps, array(4, 0), asm.Instructions{
			asm.LoadMapPtr(asm.R1, 0).WithReference("outer"),
			asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -4),
			asm.FnMapDeleteElem.Call(),
			asm.Return(),
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := &ebpf.MapSpec{Type: c.outer, KeySize: 4, ValueSize: 4, MaxEntries: 2, InnerMap: &c.inner}
			km, sm := mapsInBoth(t, k, spec)
			prog := func(fd int) asm.Instructions {
				p := asm.Instructions{
					asm.StoreImm(asm.RFP, -4, 0, asm.Word),
					asm.LoadMapPtr(asm.R1, fd),
					asm.Mov.Reg(asm.R2, asm.RFP),
					asm.Add.Imm(asm.R2, -4),
					asm.FnMapLookupElem.Call(),
				}
				jumpsOut := false
				for _, ins := range c.body {
					if ins.Reference() == "outer" {
						ins = asm.LoadMapPtr(ins.Dst, fd)
					}
					jumpsOut = jumpsOut || ins.Reference() == "out"
					p = append(p, ins)
				}
				if !jumpsOut {
					return p
				}
				return append(p, asm.Mov.Imm(asm.R0, 0).WithSymbol("out"), asm.Return())
			}
			kp, kerr := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.RawTracepoint, License: "GPL", Instructions: prog(km.FD())})
			if kerr == nil {
				kp.Close()
			}
			sp, serr := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.RawTracepoint, License: "GPL", Instructions: prog(sm.FD())})
			if serr == nil {
				sp.Close()
			}
			if errnoOf(kerr) != errnoOf(serr) {
				t.Fatalf("kernel: %v\nbpfsim: %v", kerr, serr)
			}
			if kerr != nil {
				// The kernel's last log line ends the message; bpfsim's
				// should say the same.
				kl, sl := lastLogLine(kerr), lastLogLine(serr)
				if kl != sl {
					t.Errorf("verifier message differs:\nkernel: %s\nbpfsim: %s", kl, sl)
				}
				t.Logf("both refuse (%v): %s", errnoOf(kerr), kl)
			}
		})
	}
}

// lastLogLine is the verifier's message of a refused load: the last line
// of its log, without the instruction it is about.
func lastLogLine(err error) string {
	var ve *ebpf.VerifierError
	var lines []string
	if errors.As(err, &ve) {
		lines = ve.Log
	} else {
		lines = strings.Split(strings.TrimSpace(err.Error()), "\n")
	}
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "processed ") || strings.HasPrefix(l, "verification time") || strings.HasPrefix(l, "stack depth") {
			continue
		}
		if j := strings.LastIndex(l, ": "); j >= 0 && strings.Contains(l[:j], ") ") {
			l = l[j+2:] // "12: (61) r0 = ...: R0 invalid ..." → the message
		}
		return l
	}
	return ""
}

// world is a kernel, real or simulated, as user space sees its maps.
type world interface {
	newMap(spec *ebpf.MapSpec) (any, error)
	update(m any, key uint32, value any, flags ebpf.MapUpdateFlags) error
	lookupID(m any, key uint32) (uint32, error)
	lookupAndDelete(m any, key uint32) error
	delete(m any, key uint32) error
	nextKey(m any, key any) (uint32, error)
	id(m any) uint32
	close(m any)
}

type kernelWorld struct{}

func (kernelWorld) newMap(spec *ebpf.MapSpec) (any, error) { return ebpf.NewMap(spec) }
func (kernelWorld) update(m any, key uint32, value any, flags ebpf.MapUpdateFlags) error {
	if v, ok := value.(*ebpf.Map); ok {
		value = uint32(v.FD())
	}
	return m.(*ebpf.Map).Update(key, value, flags)
}
func (kernelWorld) lookupID(m any, key uint32) (uint32, error) {
	var id uint32
	err := m.(*ebpf.Map).Lookup(key, &id)
	return id, err
}
func (kernelWorld) lookupAndDelete(m any, key uint32) error {
	var id uint32
	return m.(*ebpf.Map).LookupAndDelete(key, &id)
}
func (kernelWorld) delete(m any, key uint32) error { return m.(*ebpf.Map).Delete(key) }
func (kernelWorld) nextKey(m any, key any) (uint32, error) {
	var next uint32
	err := m.(*ebpf.Map).NextKey(key, &next)
	return next, err
}
func (kernelWorld) id(m any) uint32 {
	info, err := m.(*ebpf.Map).Info()
	if err != nil {
		return 0
	}
	id, _ := info.ID()
	return uint32(id)
}
func (kernelWorld) close(m any) { m.(*ebpf.Map).Close() }

type simWorld struct{ k *sim.Kernel }

func (w simWorld) newMap(spec *ebpf.MapSpec) (any, error) { return w.k.NewMap(spec) }
func (simWorld) update(m any, key uint32, value any, flags ebpf.MapUpdateFlags) error {
	return m.(*sim.Map).Update(key, value, flags)
}
func (simWorld) lookupID(m any, key uint32) (uint32, error) {
	var id uint32
	err := m.(*sim.Map).Lookup(key, &id)
	return id, err
}
func (simWorld) lookupAndDelete(m any, key uint32) error {
	var id uint32
	return m.(*sim.Map).LookupAndDelete(key, &id)
}
func (simWorld) delete(m any, key uint32) error { return m.(*sim.Map).Delete(key) }
func (simWorld) nextKey(m any, key any) (uint32, error) {
	var next uint32
	err := m.(*sim.Map).NextKey(key, &next)
	return next, err
}
func (simWorld) id(m any) uint32 { return m.(*sim.Map).ID() }
func (simWorld) close(m any)     { m.(*sim.Map).Close() }

// mapInMapScenario runs every user-space operation on outer maps in w and
// returns one line per operation: its errno and, for lookups, which of
// the scenario's maps the id names.
func mapInMapScenario(w world) []string {
	var out []string
	var live []any
	defer func() {
		for _, m := range live {
			w.close(m)
		}
	}()
	ids := map[uint32]string{}
	create := func(name string, spec *ebpf.MapSpec) any {
		m, err := w.newMap(spec)
		out = append(out, fmt.Sprintf("create %s: %v", name, errnoOf(err)))
		if err != nil {
			if errnoOf(err) == 0 {
				out = append(out, fmt.Sprintf("create %s failed without an errno: %v", name, err))
			}
			return nil
		}
		live = append(live, m)
		ids[w.id(m)] = name
		return m
	}
	op := func(what string, err error) { out = append(out, fmt.Sprintf("%s: %v", what, errnoOf(err))) }
	lookup := func(what string, m any, key uint32) {
		id, err := w.lookupID(m, key)
		name := ids[id]
		if err != nil {
			name = "-"
		}
		out = append(out, fmt.Sprintf("%s: %v %s", what, errnoOf(err), name))
	}
	array := func(n, flags uint32) *ebpf.MapSpec {
		return &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: n, Flags: flags}
	}
	outer := func(typ ebpf.MapType, n, flags uint32, inner *ebpf.MapSpec) *ebpf.MapSpec {
		return &ebpf.MapSpec{Type: typ, KeySize: 4, ValueSize: 4, MaxEntries: n, Flags: flags, InnerMap: inner}
	}

	for _, typ := range []ebpf.MapType{ebpf.ArrayOfMaps, ebpf.HashOfMaps} {
		out = append(out, "== "+typ.String())
		// Creation.
		create("nested template", outer(typ, 2, 0, outer(ebpf.ArrayOfMaps, 2, 0, array(2, 0))))
		create("BPF_F_INNER_MAP outer", outer(typ, 2, uapi.BPF_F_INNER_MAP, array(2, 0)))
		create("BPF_F_RDONLY_PROG outer", outer(typ, 2, uapi.BPF_F_RDONLY_PROG, array(2, 0)))
		create("BPF_F_NO_PREALLOC outer", outer(typ, 2, uapi.BPF_F_NO_PREALLOC, array(2, 0)))
		create("max_entries 0", outer(typ, 0, 0, array(2, 0)))
		// Hash maps walk their keys in an order their hash seed sets:
		// BPF_F_ZERO_SEED makes it the same in both kernels.
		seed := uint32(0)
		if typ == ebpf.HashOfMaps {
			seed = uapi.BPF_F_ZERO_SEED
		}
		o := create("outer", outer(typ, 2, seed, array(2, 0)))
		dyn := create("dynamic outer", outer(typ, 2, 0, array(2, uapi.BPF_F_INNER_MAP)))
		same := create("same", array(2, 0))
		other := create("other", array(2, 0))
		larger := create("larger", array(3, 0))
		flagged := create("flagged", array(7, uapi.BPF_F_INNER_MAP))
		hash := create("hash", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 2})
		if o == nil || dyn == nil || same == nil || other == nil || larger == nil || flagged == nil || hash == nil {
			return append(out, "setup failed")
		}
		// Updates.
		op("update same ANY", w.update(o, 0, same, ebpf.UpdateAny))
		op("update larger", w.update(o, 1, larger, ebpf.UpdateAny))
		op("update flagged", w.update(o, 1, flagged, ebpf.UpdateAny))
		op("update hash", w.update(o, 1, hash, ebpf.UpdateAny))
		op("update larger out of range", w.update(o, 5, larger, ebpf.UpdateAny))
		op("update same out of range", w.update(o, 5, same, ebpf.UpdateAny))
		op("update other NOEXIST on a used key", w.update(o, 0, other, ebpf.UpdateNoExist))
		op("update other NOEXIST on a free key", w.update(o, 1, other, ebpf.UpdateNoExist))
		op("update other EXIST", w.update(o, 1, other, ebpf.UpdateExist))
		op("update larger NOEXIST on a used key", w.update(o, 0, larger, ebpf.UpdateNoExist))
		op("update flags 3", w.update(o, 0, same, 3))
		op("update a non-map fd", w.update(o, 0, uint32(0), ebpf.UpdateAny))
		op("update dynamic with flagged", w.update(dyn, 0, flagged, ebpf.UpdateAny))
		op("update dynamic with same", w.update(dyn, 1, same, ebpf.UpdateAny))
		op("update other at 1", w.update(o, 1, other, ebpf.UpdateAny))
		op("update other at 2 (full?)", w.update(o, 2, other, ebpf.UpdateAny))
		// Lookups and keys.
		lookup("lookup 0", o, 0)
		lookup("lookup 1", o, 1)
		lookup("lookup 7", o, 7)
		lookup("lookup dynamic 0", dyn, 0)
		n0, err := w.nextKey(o, nil)
		out = append(out, fmt.Sprintf("first key: %v %d", errnoOf(err), n0))
		op("lookup and delete", w.lookupAndDelete(o, 0))
		// Deletes.
		op("delete 1", w.delete(o, 1))
		op("delete 1 again", w.delete(o, 1))
		op("delete 9", w.delete(o, 9))
		lookup("lookup 1 after delete", o, 1)
		// Replacing with the same map, then the template's closing.
		op("update same again", w.update(o, 0, same, ebpf.UpdateAny))
		lookup("lookup 0 again", o, 0)
	}
	return out
}

func TestMapInMapUserOperationErrnosMatchKernel(t *testing.T) {
	k := linuxLikeSim(t)
	want := mapInMapScenario(kernelWorld{})
	got := mapInMapScenario(simWorld{k})
	if strings.Join(want, "\n") != strings.Join(got, "\n") {
		t.Fatalf("user-space operations on maps of maps differ:\n%s", lineDiffs(strings.Join(want, "\n"), strings.Join(got, "\n")))
	}
	t.Logf("%d operations agree:\n%s", len(want), strings.Join(want, "\n"))
}
