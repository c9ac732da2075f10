package sim_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/arraymap"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Types of the spin lock tests: struct bpf_spin_lock as the kernel's
// headers declare it, and values { u32 cnt; struct bpf_spin_lock l; u64 d }
// with the lock at 4.
var (
	slU16  = &btf.Int{Name: "unsigned short", Size: 2}
	slU32  = &btf.Int{Name: "unsigned int", Size: 4}
	slU64  = &btf.Int{Name: "unsigned long long", Size: 8}
	slLock = &btf.Struct{Name: "bpf_spin_lock", Size: 4, Members: []btf.Member{{Name: "val", Type: slU32}}}
	slVal  = slStruct("val", 16, slMember("cnt", slU32, 0), slMember("l", slLock, 4), slMember("d", slU64, 8))
)

func slStruct(name string, size uint32, ms ...btf.Member) *btf.Struct {
	return &btf.Struct{Name: name, Size: size, Members: ms}
}

func slMember(name string, t btf.Type, off uint32) btf.Member {
	return btf.Member{Name: name, Type: t, Offset: btf.Bits(off * 8)}
}

func slArray(t btf.Type, n uint32) *btf.Array { return &btf.Array{Index: slU32, Type: t, Nelems: n} }

// slValue is a value of slVal: cnt and d set, the lock bytes all ones,
// which no update may store.
func slValue(cnt uint32, d uint64) []byte {
	b := binary.LittleEndian.AppendUint32(nil, cnt)
	b = binary.LittleEndian.AppendUint32(b, 0xffffffff)
	return binary.LittleEndian.AppendUint64(b, d)
}

// slRead is slValue as a lookup reads it: the lock zeroed.
func slRead(cnt uint32, d uint64) []byte {
	b := slValue(cnt, d)
	clear(b[4:8])
	return b
}

func errnoIs(err error, want uapi.Errno) bool {
	if want == 0 {
		return err == nil
	}
	return errors.Is(err, want)
}

// hasLock says whether a map was created with a spin lock in its values:
// a BPF_F_LOCK update is accepted only then.
func hasLock(m *sim.Map) bool {
	if m.Type() != ebpf.Array && m.Type() != ebpf.Hash {
		return false
	}
	return m.Update(make([]byte, m.KeySize()), make([]byte, m.ValueSize()), ebpf.UpdateLock) == nil
}

