package arraymap_test

import (
	"bytes"
	"errors"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/bpfsim/bpfsim/arraymap"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/mapstest"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// lockedArray is an ARRAY of two 16-byte values { u32 cnt; struct
// bpf_spin_lock l; u64 d; }, the lock at 4.
func lockedArray(t *testing.T, k *mapstest.Kernel) *maps.Map {
	return newArray(t, k, maps.Attr{Type: uapi.MapTypeArray, KeySize: 4, ValueSize: 16, MaxEntries: 2,
		BTF: true, Record: &maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: 4}})
}

// valueAt is element idx's value in simulated memory, and its lock word.
func valueAt(t *testing.T, k *mapstest.Kernel, m *maps.Map, idx uint32) ([]byte, *uint32) {
	t.Helper()
	addr, err := m.Ops.LookupElem(0, key(idx))
	if err != nil || addr == 0 {
		t.Fatalf("lookup %d: %#x, %v", idx, addr, err)
	}
	v, err := k.Memory().Bytes(addr, uint64(m.ValueSize))
	if err != nil {
		t.Fatal(err)
	}
	return v, (*uint32)(unsafe.Pointer(&v[4]))
}

func load(v []byte) []byte {
	out := make([]byte, len(v))
	mem.LoadBytes(out, v)
	return out
}

var lockedValue = []byte{1, 2, 3, 4, 0xff, 0xff, 0xff, 0xff, 9, 10, 11, 12, 13, 14, 15, 16}

func TestArrayUpdateFlagsWithASpinLock(t *testing.T) {
	for _, tc := range []struct {
		name  string
		idx   uint32
		flags uint64
		want  error
	}{
		{"BPF_ANY", 0, uapi.BPF_ANY, nil},
		{"BPF_EXIST", 1, uapi.BPF_EXIST, nil},
		{"BPF_NOEXIST: every element exists", 0, uapi.BPF_NOEXIST, uapi.EEXIST},
		{"BPF_F_LOCK", 0, uapi.BPF_F_LOCK, nil},
		{"BPF_F_LOCK|BPF_EXIST", 1, uapi.BPF_F_LOCK | uapi.BPF_EXIST, nil},
		{"BPF_F_LOCK|BPF_NOEXIST", 0, uapi.BPF_F_LOCK | uapi.BPF_NOEXIST, uapi.EEXIST},
		{"BPF_F_LOCK|BPF_NOEXIST|BPF_EXIST", 0, uapi.BPF_F_LOCK | 3, uapi.EINVAL},
		{"BPF_F_LOCK past the end", 2, uapi.BPF_F_LOCK, uapi.E2BIG},
		{"unknown flag 8", 0, 8, uapi.EINVAL},
		{"unknown flag with BPF_F_LOCK", 0, 8 | uapi.BPF_F_LOCK, uapi.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := mapstest.NewKernel(2)
			m := lockedArray(t, k)
			err := m.Ops.UpdateElem(0, key(tc.idx), lockedValue, tc.flags)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("update: %v, want %v", err, tc.want)
			}
			if tc.want != nil {
				return
			}
			v, w := valueAt(t, k, m, tc.idx)
			if got, want := load(v), []byte{1, 2, 3, 4, 0, 0, 0, 0, 9, 10, 11, 12, 13, 14, 15, 16}; !bytes.Equal(got, want) {
				t.Errorf("value % x, want % x (the lock word never written)", got, want)
			}
			if atomic.LoadUint32(w) != 0 {
				t.Error("the lock is held after the update")
			}
		})
	}
}

func TestArrayLockFlagNeedsASpinLock(t *testing.T) {
	for _, typ := range []uapi.MapType{uapi.MapTypeArray, uapi.MapTypePercpuArray} {
		k := mapstest.NewKernel(2)
		m := newArray(t, k, maps.Attr{Type: typ, KeySize: 4, ValueSize: 16, MaxEntries: 2, BTF: true})
		if err := m.Ops.UpdateElem(0, key(0), lockedValue, uapi.BPF_F_LOCK); !errors.Is(err, uapi.EINVAL) {
			t.Errorf("%s: BPF_F_LOCK without a lock: %v, want EINVAL", typ, err)
		}
	}
}

// An update without BPF_F_LOCK copies around a lock a program holds and
// leaves it held; one with BPF_F_LOCK waits until the program drops it.
func TestArrayUpdatesAndAHeldLock(t *testing.T) {
	k := mapstest.NewKernel(2)
	m := lockedArray(t, k)
	v, w := valueAt(t, k, m, 0)
	maps.LockSpin(w) // a program's bpf_spin_lock
	if err := m.Ops.UpdateElem(1, key(0), lockedValue, uapi.BPF_ANY); err != nil {
		t.Fatal(err)
	}
	if atomic.LoadUint32(w) != 1 {
		t.Fatal("an update without BPF_F_LOCK changed a held lock")
	}
	done := make(chan error)
	second := bytes.Clone(lockedValue)
	second[0] = 42
	go func() { done <- m.Ops.UpdateElem(1, key(0), second, uapi.BPF_F_LOCK) }()
	select {
	case err := <-done:
		t.Fatalf("a BPF_F_LOCK update finished while a program held the lock: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	maps.UnlockSpin(w)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := load(v); got[0] != 42 || atomic.LoadUint32(w) != 0 {
		t.Errorf("after the locked update: % x", got)
	}
}

func TestArrayWithASpinLockCannotBeMapped(t *testing.T) {
	k := mapstest.NewKernel(1)
	m := newArray(t, k, maps.Attr{Type: uapi.MapTypeArray, KeySize: 4, ValueSize: 16, MaxEntries: 2,
		Flags: uapi.BPF_F_MMAPABLE, BTF: true, Record: &maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: 4}})
	if _, err := m.Ops.(maps.Mmaper).MmapBytes(); !errors.Is(err, uapi.ENOTSUPP) {
		t.Errorf("MmapBytes: %v, want ENOTSUPP", err)
	}
}

func TestInnerArrayNeedsTheTemplatesSpinLock(t *testing.T) {
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
		t.Run(tc.name, func(t *testing.T) {
			k := mapstest.NewKernel(1)
			attr := maps.Attr{Type: uapi.MapTypeArray, KeySize: 4, ValueSize: 16, MaxEntries: 2}
			attr.Record = tc.tmpl
			tmpl := newArray(t, k, attr)
			attr.Record = tc.elem
			m := newArray(t, k, attr)
			if got := arraymap.Array.MetaEqual(tmpl, m); got != tc.want {
				t.Errorf("MetaEqual = %v, want %v", got, tc.want)
			}
		})
	}
}
