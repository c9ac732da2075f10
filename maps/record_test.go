package maps_test

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/bpfsim/bpfsim/maps"
)

// value returns n bytes of 8-byte aligned memory, as a map value in
// simulated memory is, filled with fill.
func value(n int, fill byte) []byte {
	words := make([]uint64, (n+7)/8)
	b := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), n)
	for i := range b {
		b[i] = fill
	}
	return b
}

func lockWord(v []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&v[off])) }

// withLock is src with the 4 bytes at off replaced by lock's.
func withLock(src []byte, off uint32, lock []byte) []byte {
	w := bytes.Clone(src)
	copy(w[off:off+4], lock)
	return w
}

func TestStoreValueCopiesAroundTheSpinLock(t *testing.T) {
	src := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	for _, tc := range []struct {
		name string
		rec  *maps.Record
		want []byte
	}{
		{"no record: every byte", nil, src},
		{"lock at 0", &maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: 0}, withLock(src, 0, []byte{0xaa, 0xaa, 0xaa, 0xaa})},
		{"lock at 4", &maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: 4}, withLock(src, 4, []byte{0xaa, 0xaa, 0xaa, 0xaa})},
		{"lock at 8", &maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: 8}, withLock(src, 8, []byte{0xaa, 0xaa, 0xaa, 0xaa})},
		{"lock last", &maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: 12}, withLock(src, 12, []byte{0xaa, 0xaa, 0xaa, 0xaa})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := value(len(src), 0xaa)
			maps.StoreValue(tc.rec, dst, src)
			if !bytes.Equal(dst, tc.want) {
				t.Errorf("after StoreValue: % x, want % x", dst, tc.want)
			}
		})
	}
}

func TestLoadValueZeroesTheSpinLock(t *testing.T) {
	src := value(12, 0)
	copy(src, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	for _, tc := range []struct {
		name string
		rec  *maps.Record
		want []byte
	}{
		{"no record: every byte", nil, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
		{"lock at 0", &maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: 0}, []byte{0, 0, 0, 0, 5, 6, 7, 8, 9, 10, 11, 12}},
		{"lock at 4", &maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: 4}, []byte{1, 2, 3, 4, 0, 0, 0, 0, 9, 10, 11, 12}},
		{"lock last", &maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: 8}, []byte{1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := bytes.Repeat([]byte{0xee}, len(src))
			maps.LoadValue(tc.rec, dst, src)
			if !bytes.Equal(dst, tc.want) {
				t.Errorf("after LoadValue: % x, want % x", dst, tc.want)
			}
		})
	}
}

// The locked copies wait for the value's lock, leave it free, and copy
// as the unlocked ones do.
func TestLockedCopiesWaitForTheValuesLock(t *testing.T) {
	rec := &maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: 4}
	src := []byte{1, 2, 3, 4, 0xff, 0xff, 0xff, 0xff, 9, 10, 11, 12, 13, 14, 15, 16}
	for _, tc := range []struct {
		name string
		// copy runs the copy on value v (and, for a lookup, out); want
		// picks what it wrote.
		copy func(v, out []byte)
		want func(v, out []byte) []byte
	}{
		{"StoreValueLocked",
			func(v, _ []byte) { maps.StoreValueLocked(rec, v, src) },
			func(v, _ []byte) []byte { return v }},
		{"LoadValueLocked",
			func(v, out []byte) { maps.LoadValueLocked(rec, out, v) },
			func(_, out []byte) []byte { return out }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := value(len(src), 0)
			if tc.name == "LoadValueLocked" {
				maps.StoreValue(rec, v, src)
			}
			out := make([]byte, len(src))
			w := lockWord(v, rec.SpinLockOff)
			maps.LockSpin(w)
			done := make(chan struct{})
			go func() {
				tc.copy(v, out)
				close(done)
			}()
			select {
			case <-done:
				t.Fatal("the copy finished while the value's lock was held")
			case <-time.After(20 * time.Millisecond):
			}
			maps.UnlockSpin(w)
			<-done
			if got := atomic.LoadUint32(w); got != 0 {
				t.Errorf("lock word %#x after the copy, want 0 (free)", got)
			}
			want := withLock(src, rec.SpinLockOff, []byte{0, 0, 0, 0})
			if got := tc.want(v, out); !bytes.Equal(got, want) {
				t.Errorf("copied % x, want % x", got, want)
			}
		})
	}
}

func TestInitSpecialFieldsFreesThePoisonedLock(t *testing.T) {
	v := value(8, 0x6b)
	maps.InitSpecialFields(&maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: 4}, v)
	if want := []byte{0x6b, 0x6b, 0x6b, 0x6b, 0, 0, 0, 0}; !bytes.Equal(v, want) {
		t.Errorf("% x, want % x", v, want)
	}
	maps.InitSpecialFields(nil, v) // nothing to do
}

func TestRecordEqualComparesTheLocksOffset(t *testing.T) {
	for _, tc := range []struct {
		a, b *maps.Record
		want bool
	}{
		{nil, nil, true},
		{&maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: 4}, nil, false},
		{nil, &maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: 0}, false},
		{&maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: 4}, &maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: 4}, true},
		{&maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: 4}, &maps.Record{Fields: maps.FieldSpinLock, SpinLockOff: 0}, false},
	} {
		if got := maps.RecordEqual(tc.a, tc.b); got != tc.want {
			t.Errorf("RecordEqual(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// A value with a lock and a timer: copies go around both, in either order
// of offsets, and reads hand both out zeroed.
func TestValuesCopyAroundALockAndATimer(t *testing.T) {
	src := make([]byte, 40)
	for i := range src {
		src[i] = byte(i + 1)
	}
	for _, tc := range []struct {
		name string
		rec  *maps.Record
	}{
		{"lock before timer", &maps.Record{Fields: maps.FieldSpinLock | maps.FieldTimer, SpinLockOff: 4, TimerOff: 16}},
		{"timer before lock", &maps.Record{Fields: maps.FieldSpinLock | maps.FieldTimer, SpinLockOff: 32, TimerOff: 8}},
		{"timer alone", &maps.Record{Fields: maps.FieldTimer, TimerOff: 24}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inField := func(i uint32) bool {
				r := tc.rec
				return r.Has(maps.FieldSpinLock) && i >= r.SpinLockOff && i < r.SpinLockOff+maps.SpinLockSize ||
					r.Has(maps.FieldTimer) && i >= r.TimerOff && i < r.TimerOff+maps.TimerSize
			}
			dst := value(40, 0xaa)
			maps.StoreValue(tc.rec, dst, src)
			for i := range dst {
				want := src[i]
				if inField(uint32(i)) {
					want = 0xaa
				}
				if dst[i] != want {
					t.Fatalf("stored byte %d is %#x, want %#x", i, dst[i], want)
				}
			}
			out := make([]byte, 40)
			maps.LoadValue(tc.rec, out, dst)
			for i := range out {
				want := src[i]
				if inField(uint32(i)) {
					want = 0
				}
				if out[i] != want {
					t.Fatalf("loaded byte %d is %#x, want %#x", i, out[i], want)
				}
			}
		})
	}
}
