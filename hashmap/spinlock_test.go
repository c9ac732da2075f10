package hashmap_test

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/bpfsim/bpfsim/hashmap"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// lockedHash is a HASH of 16-byte values { u32 cnt; struct bpf_spin_lock
// l; u64 d; }, the lock at 4.
func lockedHash(tb testing.TB, k *fakeKernel, flags uint32) *maps.Map {
	return newMap(tb, k, maps.Attr{Type: uapi.MapTypeHash, KeySize: 4, ValueSize: 16, MaxEntries: 2, Flags: flags,
		BTF: true, Record: &maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: 4}})
}

// lockValue is a value whose lock bytes are all ones, which no copy may
// ever store.
func lockValue(cnt byte) []byte {
	return []byte{cnt, 2, 3, 4, 0xff, 0xff, 0xff, 0xff, 9, 10, 11, 12, 13, 14, 15, 16}
}

// stored is lockValue(cnt) as the map keeps it: the lock free.
func stored(cnt byte) []byte {
	return []byte{cnt, 2, 3, 4, 0, 0, 0, 0, 9, 10, 11, 12, 13, 14, 15, 16}
}

// lockOf is the lock word of key's value.
func lockOf(tb testing.TB, k *fakeKernel, m *maps.Map, key []byte) *uint32 {
	tb.Helper()
	addr, err := m.Ops.LookupElem(0, key)
	if err != nil || addr == 0 {
		tb.Fatalf("lookup: %#x, %v", addr, err)
	}
	v, err := k.Memory().Bytes(addr, uint64(m.ValueSize))
	if err != nil {
		tb.Fatal(err)
	}
	return (*uint32)(unsafe.Pointer(&v[4]))
}

// put stores lockValue(1) under key 1 and checks that it holds it with
// its lock free: a lock left held would make a BPF_F_LOCK operation spin.
func put(tb testing.TB, k *fakeKernel, m *maps.Map, key uint32) {
	tb.Helper()
	if err := m.Ops.UpdateElem(0, key32(key), lockValue(1), uapi.BPF_ANY); err != nil {
		tb.Fatal(err)
	}
	if got := lookupValue(tb, k, m, key32(key)); !bytes.Equal(got, stored(1)) {
		tb.Fatalf("a new element holds % x, want % x with its lock free", got, stored(1))
	}
}

// Every flag combination on a key that is there (1) and one that is not
// (0), with and without BPF_F_LOCK: the errnos of htab_map_update_elem and
// check_flags, the value stored with its lock free.
func TestHashUpdateFlagsWithASpinLock(t *testing.T) {
	for _, tc := range []struct {
		name  string
		key   uint32
		flags uint64
		want  uapi.Errno
	}{
		{"BPF_ANY, new key", 0, uapi.BPF_ANY, 0},
		{"BPF_ANY, existing key", 1, uapi.BPF_ANY, 0},
		{"BPF_NOEXIST, new key", 0, uapi.BPF_NOEXIST, 0},
		{"BPF_NOEXIST, existing key", 1, uapi.BPF_NOEXIST, uapi.EEXIST},
		{"BPF_EXIST, new key", 0, uapi.BPF_EXIST, uapi.ENOENT},
		{"BPF_EXIST, existing key", 1, uapi.BPF_EXIST, 0},
		{"BPF_F_LOCK, new key", 0, uapi.BPF_F_LOCK, 0},
		{"BPF_F_LOCK, existing key", 1, uapi.BPF_F_LOCK, 0},
		{"BPF_F_LOCK|BPF_NOEXIST, new key", 0, uapi.BPF_F_LOCK | uapi.BPF_NOEXIST, 0},
		{"BPF_F_LOCK|BPF_NOEXIST, existing key", 1, uapi.BPF_F_LOCK | uapi.BPF_NOEXIST, uapi.EEXIST},
		{"BPF_F_LOCK|BPF_EXIST, new key", 0, uapi.BPF_F_LOCK | uapi.BPF_EXIST, uapi.ENOENT},
		{"BPF_F_LOCK|BPF_EXIST, existing key", 1, uapi.BPF_F_LOCK | uapi.BPF_EXIST, 0},
		{"BPF_F_LOCK|BPF_NOEXIST|BPF_EXIST", 1, uapi.BPF_F_LOCK | 3, uapi.EINVAL},
		{"unknown flag 8 with BPF_F_LOCK", 1, uapi.BPF_F_LOCK | 8, uapi.EINVAL},
	} {
		for _, flags := range []uint32{0, uapi.BPF_F_NO_PREALLOC} {
			k := newKernel(2)
			m := lockedHash(t, k, flags)
			put(t, k, m, 1)
			err := m.Ops.UpdateElem(0, key32(tc.key), lockValue(7), tc.flags)
			wantErrno(t, err, tc.want, tc.name)
			want := stored(7)
			switch {
			case tc.want != 0 && tc.key == 0:
				want = nil
			case tc.want != 0:
				want = stored(1)
			}
			if got := lookupValue(t, k, m, key32(tc.key)); !bytes.Equal(got, want) {
				t.Errorf("%s: value % x, want % x", tc.name, got, want)
			}
		}
	}
}

