package hashmap_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/bpfsim/bpfsim/hashmap"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func TestAllocCheckReturnsTheKernelsErrnos(t *testing.T) {
	const (
		hash   = uapi.MapTypeHash
		percpu = uapi.MapTypePercpuHash
	)
	limit := uint32(hashmap.KmallocMaxSize - hashmap.KeyOffset) // key+value must stay below
	for _, tc := range []struct {
		name string
		attr maps.Attr
		want uapi.Errno
	}{
		{"plain hash", maps.Attr{Type: hash, KeySize: 4, ValueSize: 8, MaxEntries: 16}, 0},
		{"plain per-CPU hash", maps.Attr{Type: percpu, KeySize: 4, ValueSize: 8, MaxEntries: 16}, 0},
		{"NO_PREALLOC", maps.Attr{Type: hash, KeySize: 4, ValueSize: 8, MaxEntries: 16, Flags: uapi.BPF_F_NO_PREALLOC}, 0},
		{"ZERO_SEED, loader is privileged", maps.Attr{Type: hash, KeySize: 4, ValueSize: 8, MaxEntries: 16, Flags: uapi.BPF_F_ZERO_SEED}, 0},
		{"access flags", maps.Attr{Type: hash, KeySize: 4, ValueSize: 8, MaxEntries: 16, Flags: uapi.BPF_F_RDONLY_PROG | uapi.BPF_F_RDONLY}, 0},
		{"NUMA node on a hash", maps.Attr{Type: hash, KeySize: 4, ValueSize: 8, MaxEntries: 16, Flags: uapi.BPF_F_NUMA_NODE}, 0},
		{"NUMA node on a per-CPU hash", maps.Attr{Type: percpu, KeySize: 4, ValueSize: 8, MaxEntries: 16, Flags: uapi.BPF_F_NUMA_NODE}, uapi.EINVAL},
		{"NO_COMMON_LRU on a non-LRU hash", maps.Attr{Type: hash, KeySize: 4, ValueSize: 8, MaxEntries: 16, Flags: uapi.BPF_F_NO_COMMON_LRU}, uapi.EINVAL},
		{"INNER_MAP", maps.Attr{Type: hash, KeySize: 4, ValueSize: 8, MaxEntries: 16, Flags: uapi.BPF_F_INNER_MAP}, uapi.EINVAL},
		{"MMAPABLE", maps.Attr{Type: hash, KeySize: 4, ValueSize: 8, MaxEntries: 16, Flags: uapi.BPF_F_MMAPABLE}, uapi.EINVAL},
		{"STACK_BUILD_ID", maps.Attr{Type: hash, KeySize: 4, ValueSize: 8, MaxEntries: 16, Flags: uapi.BPF_F_STACK_BUILD_ID}, uapi.EINVAL},
		{"unknown flag bit", maps.Attr{Type: hash, KeySize: 4, ValueSize: 8, MaxEntries: 16, Flags: 1 << 20}, uapi.EINVAL},
		{"RDONLY_PROG with WRONLY_PROG", maps.Attr{Type: hash, KeySize: 4, ValueSize: 8, MaxEntries: 16, Flags: uapi.BPF_F_RDONLY_PROG | uapi.BPF_F_WRONLY_PROG}, uapi.EINVAL},
		{"max_entries 0", maps.Attr{Type: hash, KeySize: 4, ValueSize: 8}, uapi.EINVAL},
		{"key_size 0", maps.Attr{Type: hash, ValueSize: 8, MaxEntries: 16}, uapi.EINVAL},
		{"value_size 0", maps.Attr{Type: percpu, KeySize: 4, MaxEntries: 16}, uapi.EINVAL},
		{"key+value one below the element limit", maps.Attr{Type: hash, KeySize: 4, ValueSize: limit - 5, MaxEntries: 1}, 0},
		{"key+value at the element limit", maps.Attr{Type: hash, KeySize: 4, ValueSize: limit - 4, MaxEntries: 1}, uapi.E2BIG},
		{"key+value overflowing u32", maps.Attr{Type: hash, KeySize: 1 << 31, ValueSize: 1 << 31, MaxEntries: 1}, uapi.E2BIG},
		{"per-CPU value of PCPU_MIN_UNIT_SIZE", maps.Attr{Type: percpu, KeySize: 4, ValueSize: mem.PercpuMaxAlloc, MaxEntries: 1}, 0},
		{"per-CPU value rounding past PCPU_MIN_UNIT_SIZE", maps.Attr{Type: percpu, KeySize: 4, ValueSize: mem.PercpuMaxAlloc - 7 + 8, MaxEntries: 1}, uapi.E2BIG},
		{"plain value past PCPU_MIN_UNIT_SIZE", maps.Attr{Type: hash, KeySize: 4, ValueSize: mem.PercpuMaxAlloc + 1, MaxEntries: 1}, 0},
		{"max_entries 2^27", maps.Attr{Type: hash, KeySize: 4, ValueSize: 8, MaxEntries: 1 << 27}, 0},
		// 2^28 buckets of 16 bytes overflow the u32 bucket array size.
		{"max_entries just past 2^27", maps.Attr{Type: hash, KeySize: 4, ValueSize: 8, MaxEntries: 1<<27 + 1}, uapi.E2BIG},
		{"max_entries 2^31", maps.Attr{Type: hash, KeySize: 4, ValueSize: 8, MaxEntries: 1 << 31}, uapi.E2BIG},
		{"max_entries past 2^31", maps.Attr{Type: hash, KeySize: 4, ValueSize: 8, MaxEntries: 1<<31 + 1}, uapi.E2BIG},
	} {
		t.Run(tc.name, func(t *testing.T) {
			typ := hashmap.Hash
			if tc.attr.Type == percpu {
				typ = hashmap.PercpuHash
			}
			wantErrno(t, typ.AllocCheck(&tc.attr), tc.want, "AllocCheck")
		})
	}
}

