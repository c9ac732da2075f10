package localstorage_test

import (
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/localstorage"
	"github.com/bpfsim/bpfsim/maps/mapstest"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func newStorage(t testing.TB, k *mapstest.Kernel, valueSize uint32, rec *maps.Record) (*maps.Map, localstorage.Storage) {
	t.Helper()
	r := &maps.Registry{}
	if err := r.Register(localstorage.TaskStorage); err != nil {
		t.Fatal(err)
	}
	m, err := r.Create(k, maps.Attr{Type: uapi.MapTypeTaskStorage, KeySize: 4, ValueSize: valueSize,
		Flags: uapi.BPF_F_NO_PREALLOC, BTF: true, Record: rec}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Ops.Free)
	return m, m.Ops.(localstorage.Storage)
}

func key(owner uint32) []byte { return binary.LittleEndian.AppendUint32(nil, owner) }

func read(t testing.TB, k *mapstest.Kernel, addr uint64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if err := k.Memory().Read(addr, b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAllocCheckIsTheKernels(t *testing.T) {
	r := &maps.Registry{}
	if err := r.Register(localstorage.TaskStorage); err != nil {
		t.Fatal(err)
	}
	good := maps.Attr{Type: uapi.MapTypeTaskStorage, KeySize: 4, ValueSize: 8, Flags: uapi.BPF_F_NO_PREALLOC, BTF: true}
	for _, c := range []struct {
		name  string
		edit  func(a *maps.Attr)
		errno uapi.Errno
	}{
		{"good", func(*maps.Attr) {}, 0},
		{"BPF_F_CLONE", func(a *maps.Attr) { a.Flags |= uapi.BPF_F_CLONE }, 0},
		{"the largest value", func(a *maps.Attr) { a.ValueSize = localstorage.MaxValueSize }, 0},
		{"a value too large", func(a *maps.Attr) { a.ValueSize = localstorage.MaxValueSize + 1 }, uapi.E2BIG},
		{"no BPF_F_NO_PREALLOC", func(a *maps.Attr) { a.Flags = 0 }, uapi.EINVAL},
		{"another flag", func(a *maps.Attr) { a.Flags |= uapi.BPF_F_RDONLY_PROG }, uapi.EINVAL},
		{"max_entries", func(a *maps.Attr) { a.MaxEntries = 1 }, uapi.EINVAL},
		{"an 8-byte key", func(a *maps.Attr) { a.KeySize = 8 }, uapi.EINVAL},
		{"no value", func(a *maps.Attr) { a.ValueSize = 0 }, uapi.EINVAL},
		{"no BTF", func(a *maps.Attr) { a.BTF = false }, uapi.EINVAL},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := good
			c.edit(&a)
			m, err := r.Create(mapstest.NewKernel(1), a, 1, nil)
			if err == nil {
				m.Ops.Free()
			}
			switch {
			case c.errno == 0 && err != nil:
				t.Fatalf("refused: %v", err)
			case c.errno != 0 && !errors.Is(err, c.errno):
				t.Fatalf("got %v, want %v", err, c.errno)
			}
		})
	}
}

// Each owner has its own value; one made by a get starts as the initial
// value or zeros; updates honour BPF_NOEXIST and BPF_EXIST; the walk of
// keys is ENOTSUPP; an owner's exit drops its value.
func TestOneValuePerOwner(t *testing.T) {
	k := mapstest.NewKernel(1)
	m, s := newStorage(t, k, 8, nil)
	if a := s.Get(1, nil, false); a != 0 {
		t.Fatalf("a get without create made a value at %#x", a)
	}
	a1 := s.Get(1, []byte{1, 2, 3, 4, 5, 6, 7, 8}, true)
	a2 := s.Get(2, nil, true)
	if a1 == 0 || a2 == 0 || a1 == a2 {
		t.Fatalf("values at %#x and %#x", a1, a2)
	}
	if got := read(t, k, a1, 8); got[0] != 1 || got[7] != 8 {
		t.Fatalf("owner 1's value %v", got)
	}
	if got := read(t, k, a2, 8); got[0] != 0 {
		t.Fatalf("owner 2's value %v", got)
	}
	if a := s.Get(1, nil, true); a != a1 {
		t.Fatalf("a second get moved the value from %#x to %#x", a1, a)
	}
	v := []byte{9, 9, 9, 9, 9, 9, 9, 9}
	if err := m.Ops.UpdateElem(0, key(1), v, uapi.BPF_NOEXIST); !errors.Is(err, uapi.EEXIST) {
		t.Fatalf("BPF_NOEXIST on a value: %v", err)
	}
	if err := m.Ops.UpdateElem(0, key(3), v, uapi.BPF_EXIST); !errors.Is(err, uapi.ENOENT) {
		t.Fatalf("BPF_EXIST on no value: %v", err)
	}
	if err := m.Ops.UpdateElem(0, key(3), v, 3); !errors.Is(err, uapi.EINVAL) {
		t.Fatalf("flags 3: %v", err)
	}
	if err := m.Ops.UpdateElem(0, key(1), v, uapi.BPF_F_LOCK); !errors.Is(err, uapi.EINVAL) {
		t.Fatalf("BPF_F_LOCK without a lock: %v", err)
	}
	if err := m.Ops.GetNextKey(nil, make([]byte, 4)); !errors.Is(err, uapi.ENOTSUPP) {
		t.Fatalf("get_next_key: %v", err)
	}
	s.DeleteOwner(2)
	if a, err := m.Ops.LookupElem(0, key(2)); a != 0 || err != nil {
		t.Fatalf("owner 2 after its exit: %#x, %v", a, err)
	}
	if err := m.Ops.DeleteElem(0, key(2)); !errors.Is(err, uapi.ENOENT) {
		t.Fatalf("delete of a value gone with its owner: %v", err)
	}
}

// An update replaces the value with a new one, as the kernel links a new
// element: the old value's memory is reused only after a grace period,
// so a program still holding it reads what it held.
func TestReplacedValuesWaitForAGracePeriod(t *testing.T) {
	k := mapstest.NewKernel(1)
	m, s := newStorage(t, k, 8, nil)
	old := s.Get(1, []byte{7, 0, 0, 0, 0, 0, 0, 0}, true)
	if err := m.Ops.UpdateElem(0, key(1), []byte{8, 0, 0, 0, 0, 0, 0, 0}, uapi.BPF_ANY); err != nil {
		t.Fatal(err)
	}
	cur, _ := m.Ops.LookupElem(0, key(1))
	if cur == old {
		t.Fatal("the update wrote the old value in place")
	}
	// Owners made now must not get the old value's memory.
	for o := uint32(2); o < 600; o++ {
		if a := s.Get(o, nil, true); a == old {
			t.Fatalf("owner %d got the replaced value's memory before a grace period", o)
		}
	}
	if got := read(t, k, old, 1); got[0] != 7 {
		t.Fatalf("the replaced value reads %d", got[0])
	}
	k.GracePeriod()
	reused := false
	for o := uint32(600); o < 700 && !reused; o++ {
		reused = s.Get(o, nil, true) == old
	}
	if !reused {
		t.Fatal("the replaced value's memory was never reused after the grace period")
	}
}

// With a bpf_spin_lock in the value, BPF_F_LOCK updates copy into the
// value in place, around the lock word.
func TestLockedUpdatesWriteInPlace(t *testing.T) {
	k := mapstest.NewKernel(1)
	m, s := newStorage(t, k, 16, &maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: 0})
	a := s.Get(1, nil, true)
	v := []byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	if err := m.Ops.UpdateElem(0, key(1), v, uapi.BPF_F_LOCK|uapi.BPF_EXIST); err != nil {
		t.Fatal(err)
	}
	if cur, _ := m.Ops.LookupElem(0, key(1)); cur != a {
		t.Fatalf("a locked update moved the value from %#x to %#x", a, cur)
	}
	got := read(t, k, a, 16)
	if got[0] != 0 || got[4] != 1 || got[15] != 12 {
		t.Fatalf("value after a locked update: %v", got)
	}
}

// Programs on several CPUs make and drop values of many owners at once.
func TestConcurrentOwners(t *testing.T) {
	k := mapstest.NewKernel(4)
	m, s := newStorage(t, k, 8, nil)
	var wg sync.WaitGroup
	for cpu := 0; cpu < 4; cpu++ {
		wg.Add(1)
		go func(cpu int) {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				o := uint32(cpu*10000 + i%50)
				if s.Get(o, nil, true) == 0 {
					t.Error("a get with create made no value")
					return
				}
				if i%3 == 0 {
					_ = m.Ops.DeleteElem(cpu, key(o))
				}
			}
		}(cpu)
	}
	wg.Wait()
}

func BenchmarkTaskStorageGet(b *testing.B) {
	k := mapstest.NewKernel(1)
	k.Immediate = true
	_, s := newStorage(b, k, 8, nil)
	s.Get(1, nil, true)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if s.Get(1, nil, true) == 0 {
			b.Fatal("no value")
		}
	}
}
