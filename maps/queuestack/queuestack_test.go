package queuestack_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/mapstest"
	"github.com/bpfsim/bpfsim/maps/queuestack"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func newMap(t testing.TB, typ *maps.Type, n uint32) maps.PushPopPeeker {
	t.Helper()
	r := &maps.Registry{}
	if err := r.Register(typ); err != nil {
		t.Fatal(err)
	}
	m, err := r.Create(mapstest.NewKernel(1), maps.Attr{Type: typ.ID, ValueSize: 4, MaxEntries: n}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Ops.Free)
	return m.Ops.(maps.PushPopPeeker)
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

// Three values into a map of two: the third is E2BIG, unless BPF_EXIST
// lets it drop the oldest. Then the queue gives the oldest first, the
// stack the newest, and an empty map zeroes the value with ENOENT.
func TestOrderFullAndEmpty(t *testing.T) {
	for _, c := range []struct {
		typ  *maps.Type
		want []uint32 // pops after pushing 1, 2, 3 (with BPF_EXIST)
	}{
		{queuestack.Queue, []uint32{2, 3}},
		{queuestack.Stack, []uint32{3, 2}},
	} {
		t.Run(c.typ.Name, func(t *testing.T) {
			m := newMap(t, c.typ, 2)
			for _, v := range []uint32{1, 2} {
				if err := m.PushElem(0, u32(v), 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := m.PushElem(0, u32(3), 0); !errors.Is(err, uapi.E2BIG) {
				t.Fatalf("push into a full map: %v", err)
			}
			if err := m.PushElem(0, u32(3), uapi.BPF_NOEXIST); !errors.Is(err, uapi.EINVAL) {
				t.Fatalf("push with BPF_NOEXIST: %v", err)
			}
			if err := m.PushElem(0, u32(3), uapi.BPF_EXIST); err != nil {
				t.Fatal(err)
			}
			v := make([]byte, 4)
			if err := m.PeekElem(0, v); err != nil || binary.LittleEndian.Uint32(v) != c.want[0] {
				t.Fatalf("peek: %d, %v", binary.LittleEndian.Uint32(v), err)
			}
			for _, want := range c.want {
				if err := m.PopElem(0, v); err != nil || binary.LittleEndian.Uint32(v) != want {
					t.Fatalf("pop: %d, %v; want %d", binary.LittleEndian.Uint32(v), err, want)
				}
			}
			v = u32(7)
			if err := m.PopElem(0, v); !errors.Is(err, uapi.ENOENT) || binary.LittleEndian.Uint32(v) != 0 {
				t.Fatalf("pop from an empty map: %v, value %d", err, binary.LittleEndian.Uint32(v))
			}
		})
	}
}

func TestAllocCheck(t *testing.T) {
	for _, c := range []struct {
		name string
		attr maps.Attr
		want error
	}{
		{"plain", maps.Attr{ValueSize: 4, MaxEntries: 1}, nil},
		{"with a key", maps.Attr{KeySize: 4, ValueSize: 4, MaxEntries: 1}, uapi.EINVAL},
		{"no value", maps.Attr{MaxEntries: 1}, uapi.EINVAL},
		{"no entries", maps.Attr{ValueSize: 4}, uapi.EINVAL},
		{"no prealloc", maps.Attr{ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_NO_PREALLOC}, uapi.EINVAL},
		{"value past KMALLOC_MAX_SIZE", maps.Attr{ValueSize: 4<<20 + 1, MaxEntries: 1}, uapi.E2BIG},
	} {
		c.attr.Type = uapi.MapTypeQueue
		if err := queuestack.Queue.AllocCheck(&c.attr); c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

// BenchmarkPushPop is one push and one pop of a 4-byte value.
func BenchmarkPushPop(b *testing.B) {
	for _, typ := range []*maps.Type{queuestack.Queue, queuestack.Stack} {
		b.Run(typ.Name, func(b *testing.B) {
			m := newMap(b, typ, 64)
			v := u32(1)
			for i := 0; i < b.N; i++ {
				if err := m.PushElem(0, v, 0); err != nil {
					b.Fatal(err)
				}
				if err := m.PopElem(0, v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