func TestTypesAreRegisteredUnderTheKernelsNumbersAndNames(t *testing.T) {
	if hashmap.Hash.ID != uapi.MapTypeHash || hashmap.Hash.Name != "hash" {
		t.Errorf("Hash is %d %q", hashmap.Hash.ID, hashmap.Hash.Name)
	}
	if hashmap.PercpuHash.ID != uapi.MapTypePercpuHash || hashmap.PercpuHash.Name != "percpu_hash" {
		t.Errorf("PercpuHash is %d %q", hashmap.PercpuHash.ID, hashmap.PercpuHash.Name)
	}
}

func TestOnlyThePercpuHashHasPercpuValues(t *testing.T) {
	k := newKernel(4)
	for _, c := range configs {
		m := newConfigMap(t, k, c, 4, 8, 8, 0)
		if _, ok := m.Ops.(maps.PercpuValues); ok != c.percpu {
			t.Errorf("%s: implements PercpuValues = %v", c.name, ok)
		}
		if _, ok := m.Ops.(maps.LookupAndDeleter); !ok {
			t.Errorf("%s: no LookupAndDeleter", c.name)
		}
		if _, ok := m.Ops.(maps.DirectValuer); ok {
			t.Errorf("%s: hash maps have no direct value access", c.name)
		}
		if m.Addr == 0 {
			t.Errorf("%s: map address not set", c.name)
		}
	}
}

func TestPreallocMapsMapEveryElementUpFront(t *testing.T) {
	for _, tc := range []struct {
		c     mapConfig
		elems uint64
	}{
		{configs[0], 100 + 4}, // one extra element per CPU
		{configs[2], 100},     // per-CPU updates are in place: no extras
	} {
		k := newKernel(4)
		newConfigMap(t, k, tc.c, 6, 20, 100, 0)
		size := tc.elems * hashmap.ElemSize(6, 20, tc.c.percpu)
		found := false
		for _, a := range k.Memory().Areas() {
			if a.Name == "bpf_htab_elems" {
				found = true
				if want := (size + mem.PageSize - 1) &^ (mem.PageSize - 1); a.Size != want {
					t.Errorf("%s: element area of %d bytes, want %d", tc.c.name, a.Size, want)
				}
			}
		}
		if !found {
			t.Errorf("%s: no element area", tc.c.name)
		}
	}
}

func TestNoPreallocMapOfHugeCapacityCostsLittleMemory(t *testing.T) {
	k := newKernel(2)
	m := newMap(t, k, maps.Attr{Type: uapi.MapTypeHash, KeySize: 4, ValueSize: 8, MaxEntries: 1 << 27,
		Flags: uapi.BPF_F_NO_PREALLOC})
	for i := uint32(0); i < 100; i++ {
		wantErrno(t, m.Ops.UpdateElem(0, key32(i*7919), val(8, uint64(i)), uapi.BPF_ANY), 0, "update")
	}
	if b := k.Memory().Backed(); b > 1<<20 {
		t.Errorf("a NO_PREALLOC map of 100 keys holds %d bytes of simulated memory", b)
	}
	if got := len(walk(t, m)); got != 100 {
		t.Errorf("walk found %d keys, want 100", got)
	}
}

