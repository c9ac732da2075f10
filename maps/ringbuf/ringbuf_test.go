package ringbuf_test

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/mapstest"
	"github.com/bpfsim/bpfsim/maps/ringbuf"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func newRing(t testing.TB, size uint32) *ringbuf.Ring {
	t.Helper()
	r := &maps.Registry{}
	if err := r.Register(ringbuf.Ringbuf); err != nil {
		t.Fatal(err)
	}
	m, err := r.Create(mapstest.NewKernel(1), maps.Attr{Type: uapi.MapTypeRingbuf, MaxEntries: size}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Ops.Free)
	return m.Ops.(*ringbuf.Ring)
}

func TestAllocCheck(t *testing.T) {
	for _, c := range []struct {
		name string
		attr maps.Attr
		want error
	}{
		{"a page", maps.Attr{MaxEntries: 4096}, nil},
		{"not a power of two", maps.Attr{MaxEntries: 3 * 4096}, uapi.EINVAL},
		{"under a page", maps.Attr{MaxEntries: 2048}, uapi.EINVAL},
		{"a key", maps.Attr{KeySize: 4, MaxEntries: 4096}, uapi.EINVAL},
		{"a value", maps.Attr{ValueSize: 4, MaxEntries: 4096}, uapi.EINVAL},
		{"no prealloc", maps.Attr{MaxEntries: 4096, Flags: uapi.BPF_F_NO_PREALLOC}, uapi.EINVAL},
	} {
		c.attr.Type = uapi.MapTypeRingbuf
		if err := ringbuf.Ringbuf.AllocCheck(&c.attr); c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

// Records go in until the ring is full (EAGAIN), come out in order, and
// keep going round: records written across the end of the data area read
// back whole.
func TestRecordsWrapAroundInOrder(t *testing.T) {
	r := newRing(t, 4096)
	next, read := 0, 0
	record := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 1+i%200) }
	for round := 0; round < 20; round++ {
		for {
			err := r.Output(record(next), 0)
			if errors.Is(err, uapi.EAGAIN) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			next++
		}
		if got := r.Query(uapi.BPF_RB_AVAIL_DATA); got == 0 || got > 4096 {
			t.Fatalf("available data %d in a full ring", got)
		}
		for {
			s, ok := r.Consume()
			if !ok {
				break
			}
			if !bytes.Equal(s, record(read)) {
				t.Fatalf("record %d: %d bytes of %d, want %d of %d", read, len(s), s[0], 1+read%200, byte(read))
			}
			read++
		}
	}
	if read != next || read < 200 {
		t.Fatalf("%d records written, %d read", next, read)
	}
	if err := r.Output([]byte{1}, 4); !errors.Is(err, uapi.EINVAL) {
		t.Fatalf("unknown flags: %v", err)
	}
	if r.Query(uapi.BPF_RB_RING_SIZE) != 4096 || r.Query(uapi.BPF_RB_CONS_POS) != r.Query(uapi.BPF_RB_PROD_POS) {
		t.Fatal("query of a drained ring")
	}
}

