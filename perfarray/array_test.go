package perfarray

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/mapstest"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func newArray(t testing.TB, k *mapstest.Kernel, maxEntries, flags uint32) *maps.Map {
	t.Helper()
	var r maps.Registry
	if err := r.Register(PerfEventArray); err != nil {
		t.Fatal(err)
	}
	m, err := r.Create(k, maps.Attr{Type: uapi.MapTypePerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: maxEntries, Flags: flags}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func key(i uint32) []byte { return binary.LittleEndian.AppendUint32(nil, i) }

func outputEvent(t testing.TB, k maps.Kernel, cpu, pages int) *Event {
	t.Helper()
	ev, err := NewEvent(k, EventAttr{Type: uapi.PERF_TYPE_SOFTWARE, Config: uapi.PERF_COUNT_SW_BPF_OUTPUT}, cpu, pages, nextTestEventID())
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func counterEvent(t testing.TB, k maps.Kernel, attr EventAttr, cpu int) *Event {
	t.Helper()
	ev, err := NewEvent(k, attr, cpu, 0, nextTestEventID())
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestAllocCheckRefusesWhatTheKernelRefuses(t *testing.T) {
	ok := maps.Attr{Type: uapi.MapTypePerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: 2}
	for _, tc := range []struct {
		name string
		edit func(*maps.Attr)
		want error
	}{
		{"plain", func(*maps.Attr) {}, nil},
		{"preserve elems", func(a *maps.Attr) { a.Flags = uapi.BPF_F_PRESERVE_ELEMS }, nil},
		{"numa node", func(a *maps.Attr) { a.Flags = uapi.BPF_F_NUMA_NODE }, nil},
		{"read-only for user space", func(a *maps.Attr) { a.Flags = uapi.BPF_F_RDONLY }, nil},
		{"no entries", func(a *maps.Attr) { a.MaxEntries = 0 }, uapi.EINVAL},
		{"8-byte key", func(a *maps.Attr) { a.KeySize = 8 }, uapi.EINVAL},
		{"8-byte value", func(a *maps.Attr) { a.ValueSize = 8 }, uapi.EINVAL},
		{"read-only for programs", func(a *maps.Attr) { a.Flags = uapi.BPF_F_RDONLY_PROG }, uapi.EINVAL},
		{"write-only for programs", func(a *maps.Attr) { a.Flags = uapi.BPF_F_WRONLY_PROG }, uapi.EINVAL},
		{"mmapable", func(a *maps.Attr) { a.Flags = uapi.BPF_F_MMAPABLE }, uapi.EINVAL},
		{"inner map", func(a *maps.Attr) { a.Flags = uapi.BPF_F_INNER_MAP }, uapi.EINVAL},
		{"no prealloc", func(a *maps.Attr) { a.Flags = uapi.BPF_F_NO_PREALLOC }, uapi.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := ok
			tc.edit(&a)
			err := allocCheck(&a)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestReleaseFileRemovesOnlyThatFilesEventsAfterAGracePeriod(t *testing.T) {
	k := mapstest.NewKernel(2)
	m := newArray(t, k, 2, 0)
	defer m.Ops.Free()
	a := m.Ops.(*array)
	e0, e1 := outputEvent(t, k, 0, 1), outputEvent(t, k, 1, 1)
	const f1, f2 = maps.File(1), maps.File(2)
	if err := a.UpdateObject(key(0), e0, f1, 0); err != nil {
		t.Fatal(err)
	}
	if err := a.UpdateObject(key(1), e1, f2, 0); err != nil {
		t.Fatal(err)
	}
	a.ReleaseFile(f1)
	if SlotEvent(m, 0) != nil || SlotEvent(m, 1) != e1 {
		t.Fatalf("after releasing file 1: slots %p %p, want empty and %p", SlotEvent(m, 0), SlotEvent(m, 1), e1)
	}
	if e0.Refs() != 2 {
		t.Fatalf("event 0 lost the slot's reference before a grace period: %d refs", e0.Refs())
	}
	k.GracePeriod()
	if e0.Refs() != 1 || e1.Refs() != 2 {
		t.Fatalf("after the grace period: refs %d and %d, want 1 and 2", e0.Refs(), e1.Refs())
	}
	a.ReleaseFile(f2)
	k.GracePeriod()
	if SlotEvent(m, 1) != nil || e1.Refs() != 1 {
		t.Fatalf("after releasing file 2: slot %p, %d refs", SlotEvent(m, 1), e1.Refs())
	}
}

func TestPreserveElemsKeepsEventsPastEveryFileUntilFree(t *testing.T) {
	k := mapstest.NewKernel(2)
	m := newArray(t, k, 2, uapi.BPF_F_PRESERVE_ELEMS)
	a := m.Ops.(*array)
	e0 := outputEvent(t, k, 0, 1)
	if err := a.UpdateObject(key(0), e0, maps.File(7), 0); err != nil {
		t.Fatal(err)
	}
	a.ReleaseFile(maps.File(7))
	a.ReleaseFile(maps.File(8))
	k.GracePeriod()
	if SlotEvent(m, 0) != e0 || e0.Refs() != 2 {
		t.Fatalf("preserved event gone: slot %p, %d refs", SlotEvent(m, 0), e0.Refs())
	}
	// A delete still removes it.
	if err := a.DeleteElem(0, key(0)); err != nil {
		t.Fatal(err)
	}
	k.GracePeriod()
	if e0.Refs() != 1 {
		t.Fatalf("deleted event has %d refs, want 1", e0.Refs())
	}
	if err := a.UpdateObject(key(1), e0, maps.File(7), 0); err != nil {
		t.Fatal(err)
	}
	m.Ops.Free()
	if e0.Refs() != 1 {
		t.Fatalf("after map free the event has %d refs, want 1", e0.Refs())
	}
	e0.Put()
	if !e0.ring.freed.Load() {
		t.Fatal("the last put did not free the ring")
	}
}

func TestReplacingAnEventPutsTheOldOneAfterAGracePeriod(t *testing.T) {
	k := mapstest.NewKernel(1)
	m := newArray(t, k, 1, 0)
	defer m.Ops.Free()
	a := m.Ops.(*array)
	old, new := outputEvent(t, k, 0, 1), outputEvent(t, k, 0, 1)
	for _, ev := range []*Event{old, new} {
		if err := a.UpdateObject(key(0), ev, 1, 0); err != nil {
			t.Fatal(err)
		}
	}
	if old.Refs() != 2 {
		t.Fatalf("replaced event: %d refs before the grace period, want 2", old.Refs())
	}
	k.GracePeriod()
	if old.Refs() != 1 || new.Refs() != 2 {
		t.Fatalf("refs old %d new %d, want 1 and 2", old.Refs(), new.Refs())
	}
}

// notEvent is an object that is not a perf event, as a map fd would be.
type notEvent struct{}

func (notEvent) Get()             {}
func (notEvent) Put()             {}
func (notEvent) ObjectID() uint32 { return 99 }

func TestUserSpaceOperationErrnos(t *testing.T) {
	k := mapstest.NewKernel(2)
	m := newArray(t, k, 2, 0)
	defer m.Ops.Free()
	a := m.Ops.(*array)
	ev := outputEvent(t, k, 0, 1)
	inherit := counterEvent(t, k, EventAttr{Type: uapi.PERF_TYPE_HARDWARE, Inherit: true}, 0)
	next := make([]byte, 4)
	for _, tc := range []struct {
		name string
		op   func() error
		want error
	}{
		{"update with BPF_NOEXIST", func() error { return a.UpdateObject(key(0), ev, 1, uapi.BPF_NOEXIST) }, uapi.EINVAL},
		{"update with BPF_EXIST", func() error { return a.UpdateObject(key(0), ev, 1, uapi.BPF_EXIST) }, uapi.EINVAL},
		{"update past the end", func() error { return a.UpdateObject(key(2), ev, 1, 0) }, uapi.E2BIG},
		{"update past the end with bad flags", func() error { return a.UpdateObject(key(2), ev, 1, 7) }, uapi.EINVAL},
		{"update with something else", func() error { return a.UpdateObject(key(0), notEvent{}, 1, 0) }, uapi.EBADF},
		{"update with an inherited event", func() error { return a.UpdateObject(key(0), inherit, 1, 0) }, uapi.EOPNOTSUPP},
		{"update with raw bytes", func() error { return a.UpdateElem(0, key(0), key(3), 0) }, uapi.EINVAL},
		{"delete an empty slot", func() error { return a.DeleteElem(0, key(1)) }, uapi.ENOENT},
		{"delete past the end", func() error { return a.DeleteElem(0, key(2)) }, uapi.E2BIG},
		{"lookup", func() error { _, err := a.LookupElem(0, key(0)); return err }, uapi.ENOTSUPP},
		{"lookup id", func() error { _, err := a.LookupID(key(0)); return err }, uapi.ENOTSUPP},
		{"next key of the last", func() error { return a.GetNextKey(key(1), next) }, uapi.ENOENT},
		{"next key of nothing", func() error { return a.GetNextKey(nil, next) }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op()
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if SlotEvent(m, 0) != nil || inherit.Refs() != 1 || ev.Refs() != 1 {
		t.Fatalf("a failed update left state behind: slot %p, refs %d %d", SlotEvent(m, 0), ev.Refs(), inherit.Refs())
	}
}

// sample is the ring bytes of a PERF_RECORD_SAMPLE of data written to
// fresh (zero) ring pages.
func sample(data []byte) []byte {
	raw := (len(data)+4+7)&^7 - 4
	b := binary.LittleEndian.AppendUint32(nil, uapi.PERF_RECORD_SAMPLE)
	b = binary.LittleEndian.AppendUint16(b, uapi.PERF_RECORD_MISC_KERNEL)
	b = binary.LittleEndian.AppendUint16(b, uint16(12+raw))
	b = binary.LittleEndian.AppendUint32(b, uint32(raw))
	b = append(b, data...)
	return append(b, make([]byte, raw-len(data))...)
}

func TestOutputWritesTheKernelsSampleLayout(t *testing.T) {
	for _, n := range []int{0, 1, 3, 4, 5, 8, 11, 12, 13, 100} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			k := mapstest.NewKernel(1)
			m := newArray(t, k, 1, 0)
			defer m.Ops.Free()
			ev := outputEvent(t, k, 0, 1)
			defer ev.Put()
			if err := m.Ops.(*array).UpdateObject(key(0), ev, 1, 0); err != nil {
				t.Fatal(err)
			}
			data := make([]byte, n)
			for i := range data {
				data[i] = byte(0xa0 + i)
			}
			// Split in two fragments, as packet programs write them.
			if err := Output(m, 0, uapi.BPF_F_CURRENT_CPU, data[:n/2], data[n/2:]); err != nil {
				t.Fatal(err)
			}
			want := sample(data)
			if got := ev.ring.data[:len(want)]; !bytes.Equal(got, want) {
				t.Fatalf("ring holds\n% x\nwant\n% x", got, want)
			}
			if head := binary.LittleEndian.Uint64(ev.ring.user[offDataHead:]); head != uint64(len(want)) {
				t.Fatalf("data_head %d, want %d", head, len(want))
			}
			var rec Record
			if ok, err := ev.ring.Read(&rec); !ok || err != nil {
				t.Fatalf("read: %v %v", ok, err)
			}
			if !bytes.Equal(rec.RawSample, want[12:]) || rec.LostSamples != 0 || rec.Remaining != 0 {
				t.Fatalf("record %+v", rec)
			}
		})
	}
}

func TestFullRingCountsLostSamplesAndReportsThemFirst(t *testing.T) {
	k := mapstest.NewKernel(1)
	m := newArray(t, k, 1, 0)
	defer m.Ops.Free()
	ev := outputEvent(t, k, 0, 1) // 4096 bytes of data
	defer ev.Put()
	if err := m.Ops.(*array).UpdateObject(key(0), ev, 1, 0); err != nil {
		t.Fatal(err)
	}
	payload := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 52) } // 64-byte records
	// One byte always stays free: 4095/64 = 63 records fit.
	for i := 0; i < 63; i++ {
		if err := Output(m, 0, 0, payload(i)); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	for i := 0; i < 3; i++ {
		if err := Output(m, 0, 0, payload(100)); !errors.Is(err, uapi.ENOSPC) {
			t.Fatalf("output to a full ring: %v, want ENOSPC", err)
		}
	}
	if ev.ring.Lost() != 3 {
		t.Fatalf("lost %d, want 3", ev.ring.Lost())
	}
	var rec Record
	for i := 0; i < 63; i++ {
		if ok, err := ev.ring.Read(&rec); !ok || err != nil || !bytes.Equal(rec.RawSample[:52], payload(i)) {
			t.Fatalf("record %d: %v %v %x", i, ok, err, rec.RawSample)
		}
	}
	// The next sample takes a LOST record with it, 24 + 64 bytes, and
	// wraps around the end of the ring.
	if err := Output(m, 0, 0, payload(64)); err != nil {
		t.Fatal(err)
	}
	if ok, err := ev.ring.Read(&rec); !ok || err != nil || rec.LostSamples != 3 || len(rec.RawSample) != 0 {
		t.Fatalf("want a LOST record of 3: %v %v %+v", ok, err, rec)
	}
	if ok, err := ev.ring.Read(&rec); !ok || err != nil || !bytes.Equal(rec.RawSample[:52], payload(64)) {
		t.Fatalf("sample after the lost record: %v %v %x", ok, err, rec.RawSample)
	}
	if ok, _ := ev.ring.Read(&rec); ok {
		t.Fatal("ring should be empty")
	}
}

func TestRecordsWrapAroundTheRingIntact(t *testing.T) {
	k := mapstest.NewKernel(1)
	m := newArray(t, k, 1, 0)
	defer m.Ops.Free()
	ev := outputEvent(t, k, 0, 1)
	defer ev.Put()
	if err := m.Ops.(*array).UpdateObject(key(0), ev, 1, 0); err != nil {
		t.Fatal(err)
	}
	var rec Record
	for i := 0; i < 500; i++ {
		data := bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 1+i%150)
		if err := Output(m, 0, 0, data); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if ok, err := ev.ring.Read(&rec); !ok || err != nil {
			t.Fatalf("record %d: %v %v", i, ok, err)
		}
		want := sample(data)[12:]
		if len(rec.RawSample) != len(want) || !bytes.Equal(rec.RawSample[:len(data)], data) {
			t.Fatalf("record %d: got % x, want % x and padding", i, rec.RawSample, data)
		}
	}
}

func TestPaddingKeepsWhatTheRingHeldBefore(t *testing.T) {
	k := mapstest.NewKernel(1)
	m := newArray(t, k, 1, 0)
	defer m.Ops.Free()
	ev := outputEvent(t, k, 0, 1)
	defer ev.Put()
	if err := m.Ops.(*array).UpdateObject(key(0), ev, 1, 0); err != nil {
		t.Fatal(err)
	}
	// An earlier lap of the ring left 0xee everywhere.
	for i := range ev.ring.data {
		ev.ring.data[i] = 0xee
	}
	if err := Output(m, 0, 0, []byte{1, 2, 3, 4, 5}); err != nil {
		t.Fatal(err)
	}
	var rec Record
	if ok, err := ev.ring.Read(&rec); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if want := []byte{1, 2, 3, 4, 5, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee}; !bytes.Equal(rec.RawSample, want) {
		t.Fatalf("sample % x, want % x", rec.RawSample, want)
	}
}

func TestOutputErrnos(t *testing.T) {
	k := mapstest.NewKernel(2)
	m := newArray(t, k, 3, 0)
	defer m.Ops.Free()
	a := m.Ops.(*array)
	on0 := outputEvent(t, k, 0, 1)
	on1 := outputEvent(t, k, 1, 1)
	counter := counterEvent(t, k, EventAttr{Type: uapi.PERF_TYPE_HARDWARE, Config: uapi.PERF_COUNT_HW_CPU_CYCLES}, 0)
	for i, ev := range []*Event{on0, on1, counter} {
		if err := a.UpdateObject(key(uint32(i)), ev, 1, 0); err != nil {
			t.Fatal(err)
		}
	}
	data := []byte{1, 2, 3}
	for _, tc := range []struct {
		name  string
		cpu   int
		flags uint64
		setup func()
		want  error
	}{
		{"current CPU 0", 0, uapi.BPF_F_CURRENT_CPU, nil, nil},
		{"current CPU 1", 1, uapi.BPF_F_CURRENT_CPU, nil, nil},
		{"explicit index of this CPU", 1, 1, nil, nil},
		{"index of another CPU's event", 0, 1, nil, uapi.EOPNOTSUPP},
		{"a counter event", 0, 2, nil, uapi.EINVAL},
		{"past max_entries", 0, 3, nil, uapi.E2BIG},
		{"index in the upper bits is ignored", 0, 1 << 32, nil, nil},
		{"disabled event", 0, 0, on0.Disable, uapi.EOPNOTSUPP},
		{"enabled again", 0, 0, on0.Enable, nil},
		{"empty slot", 0, 0, func() { _ = a.DeleteElem(0, key(0)) }, uapi.ENOENT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			err := Output(m, tc.cpu, tc.flags, data)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	k.GracePeriod()
	on0.Put()
	on1.Put()
	counter.Put()
}

func TestReadCounterErrnosAndValues(t *testing.T) {
	k := mapstest.NewKernel(2)
	m := newArray(t, k, 3, 0)
	defer m.Ops.Free()
	a := m.Ops.(*array)
	cycles := counterEvent(t, k, EventAttr{Type: uapi.PERF_TYPE_HARDWARE}, 0)
	cycles.SetCount(12345)
	cycles.SetTimes(1000, 800)
	pinned := counterEvent(t, k, EventAttr{Type: uapi.PERF_TYPE_HARDWARE, Pinned: true, Disabled: true}, 1)
	if err := a.UpdateObject(key(0), cycles, 1, 0); err != nil {
		t.Fatal(err)
	}
	if err := a.UpdateObject(key(1), pinned, 1, 0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		cpu   int
		flags uint64
		want  error
		value [3]uint64
	}{
		{"current CPU", 0, uapi.BPF_F_CURRENT_CPU, nil, [3]uint64{12345, 1000, 800}},
		{"explicit index", 0, 0, nil, [3]uint64{12345, 1000, 800}},
		{"from another CPU", 1, 0, uapi.EINVAL, [3]uint64{}},
		{"flags beyond the index", 0, 1 << 32, uapi.EINVAL, [3]uint64{}},
		{"pinned but off", 1, 1, uapi.EBUSY, [3]uint64{}},
		{"empty slot", 0, 2, uapi.ENOENT, [3]uint64{}},
		{"past max_entries", 0, 3, uapi.E2BIG, [3]uint64{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, en, run, err := ReadCounter(m, tc.cpu, tc.flags)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if got := [3]uint64{v, en, run}; got != tc.value {
				t.Fatalf("read %v, want %v", got, tc.value)
			}
		})
	}
}

func TestEventsAndRingsAreRefused(t *testing.T) {
	k := mapstest.NewKernel(2)
	for _, tc := range []struct {
		name  string
		attr  EventAttr
		cpu   int
		pages int
		want  error
	}{
		{"CPU that does not exist", EventAttr{Type: uapi.PERF_TYPE_SOFTWARE, Config: uapi.PERF_COUNT_SW_BPF_OUTPUT}, 2, 1, uapi.ENODEV},
		{"3 pages", EventAttr{Type: uapi.PERF_TYPE_SOFTWARE, Config: uapi.PERF_COUNT_SW_BPF_OUTPUT}, 0, 3, uapi.EINVAL},
		{"no pages", EventAttr{Type: uapi.PERF_TYPE_SOFTWARE, Config: uapi.PERF_COUNT_SW_BPF_OUTPUT}, 0, 0, uapi.EINVAL},
		{"a ring for a counter", EventAttr{Type: uapi.PERF_TYPE_HARDWARE}, 0, 1, uapi.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewEvent(k, tc.attr, tc.cpu, tc.pages, nextTestEventID()); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestPagesForRoundsUpToAPowerOfTwo(t *testing.T) {
	for in, want := range map[int]int{1: 1, 4096: 1, 4097: 2, 8192: 2, 8193: 4, 3 * 4096: 4, 5 * 4096: 8} {
		if got := PagesFor(in); got != want {
			t.Errorf("PagesFor(%d) = %d, want %d", in, got, want)
		}
	}
}

// testEventIDs numbers the events the tests make, as a kernel would.
var testEventIDs atomic.Uint32

func nextTestEventID() uint32 { return testEventIDs.Add(1) }
