package sim_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// batchWalk reads the whole map with batch lookups of size batch (grown
// by one whenever a hash bucket does not fit: ENOSPC), with del deleting
// as it goes. It returns the keys and values in the order the batches
// gave them.
func batchWalk(t *testing.T, m *sim.Map, batch int, del bool) ([]uint32, []uint64) {
	t.Helper()
	percpu := m.Type() == ebpf.PerCPUHash || m.Type() == ebpf.PerCPUArray || m.Type() == ebpf.LRUCPUHash
	ncpu := 1
	if percpu {
		ncpu = m.Kernel().NumCPUs()
	}
	var cursor sim.MapBatchCursor
	var keys []uint32
	var values []uint64
	for range 10000 {
		ks, vs := make([]uint32, batch), make([]uint64, batch*ncpu)
		var n int
		var err error
		if del {
			n, err = m.BatchLookupAndDelete(&cursor, ks, vs, nil)
		} else {
			n, err = m.BatchLookup(&cursor, ks, vs, nil)
		}
		if errors.Is(err, uapi.ENOSPC) {
			if n != 0 {
				t.Fatalf("ENOSPC with a count of %d", n)
			}
			batch++
			continue
		}
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Fatalf("batch of %d: %v", batch, err)
		}
		if n > batch {
			t.Fatalf("batch of %d copied %d", batch, n)
		}
		keys = append(keys, ks[:n]...)
		values = append(values, vs[:n*ncpu]...)
		if err != nil {
			return keys, values
		}
	}
	t.Fatal("the batches never reached the end")
	return nil, nil
}

// nextKeyWalk lists the keys in get_next_key order.
func nextKeyWalk(t *testing.T, m *sim.Map) []uint32 {
	t.Helper()
	var keys []uint32
	var key any
	for {
		var next uint32
		err := m.NextKey(key, &next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return keys
		}
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, next)
		key = next
	}
}

func TestBatchLookupWalksEveryElementInGetNextKeyOrder(t *testing.T) {
	k := newKernel(t, &sim.Options{CPUs: 3})
	for _, c := range []struct {
		typ   ebpf.MapType
		flags uint32
		max   uint32
		keys  int
	}{
		{ebpf.Hash, 0, 64, 50},
		{ebpf.Hash, uapi.BPF_F_NO_PREALLOC | uapi.BPF_F_ZERO_SEED, 1000, 700},
		{ebpf.PerCPUHash, 0, 64, 64},
		{ebpf.LRUHash, 0, 64, 40},
		{ebpf.LRUCPUHash, 0, 64, 40},
		{ebpf.Array, 0, 33, 33},
		{ebpf.PerCPUArray, 0, 9, 9},
	} {
		for _, batch := range []int{1, 2, 7, 64, 2000} {
			t.Run(fmt.Sprintf("%v flags %#x batch %d", c.typ, c.flags, batch), func(t *testing.T) {
				m := newMap(t, k, &ebpf.MapSpec{Type: c.typ, KeySize: 4, ValueSize: 8, MaxEntries: c.max, Flags: c.flags})
				percpu := c.typ == ebpf.PerCPUHash || c.typ == ebpf.PerCPUArray || c.typ == ebpf.LRUCPUHash
				want := map[uint32]uint64{}
				for i := range c.keys {
					key := uint32(i * 7)
					if c.typ == ebpf.Array || c.typ == ebpf.PerCPUArray {
						key = uint32(i)
					}
					v := uint64(key)*1000 + 1
					want[key] = v
					var err error
					if percpu {
						err = m.Put(key, []uint64{v, v + 1, v + 2})
					} else {
						err = m.Put(key, v)
					}
					if err != nil {
						t.Fatal(err)
					}
				}
				order := nextKeyWalk(t, m)
				keys, values := batchWalk(t, m, batch, false)
				if !slices.Equal(keys, order) {
					t.Fatalf("batch order %v\nget_next_key order %v", keys, order)
				}
				stride := 1
				if percpu {
					stride = 3
				}
				for i, key := range keys {
					v := want[key]
					if values[i*stride] != v || percpu && values[i*stride+2] != v+2 {
						t.Fatalf("key %d: value %v, want %d", key, values[i*stride:(i+1)*stride], v)
					}
				}
			})
		}
	}
}