// Creation of maps whose values hold a spin lock, with the errnos this
// machine's kernel gives through cilium/ebpf (sim/kdiff compares them
// with the kernel itself): where the lock is found, which map types and
// flags may have one, and which malformed locks the BTF load refuses.
func TestSpinLockMapCreation(t *testing.T) {
	inner8 := slStruct("inner", 8, slMember("x", slU32, 0), slMember("l", slLock, 4))
	for _, tc := range []struct {
		name string
		spec *ebpf.MapSpec
		want uapi.Errno
		lock bool
	}{
		{"hash", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 16, MaxEntries: 2, Key: slU32, Value: slVal}, 0, true},
		{"hash without prealloc", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 16, MaxEntries: 2, Flags: uapi.BPF_F_NO_PREALLOC, Key: slU32, Value: slVal}, 0, true},
		{"array", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 2, Key: slU32, Value: slVal}, 0, true},
		{"percpu array", &ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 16, MaxEntries: 2, Key: slU32, Value: slVal}, uapi.EOPNOTSUPP, false},
		{"percpu hash", &ebpf.MapSpec{Type: ebpf.PerCPUHash, KeySize: 4, ValueSize: 16, MaxEntries: 2, Key: slU32, Value: slVal}, uapi.EOPNOTSUPP, false},
		{"LRU hash", &ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 4, ValueSize: 16, MaxEntries: 2, Key: slU32, Value: slVal}, uapi.EOPNOTSUPP, false},
		{"LRU percpu hash", &ebpf.MapSpec{Type: ebpf.LRUCPUHash, KeySize: 4, ValueSize: 16, MaxEntries: 2, Key: slU32, Value: slVal}, uapi.EOPNOTSUPP, false},
		{"bloom filter", &ebpf.MapSpec{Type: ebpf.BloomFilter, ValueSize: 16, MaxEntries: 2, Value: slVal}, uapi.EOPNOTSUPP, false},
		{"LPM trie", &ebpf.MapSpec{Type: ebpf.LPMTrie, KeySize: 8, ValueSize: 16, MaxEntries: 2, Flags: uapi.BPF_F_NO_PREALLOC, Key: slU64, Value: slVal}, uapi.EOPNOTSUPP, false},
		{"queue: no key type, the BTF is dropped", &ebpf.MapSpec{Type: ebpf.Queue, ValueSize: 16, MaxEntries: 2, Value: slVal}, 0, false},
		{"prog array", &ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 2, Key: slU32, Value: slStruct("v4", 4, slMember("l", slLock, 0))}, uapi.EOPNOTSUPP, false},
		{"devmap: BPF_F_RDONLY_PROG added before the check", &ebpf.MapSpec{Type: ebpf.DevMap, KeySize: 4, ValueSize: 4, MaxEntries: 2, Key: slU32, Value: slStruct("v4", 4, slMember("l", slLock, 0))}, uapi.EACCES, false},
		{"BPF_F_RDONLY_PROG", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 2, Flags: uapi.BPF_F_RDONLY_PROG, Key: slU32, Value: slVal}, uapi.EACCES, false},
		{"BPF_F_WRONLY_PROG", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 16, MaxEntries: 2, Flags: uapi.BPF_F_WRONLY_PROG, Key: slU32, Value: slVal}, uapi.EACCES, false},
		{"an invalid flag is the type's EINVAL first", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 16, MaxEntries: 2, Flags: uapi.BPF_F_NO_COMMON_LRU, Key: slU32, Value: slVal}, uapi.EINVAL, false},
		{"LRU without prealloc is the type's ENOTSUPP first", &ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 4, ValueSize: 16, MaxEntries: 2, Flags: uapi.BPF_F_NO_PREALLOC, Key: slU32, Value: slVal}, uapi.ENOTSUPP, false},
		{"two locks in one struct: BTF load E2BIG", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 2, Key: slU32, Value: slStruct("b", 8, slMember("l", slLock, 0), slMember("l2", slLock, 4))}, uapi.E2BIG, false},
		{"two locks in a nested struct: BTF load E2BIG", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 12, MaxEntries: 2, Key: slU32, Value: slStruct("t", 12, slMember("x", slU32, 0), slMember("in", slStruct("pair", 8, slMember("l", slLock, 0), slMember("l2", slLock, 4)), 4))}, uapi.E2BIG, false},
		{"a lock at 2: BTF load EFAULT", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2, Key: slU32, Value: slStruct("i", 8, slMember("x", slU16, 0), slMember("l", slLock, 2))}, uapi.EFAULT, false},
		{"an 8-byte bpf_spin_lock: BTF load EFAULT", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2, Key: slU32, Value: slStruct("l", 8, slMember("l", &btf.Struct{Name: "bpf_spin_lock", Size: 8, Members: []btf.Member{{Name: "val", Type: slU64}}}, 0))}, uapi.EFAULT, false},
		{"lock at 0", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2, Key: slU32, Value: slStruct("a", 8, slMember("l", slLock, 0), slMember("x", slU32, 4))}, 0, true},
		{"lock[1]", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 2, Key: slU32, Value: slStruct("c", 8, slMember("x", slU32, 0), slMember("l", slArray(slLock, 1), 4))}, 0, true},
		{"lock[2]: ignored", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 12, MaxEntries: 2, Key: slU32, Value: slStruct("d", 12, slMember("x", slU32, 0), slMember("l", slArray(slLock, 2), 4))}, 0, false},
		{"nested", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 12, MaxEntries: 2, Key: slU32, Value: slStruct("e", 12, slMember("x", slU32, 0), slMember("in", inner8, 4))}, 0, true},
		{"nested twice", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 16, MaxEntries: 2, Key: slU32, Value: slStruct("h", 16, slMember("x", slU32, 0), slMember("o", slStruct("mid", 12, slMember("y", slU32, 0), slMember("in", inner8, 4)), 4))}, 0, true},
		{"nested [1]", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 12, MaxEntries: 2, Key: slU32, Value: slStruct("f", 12, slMember("x", slU32, 0), slMember("in", slArray(inner8, 1), 4))}, 0, true},
		{"nested [2]: ignored", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 20, MaxEntries: 2, Key: slU32, Value: slStruct("g", 20, slMember("x", slU32, 0), slMember("in", slArray(inner8, 2), 4))}, 0, false},
		{"in a union: ignored", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 2, Key: slU32, Value: slStruct("n", 8, slMember("x", slU32, 0), slMember("u", &btf.Union{Name: "un", Size: 4, Members: []btf.Member{slMember("l", slLock, 0), slMember("w", slU32, 0)}}, 4))}, 0, false},
		{"through a typedef: ignored", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 2, Key: slU32, Value: slStruct("o", 8, slMember("x", slU32, 0), slMember("l", &btf.Typedef{Name: "lock_t", Type: slLock}, 4))}, 0, false},
		{"volatile: ignored", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2, Key: slU32, Value: slStruct("p", 8, slMember("x", slU32, 0), slMember("l", &btf.Volatile{Type: slLock}, 4))}, 0, false},
		{"the value is the lock: ignored", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 2, Key: slU32, Value: slLock}, 0, false},
		{"a typedef of the value", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2, Key: slU32, Value: &btf.Typedef{Name: "vt", Type: slStruct("q", 8, slMember("x", slU32, 0), slMember("l", slLock, 4))}}, 0, true},
		{"no key type: the BTF is dropped", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 16, MaxEntries: 2, Value: slVal}, 0, false},
		{"array without a key type: the BTF is dropped", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 2, Value: slVal}, 0, false},
		{"key size not the key type's: the BTF is dropped", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 8, ValueSize: 16, MaxEntries: 2, Key: slU32, Value: slVal}, 0, false},
		{"value size not the value type's: the BTF is dropped", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 24, MaxEntries: 2, Key: slU32, Value: slVal}, 0, false},
		{"hash with a u64 key", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 8, ValueSize: 16, MaxEntries: 2, Key: slU64, Value: slVal}, 0, true},
		{"array with a struct key: the BTF is dropped", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 2, Key: slStruct("ks", 4, slMember("a", slU32, 0)), Value: slVal}, 0, false},
		{"array with a struct key, read-only for programs", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 2, Flags: uapi.BPF_F_RDONLY_PROG, Key: slStruct("ks", 4, slMember("a", slU32, 0)), Value: slVal}, uapi.EACCES, false},
		{"data section", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1, Key: &btf.Void{}, Value: slDatasec}, 0, true},
		{"data section of two elements: the BTF is dropped", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2, Key: &btf.Void{}, Value: slDatasec}, 0, false},
		{"a lock and a timer", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 24, MaxEntries: 2, Key: slU32, Value: slStruct("s", 24, slMember("l", slLock, 0), slMember("t", &btf.Struct{Name: "bpf_timer", Size: 16}, 8))}, 0, true},
		{"a lock and a timer in an LRU hash", &ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 4, ValueSize: 24, MaxEntries: 2, Key: slU32, Value: slStruct("s", 24, slMember("l", slLock, 0), slMember("t", &btf.Struct{Name: "bpf_timer", Size: 16}, 8))}, uapi.EOPNOTSUPP, false},
		{"a timer in a per-CPU array", &ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 24, MaxEntries: 2, Key: slU32, Value: slStruct("s", 24, slMember("t", &btf.Struct{Name: "bpf_timer", Size: 16}, 8))}, uapi.EOPNOTSUPP, false},
		{"a lock in a nested struct at 2 is not simulated", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 2, Key: slU32, Value: slStruct("j", 8, slMember("x", slU16, 0), slMember("in", slStruct("k", 4, slMember("l", slLock, 0)), 2), slMember("z", slU16, 6))}, uapi.EINVAL, false},
		{"two locks at two depths are not simulated", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 12, MaxEntries: 2, Key: slU32, Value: slStruct("w", 12, slMember("l", slLock, 0), slMember("in", inner8, 4))}, uapi.EINVAL, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newKernel(t, nil)
			m, err := k.NewMap(tc.spec)
			if !errnoIs(err, tc.want) {
				t.Fatalf("NewMap: %v, want errno %d", err, tc.want)
			}
			if err != nil {
				return
			}
			defer m.Close()
			if got := hasLock(m); got != tc.lock {
				t.Errorf("values hold a spin lock: %v, want %v", got, tc.lock)
			}
		})
	}
}

