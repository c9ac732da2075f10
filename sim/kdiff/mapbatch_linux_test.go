//go:build linux

package kdiff

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// The batch map commands compared with this machine's kernel through
// cilium/ebpf: the same random sequences of single updates and deletes,
// batch updates and deletes, and batch lookups (with and without delete,
// resuming from their cursors or starting afresh) with random batch sizes
// and flags, on every map type that has batches. Each step must give the
// same count and errno, and each lookup the same keys, in the same
// order, with the same values; the contents are compared after every
// step that changed them. Hashes are seeded with zero (BPF_F_ZERO_SEED),
// so that both kernels put each key in the same bucket.

// bdElems makes a slice of n elements of size bytes each ([size]byte),
// which cilium/ebpf and bpfsim both marshal as their bytes.
func bdElems(size, n int) any {
	return reflect.MakeSlice(reflect.SliceOf(reflect.ArrayOf(size, reflect.TypeFor[byte]())), n, n).Interface()
}

func bdFill(s any, b []byte) any {
	if _, err := binary.Decode(b, binary.LittleEndian, s); err != nil {
		panic(err)
	}
	return s
}

func bdBytes(s any) []byte {
	b, err := binary.Append(nil, binary.LittleEndian, s)
	if err != nil {
		panic(err)
	}
	return b
}

// bdSide is one kernel's map, with the cursors of its lookups.
type bdSide struct {
	update  func(key, value any, flags ebpf.MapUpdateFlags) error
	del     func(key any) error
	bupdate func(keys, values any, opts *ebpf.BatchOptions) (int, error)
	bdelete func(keys any, opts *ebpf.BatchOptions) (int, error)
	// blookup runs a lookup batch with the cursor of its kind (del:
	// lookup-and-delete), first starting it afresh if reset.
	blookup   func(del, reset bool, keys, values any, opts *ebpf.BatchOptions) (int, error)
	nextKey   func(key any, out []byte) error
	lookupRaw func(key []byte) ([]byte, error)
	// inner are the fds of the maps a map of maps' values name, and ids
	// maps their ids back to their index.
	inner []uint32
	ids   map[uint32]byte
}

func kernelBatchSide(t *testing.T, m *ebpf.Map, inner []*ebpf.Map) *bdSide {
	var lookupCursor, deleteCursor ebpf.MapBatchCursor
	s := &bdSide{
		update:  m.Update,
		del:     m.Delete,
		bupdate: m.BatchUpdate,
		bdelete: m.BatchDelete,
		blookup: func(del, reset bool, keys, values any, opts *ebpf.BatchOptions) (int, error) {
			c := &lookupCursor
			if del {
				c = &deleteCursor
			}
			if reset {
				*c = ebpf.MapBatchCursor{}
			}
			if del {
				return m.BatchLookupAndDelete(c, keys, values, opts)
			}
			return m.BatchLookup(c, keys, values, opts)
		},
		nextKey:   func(key any, out []byte) error { return m.NextKey(key, out) },
		lookupRaw: func(key []byte) ([]byte, error) { return m.LookupBytes(key) },
		ids:       map[uint32]byte{},
	}
	for i, im := range inner {
		s.inner = append(s.inner, uint32(im.FD()))
		info, err := im.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info.ID()
		s.ids[uint32(id)] = byte(i)
	}
	return s
}

func simBatchSide(m *sim.Map, inner []*sim.Map) *bdSide {
	var lookupCursor, deleteCursor sim.MapBatchCursor
	s := &bdSide{
		update:  m.Update,
		del:     m.Delete,
		bupdate: m.BatchUpdate,
		bdelete: m.BatchDelete,
		blookup: func(del, reset bool, keys, values any, opts *ebpf.BatchOptions) (int, error) {
			c := &lookupCursor
			if del {
				c = &deleteCursor
			}
			if reset {
				*c = sim.MapBatchCursor{}
			}
			if del {
				return m.BatchLookupAndDelete(c, keys, values, opts)
			}
			return m.BatchLookup(c, keys, values, opts)
		},
		nextKey:   func(key any, out []byte) error { return m.NextKey(key, out) },
		lookupRaw: func(key []byte) ([]byte, error) { return m.LookupBytes(key) },
		ids:       map[uint32]byte{},
	}
	for i, im := range inner {
		s.inner = append(s.inner, uint32(im.FD()))
		s.ids[im.ID()] = byte(i)
	}
	return s
}