func TestBatchLookupAndDeleteEmptiesTheMap(t *testing.T) {
	k := newKernel(t, &sim.Options{CPUs: 2})
	for _, typ := range []ebpf.MapType{ebpf.Hash, ebpf.PerCPUHash, ebpf.LRUHash, ebpf.LRUCPUHash} {
		t.Run(typ.String(), func(t *testing.T) {
			m := newMap(t, k, &ebpf.MapSpec{Type: typ, KeySize: 4, ValueSize: 8, MaxEntries: 128})
			for i := range uint32(100) {
				v := any(uint64(i))
				if typ == ebpf.PerCPUHash || typ == ebpf.LRUCPUHash {
					v = []uint64{uint64(i), uint64(i)}
				}
				if err := m.Put(i, v); err != nil {
					t.Fatal(err)
				}
			}
			order := nextKeyWalk(t, m)
			keys, _ := batchWalk(t, m, 5, true)
			if !slices.Equal(keys, order) {
				t.Fatalf("deleted %v\nwant %v", keys, order)
			}
			if left := nextKeyWalk(t, m); len(left) != 0 {
				t.Fatalf("keys left: %v", left)
			}
			// The map takes as many keys again: the deletes gave every
			// element back.
			for i := range uint32(128) {
				v := any(uint64(i))
				if typ == ebpf.PerCPUHash || typ == ebpf.LRUCPUHash {
					v = []uint64{0, 0}
				}
				if err := m.Update(i, v, ebpf.UpdateNoExist); err != nil {
					t.Fatalf("refilling key %d: %v", i, err)
				}
			}
		})
	}
}

// sameBucketKeys returns two keys that fall in one bucket of a
// zero-seeded hash map of two elements: with both in, a batch of one
// cannot hold that bucket.
func sameBucketKeys(t *testing.T, k *sim.Kernel) []uint32 {
	t.Helper()
	m := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 2, Flags: uapi.BPF_F_ZERO_SEED})
	if err := m.Put(uint32(0), uint64(0)); err != nil {
		t.Fatal(err)
	}
	for key := uint32(1); key < 1000; key++ {
		if err := m.Put(key, uint64(0)); err != nil {
			t.Fatal(err)
		}
		_, err := m.BatchLookup(new(sim.MapBatchCursor), make([]uint32, 1), make([]uint64, 1), nil)
		if errors.Is(err, uapi.ENOSPC) {
			return []uint32{0, key}
		}
		if err := m.Delete(key); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("no key shares key 0's bucket")
	return nil
}

func TestBatchLookupOfABucketLargerThanTheBatchIsENOSPC(t *testing.T) {
	k := newKernel(t, nil)
	keys := sameBucketKeys(t, k)
	m := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 2, Flags: uapi.BPF_F_ZERO_SEED})
	for _, key := range keys {
		if err := m.Put(key, uint64(key)); err != nil {
			t.Fatal(err)
		}
	}
	var cursor sim.MapBatchCursor
	n, err := m.BatchLookup(&cursor, make([]uint32, 1), make([]uint64, 1), nil)
	if n != 0 || !errors.Is(err, uapi.ENOSPC) {
		t.Fatalf("batch of 1 over a bucket of 2: %d, %v; want 0, ENOSPC", n, err)
	}
	// The cursor names the bucket that did not fit: a larger batch
	// resumes there and gets both keys, then the end.
	ks, vs := make([]uint32, 2), make([]uint64, 2)
	n, err = m.BatchLookup(&cursor, ks, vs, nil)
	if n != 2 || !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("batch of 2: %d, %v; want 2, ENOENT", n, err)
	}
	slices.Sort(ks)
	slices.Sort(keys)
	if !slices.Equal(ks, keys) || vs[0]+vs[1] != uint64(keys[0]+keys[1]) {
		t.Fatalf("got %v %v, want keys %v", ks, vs, keys)
	}
}