func TestElementLayoutIsStructHtabElem(t *testing.T) {
	if got := hashmap.ValueOffset(4); got != 56 {
		t.Errorf("ValueOffset(4) = %d, want 48 + 8", got)
	}
	if got := hashmap.ValueOffset(9); got != 64 {
		t.Errorf("ValueOffset(9) = %d, want 48 + 16", got)
	}
	if got := hashmap.ElemSize(9, 3, false); got != 72 {
		t.Errorf("ElemSize(9, 3) = %d, want 48 + 16 + 8", got)
	}
	if got := hashmap.ElemSize(9, 300, true); got != 72 {
		t.Errorf("per-CPU ElemSize(9, 300) = %d, want 48 + 16 + 8", got)
	}
	k := newKernel(4)
	k.SetRandom(0xfeedf00d)
	m := newMap(t, k, maps.Attr{Type: uapi.MapTypeHash, KeySize: 5, ValueSize: 12, MaxEntries: 8})
	key := []byte("abcde")
	value := []byte("hello, world")
	wantErrno(t, m.Ops.UpdateElem(0, key, value, uapi.BPF_ANY), 0, "update")
	addr, _ := m.Ops.LookupElem(0, key)
	elem := addr - hashmap.ValueOffset(5)
	if got := m.Ops.(hashmap.ElemLookuper).LookupElemAddr(key); got != elem {
		t.Errorf("LookupElemAddr = %#x, want the value address %#x minus %d", got, addr, hashmap.ValueOffset(5))
	}
	raw := read(t, k, elem, int(hashmap.ElemSize(5, 12, false)))
	if got, want := binary.LittleEndian.Uint32(raw[hashmap.HashOffset:]), hashmap.HashKey(key, 0xfeedf00d); got != want {
		t.Errorf("hash field = %#x, want jhash seeded with Kernel.Random (%#x)", got, want)
	}
	if !bytes.Equal(raw[48:53], key) || !bytes.Equal(raw[53:56], make([]byte, 3)) {
		t.Errorf("key slot = % x, want the key and zero padding", raw[48:56])
	}
	if !bytes.Equal(raw[56:68], value) || !bytes.Equal(raw[68:72], make([]byte, 4)) {
		t.Errorf("value slot = % x, want the value and zero padding", raw[56:72])
	}
}

func TestPercpuElementHoldsThePercpuPointer(t *testing.T) {
	k := newKernel(4)
	m := newMap(t, k, maps.Attr{Type: uapi.MapTypePercpuHash, KeySize: 4, ValueSize: 4, MaxEntries: 8,
		Flags: uapi.BPF_F_ZERO_SEED})
	key := key32(42)
	wantErrno(t, m.Ops.UpdateElem(1, key, val(4, 7), uapi.BPF_ANY), 0, "update")
	elem := m.Ops.(hashmap.ElemLookuper).LookupElemAddr(key)
	raw := read(t, k, elem, int(hashmap.ElemSize(4, 4, true)))
	if got, want := binary.LittleEndian.Uint32(raw[hashmap.HashOffset:]), hashmap.HashKey(key, 0); got != want {
		t.Errorf("hash field = %#x, want jhash with seed 0 (%#x)", got, want)
	}
	pptr := binary.LittleEndian.Uint64(raw[hashmap.ValueOffset(4):])
	for cpu := 0; cpu < 4; cpu++ {
		addr, err := m.Ops.LookupElem(cpu, key)
		if err != nil || addr != pptr+k.Percpu().Offset(cpu) {
			t.Errorf("LookupElem on CPU %d = %#x, %v; want per-CPU pointer %#x + offset", cpu, addr, err, pptr)
		}
	}
}

