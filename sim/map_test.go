package sim_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func newMap(t testing.TB, k *sim.Kernel, spec *ebpf.MapSpec) *sim.Map {
	t.Helper()
	m, err := k.NewMap(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// counterProgram increments the u64 at key 0 of map m by 1 (atomically)
// and returns the new value's low 32 bits, or 0 if the lookup fails.
func counterProgram(m *sim.Map, key int32) asm.Instructions {
	insns := asm.Instructions{
		asm.StoreImm(asm.RFP, -4, int64(key), asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.LoadMem(asm.R0, asm.R0, 0, asm.DWord),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}
	insns[1] = insns[1].WithReference("m")
	if err := insns.AssociateMap("m", m); err != nil {
		panic(err)
	}
	return insns
}

func TestProgramsAndUserSpaceShareArrayValues(t *testing.T) {
	k := newKernel(t, nil)
	m := newMap(t, k, &ebpf.MapSpec{Name: "counters", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	if err := m.Put(uint32(2), uint64(40)); err != nil {
		t.Fatal(err)
	}
	p := load(t, k, ebpf.Syscall, counterProgram(m, 2))
	for want := uint32(41); want <= 42; want++ {
		if ret, err := p.Run(nil); err != nil || ret != want {
			t.Fatalf("run returned %d, %v; want %d", ret, err, want)
		}
	}
	var v uint64
	if err := m.Lookup(uint32(2), &v); err != nil || v != 42 {
		t.Errorf("user space sees %d, %v", v, err)
	}
	// Out of range: the lookup helper returns NULL.
	out := load(t, k, ebpf.Syscall, counterProgram(m, 4))
	if ret, err := out.Run(nil); err != nil || ret != 0 {
		t.Errorf("out-of-range lookup: %d, %v", ret, err)
	}
	if !strings.Contains(p.Xlated(), fmt.Sprintf("r1 = map[id:%d]", m.ID())) {
		t.Errorf("xlated dump does not name the map:\n%s", p.Xlated())
	}
}

func TestArrayUserSpaceRules(t *testing.T) {
	k := newKernel(t, nil)
	m := newMap(t, k, &ebpf.MapSpec{Name: "arr", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 2})
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"update past the end", m.Update(uint32(2), uint32(1), ebpf.UpdateAny), uapi.E2BIG},
		{"NOEXIST on an array", m.Update(uint32(0), uint32(1), ebpf.UpdateNoExist), uapi.EEXIST},
		{"unknown flags", m.Update(uint32(0), uint32(1), 7), uapi.EINVAL},
		{"delete", m.Delete(uint32(0)), uapi.EINVAL},
		{"lookup past the end", m.Lookup(uint32(9), new(uint32)), uapi.ENOENT},
		{"wrong key size", m.Put(uint64(0), uint32(1)), uapi.EINVAL},
		{"wrong value size", m.Put(uint32(0), uint64(1)), uapi.EINVAL},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.err, c.want)
		}
	}
	if err := m.Lookup(uint32(9), new(uint32)); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("a missing key does not match ebpf.ErrKeyNotExist: %v", err)
	}
	var keys []uint32
	var key, value uint32
	it := m.Iterate()
	for it.Next(&key, &value) {
		keys = append(keys, key)
	}
	if it.Err() != nil || fmt.Sprint(keys) != "[0 1]" {
		t.Errorf("iteration gave %v, %v", keys, it.Err())
	}
	if err := m.Freeze(); err != nil {
		t.Fatal(err)
	}
	if err := m.Put(uint32(0), uint32(1)); !errors.Is(err, uapi.EPERM) {
		t.Errorf("update of a frozen map: %v", err)
	}
}