func TestBatchCommandsAMapTypeLacksAreENOTSUPP(t *testing.T) {
	k := newKernel(t, nil)
	array := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	queue := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Queue, ValueSize: 8, MaxEntries: 4})
	progs := newMap(t, k, &ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 4})
	for _, c := range []struct {
		name string
		do   func() (int, error)
		n    int
	}{
		{"array lookup-and-delete", func() (int, error) {
			return array.BatchLookupAndDelete(new(sim.MapBatchCursor), make([]uint32, 2), make([]uint64, 2), nil)
		}, 0},
		{"array delete", func() (int, error) { return array.BatchDelete([]uint32{0, 1}, nil) }, 2},
		{"queue lookup", func() (int, error) {
			return queue.BatchLookup(new(sim.MapBatchCursor), make([]uint32, 0), make([]uint64, 0), nil)
		}, 0},
		{"queue update", func() (int, error) { return queue.BatchUpdate([]struct{}{{}}, []uint64{1}, nil) }, 1},
		{"prog array update", func() (int, error) { return progs.BatchUpdate([]uint32{0}, []uint32{0}, nil) }, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, err := c.do()
			if !errors.Is(err, uapi.ENOTSUPP) || !errors.Is(err, ebpf.ErrNotSupported) || n != c.n {
				t.Fatalf("%d, %v; want %d, ENOTSUPP", n, err, c.n)
			}
		})
	}
}

func TestBatchFlagsAreCheckedAsTheKernelChecksThem(t *testing.T) {
	k := newKernel(t, nil)
	hash := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	array := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	lookup := func(m *sim.Map, count int, opts *ebpf.BatchOptions) func() (int, error) {
		return func() (int, error) {
			return m.BatchLookup(new(sim.MapBatchCursor), make([]uint32, count), make([]uint64, count), opts)
		}
	}
	for _, c := range []struct {
		name    string
		do      func() (int, error)
		n       int
		errno   error
		noError bool
	}{
		{"hash lookup, elem_flags BPF_NOEXIST", lookup(hash, 2, &ebpf.BatchOptions{ElemFlags: 1}), 0, uapi.EINVAL, false},
		{"hash lookup, BPF_F_LOCK without a lock", lookup(hash, 2, &ebpf.BatchOptions{ElemFlags: uapi.BPF_F_LOCK}), 0, uapi.EINVAL, false},
		{"hash lookup, flags 1", lookup(hash, 2, &ebpf.BatchOptions{Flags: 1}), 0, uapi.EINVAL, false},
		{"hash lookup, flags 1, count 0", lookup(hash, 0, &ebpf.BatchOptions{Flags: 1}), 0, uapi.EINVAL, false},
		{"hash lookup, count 0", lookup(hash, 0, nil), 0, nil, true},
		{"array lookup ignores flags", lookup(array, 4, &ebpf.BatchOptions{Flags: 1}), 4, nil, true},
		{"array lookup, elem_flags 8, count 0", lookup(array, 0, &ebpf.BatchOptions{ElemFlags: 8}), 0, uapi.EINVAL, false},
		{"hash update, BPF_EXIST", func() (int, error) {
			return hash.BatchUpdate([]uint32{1}, []uint64{1}, &ebpf.BatchOptions{ElemFlags: uapi.BPF_EXIST})
		}, 1, uapi.EINVAL, false},
		{"hash update ignores flags", func() (int, error) {
			return hash.BatchUpdate([]uint32{1, 2}, []uint64{1, 2}, &ebpf.BatchOptions{Flags: 1})
		}, 2, nil, true},
		{"hash delete, elem_flags 2", func() (int, error) {
			return hash.BatchDelete([]uint32{1}, &ebpf.BatchOptions{ElemFlags: 2})
		}, 1, uapi.EINVAL, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, err := c.do()
			switch {
			case c.noError && err != nil:
				t.Fatalf("%d, %v; want %d, no error", n, err, c.n)
			case !c.noError && !errors.Is(err, c.errno):
				t.Fatalf("%d, %v; want %d, %v", n, err, c.n, c.errno)
			case n != c.n:
				t.Fatalf("count %d, want %d (%v)", n, c.n, err)
			}
		})
	}
}

