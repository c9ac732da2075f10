package devmap_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/devmap"
	"github.com/bpfsim/bpfsim/maps/mapstest"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func newHash(t testing.TB, k *mapstest.Kernel, valueSize, n uint32) *maps.Map {
	t.Helper()
	r := &maps.Registry{}
	if err := r.Register(devmap.DevMapHash); err != nil {
		t.Fatal(err)
	}
	m, err := r.Create(k, maps.Attr{Type: uapi.MapTypeDevmapHash, KeySize: 4, ValueSize: valueSize, MaxEntries: n}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Ops.Free)
	return m
}

// walkKeys lists the keys get_next_key gives from the start.
func walkKeys(t *testing.T, m *maps.Map) string {
	t.Helper()
	var key []byte
	s := ""
	next := make([]byte, 4)
	for range 100 {
		if err := m.Ops.GetNextKey(key, next); errors.Is(err, uapi.ENOENT) {
			return s
		} else if err != nil {
			t.Fatal(err)
		}
		s += fmt.Sprint(binary.LittleEndian.Uint32(next), " ")
		key = append([]byte(nil), next...)
	}
	t.Fatal("the walk does not end")
	return ""
}

func TestHashCreationAcceptsUpToTwoToTheThirtyOneEntries(t *testing.T) {
	r := &maps.Registry{}
	if err := r.Register(devmap.DevMapHash); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		attr maps.Attr
		ok   bool
	}{
		{maps.Attr{KeySize: 4, ValueSize: 4, MaxEntries: 1}, true},
		{maps.Attr{KeySize: 4, ValueSize: 8, MaxEntries: 1 << 31}, true},
		{maps.Attr{KeySize: 4, ValueSize: 4, MaxEntries: 1<<31 + 1}, false},
		{maps.Attr{KeySize: 4, ValueSize: 6, MaxEntries: 1}, false},
		{maps.Attr{KeySize: 4, ValueSize: 4}, false},
		{maps.Attr{KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_NO_PREALLOC}, false},
	} {
		c.attr.Type = uapi.MapTypeDevmapHash
		m, err := r.Create(mapstest.NewKernel(1), c.attr, 1, nil)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, uapi.EINVAL)) {
			t.Errorf("%+v: %v", c.attr, err)
		}
		if err == nil {
			if m.Flags&uapi.BPF_F_RDONLY_PROG == 0 {
				t.Errorf("%+v: programs may write its values", c.attr)
			}
			m.Ops.Free()
		}
	}
}

// Keys that share a bucket come newest first, and a replaced key moves to
// its bucket's head; buckets come in order.
func TestHashWalksBucketsInOrderNewestFirst(t *testing.T) {
	m := newHash(t, mapstest.NewKernel(1), 4, 5) // 8 buckets
	for _, c := range []struct {
		op   string
		key  uint32
		walk string
	}{
		{"update", 1, "1 "},
		{"update", 9, "9 1 "},
		{"update", 0, "0 9 1 "},
		{"update", 17, "0 17 9 1 "},
		{"update", 1, "0 1 17 9 "},
		{"delete", 17, "0 1 9 "},
		{"update", 7, "0 1 9 7 "},
		{"delete", 0, "1 9 7 "},
	} {
		var err error
		if c.op == "update" {
			err = m.Ops.UpdateElem(0, u32(c.key), u32(1), 0)
		} else {
			err = m.Ops.DeleteElem(0, u32(c.key))
		}
		if err != nil {
			t.Fatalf("%s %d: %v", c.op, c.key, err)
		}
		if got := walkKeys(t, m); got != c.walk {
			t.Errorf("after %s %d: walk %q, want %q", c.op, c.key, got, c.walk)
		}
	}
	// A missing key restarts the walk; the last one ends it.
	next := make([]byte, 4)
	if err := m.Ops.GetNextKey(u32(99), next); err != nil || binary.LittleEndian.Uint32(next) != 1 {
		t.Errorf("next after a missing key: %d, %v", binary.LittleEndian.Uint32(next), err)
	}
	if err := m.Ops.GetNextKey(u32(7), next); !errors.Is(err, uapi.ENOENT) {
		t.Errorf("next after the last key: %v", err)
	}
}

// The update checks come in the kernel's order: flags and ifindex 0, an
// existing key under BPF_NOEXIST, the device, then a full map. BPF_EXIST
// adds a missing key.
func TestHashUpdateRefusalsInTheKernelsOrder(t *testing.T) {
	m := newHash(t, mapstest.NewKernel(1), 8, 2)
	val := func(ifindex, fd uint32) []byte { return append(u32(ifindex), u32(fd)...) }
	for _, c := range []struct {
		key   uint32
		value []byte
		flags uint64
		want  error
	}{
		{5, val(1, 0), uapi.BPF_EXIST, nil},
		{5, val(1, 0), uapi.BPF_NOEXIST, uapi.EEXIST},
		{5, val(2, 0), uapi.BPF_NOEXIST, uapi.EEXIST},
		{6, val(0, 0), 0, uapi.EINVAL},
		{6, val(1, 0), uapi.BPF_F_LOCK, uapi.EINVAL},
		{6, val(1, 3), 0, uapi.EINVAL},
		{6, val(1, 0xffffffff), 0, nil},
		{7, val(9, 0), 0, uapi.EINVAL}, // the device before the room
		{7, val(1, 0), 0, uapi.E2BIG},
		{5, val(1, 0), 0, nil}, // replacing needs no room
	} {
		if err := m.Ops.UpdateElem(0, u32(c.key), c.value, c.flags); !errors.Is(err, c.want) || (err == nil) != (c.want == nil) {
			t.Errorf("update %d % x flags %d: %v, want %v", c.key, c.value, c.flags, err, c.want)
		}
	}
	if err := m.Ops.DeleteElem(0, u32(7)); !errors.Is(err, uapi.ENOENT) {
		t.Errorf("delete of a missing key: %v", err)
	}
}