// slDatasec is a data section (.data) with a u32 and a spin lock.
var slDatasec = &btf.Datasec{Name: ".data.lock", Size: 8, Vars: []btf.VarSecinfo{
	{Type: &btf.Var{Name: "cnt", Type: slU32, Linkage: btf.GlobalVar}, Offset: 0, Size: 4},
	{Type: &btf.Var{Name: "lk", Type: slLock, Linkage: btf.GlobalVar}, Offset: 4, Size: 4},
}}

// The flags of user-space updates, lookups and lookups-and-deletes, on
// maps with a lock and without, with the errnos of this machine's kernel.
func TestSpinLockFlagsFromUserSpace(t *testing.T) {
	plain := slStruct("plain", 16, slMember("a", slU32, 0), slMember("b", slU32, 4), slMember("d", slU64, 8))
	specs := map[string]*ebpf.MapSpec{
		"lock array":   {Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 2, Key: slU32, Value: slVal},
		"lock hash":    {Type: ebpf.Hash, KeySize: 4, ValueSize: 16, MaxEntries: 2, Key: slU32, Value: slVal},
		"plain array":  {Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 2, Key: slU32, Value: plain},
		"plain hash":   {Type: ebpf.Hash, KeySize: 4, ValueSize: 16, MaxEntries: 2, Key: slU32, Value: plain},
		"no BTF array": {Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 2},
	}
	type op struct {
		name  string
		flags uint64
		want  map[string]uapi.Errno // by map; missing: success
	}
	plainEINVAL := map[string]uapi.Errno{"plain array": uapi.EINVAL, "plain hash": uapi.EINVAL, "no BTF array": uapi.EINVAL}
	allEINVAL := map[string]uapi.Errno{"lock array": uapi.EINVAL, "lock hash": uapi.EINVAL, "plain array": uapi.EINVAL, "plain hash": uapi.EINVAL, "no BTF array": uapi.EINVAL}
	for _, o := range []op{
		{"update", 0, nil},
		{"update", uapi.BPF_F_LOCK, plainEINVAL},
		{"update", uapi.BPF_F_LOCK | uapi.BPF_EXIST, plainEINVAL},
		{"update", uapi.BPF_F_LOCK | uapi.BPF_NOEXIST, map[string]uapi.Errno{"lock array": uapi.EEXIST, "lock hash": uapi.EEXIST, "plain array": uapi.EINVAL, "plain hash": uapi.EINVAL, "no BTF array": uapi.EINVAL}},
		{"update", uapi.BPF_F_LOCK | 3, allEINVAL},
		{"update", uapi.BPF_F_LOCK | 8, allEINVAL},
		{"lookup", 0, nil},
		{"lookup", uapi.BPF_F_LOCK, plainEINVAL},
		{"lookup", 1, allEINVAL},
		{"lookup", uapi.BPF_F_LOCK | 1, allEINVAL},
		{"lookup-and-delete", uapi.BPF_F_LOCK | 1, allEINVAL},
		{"lookup-and-delete", uapi.BPF_F_LOCK, map[string]uapi.Errno{"lock array": uapi.ENOTSUPP, "plain array": uapi.EINVAL, "plain hash": uapi.EINVAL, "no BTF array": uapi.EINVAL}},
		{"lookup-and-delete", 0, map[string]uapi.Errno{"lock array": uapi.ENOTSUPP, "plain array": uapi.ENOTSUPP, "no BTF array": uapi.ENOTSUPP}},
	} {
		for name, spec := range specs {
			k := newKernel(t, nil)
			m := newMap(t, k, spec)
			if err := m.Put(uint32(0), slValue(1, 2)); err != nil {
				t.Fatal(err)
			}
			out := make([]byte, 16)
			var err error
			switch o.name {
			case "update":
				err = m.Update(uint32(0), slValue(3, 4), ebpf.MapUpdateFlags(o.flags))
			case "lookup":
				err = m.LookupWithFlags(uint32(0), &out, ebpf.MapLookupFlags(o.flags))
			case "lookup-and-delete":
				err = m.LookupAndDeleteWithFlags(uint32(0), &out, ebpf.MapLookupFlags(o.flags))
			}
			if want := o.want[name]; !errnoIs(err, want) {
				t.Errorf("%s: %s flags %#x: %v, want errno %d", name, o.name, o.flags, err, want)
			}
		}
	}
	// Maps that cannot hold a lock refuse BPF_F_LOCK before their type
	// sees it.
	for _, spec := range []*ebpf.MapSpec{
		{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 16, MaxEntries: 2, Key: slU32, Value: plain},
		{Type: ebpf.PerCPUHash, KeySize: 4, ValueSize: 16, MaxEntries: 2, Key: slU32, Value: plain},
		{Type: ebpf.LRUHash, KeySize: 4, ValueSize: 16, MaxEntries: 2, Key: slU32, Value: plain},
		{Type: ebpf.Queue, ValueSize: 16, MaxEntries: 2},
	} {
		k := newKernel(t, nil)
		m := newMap(t, k, spec)
		var key any = uint32(0)
		var value any = slValue(1, 2)
		var out any = make([]byte, 16)
		if spec.Type == ebpf.Queue {
			key = nil
		}
		if spec.Type == ebpf.PerCPUArray || spec.Type == ebpf.PerCPUHash {
			perCPU := make([][]byte, k.NumCPUs())
			for i := range perCPU {
				perCPU[i] = slValue(1, 2)
			}
			value = perCPU
			out = new([][]byte)
		}
		if err := m.Update(key, value, ebpf.UpdateLock); !errors.Is(err, uapi.EINVAL) {
			t.Errorf("%v: update BPF_F_LOCK: %v, want EINVAL", spec.Type, err)
		}
		if err := m.LookupWithFlags(key, out, ebpf.LookupLock); !errors.Is(err, uapi.EINVAL) {
			t.Errorf("%v: lookup BPF_F_LOCK: %v, want EINVAL", spec.Type, err)
		}
		if err := m.LookupAndDeleteWithFlags(key, out, ebpf.LookupLock); !errors.Is(err, uapi.EINVAL) {
			t.Errorf("%v: lookup-and-delete BPF_F_LOCK: %v, want EINVAL", spec.Type, err)
		}
	}
}