func TestBatchUpdateAndDeleteStopAtTheFirstFailingElement(t *testing.T) {
	k := newKernel(t, nil)
	hash := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 2})
	array := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2})
	for _, c := range []struct {
		name  string
		do    func() (int, error)
		n     int
		errno error
	}{
		{"a third key in a hash of two", func() (int, error) {
			return hash.BatchUpdate([]uint32{1, 2, 3}, []uint64{1, 2, 3}, nil)
		}, 2, uapi.E2BIG},
		{"an index past the array", func() (int, error) {
			return array.BatchUpdate([]uint32{1, 5, 0}, []uint64{1, 2, 3}, nil)
		}, 1, uapi.E2BIG},
		{"a missing key", func() (int, error) { return hash.BatchDelete([]uint32{2, 9, 1}, nil) }, 1, uapi.ENOENT},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, err := c.do()
			if n != c.n || !errors.Is(err, c.errno) {
				t.Fatalf("%d, %v; want %d, %v", n, err, c.n, c.errno)
			}
		})
	}
	// What the failed commands did before failing stays done.
	if got := nextKeyWalk(t, hash); !slices.Equal(got, []uint32{1}) {
		t.Fatalf("hash keys %v, want [1]", got)
	}
	var v uint64
	if err := array.Lookup(uint32(1), &v); err != nil || v != 1 {
		t.Fatalf("array[1] = %d, %v; want 1", v, err)
	}
}

func TestBatchCommandsFollowTheFilesAccessMode(t *testing.T) {
	k := newKernel(t, nil)
	ro := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 2, Flags: uapi.BPF_F_RDONLY})
	wo := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 2, Flags: uapi.BPF_F_WRONLY})
	frozen := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2})
	if err := frozen.Freeze(); err != nil {
		t.Fatal(err)
	}
	lookup := func(m *sim.Map, del bool) func() (int, error) {
		return func() (int, error) {
			if del {
				return m.BatchLookupAndDelete(new(sim.MapBatchCursor), make([]uint32, 1), make([]uint64, 1), nil)
			}
			return m.BatchLookup(new(sim.MapBatchCursor), make([]uint32, 1), make([]uint64, 1), nil)
		}
	}
	for _, c := range []struct {
		name  string
		do    func() (int, error)
		errno error
	}{
		{"read-only: update", func() (int, error) { return ro.BatchUpdate([]uint32{1}, []uint64{1}, nil) }, uapi.EPERM},
		{"read-only: lookup-and-delete", lookup(ro, true), uapi.EPERM},
		{"read-only: lookup", lookup(ro, false), uapi.ENOENT},
		{"write-only: lookup", lookup(wo, false), uapi.EPERM},
		{"write-only: delete", func() (int, error) { return wo.BatchDelete([]uint32{1}, nil) }, uapi.ENOENT},
		{"frozen: update", func() (int, error) { return frozen.BatchUpdate([]uint32{1}, []uint64{1}, nil) }, uapi.EPERM},
		{"frozen: lookup", lookup(frozen, false), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.do()
			if c.errno == nil && err != nil || c.errno != nil && !errors.Is(err, c.errno) {
				t.Fatalf("%v; want %v", err, c.errno)
			}
		})
	}
}