func TestUpdateFlagsFollowNoexistAndExist(t *testing.T) {
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			k := newKernel(2)
			m := newConfigMap(t, k, c, 4, 8, 4, 0)
			a, b := key32(1), key32(2)
			wantErrno(t, update(t, k, m, a, val(8, 1), uapi.BPF_EXIST), uapi.ENOENT, "EXIST on a missing key")
			if lookupValue(t, k, m, a) != nil {
				t.Fatal("failed EXIST update created the key")
			}
			wantErrno(t, update(t, k, m, a, val(8, 2), uapi.BPF_NOEXIST), 0, "NOEXIST on a missing key")
			wantErrno(t, update(t, k, m, a, val(8, 3), uapi.BPF_NOEXIST), uapi.EEXIST, "NOEXIST on an existing key")
			if got := lookupValue(t, k, m, a); !bytes.Equal(got, val(8, 2)) {
				t.Errorf("failed NOEXIST update changed the value to % x", got)
			}
			wantErrno(t, update(t, k, m, a, val(8, 4), uapi.BPF_EXIST), 0, "EXIST on an existing key")
			wantErrno(t, update(t, k, m, a, val(8, 5), uapi.BPF_ANY), 0, "ANY on an existing key")
			wantErrno(t, update(t, k, m, b, val(8, 6), uapi.BPF_ANY), 0, "ANY on a missing key")
			if got := lookupValue(t, k, m, a); !bytes.Equal(got, val(8, 5)) {
				t.Errorf("value of a = % x, want 5", got)
			}
			if got := lookupValue(t, k, m, b); !bytes.Equal(got, val(8, 6)) {
				t.Errorf("value of b = % x, want 6", got)
			}
			for _, flags := range []uint64{3, 8, 1 << 32, uapi.BPF_F_LOCK, uapi.BPF_F_LOCK | uapi.BPF_NOEXIST} {
				wantErrno(t, update(t, k, m, a, val(8, 7), flags), uapi.EINVAL, "flags "+hex(flags))
				wantErrno(t, m.Ops.UpdateElem(0, a, val(8, 7), flags), uapi.EINVAL, "program update, flags "+hex(flags))
			}
			if got := lookupValue(t, k, m, a); !bytes.Equal(got, val(8, 5)) {
				t.Errorf("refused updates changed the value to % x", got)
			}
		})
	}
}

func hex(v uint64) string { return fmt.Sprintf("%#x", v) }

func TestFullMapRefusesNewKeysButReplacesExistingOnes(t *testing.T) {
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			k := newKernel(2)
			const max = 8
			m := newConfigMap(t, k, c, 4, 8, max, 0)
			for i := uint32(0); i < max; i++ {
				wantErrno(t, update(t, k, m, key32(i), val(8, uint64(i)), uapi.BPF_NOEXIST), 0, "filling")
			}
			wantErrno(t, update(t, k, m, key32(max), val(8, 0), uapi.BPF_ANY), uapi.E2BIG, "new key in a full map")
			wantErrno(t, update(t, k, m, key32(max), val(8, 0), uapi.BPF_NOEXIST), uapi.E2BIG, "NOEXIST new key in a full map")
			wantErrno(t, update(t, k, m, key32(max), val(8, 0), uapi.BPF_EXIST), uapi.ENOENT, "EXIST new key in a full map")
			// Replacing is not limited by max_entries, nor by how many
			// replaced elements wait for a grace period: far more than
			// the per-CPU extra elements.
			for round := uint64(1); round <= 20; round++ {
				for i := uint32(0); i < max; i++ {
					wantErrno(t, update(t, k, m, key32(i), val(8, round), uapi.BPF_ANY), 0, "replacing in a full map")
				}
			}
			for i := uint32(0); i < max; i++ {
				if got := lookupValue(t, k, m, key32(i)); !bytes.Equal(got, val(8, 20)) {
					t.Errorf("key %d = % x after replacements", i, got)
				}
			}
			// A delete frees a slot at once, grace period or not.
			wantErrno(t, m.Ops.DeleteElem(0, key32(3)), 0, "delete")
			wantErrno(t, update(t, k, m, key32(max), val(8, 0), uapi.BPF_ANY), 0, "new key after a delete")
			wantErrno(t, update(t, k, m, key32(max+1), val(8, 0), uapi.BPF_ANY), uapi.E2BIG, "new key in the full map again")
			k.GracePeriod()
			if got := len(walk(t, m)); got != max {
				t.Errorf("the map holds %d keys, want %d", got, max)
			}
		})
	}
}

