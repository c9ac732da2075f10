package hashmap_test

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// FuzzLRUHash runs a script of operations on an LRU hash and checks it
// against what can honestly be modelled without the eviction order (which
// the kernel-differential test checks): the map never holds more than
// max_entries keys, nor a key that was never added or was deleted since;
// a key is present with the value just written after a successful update;
// flags and deletes give the errnos the keys present call for; nothing
// panics. An update takes its node before it looks for the key, so in a
// full map it may evict the very key it is about to check: NOEXIST on a
// present key may then succeed, and (except on a per-CPU value map, which
// takes no node for EXIST) EXIST on a present key may fail with ENOENT, as
// in the kernel.
//
// The first byte chooses the map (type, per-CPU lists, max_entries); then
// every three bytes are an operation, a key and a CPU.
func FuzzLRUHash(f *testing.F) {
	f.Add([]byte{0, 0, 1, 0, 0, 2, 0, 0, 3, 0, 1, 1, 0, 1, 2, 0, 1})
	f.Add([]byte{1, 0, 5, 1, 0, 6, 0, 4, 5, 1, 0, 7, 0, 2, 6, 1})
	f.Add([]byte{0x17, 0, 1, 0, 3, 1, 0, 0, 2, 1, 5, 2, 1, 0, 9, 0, 6, 9, 0})
	f.Fuzz(func(t *testing.T, script []byte) {
		if len(script) == 0 {
			return
		}
		const cpus = 3
		cfg := lruConfigs[script[0]&3]
		maxEntries := uint32(script[0]>>2)%12 + 1
		k := newKernel(cpus)
		m := newLRUMap(t, k, maps.Attr{Type: cfg.typ, KeySize: 4, ValueSize: 8, MaxEntries: maxEntries, Flags: cfg.flags})
		pv, _ := m.Ops.(maps.PercpuValues)
		sys, _ := m.Ops.(maps.SysLookuper)
		present := func(key []byte) bool {
			if pv != nil {
				return pv.LookupPercpu(key, make([]byte, 8*cpus)) == nil
			}
			addr, _ := sys.LookupElemSys(key)
			return addr != 0
		}
		valueOf := func(key []byte, cpu int) uint64 {
			addr, _ := m.Ops.LookupElem(cpu, key)
			if addr == 0 {
				t.Fatalf("key %x missing", key)
			}
			b, err := k.Memory().Bytes(addr, 8)
			if err != nil {
				t.Fatal(err)
			}
			return binary.LittleEndian.Uint64(b)
		}
		live := map[uint32]bool{} // keys added and not deleted since
		for i := 1; i+2 < len(script); i += 3 {
			op, k32, cpu := script[i]%6, uint32(script[i+1]%24), int(script[i+2]%cpus)
			key := u32Key(k32)
			was := present(key)
			value := binary.LittleEndian.AppendUint64(nil, uint64(i))
			switch op {
			case 0, 1, 2: // a program's update, with BPF_ANY, NOEXIST, EXIST
				flags := uint64(op)
				err := m.Ops.UpdateElem(cpu, key, value, flags)
				switch {
				case flags == uapi.BPF_NOEXIST && was && err != nil:
					if !errors.Is(err, uapi.EEXIST) {
						t.Fatalf("NOEXIST on a present key: %v", err)
					}
				case flags == uapi.BPF_EXIST && was && err != nil:
					if cfg.percpu || !errors.Is(err, uapi.ENOENT) {
						t.Fatalf("EXIST on a present key: %v", err)
					}
					delete(live, k32) // evicted by the update's own node
				case flags == uapi.BPF_EXIST && !was:
					if !errors.Is(err, uapi.ENOENT) {
						t.Fatalf("EXIST on a missing key: %v", err)
					}
				case err != nil:
					t.Fatalf("update %d flags %d: %v", k32, flags, err)
				default:
					live[k32] = true
					if got := valueOf(key, cpu); got != uint64(i) {
						t.Fatalf("key %d reads %d right after it was set to %d", k32, got, i)
					}
				}
			case 3: // delete
				err := m.Ops.DeleteElem(cpu, key)
				if was != (err == nil) || !was && !errors.Is(err, uapi.ENOENT) {
					t.Fatalf("delete of a key present=%v: %v", was, err)
				}
				delete(live, k32)
				if present(key) {
					t.Fatalf("key %d still there after its delete", k32)
				}
			case 4: // a program's lookup
				if addr, _ := m.Ops.LookupElem(cpu, key); (addr != 0) != was {
					t.Fatalf("program lookup of %d: found %v, present %v", k32, addr != 0, was)
				}
			case 5: // user space's update of every CPU, or a plain update
				var err error
				if pv != nil {
					err = pv.UpdatePercpu(key, make([]byte, 8*cpus), uapi.BPF_ANY)
				} else {
					err = m.Ops.UpdateElem(0, key, value, uapi.BPF_ANY)
				}
				if err != nil {
					t.Fatal(err)
				}
				live[k32] = true
			}
			keys := keysOf(t, m)
			if len(keys) > int(m.MaxEntries) {
				t.Fatalf("%d keys in a map of %d", len(keys), m.MaxEntries)
			}
			for _, key := range keys {
				if !live[key] {
					t.Fatalf("key %d is in the map but was never added or was deleted", key)
				}
			}
			if i%4 == 0 {
				k.GracePeriod()
			}
		}
	})
}
