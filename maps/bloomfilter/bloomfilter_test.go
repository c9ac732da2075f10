package bloomfilter_test

import (
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/bloomfilter"
	"github.com/bpfsim/bpfsim/maps/mapstest"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func newFilter(t testing.TB, maxEntries uint32, extra uint64) maps.PushPopPeeker {
	t.Helper()
	r := &maps.Registry{}
	if err := r.Register(bloomfilter.BloomFilter); err != nil {
		t.Fatal(err)
	}
	m, err := r.Create(mapstest.NewKernel(1), maps.Attr{Type: uapi.MapTypeBloomFilter, ValueSize: 4,
		MaxEntries: maxEntries, MapExtra: extra, Flags: uapi.BPF_F_ZERO_SEED}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Ops.Free)
	return m.Ops.(maps.PushPopPeeker)
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

// Whatever was pushed is found; with room for 1,000 values and 5 hash
// functions (8,192 bits, as the kernel sizes them), about 2% of values
// never pushed are found too, as theory says.
func TestNoFalseNegativesAndFewFalsePositives(t *testing.T) {
	f := newFilter(t, 1000, 0)
	for v := uint32(0); v < 1000; v++ {
		if err := f.PushElem(0, u32(v*2654435761), uapi.BPF_ANY); err != nil {
			t.Fatal(err)
		}
	}
	for v := uint32(0); v < 1000; v++ {
		if err := f.PeekElem(0, u32(v*2654435761)); err != nil {
			t.Fatalf("value %d pushed, then not found: %v", v, err)
		}
	}
	fp := 0
	for v := uint32(1000); v < 11000; v++ {
		if f.PeekElem(0, u32(v*2654435761)) == nil {
			fp++
		}
	}
	if fp > 300 {
		t.Fatalf("%d of 10,000 absent values found", fp)
	}
	t.Logf("false positives: %d of 10,000", fp)
}

func TestRefusals(t *testing.T) {
	f := newFilter(t, 4, 0)
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"push with BPF_EXIST", f.PushElem(0, u32(1), uapi.BPF_EXIST), uapi.EINVAL},
		{"pop", f.PopElem(0, make([]byte, 4)), uapi.EOPNOTSUPP},
		{"peek of nothing", f.PeekElem(0, u32(1)), uapi.ENOENT},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.err, c.want)
		}
	}
	for _, c := range []struct {
		name string
		attr maps.Attr
	}{
		{"a key", maps.Attr{KeySize: 4, ValueSize: 4, MaxEntries: 1}},
		{"no value", maps.Attr{MaxEntries: 1}},
		{"no entries", maps.Attr{ValueSize: 4}},
		{"map_extra past 15", maps.Attr{ValueSize: 4, MaxEntries: 1, MapExtra: 16}},
		{"no prealloc", maps.Attr{ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_NO_PREALLOC}},
	} {
		c.attr.Type = uapi.MapTypeBloomFilter
		if err := bloomfilter.BloomFilter.AllocCheck(&c.attr); !errors.Is(err, uapi.EINVAL) {
			t.Errorf("%s: got %v, want EINVAL", c.name, err)
		}
	}
}

// Programs on several CPUs push at once: no bit is lost (run with -race).
func TestConcurrentPushesKeepEveryValue(t *testing.T) {
	f := newFilter(t, 4096, 0)
	var wg sync.WaitGroup
	for g := uint32(0); g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := g; v < 4000; v += 4 {
				f.PushElem(0, u32(v), uapi.BPF_ANY)
			}
		}()
	}
	wg.Wait()
	for v := uint32(0); v < 4000; v++ {
		if err := f.PeekElem(0, u32(v)); err != nil {
			t.Fatalf("value %d lost: %v", v, err)
		}
	}
}

// BenchmarkPushPeek is a push and a peek of a 4-byte value with 5 hash
// functions.
func BenchmarkPushPeek(b *testing.B) {
	f := newFilter(b, 1<<16, 0)
	for i := 0; i < b.N; i++ {
		v := u32(uint32(i))
		f.PushElem(0, v, uapi.BPF_ANY)
		if err := f.PeekElem(0, v); err != nil {
			b.Fatal(err)
		}
	}
}