// arrayLockWord is the lock word of element idx of an array of slVal, in
// the simulated kernel's memory: what a program's bpf_spin_lock takes.
func arrayLockWord(t *testing.T, k *sim.Kernel, m *sim.Map, idx uint32) *uint32 {
	t.Helper()
	addr := m.Address() + arraymap.ValueOffset + uint64(idx)*16
	v, err := k.Memory().Bytes(addr, 16)
	if err != nil {
		t.Fatal(err)
	}
	return (*uint32)(unsafe.Pointer(&v[4]))
}

// While a program holds a value's lock, user space reads the value with
// the lock zeroed and updates it around the lock without waiting; with
// BPF_F_LOCK it waits for the program.
func TestUserSpaceAndAHeldSpinLock(t *testing.T) {
	k := newKernel(t, nil)
	m := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 2, Key: slU32, Value: slVal})
	if err := m.Put(uint32(1), slValue(1, 2)); err != nil {
		t.Fatal(err)
	}
	w := arrayLockWord(t, k, m, 1)
	if atomic.LoadUint32(w) != 0 {
		t.Fatal("the lock is held after an update")
	}
	maps.LockSpin(w) // a program's bpf_spin_lock
	out := make([]byte, 16)
	if err := m.Lookup(uint32(1), &out); err != nil || !bytes.Equal(out, slRead(1, 2)) {
		t.Errorf("lookup: % x, %v; want % x", out, err, slRead(1, 2))
	}
	if err := m.Put(uint32(1), slValue(3, 4)); err != nil {
		t.Fatal(err)
	}
	if atomic.LoadUint32(w) != 1 {
		t.Fatal("an update without BPF_F_LOCK released a program's lock")
	}
	var iterated []byte
	it := m.Iterate()
	var key uint32
	for it.Next(&key, &out) {
		if key == 1 {
			iterated = bytes.Clone(out)
		}
	}
	if !bytes.Equal(iterated, slRead(3, 4)) {
		t.Errorf("iteration read % x, want % x", iterated, slRead(3, 4))
	}
	for _, locked := range []struct {
		name string
		op   func() error
	}{
		{"BPF_F_LOCK lookup", func() error { return m.LookupWithFlags(uint32(1), &out, ebpf.LookupLock) }},
		{"BPF_F_LOCK update", func() error { return m.Update(uint32(1), slValue(5, 6), ebpf.UpdateLock) }},
	} {
		done := make(chan error)
		go func() { done <- locked.op() }()
		select {
		case err := <-done:
			t.Fatalf("%s finished while a program held the lock: %v", locked.name, err)
		case <-time.After(20 * time.Millisecond):
		}
		maps.UnlockSpin(w)
		if err := <-done; err != nil {
			t.Fatalf("%s: %v", locked.name, err)
		}
		maps.LockSpin(w)
	}
	maps.UnlockSpin(w)
	if err := m.LookupWithFlags(uint32(1), &out, ebpf.LookupLock); err != nil || !bytes.Equal(out, slRead(5, 6)) {
		t.Errorf("after the locked update: % x, %v; want % x", out, err, slRead(5, 6))
	}
}

