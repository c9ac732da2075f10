//go:build linux

package kdiff

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/bpfsim/bpfsim/sim"
)

// The map side of struct bpf_spin_lock, compared with this machine's
// kernel through cilium/ebpf: which values get a lock at creation (and
// with which errno the others fail), and what user space reads back and
// which errnos it gets from updates, lookups and lookups-and-deletes with
// every flag, BPF_F_LOCK or not, along random sequences.

var (
	lmU16  = &btf.Int{Name: "unsigned short", Size: 2}
	lmU32  = &btf.Int{Name: "unsigned int", Size: 4}
	lmU64  = &btf.Int{Name: "unsigned long long", Size: 8}
	lmLock = &btf.Struct{Name: "bpf_spin_lock", Size: 4, Members: []btf.Member{{Name: "val", Type: lmU32}}}
	// lmVal is { u32 cnt; struct bpf_spin_lock l; u64 d; }.
	lmVal = lmStruct("val", 16, lmMember("cnt", lmU32, 0), lmMember("l", lmLock, 4), lmMember("d", lmU64, 8))
)

func lmStruct(name string, size uint32, ms ...btf.Member) *btf.Struct {
	return &btf.Struct{Name: name, Size: size, Members: ms}
}

func lmMember(name string, t btf.Type, off uint32) btf.Member {
	return btf.Member{Name: name, Type: t, Offset: btf.Bits(off * 8)}
}

// lmHasLock says whether BPF_F_LOCK updates are accepted: whether the
// map's values hold a spin lock.
func lmHasLock(update func(key, value any, flags ebpf.MapUpdateFlags) error, spec *ebpf.MapSpec) bool {
	if spec.Type != ebpf.Array && spec.Type != ebpf.Hash {
		return false
	}
	return update(make([]byte, spec.KeySize), make([]byte, spec.ValueSize), ebpf.UpdateLock) == nil
}