func TestBatchCursorBelongsToOneMap(t *testing.T) {
	k := newKernel(t, nil)
	a := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	b := newMap(t, k, &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	var cursor sim.MapBatchCursor
	if _, err := a.BatchLookup(&cursor, make([]uint32, 1), make([]uint64, 1), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.BatchLookup(&cursor, make([]uint32, 1), make([]uint64, 1), nil); err == nil {
		t.Fatal("a cursor of one map was accepted by another")
	}
	if _, err := a.BatchLookup(nil, make([]uint32, 1), make([]uint64, 1), nil); err == nil {
		t.Fatal("a nil cursor was accepted")
	}
}

func TestBatchOnMapsOfMapsTakesFdsAndGivesIDs(t *testing.T) {
	k := newKernel(t, nil)
	innerSpec := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}
	inner := []*sim.Map{newMap(t, k, innerSpec), newMap(t, k, innerSpec), newMap(t, k, innerSpec)}
	for _, typ := range []ebpf.MapType{ebpf.HashOfMaps, ebpf.ArrayOfMaps} {
		t.Run(typ.String(), func(t *testing.T) {
			outer := newMap(t, k, &ebpf.MapSpec{Type: typ, KeySize: 4, ValueSize: 4, MaxEntries: 4, InnerMap: innerSpec})
			// Handles and raw fds both name maps.
			if n, err := outer.BatchUpdate([]uint32{0, 2}, []*sim.Map{inner[0], inner[1]}, nil); n != 2 || err != nil {
				t.Fatalf("update by handle: %d, %v", n, err)
			}
			if n, err := outer.BatchUpdate([]uint32{3}, []uint32{uint32(inner[2].FD())}, nil); n != 1 || err != nil {
				t.Fatalf("update by fd: %d, %v", n, err)
			}
			if n, err := outer.BatchUpdate([]uint32{1}, []uint32{0}, nil); n != 0 || !errors.Is(err, uapi.EINVAL) {
				t.Fatalf("update with stdin's fd: %d, %v; want 0, EINVAL", n, err)
			}
			keys, ids := make([]uint32, 4), make([]uint32, 4)
			n, err := outer.BatchLookup(new(sim.MapBatchCursor), keys, ids, nil)
			if n != 3 || (err != nil && !errors.Is(err, ebpf.ErrKeyNotExist)) {
				t.Fatalf("lookup: %d, %v", n, err)
			}
			got := map[uint32]uint32{}
			for i := range n {
				got[keys[i]] = ids[i]
			}
			want := map[uint32]uint32{0: inner[0].ID(), 2: inner[1].ID(), 3: inner[2].ID()}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("ids %v, want %v", got, want)
			}
		})
	}
}

func TestBatchOfPerCPUValuesTakesRawBytes(t *testing.T) {
	k := newKernel(t, &sim.Options{CPUs: 2})
	m := newMap(t, k, &ebpf.MapSpec{Type: ebpf.PerCPUHash, KeySize: 4, ValueSize: 4, MaxEntries: 4})
	// Two keys, two CPUs, each copy 4 bytes rounded up to 8.
	raw := make([]byte, 2*2*8)
	for i := range 4 {
		binary.LittleEndian.PutUint32(raw[i*8:], uint32(10+i))
	}
	if n, err := m.BatchUpdate([]uint32{1, 2}, raw, nil); n != 2 || err != nil {
		t.Fatalf("update: %d, %v", n, err)
	}
	var v []uint32
	if err := m.Lookup(uint32(2), &v); err != nil || !slices.Equal(v, []uint32{12, 13}) {
		t.Fatalf("key 2: %v, %v", v, err)
	}
	keys, values := make([]uint32, 2), make([]uint32, 4)
	if n, err := m.BatchLookup(new(sim.MapBatchCursor), keys, values, nil); n != 2 || !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("lookup: %d, %v", n, err)
	}
	for i, key := range keys {
		if values[2*i] != 10+2*(key-1) || values[2*i+1] != 11+2*(key-1) {
			t.Fatalf("key %d: %v", key, values[2*i:2*i+2])
		}
	}
}