func TestMapCreationErrnos(t *testing.T) {
	k := newKernel(t, nil)
	for _, c := range []struct {
		name string
		spec *ebpf.MapSpec
		want error
	}{
		{"zero max_entries", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4}, uapi.EINVAL},
		{"array key not 4 bytes", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 8, ValueSize: 4, MaxEntries: 1}, uapi.EINVAL},
		{"zero value", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, MaxEntries: 1}, uapi.EINVAL},
		{"unknown flag", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: 1 << 20}, uapi.EINVAL},
		{"per-CPU value too large", &ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 64 << 10, MaxEntries: 1}, uapi.E2BIG},
		{"unknown type", &ebpf.MapSpec{Type: ebpf.MapType(99), KeySize: 4, ValueSize: 4, MaxEntries: 1}, uapi.EINVAL},
		{"bad name", &ebpf.MapSpec{Name: "a-b", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}, uapi.EINVAL},
		{"too large for memory", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 1 << 20, MaxEntries: 1 << 20}, uapi.ENOMEM},
		{"RDONLY and WRONLY", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_RDONLY | uapi.BPF_F_WRONLY}, uapi.EINVAL},
	} {
		if _, err := k.NewMap(c.spec); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	if ids := k.MapIDs(); len(ids) != 0 {
		t.Errorf("failed creations left maps behind: %v", ids)
	}
}

func TestPercpuArray(t *testing.T) {
	k := newKernel(t, &sim.Options{CPUs: 3})
	m := newMap(t, k, &ebpf.MapSpec{Name: "pcpu", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 4, MaxEntries: 2})
	p := load(t, k, ebpf.Syscall, counterPercpu(m))
	for cpu := uint32(0); cpu < 3; cpu++ {
		for i := uint32(0); i <= cpu; i++ {
			if _, err := p.Run(&sim.RunOptions{CPU: cpu}); err != nil {
				t.Fatal(err)
			}
		}
	}
	var got []uint32
	if err := m.Lookup(uint32(1), &got); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[1 2 3]" {
		t.Errorf("per-CPU values %v, want [1 2 3]", got)
	}
	if err := m.Put(uint32(0), []uint32{7, 8, 9}); err != nil {
		t.Fatal(err)
	}
	raw, err := m.LookupBytes(uint32(0))
	if err != nil || len(raw) != 24 || raw[8] != 8 {
		t.Errorf("raw per-CPU value % x, %v (each CPU padded to 8 bytes)", raw, err)
	}
	if err := m.Put(uint32(0), []uint32{1, 2}); !errors.Is(err, uapi.EINVAL) {
		t.Errorf("too few CPUs' values: %v", err)
	}
}

// counterPercpu adds 1 to this CPU's u32 at key 1 with a plain
// load/add/store: no other CPU touches this copy.
func counterPercpu(m *sim.Map) asm.Instructions {
	insns := asm.Instructions{
		asm.StoreImm(asm.RFP, -4, 1, asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()).WithReference("m"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.Word),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}
	if err := insns.AssociateMap("m", m); err != nil {
		panic(err)
	}
	return insns
}

func TestReadOnlyForPrograms(t *testing.T) {
	k := newKernel(t, nil)
	m := newMap(t, k, &ebpf.MapSpec{Name: "ro", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1, Flags: uapi.BPF_F_RDONLY_PROG})
	if err := m.Put(uint32(0), uint64(5)); err != nil {
		t.Fatalf("user space writes a BPF_F_RDONLY_PROG map: %v", err)
	}
	p := refused(t, k, ebpf.Syscall, counterProgram(m, 0), "write into map forbidden")
	_, err := p.Run(nil)
	var f *mem.Fault
	if !errors.As(err, &f) || f.Access != mem.Write {
		t.Errorf("a program's store into a BPF_F_RDONLY_PROG map: %v", err)
	}
}