// TestSpinLockMapCreationIsTheKernels creates maps with spin locks of
// every shape and map type in both kernels. Left out: values the kernel
// takes with a warning (two locks at different depths: WARN_ON_ONCE) or
// with a misaligned lock, which bpfsim refuses.
func TestSpinLockMapCreationIsTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	arr := func(t btf.Type, n uint32) *btf.Array { return &btf.Array{Index: lmU32, Type: t, Nelems: n} }
	inner8 := lmStruct("inner", 8, lmMember("x", lmU32, 0), lmMember("l", lmLock, 4))
	v4 := lmStruct("v4", 4, lmMember("l", lmLock, 0))
	datasec := &btf.Datasec{Name: ".data.lock", Size: 8, Vars: []btf.VarSecinfo{
		{Type: &btf.Var{Name: "cnt", Type: lmU32, Linkage: btf.GlobalVar}, Offset: 0, Size: 4},
		{Type: &btf.Var{Name: "lk", Type: lmLock, Linkage: btf.GlobalVar}, Offset: 4, Size: 4},
	}}
	shapes := []struct {
		name string
		v    btf.Type
		size uint32
	}{
		{"lock at 4", lmVal, 16},
		{"lock at 0", lmStruct("a", 8, lmMember("l", lmLock, 0), lmMember("x", lmU32, 4)), 8},
		{"two locks in one struct", lmStruct("b", 8, lmMember("l", lmLock, 0), lmMember("l2", lmLock, 4)), 8},
		{"lock[1]", lmStruct("c", 8, lmMember("x", lmU32, 0), lmMember("l", arr(lmLock, 1), 4)), 8},
		{"lock[2]", lmStruct("d", 12, lmMember("x", lmU32, 0), lmMember("l", arr(lmLock, 2), 4)), 12},
		{"nested", lmStruct("e", 12, lmMember("x", lmU32, 0), lmMember("in", inner8, 4)), 12},
		{"nested [1]", lmStruct("f", 12, lmMember("x", lmU32, 0), lmMember("in", arr(inner8, 1), 4)), 12},
		{"nested [2]", lmStruct("g", 20, lmMember("x", lmU32, 0), lmMember("in", arr(inner8, 2), 4)), 20},
		{"nested twice", lmStruct("h", 16, lmMember("x", lmU32, 0), lmMember("o", lmStruct("mid", 12, lmMember("y", lmU32, 0), lmMember("in", inner8, 4)), 4)), 16},
		{"lock at 2", lmStruct("i", 8, lmMember("x", lmU16, 0), lmMember("l", lmLock, 2)), 8},
		{"8-byte bpf_spin_lock", lmStruct("l", 8, lmMember("l", &btf.Struct{Name: "bpf_spin_lock", Size: 8, Members: []btf.Member{{Name: "val", Type: lmU64}}}, 0)), 8},
		{"in a union", lmStruct("n", 8, lmMember("x", lmU32, 0), lmMember("u", &btf.Union{Name: "un", Size: 4, Members: []btf.Member{lmMember("l", lmLock, 0), lmMember("w", lmU32, 0)}}, 4)), 8},
		{"through a typedef", lmStruct("o", 8, lmMember("x", lmU32, 0), lmMember("l", &btf.Typedef{Name: "lock_t", Type: lmLock}, 4)), 8},
		{"volatile", lmStruct("p", 8, lmMember("x", lmU32, 0), lmMember("l", &btf.Volatile{Type: lmLock}, 4)), 8},
		{"the value is the lock", lmLock, 4},
		{"a typedef of the value", &btf.Typedef{Name: "vt", Type: lmStruct("q", 8, lmMember("x", lmU32, 0), lmMember("l", lmLock, 4))}, 8},
		{"two locks in a nested struct", lmStruct("t", 12, lmMember("x", lmU32, 0), lmMember("in", lmStruct("pair", 8, lmMember("l", lmLock, 0), lmMember("l2", lmLock, 4)), 4)), 12},
	}
	var specs []*ebpf.MapSpec
	for _, s := range shapes {
		for _, typ := range []ebpf.MapType{ebpf.Hash, ebpf.Array} {
			specs = append(specs, &ebpf.MapSpec{Name: s.name, Type: typ, KeySize: 4, ValueSize: s.size, MaxEntries: 2, Key: lmU32, Value: s.v})
		}
	}
	for _, c := range []struct {
		typ       ebpf.MapType
		key, max  uint32
		flags     uint32
		keyType   btf.Type
		valueSize uint32
		value     btf.Type
	}{
		{ebpf.Hash, 4, 2, 0x1, lmU32, 16, lmVal},    // BPF_F_NO_PREALLOC
		{ebpf.Hash, 4, 2, 0x2, lmU32, 16, lmVal},    // BPF_F_NO_COMMON_LRU: the type's EINVAL
		{ebpf.Hash, 4, 2, 0x80, lmU32, 16, lmVal},   // BPF_F_RDONLY_PROG
		{ebpf.Array, 4, 2, 0x100, lmU32, 16, lmVal}, // BPF_F_WRONLY_PROG
		{ebpf.Array, 4, 2, 0x400, lmU32, 16, lmVal}, // BPF_F_MMAPABLE
		{ebpf.Array, 4, 2, 0x8, lmU32, 16, lmVal},   // BPF_F_RDONLY
		{ebpf.Array, 4, 2, 0x1000, lmU32, 16, lmVal},
		{ebpf.PerCPUArray, 4, 2, 0, lmU32, 16, lmVal},
		{ebpf.PerCPUHash, 4, 2, 0, lmU32, 16, lmVal},
		{ebpf.LRUHash, 4, 2, 0, lmU32, 16, lmVal},
		{ebpf.LRUHash, 4, 2, 0x1, lmU32, 16, lmVal}, // the type's ENOTSUPP first
		{ebpf.LRUCPUHash, 4, 2, 0, lmU32, 16, lmVal},
		{ebpf.Queue, 0, 2, 0, nil, 16, lmVal},
		{ebpf.Stack, 0, 2, 0, nil, 16, lmVal},
		{ebpf.BloomFilter, 0, 2, 0, nil, 16, lmVal},
		{ebpf.LPMTrie, 8, 2, 0x1, lmU64, 16, lmVal},
		{ebpf.ProgramArray, 4, 2, 0, lmU32, 4, v4},
		{ebpf.PerfEventArray, 4, 2, 0, lmU32, 4, v4},
		{ebpf.DevMap, 4, 2, 0, lmU32, 4, v4},
		{ebpf.Hash, 4, 2, 0, nil, 16, lmVal},
		{ebpf.Array, 4, 2, 0, nil, 16, lmVal},
		{ebpf.Hash, 8, 2, 0, lmU32, 16, lmVal},
		{ebpf.Hash, 8, 2, 0, lmU64, 16, lmVal},
		{ebpf.Hash, 4, 2, 0, lmU32, 24, lmVal},
		{ebpf.Array, 4, 2, 0, lmStruct("ks", 4, lmMember("a", lmU32, 0)), 16, lmVal},
		{ebpf.Array, 4, 2, 0x80, lmStruct("ks", 4, lmMember("a", lmU32, 0)), 16, lmVal},
		{ebpf.Array, 4, 2, 0, &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}, 16, lmVal},
		{ebpf.Array, 4, 2, 0, &btf.Typedef{Name: "kt", Type: lmU32}, 16, lmVal},
		{ebpf.Array, 4, 1, 0, &btf.Void{}, 8, datasec},
		{ebpf.Array, 4, 2, 0, &btf.Void{}, 8, datasec},
	} {
		specs = append(specs, &ebpf.MapSpec{Name: fmt.Sprintf("flags %#x", c.flags), Type: c.typ, KeySize: c.key, ValueSize: c.valueSize,
			MaxEntries: c.max, Flags: c.flags, Key: c.keyType, Value: c.value})
	}
	inner := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}
	for _, typ := range []ebpf.MapType{ebpf.ArrayOfMaps, ebpf.HashOfMaps} {
		specs = append(specs, &ebpf.MapSpec{Name: "outer", Type: typ, KeySize: 4, ValueSize: 4, MaxEntries: 2, Key: lmU32, Value: v4, InnerMap: inner})
	}
	locked := 0
	for _, spec := range specs {
		what := fmt.Sprintf("%v %s (key %d, value %d)", spec.Type, spec.Name, spec.KeySize, spec.ValueSize)
		spec.Name = "" // the shapes' names are not map names
		km, kErr := ebpf.NewMap(spec)
		sm, sErr := k.NewMap(spec)
		if errnoOf(kErr) != errnoOf(sErr) || (kErr == nil) != (sErr == nil) {
			t.Errorf("create %s: kernel %v; bpfsim %v", what, kErr, sErr)
		}
		if kErr == nil && sErr == nil {
			kLock, sLock := lmHasLock(km.Update, spec), lmHasLock(sm.Update, spec)
			if kLock != sLock {
				t.Errorf("create %s: a spin lock in the kernel's values: %v, in bpfsim's: %v", what, kLock, sLock)
			}
			if kLock {
				locked++
			}
			if spec.Flags&0x400 != 0 {
				_, kErr := km.Memory()
				_, sErr := sm.Memory()
				if errnoOf(kErr) != errnoOf(sErr) {
					t.Errorf("%s: mapping: kernel %v; bpfsim %v", what, kErr, sErr)
				}
			}
		}
		if km != nil {
			km.Close()
		}
		if sm != nil {
			sm.Close()
		}
	}
	t.Logf("%d creations compared, %d of them with a spin lock", len(specs), locked)
}