func TestDeleteRemovesTheKeyAndMissingKeysAreENOENT(t *testing.T) {
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			k := newKernel(2)
			m := newConfigMap(t, k, c, 4, 8, 16, 0)
			wantErrno(t, m.Ops.DeleteElem(0, key32(1)), uapi.ENOENT, "delete from an empty map")
			for i := uint32(0); i < 10; i++ {
				wantErrno(t, update(t, k, m, key32(i), val(8, uint64(i)), uapi.BPF_ANY), 0, "update")
			}
			wantErrno(t, m.Ops.DeleteElem(0, key32(4)), 0, "delete")
			wantErrno(t, m.Ops.DeleteElem(1, key32(4)), uapi.ENOENT, "delete again")
			wantErrno(t, m.Ops.DeleteElem(0, key32(99)), uapi.ENOENT, "delete of a key never added")
			if addr, err := m.Ops.LookupElem(0, key32(4)); addr != 0 || err != nil {
				t.Errorf("lookup of a deleted key = %#x, %v", addr, err)
			}
			for i := uint32(0); i < 10; i++ {
				if i == 4 {
					continue
				}
				if got := lookupValue(t, k, m, key32(i)); !bytes.Equal(got, val(8, uint64(i))) {
					t.Errorf("key %d = % x after deleting another key", i, got)
				}
			}
			wantErrno(t, update(t, k, m, key32(4), val(8, 44), uapi.BPF_NOEXIST), 0, "re-adding a deleted key")
			if got := lookupValue(t, k, m, key32(4)); !bytes.Equal(got, val(8, 44)) {
				t.Errorf("re-added key = % x", got)
			}
		})
	}
}

func TestLookupAndDeleteCopiesTheValueThenDeletes(t *testing.T) {
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			k := newKernel(3)
			m := newConfigMap(t, k, c, 4, 12, 16, 0)
			ld := m.Ops.(maps.LookupAndDeleter)
			size := 12
			if c.percpu {
				size = 16 * 3
			}
			out := make([]byte, size)
			wantErrno(t, ld.LookupAndDeleteElem(0, key32(1), out, 0), uapi.ENOENT, "missing key")
			value := []byte("twelve bytes")
			wantErrno(t, update(t, k, m, key32(1), value, uapi.BPF_ANY), 0, "update")
			wantErrno(t, ld.LookupAndDeleteElem(0, key32(1), out, uapi.BPF_F_LOCK), uapi.EINVAL, "BPF_F_LOCK")
			wantErrno(t, ld.LookupAndDeleteElem(0, key32(1), out, uapi.BPF_NOEXIST), uapi.EINVAL, "flags 1")
			wantErrno(t, ld.LookupAndDeleteElem(0, key32(1), out, 0), 0, "lookup and delete")
			want := value
			if c.percpu {
				want = bytes.Repeat(padded(value), 3)
			}
			if !bytes.Equal(out, want) {
				t.Errorf("copied % x, want % x", out, want)
			}
			if lookupValue(t, k, m, key32(1)) != nil {
				t.Error("the key is still there")
			}
			wantErrno(t, ld.LookupAndDeleteElem(0, key32(1), out, 0), uapi.ENOENT, "second lookup and delete")
		})
	}
}

func TestFreeReleasesAllMemory(t *testing.T) {
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			k := newKernel(2)
			before := k.Memory().Backed()
			m, err := registry.Create(k, maps.Attr{Type: c.typ, KeySize: 4, ValueSize: 8, MaxEntries: 64, Flags: c.flags}, 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := uint32(0); i < 64; i++ {
				wantErrno(t, update(t, k, m, key32(i), val(8, 1), uapi.BPF_ANY), 0, "update")
			}
			for i := uint32(0); i < 32; i++ {
				wantErrno(t, m.Ops.DeleteElem(0, key32(i)), 0, "delete")
			}
			m.Put() // the last reference: Free after a grace period
			if k.GracePeriod() == 0 {
				t.Fatal("Put queued no callback")
			}
			k.GracePeriod() // the element callbacks queued before Free find it freed
			for _, a := range k.Memory().Areas() {
				if a.Name == "bpf_htab" || a.Name == "bpf_htab_elems" {
					t.Errorf("area %s at %#x survives Free", a.Name, a.Start)
				}
			}
			// Per-CPU chunks stay with the allocator; everything else goes.
			if after := k.Memory().Backed(); after > before && !c.percpu {
				t.Errorf("%d bytes still mapped after Free, %d before", after, before)
			}
		})
	}
}

func TestOperationsAfterFailedAllocLeaveNoMemory(t *testing.T) {
	k := newKernel(2)
	k.Memory().SetLimit(1 << 20)
	_, err := registry.Create(k, maps.Attr{Type: uapi.MapTypeHash, KeySize: 4, ValueSize: 64, MaxEntries: 1 << 16}, 1, nil)
	if !errors.Is(err, uapi.ENOMEM) {
		t.Fatalf("a preallocated map larger than memory: %v, want ENOMEM", err)
	}
	if b := k.Memory().Backed(); b != 0 {
		t.Errorf("%d bytes mapped after the failed create", b)
	}
}