// Producers on several CPUs and one consumer: every record arrives once,
// whole (run with -race).
func TestConcurrentProducers(t *testing.T) {
	r := newRing(t, 1<<16)
	var wg sync.WaitGroup
	const per = 2000
	for p := 0; p < 3; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; {
				if r.Output(bytes.Repeat([]byte{byte(p)}, 24), 0) == nil {
					i++
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	got := 0
	for finished := false; ; {
		select {
		case <-done:
			finished = true
		default:
		}
		s, ok := r.Consume()
		if ok {
			if len(s) != 24 || !bytes.Equal(s, bytes.Repeat(s[:1], 24)) {
				t.Fatalf("torn record %x", s)
			}
			got++
			continue
		}
		if finished {
			break
		}
	}
	if got != 3*per {
		t.Fatalf("%d records read, want %d", got, 3*per)
	}
}

// BenchmarkOutput is one 64-byte record written and read.
func BenchmarkOutput(b *testing.B) {
	r := newRing(b, 1<<16)
	rec := make([]byte, 64)
	for i := 0; i < b.N; i++ {
		if err := r.Output(rec, 0); err != nil {
			b.Fatal(err)
		}
		if _, ok := r.Consume(); !ok {
			b.Fatal("no record")
		}
	}
}

// A reserved record holds the reader back until it is committed, even
// when records reserved after it are committed first; a discarded record
// is skipped; a record cannot be committed twice, nor an address that is
// no record; reservations take no flags.
func TestReservedRecordsAreReadInReservationOrder(t *testing.T) {
	r := newRing(t, 4096)
	first, second, third := r.Reserve(16, 0), r.Reserve(4, 0), r.Reserve(1, 0)
	if first == 0 || second != first+24 || third != second+16 {
		t.Fatalf("records at %#x, %#x, %#x: want 24 and 16 bytes apart", first, second, third)
	}
	if err := r.Commit(second, false, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.Commit(third, true, 0); err != nil {
		t.Fatal(err)
	}
	if s, ok := r.Consume(); ok {
		t.Fatalf("read %x past a record still reserved", s)
	}
	if err := r.Commit(first, false, 0); err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{16, 4} {
		s, ok := r.Consume()
		if !ok || len(s) != want {
			t.Fatalf("record %d: %d bytes, %v; want %d", i, len(s), ok, want)
		}
	}
	if _, ok := r.Consume(); ok {
		t.Fatal("the discarded record was read")
	}
	if err := r.Commit(first, false, 0); !errors.Is(err, uapi.EFAULT) {
		t.Errorf("second commit: %v, want EFAULT", err)
	}
	if err := r.Commit(first+1, false, 0); !errors.Is(err, uapi.EFAULT) {
		t.Errorf("commit of a misaligned address: %v, want EFAULT", err)
	}
	if err := r.Commit(7, false, 0); !errors.Is(err, uapi.EFAULT) {
		t.Errorf("commit of an address outside the ring: %v, want EFAULT", err)
	}
	if got := r.Reserve(8, 1); got != 0 {
		t.Errorf("a reservation with flags got %#x, want NULL", got)
	}
}

// A record not yet committed keeps the reader from passing it, so the
// producer fills the ring behind it, and reservations fail until it is
// committed and the reader moves on.
func TestAPendingRecordBlocksTheProducer(t *testing.T) {
	r := newRing(t, 4096)
	held := r.Reserve(8, 0) // 16 bytes
	n := 0
	for {
		s := r.Reserve(8, 0)
		if s == 0 {
			break
		}
		if err := r.Commit(s, false, 0); err != nil {
			t.Fatal(err)
		}
		n++
	}
	// The producer stays within the ring's size less one byte of the
	// held record: 255 records of 16 bytes in all.
	if n != 4096/16-2 {
		t.Fatalf("%d records behind the held one, want %d", n, 4096/16-2)
	}
	if _, ok := r.Consume(); ok {
		t.Fatal("read past the held record")
	}
	if err := r.Commit(held, false, 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; i <= n; i++ {
		if _, ok := r.Consume(); !ok {
			t.Fatalf("record %d not readable", i)
		}
	}
	if r.Reserve(8, 0) == 0 {
		t.Fatal("no room after draining")
	}
}

// BenchmarkReserveCommit is one 64-byte record reserved, committed and
// read.
func BenchmarkReserveCommit(b *testing.B) {
	r := newRing(b, 1<<16)
	for i := 0; i < b.N; i++ {
		s := r.Reserve(64, 0)
		if s == 0 {
			b.Fatal("no room")
		}
		if err := r.Commit(s, false, 0); err != nil {
			b.Fatal(err)
		}
		if _, ok := r.Consume(); !ok {
			b.Fatal("no record")
		}
	}
}