// Writers store values whose two fields hold the same number under
// BPF_F_LOCK while readers read them under BPF_F_LOCK: no reader may see
// the fields differ. (Without the lock they do, now and then.)
func TestLockedCopiesAreNeverTorn(t *testing.T) {
	// { u64 a; struct bpf_spin_lock l; u32 pad; u64 b; }: a and b on
	// either side of the lock, so an unlocked copy of the one is apart
	// from the other's.
	val := slStruct("pair", 24, slMember("a", slU64, 0), slMember("l", slLock, 8), slMember("pad", slU32, 12), slMember("b", slU64, 16))
	for _, typ := range []ebpf.MapType{ebpf.Array, ebpf.Hash} {
		t.Run(typ.String(), func(t *testing.T) {
			k := newKernel(t, nil)
			m := newMap(t, k, &ebpf.MapSpec{Type: typ, KeySize: 4, ValueSize: 24, MaxEntries: 1, Key: slU32, Value: val})
			if err := m.Put(uint32(0), make([]byte, 24)); err != nil {
				t.Fatal(err)
			}
			const writers, readers, rounds = 3, 3, 20000
			var torn atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, writers+readers)
			for w := range writers {
				wg.Go(func() {
					v := make([]byte, 24)
					for i := range rounds {
						n := uint64(w*rounds + i)
						binary.LittleEndian.PutUint64(v, n)
						binary.LittleEndian.PutUint64(v[16:], n)
						if err := m.Update(uint32(0), v, ebpf.UpdateLock); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			for range readers {
				wg.Go(func() {
					out := make([]byte, 24)
					for range rounds {
						if err := m.LookupWithFlags(uint32(0), &out, ebpf.LookupLock); err != nil {
							errs <- err
							return
						}
						if a, b := binary.LittleEndian.Uint64(out), binary.LittleEndian.Uint64(out[16:]); a != b {
							torn.Add(1)
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if n := torn.Load(); n > 0 {
				t.Errorf("%d of %d locked lookups saw a and b differ", n, readers*rounds)
			}
		})
	}
}

// An inner map must have its template's spin lock (btf_record_equal), as
// this machine's kernel says.
func TestInnerMapsNeedTheTemplatesSpinLock(t *testing.T) {
	val8 := func(name string, lockAt uint32) *btf.Struct {
		return slStruct(name, 8, slMember("l", slLock, lockAt), slMember("a", slU32, 4-lockAt))
	}
	specs := map[string]*ebpf.MapSpec{
		"lock":   {Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1, Key: slU32, Value: val8("val", 4)},
		"lock@0": {Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1, Key: slU32, Value: val8("val2", 0)},
		"plain":  {Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1, Key: slU32, Value: slStruct("plain", 8, slMember("a", slU32, 0), slMember("b", slU32, 4))},
		"nobtf":  {Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1},
	}
	for _, tc := range []struct {
		tmpl, inner string
		want        uapi.Errno
	}{
		{"lock", "lock", 0}, {"lock", "plain", uapi.EINVAL}, {"lock", "nobtf", uapi.EINVAL}, {"lock", "lock@0", uapi.EINVAL},
		{"plain", "lock", uapi.EINVAL}, {"plain", "plain", 0}, {"plain", "nobtf", 0},
		{"nobtf", "lock", uapi.EINVAL}, {"nobtf", "plain", 0},
	} {
		for _, outerType := range []ebpf.MapType{ebpf.ArrayOfMaps, ebpf.HashOfMaps} {
			k := newKernel(t, nil)
			outer := newMap(t, k, &ebpf.MapSpec{Type: outerType, KeySize: 4, ValueSize: 4, MaxEntries: 1, InnerMap: specs[tc.tmpl]})
			inner := newMap(t, k, specs[tc.inner])
			if err := outer.Put(uint32(0), inner); !errnoIs(err, tc.want) {
				t.Errorf("%v of %s, inserting %s: %v, want errno %d", outerType, tc.tmpl, tc.inner, err, tc.want)
			}
		}
	}
}