// BPF_F_LOCK writes an existing key's value where it is, as the kernel's
// in-place copy does; without it a replacement is a new element.
func TestHashLockedUpdateIsInPlace(t *testing.T) {
	k := newKernel(2)
	m := lockedHash(t, k, 0)
	put(t, k, m, 1)
	before, _ := m.Ops.LookupElem(0, key32(1))
	if err := m.Ops.UpdateElem(0, key32(1), lockValue(2), uapi.BPF_F_LOCK); err != nil {
		t.Fatal(err)
	}
	if after, _ := m.Ops.LookupElem(0, key32(1)); after != before {
		t.Errorf("BPF_F_LOCK moved the value from %#x to %#x", before, after)
	}
	if err := m.Ops.UpdateElem(0, key32(1), lockValue(3), uapi.BPF_ANY); err != nil {
		t.Fatal(err)
	}
	if after, _ := m.Ops.LookupElem(0, key32(1)); after == before {
		t.Error("an update without BPF_F_LOCK wrote the old element in place")
	}
}

// An element reused after a grace period was poisoned; its lock starts
// free all the same.
func TestHashReusedElementStartsUnlocked(t *testing.T) {
	k := newKernel(1)
	m := lockedHash(t, k, 0)
	for i := range 6 {
		if err := m.Ops.UpdateElem(0, key32(1), lockValue(byte(i)), uapi.BPF_ANY); err != nil {
			t.Fatal(err)
		}
		if got := lookupValue(t, k, m, key32(1)); !bytes.Equal(got, stored(byte(i))) {
			t.Fatalf("round %d: % x", i, got)
		}
		k.GracePeriod()
	}
}