// bdCase is a map to compare and how its keys are drawn.
type bdCase struct {
	name string
	spec *ebpf.MapSpec
	key  func(rng *rand.Rand) []byte
}

func bdIntKey(size, n int) func(*rand.Rand) []byte {
	return func(rng *rand.Rand) []byte {
		k := make([]byte, size)
		binary.LittleEndian.PutUint32(k, uint32(rng.IntN(n)))
		for i := 4; i < size; i++ {
			k[i] = byte(0xa0 + i)
		}
		return k
	}
}

// bdLPMKey draws a prefix of a few addresses, so that prefixes nest.
func bdLPMKey(rng *rand.Rand) []byte {
	addrs := [][4]byte{{10, 0, 0, 0}, {10, 0, 1, 0}, {10, 1, 0, 0}, {192, 168, 7, 1}}
	k := make([]byte, 8)
	binary.LittleEndian.PutUint32(k, uint32(rng.IntN(33)))
	a := addrs[rng.IntN(len(addrs))]
	copy(k[4:], a[:])
	return k
}

func TestMapBatchCommandsAreTheKernels(t *testing.T) {
	kern, err := OpenKernel()
	if err != nil {
		t.Skipf("skipped: this machine cannot load BPF programs: %v", err)
	}
	ncpu := kern.PossibleCPUs()
	if kern.PinnableCPUs() < 1 {
		t.Skip("skipped: this process may not run on CPU 0, where bpfsim's user space runs (the LRU lists are per CPU)")
	}
	s, err := NewSimCPUs(ncpu)
	if err != nil {
		t.Fatal(err)
	}
	const zs = uapi.BPF_F_ZERO_SEED
	innerSpec := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}
	cases := []bdCase{
		{"hash", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 16, Flags: zs}, bdIntKey(4, 24)},
		{"hash, one bucket of two", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 2, Flags: zs}, bdIntKey(4, 6)},
		{"hash, no prealloc, odd sizes", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 6, ValueSize: 12, MaxEntries: 64,
			Flags: zs | uapi.BPF_F_NO_PREALLOC}, bdIntKey(6, 80)},
		{"percpu_hash", &ebpf.MapSpec{Type: ebpf.PerCPUHash, KeySize: 4, ValueSize: 8, MaxEntries: 16, Flags: zs}, bdIntKey(4, 24)},
		{"percpu_hash, 4-byte values", &ebpf.MapSpec{Type: ebpf.PerCPUHash, KeySize: 4, ValueSize: 4, MaxEntries: 8, Flags: zs}, bdIntKey(4, 12)},
		{"lru_hash", &ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 32, Flags: zs}, bdIntKey(4, 48)},
		{"lru_percpu_hash", &ebpf.MapSpec{Type: ebpf.LRUCPUHash, KeySize: 4, ValueSize: 8, MaxEntries: 32, Flags: zs}, bdIntKey(4, 40)},
		{"array", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 12}, bdIntKey(4, 14)},
		{"percpu_array", &ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 12, MaxEntries: 6}, bdIntKey(4, 8)},
		{"hash with a spin lock", &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 16, MaxEntries: 16, Flags: zs, Key: lmU32, Value: lmVal}, bdIntKey(4, 20)},
		{"array with a spin lock", &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 8, Key: lmU32, Value: lmVal}, bdIntKey(4, 9)},
		{"lpm_trie", &ebpf.MapSpec{Type: ebpf.LPMTrie, KeySize: 8, ValueSize: 8, MaxEntries: 12, Flags: uapi.BPF_F_NO_PREALLOC}, bdLPMKey},
		{"hash_of_maps", &ebpf.MapSpec{Type: ebpf.HashOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 8, Flags: zs, InnerMap: innerSpec}, bdIntKey(4, 12)},
		{"array_of_maps", &ebpf.MapSpec{Type: ebpf.ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 6, InnerMap: innerSpec}, bdIntKey(4, 7)},
	}
	var stats bdStats
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The kernel's user-space updates of an LRU map take nodes
			// from the running CPU's lists; bpfsim's user space runs on
			// CPU 0.
			var failed error
			if err := onCPU(0, func() { failed = compareBatches(t, s.K, c, ncpu, &stats) }); err != nil {
				t.Fatal(err)
			}
			if failed != nil {
				t.Error(failed)
			}
		})
	}
	t.Logf("%d steps compared: %d batch lookups (%d with delete) returned %d elements alike, %d in order after others of their batch; "+
		"%d batch updates, %d batch deletes; %d lookups ended with ENOSPC, %d with ENOENT",
		stats.steps, stats.lookups, stats.lookupDeletes, stats.elements, stats.ordered, stats.updates, stats.deletes, stats.enospc, stats.enoent)
}