// A program that looked a value up keeps reading it after the element is
// deleted or replaced, until a grace period has passed.
func TestHashValueOutlivesItsElementUntilAGracePeriod(t *testing.T) {
	k := mapstest.NewKernel(1)
	m := newHash(t, k, 8, 4)
	if err := m.Ops.UpdateElem(0, u32(3), append(u32(1), u32(0)...), 0); err != nil {
		t.Fatal(err)
	}
	addr, err := m.Ops.LookupElem(0, u32(3))
	if err != nil || addr == 0 {
		t.Fatalf("lookup: %#x, %v", addr, err)
	}
	if err := m.Ops.DeleteElem(0, u32(3)); err != nil {
		t.Fatal(err)
	}
	read := func() uint32 {
		b := make([]byte, 4)
		if err := k.Memory().Read(addr, b); err != nil {
			t.Fatal(err)
		}
		return binary.LittleEndian.Uint32(b)
	}
	if got := read(); got != 1 {
		t.Errorf("before the grace period the value reads %d", got)
	}
	if n := k.GracePeriod(); n != 1 {
		t.Errorf("%d callbacks ran", n)
	}
	if got := read(); got != 0 {
		t.Errorf("after the grace period the value reads %d", got)
	}
}

func TestHashRedirectVerdicts(t *testing.T) {
	m := newHash(t, mapstest.NewKernel(1), 4, 2)
	if err := m.Ops.UpdateElem(0, u32(1000), u32(1), 0); err != nil {
		t.Fatal(err)
	}
	r := m.Ops.(maps.Redirector)
	for _, c := range []struct {
		index, flags, want uint64
	}{
		{1000, 0, 4}, {1000, 3, 4}, {0, 0, 0}, {0, 2, 2}, {0, 8, 4}, {0, 16, 0}, {8, 3, 3},
		{1000 + 1<<32, 0, 4}, {1000, 4, 0}, {1000, 32, 0},
	} {
		if got := r.Redirect(c.index, c.flags); got != c.want {
			t.Errorf("redirect %#x flags %#x: %d, want %d", c.index, c.flags, got, c.want)
		}
	}
}

// BenchmarkRedirect is bpf_redirect_map's lookup in each devmap type, for
// a key that is present.
func BenchmarkRedirect(b *testing.B) {
	k := mapstest.NewKernel(1)
	r := &maps.Registry{}
	for _, typ := range []*maps.Type{devmap.DevMap, devmap.DevMapHash} {
		if err := r.Register(typ); err != nil {
			b.Fatal(err)
		}
		m, err := r.Create(k, maps.Attr{Type: typ.ID, KeySize: 4, ValueSize: 4, MaxEntries: 64}, 1, nil)
		if err != nil {
			b.Fatal(err)
		}
		for i := range uint32(64) {
			if err := m.Ops.UpdateElem(0, u32(i), u32(1), 0); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(typ.Name, func(b *testing.B) {
			rd := m.Ops.(maps.Redirector)
			for i := 0; b.Loop(); i++ {
				if rd.Redirect(uint64(i&63), 0) != 4 {
					b.Fatal("no redirect")
				}
			}
		})
		m.Ops.Free()
	}
}

// Programs redirect and look up while user space updates and deletes the
// same keys: every answer is one the map could give, and (under -race) no
// access races.
func TestHashRedirectsWhileUpdated(t *testing.T) {
	k := mapstest.NewKernel(2)
	m := newHash(t, k, 8, 4)
	r := m.Ops.(maps.Redirector)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 2000 {
			key := u32(uint32(i % 6))
			if i%3 == 2 {
				m.Ops.DeleteElem(0, key)
			} else {
				m.Ops.UpdateElem(0, key, append(u32(1), u32(0)...), 0)
			}
			if i%100 == 0 {
				k.GracePeriod()
			}
		}
	}()
	for i := 0; ; i++ {
		select {
		case <-done:
			return
		default:
		}
		k.Read(func() {
			if v := r.Redirect(uint64(i%6), 1); v != 4 && v != 1 {
				t.Errorf("redirect gave %d", v)
			}
			if addr, _ := m.Ops.LookupElem(1, u32(uint32(i%6))); addr != 0 {
				b := make([]byte, 4)
				if err := k.Memory().Read(addr, b); err != nil || binary.LittleEndian.Uint32(b) != 1 {
					t.Errorf("a looked-up value reads % x, %v", b, err)
				}
			}
		})
	}
}