func TestMapsOutliveTheirHandlesWhileProgramsUseThem(t *testing.T) {
	k := newKernel(t, nil)
	m, err := k.NewMap(&ebpf.MapSpec{Name: "c", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	p := load(t, k, ebpf.Syscall, counterProgram(m, 0))
	m.Close()
	if ret, err := p.Run(nil); err != nil || ret != 1 {
		t.Fatalf("program after the handle closed: %d, %v", ret, err)
	}
	if len(k.MapIDs()) != 1 {
		t.Fatal("the map went away while a program used it")
	}
	p.Close()
	k.SynchronizeRCU()
	if len(k.MapIDs()) != 0 {
		t.Errorf("maps left after the last user: %v", k.MapIDs())
	}
	for _, a := range k.Memory().Areas() {
		if a.Name == "bpf_array" {
			t.Errorf("array memory was not freed: %+v", a)
		}
	}
}

// Programs on several CPUs increment one counter atomically while user
// space reads it: no increment is lost.
func TestConcurrentMapUpdatesFromPrograms(t *testing.T) {
	k := newKernel(t, &sim.Options{CPUs: 4})
	m := newMap(t, k, &ebpf.MapSpec{Name: "c", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	p := load(t, k, ebpf.Syscall, counterProgram(m, 0))
	var wg sync.WaitGroup
	for cpu := uint32(0); cpu < 4; cpu++ {
		wg.Add(1)
		go func(cpu uint32) {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				if _, err := p.Run(&sim.RunOptions{CPU: cpu}); err != nil {
					t.Error(err)
					return
				}
			}
		}(cpu)
	}
	wg.Wait()
	var v uint64
	if err := m.Lookup(uint32(0), &v); err != nil || v != 2000 {
		t.Errorf("counter = %d, %v; want 2000", v, err)
	}
}

// A helper reads a key wherever the program points, within one page or
// across two: an unverified program looks up the key at data+off of an
// input laid out so that data+6 starts 2 bytes before a page boundary.
func TestMapKeysAreReadWithinAndAcrossPages(t *testing.T) {
	k := newKernel(t, nil)
	m := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 4})
	// The raw harness places its input to end 8-byte aligned at the end
	// of a power-of-two buffer: 4,100 bytes start at offset 4,088.
	data := make([]byte, 4100)
	for i, off := range []int{0, 6} {
		key := uint32(0x01020304 + i)
		binary.LittleEndian.PutUint32(data[off:], key)
		if err := m.Put(key, uint32(70+off)); err != nil {
			t.Fatal(err)
		}
	}
	for _, off := range []int32{0, 6} {
		p := load(t, k, ebpf.UnspecifiedProgram, associateM(m, asm.Instructions{
			asm.Mov.Reg(asm.R2, asm.R1),
			asm.Add.Imm(asm.R2, off),
			asm.LoadMapPtr(asm.R1, 0).WithReference("m"),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "miss"),
			asm.LoadMem(asm.R0, asm.R0, 0, asm.Word),
			asm.Return(),
			asm.Mov.Imm(asm.R0, -1).WithSymbol("miss"),
			asm.Return(),
		}))
		got, err := p.Run(&sim.RunOptions{Data: data})
		if err != nil || got != uint32(70+off) {
			t.Errorf("key at data+%d: got %d, %v; want %d", off, int32(got), err, 70+off)
		}
	}
}

// A command a map type lacks fails with ENOTSUPP, which also matches
// cilium/ebpf's ErrNotSupported, as cilium/ebpf's own map errors do.
func TestUnsupportedMapCommandsMatchErrNotSupported(t *testing.T) {
	k := newKernel(t, nil)
	m, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var v uint32
	for name, err := range map[string]error{
		"lookup and delete": m.LookupAndDelete(uint32(0), &v),
		"batch delete": func() error {
			_, err := m.BatchDelete([]uint32{0}, nil)
			return err
		}(),
	} {
		if !errors.Is(err, uapi.ENOTSUPP) || !errors.Is(err, ebpf.ErrNotSupported) {
			t.Errorf("%s on an array: %v, want ENOTSUPP matching ebpf.ErrNotSupported", name, err)
		}
	}
}
