package hashmap_test

import (
	"bytes"
	"testing"

	"github.com/bpfsim/bpfsim/hashmap"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func poisoned(n int) []byte { return bytes.Repeat([]byte{hashmap.PoisonFree}, n) }

// A program that looked a value up keeps a pointer to it. An update must
// not change what that pointer shows until the grace period ends; then the
// old element is poisoned.
func TestReplacedValueStaysIntactUntilTheGracePeriodThenIsPoisoned(t *testing.T) {
	for _, c := range configs[:2] {
		t.Run(c.name, func(t *testing.T) {
			k := newKernel(2)
			m := newConfigMap(t, k, c, 4, 16, 8, 0)
			key := key32(9)
			oldValue := []byte("the old value!!!")
			wantErrno(t, m.Ops.UpdateElem(0, key, oldValue, uapi.BPF_ANY), 0, "update")
			oldAddr, _ := m.Ops.LookupElem(0, key)
			wantErrno(t, m.Ops.UpdateElem(1, key, []byte("the new value..."), uapi.BPF_EXIST), 0, "replace")
			newAddr, _ := m.Ops.LookupElem(0, key)
			if newAddr == oldAddr {
				t.Fatal("the update rewrote the old element in place")
			}
			if got := read(t, k, oldAddr, 16); !bytes.Equal(got, oldValue) {
				t.Errorf("old value before the grace period = %q", got)
			}
			if got := read(t, k, newAddr, 16); !bytes.Equal(got, []byte("the new value...")) {
				t.Errorf("new value = %q", got)
			}
			if k.GracePeriod() != 1 {
				t.Error("the replacement queued no RCU callback")
			}
			elem := oldAddr - hashmap.ValueOffset(4)
			size := int(hashmap.ElemSize(4, 16, false))
			if got := read(t, k, elem, size); !bytes.Equal(got, poisoned(size)) {
				t.Errorf("old element after the grace period = % x, want all 0x6b", got)
			}
			if got := read(t, k, newAddr, 16); !bytes.Equal(got, []byte("the new value...")) {
				t.Errorf("new value after the grace period = %q", got)
			}
		})
	}
}

func TestDeletedElementIsNotReusedBeforeTheGracePeriod(t *testing.T) {
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			k := newKernel(2)
			m := newConfigMap(t, k, c, 4, 8, 1, 0)
			elemOf := m.Ops.(hashmap.ElemLookuper).LookupElemAddr
			wantErrno(t, update(t, k, m, key32(0), val(8, 100), uapi.BPF_ANY), 0, "first insert")
			first := elemOf(key32(0))
			used := map[uint64]bool{first: true}
			// Delete and insert far more often than there are spare
			// elements; no element may come back while callbacks wait.
			for i := uint32(1); i < 50; i++ {
				wantErrno(t, m.Ops.DeleteElem(0, key32(i-1)), 0, "delete")
				wantErrno(t, update(t, k, m, key32(i), val(8, uint64(100+i)), uapi.BPF_ANY), 0, "insert after a delete")
				e := elemOf(key32(i))
				if used[e] {
					t.Fatalf("insert %d reused element %#x before a grace period", i, e)
				}
				used[e] = true
			}
			if got := read(t, k, first+hashmap.KeyOffset, 4); !bytes.Equal(got, key32(0)) {
				t.Errorf("deleted element's key before the grace period = % x", got)
			}
			if n := k.GracePeriod(); n != 49 {
				t.Errorf("%d callbacks ran, want one per delete (49)", n)
			}
			size := int(hashmap.ElemSize(4, 8, c.percpu))
			if got := read(t, k, first, size); !bytes.Equal(got, poisoned(size)) {
				t.Errorf("deleted element after the grace period = % x, want poison", got)
			}
			// Now the freed elements are reused, and a reused element
			// shows no poison.
			wantErrno(t, m.Ops.DeleteElem(0, key32(49)), 0, "delete")
			k.GracePeriod()
			wantErrno(t, update(t, k, m, key32(7), val(8, 7), uapi.BPF_ANY), 0, "insert after the grace period")
			e := elemOf(key32(7))
			if !used[e] {
				t.Errorf("insert after the grace period took a new element %#x", e)
			}
			raw := read(t, k, e, size)
			if bytes.Contains(raw, []byte{hashmap.PoisonFree, hashmap.PoisonFree}) {
				t.Errorf("reused element shows poison: % x", raw)
			}
			if got := lookupValue(t, k, m, key32(7)); !bytes.Equal(got, val(8, 7)) {
				t.Errorf("value in the reused element = % x", got)
			}
		})
	}
}

func TestDeletedPercpuValuesArePoisonedOnEveryCPU(t *testing.T) {
	k := newKernel(3)
	m := newMap(t, k, maps.Attr{Type: uapi.MapTypePercpuHash, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	wantErrno(t, m.Ops.UpdateElem(1, key32(1), val(8, 11), uapi.BPF_ANY), 0, "update")
	var addrs []uint64
	for cpu := 0; cpu < 3; cpu++ {
		a, _ := m.Ops.LookupElem(cpu, key32(1))
		addrs = append(addrs, a)
	}
	wantErrno(t, m.Ops.DeleteElem(0, key32(1)), 0, "delete")
	if got := read(t, k, addrs[1], 8); !bytes.Equal(got, val(8, 11)) {
		t.Errorf("CPU 1's copy before the grace period = % x", got)
	}
	k.GracePeriod()
	for cpu, a := range addrs {
		if got := read(t, k, a, 8); !bytes.Equal(got, poisoned(8)) {
			t.Errorf("CPU %d's copy after the grace period = % x, want poison", cpu, got)
		}
	}
}

func TestCallbacksQueuedBeforeFreeDoNothing(t *testing.T) {
	for _, c := range configs {
		k := newKernel(2)
		m, err := registry.Create(k, maps.Attr{Type: c.typ, KeySize: 4, ValueSize: 8, MaxEntries: 4, Flags: c.flags}, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		wantErrno(t, update(t, k, m, key32(1), val(8, 1), uapi.BPF_ANY), 0, "update")
		wantErrno(t, m.Ops.DeleteElem(0, key32(1)), 0, "delete")
		m.Ops.Free()
		m.Ops.Free() // twice is harmless
		if n := k.GracePeriod(); n != 1 {
			t.Errorf("%s: %d callbacks, want 1", c.name, n)
		}
	}
}