// A held lock (a program's) stays held across an update without
// BPF_F_LOCK, which replaces the element; a BPF_F_LOCK update and a
// BPF_F_LOCK lookup-and-delete wait for it.
func TestHashLockedOperationsWaitForAHeldLock(t *testing.T) {
	for _, tc := range []struct {
		name string
		// op runs the operation; it returns the value it read, if any.
		op func(m *maps.Map) ([]byte, error)
		// read and left are the value op reads and the one it leaves.
		read, left []byte
	}{
		{"BPF_F_LOCK update", func(m *maps.Map) ([]byte, error) {
			return nil, m.Ops.UpdateElem(1, key32(1), lockValue(9), uapi.BPF_F_LOCK)
		}, nil, stored(9)},
		{"BPF_F_LOCK lookup-and-delete", func(m *maps.Map) ([]byte, error) {
			out := bytes.Repeat([]byte{0xee}, 16)
			return out, m.Ops.(maps.LookupAndDeleter).LookupAndDeleteElem(1, key32(1), out, uapi.BPF_F_LOCK)
		}, stored(1), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newKernel(2)
			m := lockedHash(t, k, 0)
			put(t, k, m, 1)
			w := lockOf(t, k, m, key32(1))
			maps.LockSpin(w)
			done := make(chan []byte)
			var err error
			go func() {
				var read []byte
				read, err = tc.op(m)
				done <- read
			}()
			select {
			case <-done:
				t.Fatalf("finished while the lock was held: %v", err)
			case <-time.After(20 * time.Millisecond):
			}
			maps.UnlockSpin(w)
			read := <-done
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(read, tc.read) {
				t.Errorf("read % x, want % x", read, tc.read)
			}
			if got := lookupValue(t, k, m, key32(1)); !bytes.Equal(got, tc.left) {
				t.Errorf("left % x, want % x", got, tc.left)
			}
		})
	}
	k := newKernel(2)
	m := lockedHash(t, k, 0)
	put(t, k, m, 1)
	w := lockOf(t, k, m, key32(1))
	maps.LockSpin(w)
	if err := m.Ops.UpdateElem(0, key32(1), lockValue(2), uapi.BPF_ANY); err != nil {
		t.Fatal(err)
	}
	if atomic.LoadUint32(w) != 1 {
		t.Error("an update without BPF_F_LOCK dropped the old element's held lock")
	}
	if got := lookupValue(t, k, m, key32(1)); !bytes.Equal(got, stored(2)) {
		t.Errorf("the replacement holds % x, want % x with its lock free", got, stored(2))
	}
	maps.UnlockSpin(w)
}

// A lookup-and-delete hands out the lock word zeroed; one without
// BPF_F_LOCK does not wait for a lock a program holds.
func TestHashLookupAndDeleteZeroesTheLock(t *testing.T) {
	for _, flags := range []uint64{0, uapi.BPF_F_LOCK} {
		k := newKernel(1)
		m := lockedHash(t, k, 0)
		put(t, k, m, 1)
		if flags == 0 {
			maps.LockSpin(lockOf(t, k, m, key32(1)))
		}
		out := bytes.Repeat([]byte{0xee}, 16)
		if err := m.Ops.(maps.LookupAndDeleter).LookupAndDeleteElem(0, key32(1), out, flags); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, stored(1)) {
			t.Errorf("flags %#x: read % x, want % x", flags, out, stored(1))
		}
		wantErrno(t, m.Ops.(maps.LookupAndDeleter).LookupAndDeleteElem(0, key32(1), out, flags), uapi.ENOENT, "again")
	}
}

func TestHashLockFlagNeedsASpinLock(t *testing.T) {
	for _, c := range configs {
		k := newKernel(2)
		m := newConfigMap(t, k, c, 4, 16, 2, 0)
		wantErrno(t, m.Ops.UpdateElem(0, key32(1), lockValue(1), uapi.BPF_F_LOCK), uapi.EINVAL, c.name+": update")
		out := make([]byte, 16*2)
		wantErrno(t, m.Ops.(maps.LookupAndDeleter).LookupAndDeleteElem(0, key32(1), out, uapi.BPF_F_LOCK), uapi.EINVAL, c.name+": lookup-and-delete")
	}
}

func TestInnerHashNeedsTheTemplatesSpinLock(t *testing.T) {
	lock4, lock0 := &maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: 4}, &maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: 0}
	for _, tc := range []struct {
		name       string
		tmpl, elem *maps.Record
		want       bool
	}{
		{"both without", nil, nil, true},
		{"both with the lock at 4", lock4, lock4, true},
		{"template with, inner without", lock4, nil, false},
		{"template without, inner with", nil, lock4, false},
		{"locks at different offsets", lock4, lock0, false},
	} {
		k := newKernel(1)
		attr := maps.Attr{Type: uapi.MapTypeHash, KeySize: 4, ValueSize: 16, MaxEntries: 2}
		attr.Record = tc.tmpl
		tmpl := newMap(t, k, attr)
		attr.Record = tc.elem
		m := newMap(t, k, attr)
		if got := hashmap.Hash.MetaEqual(tmpl, m); got != tc.want {
			t.Errorf("%s: MetaEqual = %v, want %v", tc.name, got, tc.want)
		}
	}
}
