package lpmtrie_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sort"
	"sync"
	"testing"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/mapstest"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// model is an LPM trie as a plain set of prefixes of a 2-byte address.
type model map[[3]byte]uint32 // prefix length, address (masked) -> value

func bit(a []byte, i int) int { return int(a[i/8]>>(7-i%8)) & 1 }

func masked(bits int, a []byte) [3]byte {
	k := [3]byte{byte(bits)}
	for i := 0; i < bits; i++ {
		k[1+i/8] |= byte(bit(a, i) << (7 - i%8))
	}
	return k
}

// lookup is the longest stored prefix covering the first bits of a.
func (m model) lookup(bits int, a []byte) (uint32, bool) {
	for b := min(bits, 16); b >= 0; b-- {
		if v, ok := m[masked(b, a)]; ok {
			return v, true
		}
	}
	return 0, false
}

// order sorts prefixes as get_next_key returns them: a prefix after every
// longer one it covers, and otherwise by the first bit where they part,
// 0 first.
func (m model) order() [][3]byte {
	var ks [][3]byte
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool {
		x, y := ks[i], ks[j]
		n := min(int(x[0]), int(y[0]))
		for b := 0; b < n; b++ {
			if bx, by := bit(x[1:], b), bit(y[1:], b); bx != by {
				return bx < by
			}
		}
		return x[0] > y[0] // one covers the other: the longer first
	})
	return ks
}

// FuzzTrieAgainstModel runs scripts of updates, deletes and lookups on a
// trie of 2-byte addresses and on a plain set of prefixes: lookups give
// the longest match, errnos follow the flags and the size limit, and
// get_next_key lists exactly the stored prefixes, most specific first.
func FuzzTrieAgainstModel(f *testing.F) {
	f.Add([]byte{0, 16, 0xc0, 0xa8, 0, 24, 0xc0, 0xa8, 2, 9, 0xc0, 0xa8, 1, 24, 0xc0, 0xa8})
	f.Add([]byte{0, 0, 0, 0, 0, 1, 0x80, 0, 1, 0, 0, 0, 3, 1, 0x80, 0})
	f.Fuzz(func(t *testing.T, script []byte) {
		const maxEntries = 8
		k := mapstest.NewKernel(1)
		m := newTrie2(t, k, maxEntries)
		ref := model{}
		for len(script) >= 4 {
			op, bits, a := script[0]%4, int(script[1]%18), script[2:4]
			script = script[4:]
			key := append(binary.LittleEndian.AppendUint32(nil, uint32(bits)), a...)
			mk := masked(min(bits, 16), a)
			switch op {
			case 0, 1: // update with flags ANY, NOEXIST, EXIST
				flags := uint64(a[1] % 3)
				err := m.Ops.UpdateElem(0, key, binary.LittleEndian.AppendUint32(nil, uint32(op)+uint32(a[0])), flags)
				_, exists := ref[mk]
				var want error
				switch {
				case bits > 16:
					want = uapi.EINVAL
				case exists && flags == uapi.BPF_NOEXIST:
					want = uapi.EEXIST
				case !exists && flags == uapi.BPF_EXIST:
					want = uapi.ENOENT
				case !exists && len(ref) == maxEntries:
					want = uapi.ENOSPC
				}
				check(t, "update", err, want)
				if err == nil {
					ref[mk] = uint32(op) + uint32(a[0])
				}
			case 2:
				err := m.Ops.DeleteElem(0, key)
				_, exists := ref[mk]
				var want error
				switch {
				case bits > 16:
					want = uapi.EINVAL
				case !exists:
					want = uapi.ENOENT
				}
				check(t, "delete", err, want)
				delete(ref, mk)
			case 3:
				addr, err := m.Ops.LookupElem(0, key)
				if err != nil {
					t.Fatal(err)
				}
				want, ok := ref.lookup(bits, a)
				if bits > 16 {
					ok = false
				}
				if (addr != 0) != ok {
					t.Fatalf("lookup /%d %x: found %v, want %v", bits, a, addr != 0, ok)
				}
				if ok {
					var v [4]byte
					if err := k.Memory().Read(addr, v[:]); err != nil {
						t.Fatal(err)
					}
					if got := binary.LittleEndian.Uint32(v[:]); got != want {
						t.Fatalf("lookup /%d %x: %d, want %d", bits, a, got, want)
					}
				}
			}
		}
		var got [][3]byte
		next := make([]byte, 6)
		var cur []byte
		for range maxEntries + 1 {
			if err := m.Ops.GetNextKey(cur, next); err != nil {
				check(t, "get_next_key", err, uapi.ENOENT)
				break
			}
			got = append(got, masked(int(binary.LittleEndian.Uint32(next)), next[4:]))
			cur = append(cur[:0], next...)
		}
		if want := ref.order(); !equalKeys(got, want) {
			t.Fatalf("keys %v, want %v", got, want)
		}
	})
}

func equalKeys(a, b [][3]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i][:], b[i][:]) {
			return false
		}
	}
	return true
}

func check(t *testing.T, what string, err, want error) {
	t.Helper()
	if want == nil && err != nil || want != nil && !errors.Is(err, want) {
		t.Fatalf("%s: %v, want %v", what, err, want)
	}
}

func newTrie2(t *testing.T, k *mapstest.Kernel, maxEntries uint32) *maps.Map {
	t.Helper()
	m, err := registry.Create(k, maps.Attr{Type: uapi.MapTypeLPMTrie, KeySize: 6, ValueSize: 4,
		MaxEntries: maxEntries, Flags: uapi.BPF_F_NO_PREALLOC}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Ops.Free)
	return m
}

// Lookups run without the writers' lock, as programs do: concurrent
// updates and deletes never show them a torn trie (run with -race).
func TestLookupsRunAlongsideWriters(t *testing.T) {
	k := mapstest.NewKernel(2)
	m := newTrie2(t, k, 64)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		key := make([]byte, 6)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			binary.LittleEndian.PutUint32(key, 16)
			key[4], key[5] = byte(i), byte(i>>8)
			if _, err := m.Ops.LookupElem(0, key); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := 0; i < 2000; i++ {
		key := append(binary.LittleEndian.AppendUint32(nil, uint32(i%17)), byte(i*7), byte(i*13))
		if i%3 == 2 {
			m.Ops.DeleteElem(0, key)
		} else {
			m.Ops.UpdateElem(0, key, []byte{1, 2, 3, 4}, uapi.BPF_ANY)
		}
	}
	close(stop)
	wg.Wait()
}