type bdStats struct {
	steps, lookups, lookupDeletes, elements, ordered, updates, deletes, enospc, enoent int
}

// compareBatches runs one case's random sequence; it returns the first
// difference rather than failing t, as it runs on a pinned thread.
func compareBatches(t *testing.T, k *sim.Kernel, c bdCase, ncpu int, stats *bdStats) error {
	spec := c.spec
	km, err := ebpf.NewMap(spec)
	if err != nil {
		return fmt.Errorf("kernel map: %w", err)
	}
	defer km.Close()
	sm, err := k.NewMap(spec)
	if err != nil {
		return fmt.Errorf("bpfsim map: %w", err)
	}
	defer sm.Close()
	var kInner []*ebpf.Map
	var sInner []*sim.Map
	if spec.InnerMap != nil {
		for range 3 {
			ki, err := ebpf.NewMap(spec.InnerMap)
			if err != nil {
				return err
			}
			defer ki.Close()
			si, err := k.NewMap(spec.InnerMap)
			if err != nil {
				return err
			}
			defer si.Close()
			kInner, sInner = append(kInner, ki), append(sInner, si)
		}
	}
	kside, sside := kernelBatchSide(t, km, kInner), simBatchSide(sm, sInner)
	percpu := spec.Type == ebpf.PerCPUHash || spec.Type == ebpf.LRUCPUHash || spec.Type == ebpf.PerCPUArray
	fdValues := spec.InnerMap != nil
	keySize, valueSize := int(spec.KeySize), int(spec.ValueSize)
	copies := 1
	if percpu {
		copies = ncpu
	}
	// value draws the value of one key: every CPU's copy for per-CPU
	// maps, an inner map's index for maps of maps.
	value := func(rng *rand.Rand) []byte {
		v := make([]byte, valueSize*copies)
		for i := range v {
			v[i] = byte(rng.Uint32())
		}
		if fdValues {
			v = []byte{byte(rng.IntN(len(kInner))), 0, 0, 0}
		}
		return v
	}
	// sideValues turns drawn values into what a side writes: fds of its
	// own inner maps for maps of maps.
	sideValues := func(side *bdSide, vals []byte) []byte {
		if !fdValues {
			return vals
		}
		out := make([]byte, len(vals))
		for i := 0; i < len(vals); i += 4 {
			binary.LittleEndian.PutUint32(out[i:], side.inner[vals[i]])
		}
		return out
	}
	// readValues turns values read into what compares: inner map ids
	// into indexes.
	readValues := func(side *bdSide, vals []byte) []byte {
		if !fdValues {
			return vals
		}
		out := bytes.Clone(vals)
		for i := 0; i+4 <= len(vals); i += 4 {
			idx, ok := side.ids[binary.LittleEndian.Uint32(vals[i:])]
			if !ok {
				idx = 0xff
			}
			binary.LittleEndian.PutUint32(out[i:], uint32(idx))
		}
		return out
	}
	singleValue := func(side *bdSide, v []byte) any {
		v = sideValues(side, v)
		if !percpu {
			return v
		}
		vals := make([][]byte, ncpu)
		for i := range vals {
			vals[i] = v[i*valueSize : (i+1)*valueSize]
		}
		return vals
	}
	same := func(step int, what string, kn, sn int, kErr, sErr error) error {
		if errnoOf(kErr) != errnoOf(sErr) || (kErr == nil) != (sErr == nil) || kn != sn {
			return fmt.Errorf("step %d, %s: kernel %d, %v; bpfsim %d, %v", step, what, kn, kErr, sn, sErr)
		}
		return nil
	}
	rng := rand.New(rand.NewPCG(uint64(len(c.name)), uint64(spec.Type)))
	steps := 2500
	if fdValues {
		// Every update and delete of a map of maps waits for a grace
		// period in the kernel (maybe_wait_bpf_programs): ~6 ms a step.
		steps = 500
	}
	for step := range steps {
		stats.steps++
		var what string
		changed := true
		switch op := rng.IntN(20); {
		case op < 5:
			key, v := c.key(rng), value(rng)
			what = fmt.Sprintf("update % x", key)
			kErr, sErr := kside.update(key, singleValue(kside, v), ebpf.UpdateAny), sside.update(key, singleValue(sside, v), ebpf.UpdateAny)
			if err := same(step, what, 0, 0, kErr, sErr); err != nil {
				return err
			}
		case op < 7:
			key := c.key(rng)
			what = fmt.Sprintf("delete % x", key)
			if err := same(step, what, 0, 0, kside.del(key), sside.del(key)); err != nil {
				return err
			}
		case op < 10:
			n := rng.IntN(7)
			keys, vals := []byte{}, []byte{}
			for range n {
				keys, vals = append(keys, c.key(rng)...), append(vals, value(rng)...)
			}
			opts := bdOpts(rng)
			what = fmt.Sprintf("batch update of %d (%+v)", n, *opts)
			stats.updates++
			vsize := valueSize
			if fdValues {
				vsize = 4
			}
			kn, kErr := kside.bupdate(bdFill(bdElems(keySize, n), keys), bdFill(bdElems(vsize, n*copies), sideValues(kside, vals)), opts)
			sn, sErr := sside.bupdate(bdFill(bdElems(keySize, n), keys), bdFill(bdElems(vsize, n*copies), sideValues(sside, vals)), opts)
			if err := same(step, what, kn, sn, kErr, sErr); err != nil {
				return err
			}
		case op < 12:
			n := rng.IntN(6)
			keys := []byte{}
			for range n {
				keys = append(keys, c.key(rng)...)
			}
			opts := bdOpts(rng)
			what = fmt.Sprintf("batch delete of %d (%+v)", n, *opts)
			stats.deletes++
			kn, kErr := kside.bdelete(bdFill(bdElems(keySize, n), keys), opts)
			sn, sErr := sside.bdelete(bdFill(bdElems(keySize, n), keys), opts)
			if err := same(step, what, kn, sn, kErr, sErr); err != nil {
				return err
			}
		default:
			del := op >= 18
			changed = del
			n := rng.IntN(9)
			if rng.IntN(8) == 0 {
				n = rng.IntN(40)
			}
			reset := rng.IntN(6) == 0
			opts := bdOpts(rng)
			what = fmt.Sprintf("batch lookup (delete %v, reset %v) of %d (%+v)", del, reset, n, *opts)
			vsize := valueSize
			if fdValues {
				vsize = 4
			}
			kKeys, kVals := bdElems(keySize, n), bdElems(vsize, n*copies)
			sKeys, sVals := bdElems(keySize, n), bdElems(vsize, n*copies)
			kn, kErr := kside.blookup(del, reset, kKeys, kVals, opts)
			sn, sErr := sside.blookup(del, reset, sKeys, sVals, opts)
			if err := same(step, what, kn, sn, kErr, sErr); err != nil {
				return err
			}
			stats.lookups++
			if del {
				stats.lookupDeletes++
			}
			switch {
			case errnoOf(kErr) == uapi.ENOSPC:
				stats.enospc++
			case errnoOf(kErr) == uapi.ENOENT:
				stats.enoent++
			}
			if kErr != nil && errnoOf(kErr) != uapi.ENOENT {
				break
			}
			kk, sk := bdBytes(kKeys)[:kn*keySize], bdBytes(sKeys)[:sn*keySize]
			kv, sv := readValues(kside, bdBytes(kVals)[:kn*vsize*copies]), readValues(sside, bdBytes(sVals)[:sn*vsize*copies])
			if !bytes.Equal(kk, sk) {
				return fmt.Errorf("step %d, %s: kernel keys % x; bpfsim % x", step, what, kk, sk)
			}
			if !bytes.Equal(kv, sv) {
				return fmt.Errorf("step %d, %s: kernel values % x; bpfsim % x", step, what, kv, sv)
			}
			stats.elements += kn
			stats.ordered += max(kn-1, 0)
		}
		if changed {
			if err := bdSameContents(kside, sside, keySize, readValues); err != nil {
				return fmt.Errorf("step %d, after %s: %w", step, what, err)
			}
		}
	}
	return nil
}

