package devmap_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/devmap"
	"github.com/bpfsim/bpfsim/maps/mapstest"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func newMap(t *testing.T, valueSize, n uint32) *maps.Map {
	t.Helper()
	r := &maps.Registry{}
	if err := r.Register(devmap.DevMap); err != nil {
		t.Fatal(err)
	}
	m, err := r.Create(mapstest.NewKernel(1), maps.Attr{Type: uapi.MapTypeDevmap, KeySize: 4, ValueSize: valueSize, MaxEntries: n}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Ops.Free)
	return m
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func TestCreationNeedsFourByteKeysAndFourOrEightByteValues(t *testing.T) {
	r := &maps.Registry{}
	if err := r.Register(devmap.DevMap); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		attr maps.Attr
		ok   bool
	}{
		{maps.Attr{KeySize: 4, ValueSize: 4, MaxEntries: 1}, true},
		{maps.Attr{KeySize: 4, ValueSize: 8, MaxEntries: 1}, true},
		{maps.Attr{KeySize: 4, ValueSize: 6, MaxEntries: 1}, false},
		{maps.Attr{KeySize: 8, ValueSize: 4, MaxEntries: 1}, false},
		{maps.Attr{KeySize: 4, ValueSize: 4}, false},
		{maps.Attr{KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_RDONLY_PROG}, false},
	} {
		c.attr.Type = uapi.MapTypeDevmap
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

// The slots hold lo (ifindex 1) or nothing: another device, a program,
// BPF_NOEXIST and keys past the end are refused with the kernel's errnos.
func TestSlotsHoldTheLoopbackDeviceOrNothing(t *testing.T) {
	m := newMap(t, 8, 4)
	val := func(ifindex, fd uint32) []byte { return append(u32(ifindex), u32(fd)...) }
	for _, c := range []struct {
		key   uint32
		value []byte
		flags uint64
		want  error
	}{
		{0, val(1, 0), 0, nil},
		{1, val(2, 0), 0, uapi.EINVAL},
		{1, val(1, 3), 0, uapi.EINVAL},
		{1, val(0, 3), 0, uapi.EINVAL},
		{4, val(1, 0), 0, uapi.E2BIG},
		{0, val(1, 0), uapi.BPF_NOEXIST, uapi.EEXIST},
		{0, val(1, 0), 4, uapi.EINVAL},
		{2, val(1, 0xffffffff), uapi.BPF_EXIST, nil},
	} {
		if err := m.Ops.UpdateElem(0, u32(c.key), c.value, c.flags); !errors.Is(err, c.want) || (err == nil) != (c.want == nil) {
			t.Errorf("update %d % x flags %d: %v, want %v", c.key, c.value, c.flags, err, c.want)
		}
	}
	for key, want := range map[uint32]bool{0: true, 1: false, 2: true, 3: false, 4: false} {
		if addr, err := m.Ops.LookupElem(0, u32(key)); err != nil || (addr != 0) != want {
			t.Errorf("lookup %d: %#x, %v", key, addr, err)
		}
	}
	if err := m.Ops.DeleteElem(0, u32(4)); !errors.Is(err, uapi.EINVAL) {
		t.Errorf("delete past the end: %v", err)
	}
	if err := m.Ops.DeleteElem(0, u32(2)); err != nil {
		t.Fatal(err)
	}
	if addr, _ := m.Ops.LookupElem(0, u32(2)); addr != 0 {
		t.Error("a deleted slot is still there")
	}
	next := make([]byte, 4)
	for _, c := range []struct {
		key  []byte
		want uint32
		err  error
	}{{nil, 0, nil}, {u32(0), 1, nil}, {u32(3), 0, uapi.ENOENT}, {u32(9), 0, nil}} {
		if err := m.Ops.GetNextKey(c.key, next); !errors.Is(err, c.err) || (err == nil && binary.LittleEndian.Uint32(next) != c.want) {
			t.Errorf("next after % x: %d, %v", c.key, binary.LittleEndian.Uint32(next), err)
		}
	}
}

// bpf_redirect_map: a slot with a device redirects; an empty one gives the
// flags' low bits, unless BPF_F_BROADCAST; unknown flags abort.
func TestRedirectVerdicts(t *testing.T) {
	m := newMap(t, 4, 2)
	if err := m.Ops.UpdateElem(0, u32(0), u32(1), 0); err != nil {
		t.Fatal(err)
	}
	r := m.Ops.(maps.Redirector)
	for _, c := range []struct {
		index, flags, want uint64
	}{
		{0, 0, 4}, {0, 3, 4}, {1, 0, 0}, {1, 2, 2}, {1, 8, 4}, {1, 16, 0}, {5, 3, 3},
		{1 << 32, 0, 4}, // the index is 32 bits
		{0, 4, 0}, {0, 32, 0},
	} {
		if got := r.Redirect(c.index, c.flags); got != c.want {
			t.Errorf("redirect %#x flags %#x: %d, want %d", c.index, c.flags, got, c.want)
		}
	}
}