// BenchmarkMapBatchLookup reads a map of 10,000 elements in batches of
// 256, a whole walk per iteration; ns/elem is the cost of one element.
func BenchmarkMapBatchLookup(b *testing.B) {
	k := newKernel(b, nil)
	for _, typ := range []ebpf.MapType{ebpf.Hash, ebpf.Array} {
		b.Run(typ.String(), func(b *testing.B) {
			const entries, batch = 10000, 256
			m := newMap(b, k, &ebpf.MapSpec{Type: typ, KeySize: 4, ValueSize: 8, MaxEntries: entries})
			keys, values := make([]uint32, entries), make([]uint64, entries)
			for i := range keys {
				keys[i], values[i] = uint32(i), uint64(i)
			}
			if _, err := m.BatchUpdate(keys, values, nil); err != nil {
				b.Fatal(err)
			}
			ks, vs := make([]uint32, batch), make([]uint64, batch)
			b.ResetTimer()
			for b.Loop() {
				var cursor sim.MapBatchCursor
				total := 0
				for {
					n, err := m.BatchLookup(&cursor, ks, vs, nil)
					total += n
					if errors.Is(err, ebpf.ErrKeyNotExist) {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				if total != entries {
					b.Fatalf("walked %d elements, want %d", total, entries)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/entries, "ns/elem")
		})
	}
}

// BenchmarkMapBatchUpdate writes 256 elements of a hash map per batch.
func BenchmarkMapBatchUpdate(b *testing.B) {
	k := newKernel(b, nil)
	const batch = 256
	m := newMap(b, k, &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: batch})
	keys, values := make([]uint32, batch), make([]uint64, batch)
	for i := range keys {
		keys[i], values[i] = uint32(i), uint64(i)
	}
	for b.Loop() {
		if _, err := m.BatchUpdate(keys, values, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/batch, "ns/elem")
}

// fuzzKey is a key with its own marshaling, as a user's type may have.
type fuzzKey struct{ v uint32 }

func (k fuzzKey) MarshalBinary() ([]byte, error) {
	return binary.LittleEndian.AppendUint32(nil, k.v), nil
}
func (k *fuzzKey) UnmarshalBinary(b []byte) error {
	if len(b) != 4 {
		return errors.New("a fuzzKey is 4 bytes")
	}
	k.v = binary.LittleEndian.Uint32(b)
	return nil
}

// fuzzKeys returns keys as one of the slice types a caller may pass,
// chosen by form: the marshaling of batch buffers under test. Form 3 is
// a slice of the wrong size, which must be refused before anything
// changes.
func fuzzKeys(form byte, keys []uint32) any {
	switch form % 4 {
	case 1:
		out := make([][4]byte, len(keys))
		for i, k := range keys {
			binary.LittleEndian.PutUint32(out[i][:], k)
		}
		return out
	case 2:
		out := make([]fuzzKey, len(keys))
		for i, k := range keys {
			out[i].v = k
		}
		return out
	case 3:
		out := make([]uint16, len(keys))
		for i, k := range keys {
			out[i] = uint16(k)
		}
		return out
	}
	return keys
}

func fuzzKeysBack(s any) []uint32 {
	switch s := s.(type) {
	case [][4]byte:
		out := make([]uint32, len(s))
		for i := range s {
			out[i] = binary.LittleEndian.Uint32(s[i][:])
		}
		return out
	case []fuzzKey:
		out := make([]uint32, len(s))
		for i := range s {
			out[i] = s[i].v
		}
		return out
	case []uint16:
		out := make([]uint32, len(s))
		for i := range s {
			out[i] = uint32(s[i])
		}
		return out
	}
	return s.([]uint32)
}

// FuzzMapBatch runs byte-coded sequences of batch updates, deletes and
// lookups (with and without delete, of any size, resumed or fresh, keys
// in several Go types, some of them wrong) on a small hash map or array
// and checks each against a model of the map: what a batch update or
// delete does before it stops, that a full walk of lookups sees every
// key once with its value, and that nothing panics or half-applies a
// refused command.
func FuzzMapBatch(f *testing.F) {
	f.Add([]byte{0, 2, 5, 1, 2, 3, 4, 5, 3, 2, 0, 4, 1})
	f.Add([]byte{1, 2, 8, 0, 1, 2, 3, 4, 5, 6, 7, 5, 3, 1, 4, 0, 2, 2})
	f.Add([]byte{0, 2, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 4, 1, 0, 6, 0, 1, 3, 5, 2})
	k, err := sim.NewKernel(nil)
	if err != nil {
		f.Fatal(err)
	}
	const maxEntries = 8
	f.Fuzz(func(t *testing.T, code []byte) {
		if len(code) == 0 {
			return
		}
		typ := ebpf.Hash
		if code[0]%2 == 1 {
			typ = ebpf.Array
		}
		m, err := k.NewMap(&ebpf.MapSpec{Type: typ, KeySize: 4, ValueSize: 8, MaxEntries: maxEntries, Flags: uapi.BPF_F_NO_PREALLOC * uint32(code[0]/2%2)})
		if err != nil {
			t.Skip(err) // BPF_F_NO_PREALLOC on an array
		}
		defer m.Close()
		model := map[uint32]uint64{}
		if typ == ebpf.Array {
			for i := range uint32(maxEntries) {
				model[i] = 0
			}
		}
		next := func() byte {
			if len(code) == 0 {
				return 0
			}
			b := code[0]
			code = code[1:]
			return b
		}
		code = code[1:]
		var cursor sim.MapBatchCursor
		for len(code) > 0 {
			op, n, form := next()%5, int(next()%12), next()
			keys := make([]uint32, n)
			for i := range keys {
				keys[i] = uint32(next() % 12)
			}
			switch op {
			case 0, 1: // batch update, then its check against the model
				values := make([]uint64, n)
				for i := range values {
					values[i] = uint64(keys[i])<<8 | uint64(len(code))
				}
				got, err := m.BatchUpdate(fuzzKeys(form, keys), values, nil)
				want, wantErr := 0, error(nil)
				if form%4 == 3 && n > 0 {
					want, wantErr = 0, uapi.EINVAL
				} else {
					for _, key := range keys {
						_, ok := model[key]
						if typ == ebpf.Array && !ok || typ == ebpf.Hash && !ok && len(model) == maxEntries {
							wantErr = uapi.E2BIG
							break
						}
						model[key] = values[want]
						want++
					}
				}
				if got != want || (wantErr == nil) != (err == nil) || wantErr != nil && !errors.Is(err, wantErr) {
					t.Fatalf("update %v: %d, %v; want %d, %v", keys, got, err, want, wantErr)
				}
			case 2: // batch delete
				got, err := m.BatchDelete(fuzzKeys(form, keys), nil)
				want, wantErr := 0, error(nil)
				switch {
				case form%4 == 3 && n > 0:
					wantErr = uapi.EINVAL
				case typ == ebpf.Array:
					// Refused before the first key: the count asked
					// comes back.
					want, wantErr = n, uapi.ENOTSUPP
				default:
					for _, key := range keys {
						if _, ok := model[key]; !ok {
							wantErr = uapi.ENOENT
							break
						}
						delete(model, key)
						want++
					}
				}
				if got != want || (wantErr == nil) != (err == nil) || wantErr != nil && !errors.Is(err, wantErr) {
					t.Fatalf("delete %v: %d, %v; want %d, %v", keys, got, err, want, wantErr)
				}
			case 3: // one batch lookup from the running cursor
				if form%2 == 0 {
					cursor = sim.MapBatchCursor{}
				}
				ks, vs := fuzzKeys(form/2, make([]uint32, n)), make([]uint64, n)
				got, err := m.BatchLookup(&cursor, ks, vs, nil)
				if form/2%4 == 3 && n > 0 {
					if !errors.Is(err, uapi.EINVAL) {
						t.Fatalf("lookup into %T: %v", ks, err)
					}
					cursor = sim.MapBatchCursor{}
					break
				}
				if err != nil && !errors.Is(err, uapi.ENOENT) && !errors.Is(err, uapi.ENOSPC) {
					t.Fatalf("lookup of %d: %v", n, err)
				}
				for i, key := range fuzzKeysBack(ks)[:got] {
					if v, ok := model[key]; !ok || v != vs[i] {
						t.Fatalf("lookup gave key %d = %d; the model has %d, %v", key, vs[i], v, ok)
					}
				}
				if err != nil {
					cursor = sim.MapBatchCursor{}
				}
			case 4: // a whole walk, deleting or not
				del := form%2 == 1 && typ == ebpf.Hash
				seen := map[uint32]bool{}
				var c sim.MapBatchCursor
				size := max(n, 1)
				for range 100 {
					ks, vs := make([]uint32, size), make([]uint64, size)
					var got int
					var err error
					if del {
						got, err = m.BatchLookupAndDelete(&c, ks, vs, nil)
					} else {
						got, err = m.BatchLookup(&c, ks, vs, nil)
					}
					if errors.Is(err, uapi.ENOSPC) {
						size++
						continue
					}
					for i, key := range ks[:got] {
						if v, ok := model[key]; seen[key] || !ok || v != vs[i] {
							t.Fatalf("walk gave key %d = %d (seen %v); the model has %d, %v", key, vs[i], seen[key], v, ok)
						}
						seen[key] = true
					}
					if err != nil {
						if !errors.Is(err, uapi.ENOENT) {
							t.Fatal(err)
						}
						break
					}
				}
				if len(seen) != len(model) {
					t.Fatalf("walk saw %d keys, the model has %d", len(seen), len(model))
				}
				if del {
					clear(model)
				}
			}
		}
	})
}
