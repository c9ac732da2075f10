package lpmtrie_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/lpmtrie"
	"github.com/bpfsim/bpfsim/maps/mapstest"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

var registry = func() *maps.Registry {
	r := &maps.Registry{}
	if err := r.Register(lpmtrie.LPMTrie); err != nil {
		panic(err)
	}
	return r
}()

func newTrie(t *testing.T, k *mapstest.Kernel, maxEntries uint32) *maps.Map {
	t.Helper()
	m, err := registry.Create(k, maps.Attr{Type: uapi.MapTypeLPMTrie, KeySize: 8, ValueSize: 4,
		MaxEntries: maxEntries, Flags: uapi.BPF_F_NO_PREALLOC}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Ops.Free)
	return m
}

// key is an IPv4 prefix as struct bpf_lpm_trie_key_u8.
func key(prefix string) []byte {
	p := netip.MustParsePrefix(prefix)
	b := binary.LittleEndian.AppendUint32(nil, uint32(p.Bits()))
	a := p.Addr().As4()
	return append(b, a[:]...)
}

func prefix(k []byte) string {
	return fmt.Sprintf("%v/%d", netip.AddrFrom4([4]byte(k[4:8])), binary.LittleEndian.Uint32(k))
}

func value(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func lookup(t *testing.T, k *mapstest.Kernel, m *maps.Map, addr string) uint32 {
	t.Helper()
	a, err := m.Ops.LookupElem(0, key(addr+"/32"))
	if err != nil {
		t.Fatal(err)
	}
	if a == 0 {
		return 0
	}
	var b [4]byte
	if err := k.Memory().Read(a, b[:]); err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint32(b[:])
}

func TestAllocNeedsNoPreallocAndAKeyWithData(t *testing.T) {
	for _, c := range []struct {
		name string
		attr maps.Attr
		want error
	}{
		{"ipv4", maps.Attr{KeySize: 8, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_NO_PREALLOC}, nil},
		{"preallocated", maps.Attr{KeySize: 8, ValueSize: 4, MaxEntries: 1}, uapi.EINVAL},
		{"no entries", maps.Attr{KeySize: 8, ValueSize: 4, Flags: uapi.BPF_F_NO_PREALLOC}, uapi.EINVAL},
		{"no data", maps.Attr{KeySize: 4, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_NO_PREALLOC}, uapi.EINVAL},
		{"data past 256 bytes", maps.Attr{KeySize: 261, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_NO_PREALLOC}, uapi.EINVAL},
		{"no value", maps.Attr{KeySize: 8, MaxEntries: 1, Flags: uapi.BPF_F_NO_PREALLOC}, uapi.EINVAL},
		{"other flags", maps.Attr{KeySize: 8, ValueSize: 4, MaxEntries: 1, Flags: uapi.BPF_F_NO_PREALLOC | uapi.BPF_F_ZERO_SEED}, uapi.EINVAL},
	} {
		c.attr.Type = uapi.MapTypeLPMTrie
		if err := lpmtrie.LPMTrie.AllocCheck(&c.attr); c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

// The example of lpm_trie.c: lookups take the longest match, and
// get_next_key walks more specific prefixes first.
func TestLongestPrefixWinsAndKeysComeMostSpecificFirst(t *testing.T) {
	k := mapstest.NewKernel(1)
	m := newTrie(t, k, 8)
	for i, p := range []string{"192.168.0.0/16", "192.168.0.0/24", "192.168.128.0/24", "192.168.1.0/24"} {
		if err := m.Ops.UpdateElem(0, key(p), value(uint32(i+1)), uapi.BPF_ANY); err != nil {
			t.Fatal(err)
		}
	}
	for addr, want := range map[string]uint32{"192.168.0.1": 2, "192.168.1.7": 4, "192.168.128.9": 3, "192.168.2.1": 1, "10.0.0.1": 0} {
		if got := lookup(t, k, m, addr); got != want {
			t.Errorf("lookup %s: %d, want %d", addr, got, want)
		}
	}
	var order []string
	next := make([]byte, 8)
	var cur []byte
	for {
		if err := m.Ops.GetNextKey(cur, next); err != nil {
			if !errors.Is(err, uapi.ENOENT) {
				t.Fatal(err)
			}
			break
		}
		order = append(order, prefix(next))
		cur = append([]byte(nil), next...)
	}
	want := []string{"192.168.0.0/24", "192.168.1.0/24", "192.168.128.0/24", "192.168.0.0/16"}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("keys in order %v, want %v", order, want)
	}
}

func TestUpdateAndDeleteErrnos(t *testing.T) {
	k := mapstest.NewKernel(1)
	m := newTrie(t, k, 2)
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"add", m.Ops.UpdateElem(0, key("10.0.0.0/8"), value(1), uapi.BPF_NOEXIST), nil},
		{"add again, NOEXIST", m.Ops.UpdateElem(0, key("10.0.0.0/8"), value(1), uapi.BPF_NOEXIST), uapi.EEXIST},
		{"replace, EXIST", m.Ops.UpdateElem(0, key("10.0.0.0/8"), value(2), uapi.BPF_EXIST), nil},
		{"add another, EXIST", m.Ops.UpdateElem(0, key("10.1.0.0/16"), value(2), uapi.BPF_EXIST), uapi.ENOENT},
		{"unknown flags", m.Ops.UpdateElem(0, key("10.0.0.0/8"), value(1), 7), uapi.EINVAL},
		{"prefix past 32 bits", m.Ops.UpdateElem(0, append(binary.LittleEndian.AppendUint32(nil, 33), 10, 0, 0, 0), value(1), uapi.BPF_ANY), uapi.EINVAL},
		{"delete a prefix past 32 bits", m.Ops.DeleteElem(0, append(binary.LittleEndian.AppendUint32(nil, 33), 10, 0, 0, 0)), uapi.EINVAL},
		{"add a second", m.Ops.UpdateElem(0, key("11.0.0.0/8"), value(3), uapi.BPF_ANY), nil},
		{"a third into two", m.Ops.UpdateElem(0, key("12.0.0.0/8"), value(4), uapi.BPF_ANY), uapi.ENOSPC},
		{"replace in a full trie", m.Ops.UpdateElem(0, key("11.0.0.0/8"), value(5), uapi.BPF_ANY), nil},
		{"delete a prefix not there", m.Ops.DeleteElem(0, key("10.0.0.0/16")), uapi.ENOENT},
		{"delete", m.Ops.DeleteElem(0, key("10.0.0.0/8")), nil},
		{"delete again", m.Ops.DeleteElem(0, key("10.0.0.0/8")), uapi.ENOENT},
	} {
		if c.want == nil && c.err != nil || c.want != nil && !errors.Is(c.err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.err, c.want)
		}
	}
	if got := lookup(t, k, m, "11.2.3.4"); got != 5 {
		t.Fatalf("11.2.3.4 after the updates: %d, want 5", got)
	}
}