// lmOps are the operations of a random sequence, with the flags each is
// tried with: every combination of BPF_F_LOCK with BPF_NOEXIST and
// BPF_EXIST, and flags that do not exist.
var (
	lmUpdateFlags = []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16}
	lmLookupFlags = []uint64{0, 4, 0, 4, 1, 2, 5, 8}
)

// TestSpinLockMapOpsAreTheKernels runs the same random sequences of
// updates, lookups, lookups-and-deletes and deletes with every flag on
// maps with and without a spin lock in both kernels: the same errnos, and
// the same bytes read back (the lock word always 0). The values written
// have random lock bytes, which neither kernel may store.
func TestSpinLockMapOpsAreTheKernels(t *testing.T) {
	k := linuxLikeSim(t)
	plain := lmStruct("plain", 16, lmMember("a", lmU32, 0), lmMember("b", lmU32, 4), lmMember("d", lmU64, 8))
	val0 := lmStruct("val0", 16, lmMember("l", lmLock, 0), lmMember("a", lmU32, 4), lmMember("d", lmU64, 8))
	steps, reads := 0, 0
	for _, spec := range []*ebpf.MapSpec{
		{Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 3, Key: lmU32, Value: lmVal},
		{Type: ebpf.Hash, KeySize: 4, ValueSize: 16, MaxEntries: 3, Key: lmU32, Value: lmVal},
		{Type: ebpf.Hash, KeySize: 4, ValueSize: 16, MaxEntries: 3, Flags: 1, Key: lmU32, Value: lmVal},
		{Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 3, Key: lmU32, Value: val0},
		{Type: ebpf.Hash, KeySize: 4, ValueSize: 16, MaxEntries: 3, Key: lmU32, Value: val0},
		{Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 3, Key: lmU32, Value: plain},
		{Type: ebpf.Hash, KeySize: 4, ValueSize: 16, MaxEntries: 3, Key: lmU32, Value: plain},
		{Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 3},
	} {
		name := fmt.Sprintf("%v without BTF", spec.Type)
		if v, ok := spec.Value.(*btf.Struct); ok {
			name = fmt.Sprintf("%v of %s flags %#x", spec.Type, v.Name, spec.Flags)
		}
		t.Run(name, func(t *testing.T) {
			km, sm := mapsInBoth(t, k, spec)
			rng := rand.New(rand.NewPCG(uint64(spec.Type), uint64(len(name))))
			for step := range 3000 {
				key := uint32(rng.IntN(5))
				value := make([]byte, 16)
				for i := range value {
					value[i] = byte(rng.Uint32())
				}
				var what string
				var kErr, sErr error
				var kOut, sOut []byte
				switch op := rng.IntN(10); {
				case op < 4:
					flags := ebpf.MapUpdateFlags(lmUpdateFlags[rng.IntN(len(lmUpdateFlags))])
					what = fmt.Sprintf("update %d flags %#x", key, flags)
					kErr = km.Update(key, value, flags)
					sErr = lmWithin(t, what, func() error { return sm.Update(key, value, flags) })
				case op < 8:
					flags := ebpf.MapLookupFlags(lmLookupFlags[rng.IntN(len(lmLookupFlags))])
					what = fmt.Sprintf("lookup %d flags %#x", key, flags)
					kOut, sOut = make([]byte, 16), make([]byte, 16)
					kErr = km.LookupWithFlags(key, &kOut, flags)
					sErr = lmWithin(t, what, func() error { return sm.LookupWithFlags(key, &sOut, flags) })
				case op < 9:
					flags := ebpf.MapLookupFlags(lmLookupFlags[rng.IntN(len(lmLookupFlags))])
					what = fmt.Sprintf("lookup-and-delete %d flags %#x", key, flags)
					kOut, sOut = make([]byte, 16), make([]byte, 16)
					kErr = km.LookupAndDeleteWithFlags(key, &kOut, flags)
					sErr = lmWithin(t, what, func() error { return sm.LookupAndDeleteWithFlags(key, &sOut, flags) })
				default:
					what = fmt.Sprintf("delete %d", key)
					kErr, sErr = km.Delete(key), sm.Delete(key)
				}
				steps++
				if errnoOf(kErr) != errnoOf(sErr) || (kErr == nil) != (sErr == nil) {
					t.Fatalf("step %d, %s: kernel %v; bpfsim %v", step, what, kErr, sErr)
				}
				if kErr == nil && kOut != nil {
					reads++
					if !bytes.Equal(kOut, sOut) {
						t.Fatalf("step %d, %s: kernel read % x; bpfsim % x", step, what, kOut, sOut)
					}
				}
			}
			lmSameContents(t, km, sm)
		})
	}
	t.Logf("%d steps compared, %d values read back alike", steps, reads)
}

// lmWithin runs a bpfsim operation, failing t if it does not return: a
// BPF_F_LOCK copy spins for ever on a lock word an update wrongly wrote.
func lmWithin(t *testing.T, what string, op func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- op() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: bpfsim has not returned after 10 s: is a lock word held?", what)
		return nil
	}
}

// lmSameContents compares every key and value a walk finds.
func lmSameContents(t *testing.T, km *ebpf.Map, sm *sim.Map) {
	t.Helper()
	contents := func(next func(k, v any) bool) map[uint32]string {
		out := map[uint32]string{}
		var key uint32
		value := make([]byte, 16)
		for next(&key, &value) {
			out[key] = fmt.Sprintf("% x", value)
		}
		return out
	}
	kc, sc := contents(km.Iterate().Next), contents(sm.Iterate().Next)
	if fmt.Sprint(kc) != fmt.Sprint(sc) {
		t.Errorf("contents: kernel %v; bpfsim %v", kc, sc)
	}
}