// bdOpts draws the options of a batch: mostly none, sometimes BPF_F_LOCK
// (refused unless the values hold a bpf_spin_lock), elem_flags the
// commands refuse, flags the hash lookups refuse and the others ignore.
func bdOpts(rng *rand.Rand) *ebpf.BatchOptions {
	switch rng.IntN(12) {
	case 0:
		return &ebpf.BatchOptions{ElemFlags: uapi.BPF_F_LOCK}
	case 1:
		return &ebpf.BatchOptions{ElemFlags: uint64(1 + rng.IntN(2))}
	case 2:
		return &ebpf.BatchOptions{Flags: 1}
	}
	return &ebpf.BatchOptions{}
}

// bdSameContents compares the two maps' get_next_key walks, in order, and
// the raw value of each key.
func bdSameContents(k, s *bdSide, keySize int, readValues func(*bdSide, []byte) []byte) error {
	walk := func(side *bdSide) ([]byte, error) {
		var out []byte
		var key any
		for range 10000 {
			next := make([]byte, keySize)
			err := side.nextKey(key, next)
			if errnoOf(err) == uapi.ENOENT {
				return out, nil
			}
			if err != nil {
				return nil, err
			}
			v, err := side.lookupRaw(next)
			if err != nil && errnoOf(err) != uapi.ENOENT {
				return nil, err
			}
			out = append(append(out, next...), readValues(side, v)...)
			key = next
		}
		return nil, fmt.Errorf("get_next_key never ends")
	}
	kc, kErr := walk(k)
	sc, sErr := walk(s)
	if kErr != nil || sErr != nil {
		return fmt.Errorf("walks: kernel %v; bpfsim %v", kErr, sErr)
	}
	if !bytes.Equal(kc, sc) {
		return fmt.Errorf("contents differ:\nkernel % x\nbpfsim % x", kc, sc)
	}
	return nil
}

