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