// BenchmarkMapBatchLookup reads a hash map and an array of 10,000
// elements in batches of 256 through this machine's kernel and through
// bpfsim, a whole walk per iteration; ns/elem is one element's cost.
func BenchmarkMapBatchLookup(b *testing.B) {
	if _, err := OpenKernel(); err != nil {
		b.Skipf("skipped: this machine cannot load BPF programs: %v", err)
	}
	k, err := sim.NewKernel(nil)
	if err != nil {
		b.Fatal(err)
	}
	const entries, batch = 10000, 256
	keys, values := make([]uint32, entries), make([]uint64, entries)
	for i := range keys {
		keys[i], values[i] = uint32(i), uint64(i)
	}
	for _, typ := range []ebpf.MapType{ebpf.Hash, ebpf.Array} {
		spec := &ebpf.MapSpec{Type: typ, KeySize: 4, ValueSize: 8, MaxEntries: entries}
		km, err := ebpf.NewMap(spec)
		if err != nil {
			b.Fatal(err)
		}
		defer km.Close()
		sm, err := k.NewMap(spec)
		if err != nil {
			b.Fatal(err)
		}
		defer sm.Close()
		for _, m := range []interface {
			BatchUpdate(keys, values any, opts *ebpf.BatchOptions) (int, error)
		}{km, sm} {
			if _, err := m.BatchUpdate(keys, values, nil); err != nil {
				b.Fatal(err)
			}
		}
		ks, vs := make([]uint32, batch), make([]uint64, batch)
		walk := func(b *testing.B, lookup func(reset bool) (int, error)) {
			for b.Loop() {
				total := 0
				for reset := true; ; reset = false {
					n, err := lookup(reset)
					total += n
					if errnoOf(err) == uapi.ENOENT {
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
		}
		b.Run(typ.String()+"/kernel", func(b *testing.B) {
			var c ebpf.MapBatchCursor
			walk(b, func(reset bool) (int, error) {
				if reset {
					c = ebpf.MapBatchCursor{}
				}
				return km.BatchLookup(&c, ks, vs, nil)
			})
		})
		b.Run(typ.String()+"/bpfsim", func(b *testing.B) {
			var c sim.MapBatchCursor
			walk(b, func(reset bool) (int, error) {
				if reset {
					c = sim.MapBatchCursor{}
				}
				return sm.BatchLookup(&c, ks, vs, nil)
			})
		})
	}
}
