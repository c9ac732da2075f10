package sim_test

import (
	"testing"

	"github.com/cilium/ebpf"
)

// BenchmarkSpinLockMapFromUserSpace compares user space's BPF_F_LOCK
// updates and lookups of a value with a spin lock with the plain ones:
// the locked copies take and drop the value's lock around the copy.
func BenchmarkSpinLockMapFromUserSpace(b *testing.B) {
	for _, typ := range []ebpf.MapType{ebpf.Array, ebpf.Hash} {
		k := newKernel(b, nil)
		m := newMap(b, k, &ebpf.MapSpec{Type: typ, KeySize: 4, ValueSize: 16, MaxEntries: 16, Key: slU32, Value: slVal})
		if err := m.Put(uint32(3), slValue(1, 2)); err != nil {
			b.Fatal(err)
		}
		value, out := slValue(3, 4), make([]byte, 16)
		for _, c := range []struct {
			name string
			op   func() error
		}{
			{"update", func() error { return m.Update(uint32(3), value, ebpf.UpdateExist) }},
			{"update BPF_F_LOCK", func() error { return m.Update(uint32(3), value, ebpf.UpdateLock|ebpf.UpdateExist) }},
			{"lookup", func() error { return m.Lookup(uint32(3), &out) }},
			{"lookup BPF_F_LOCK", func() error { return m.LookupWithFlags(uint32(3), &out, ebpf.LookupLock) }},
		} {
			b.Run(typ.String()+" "+c.name, func(b *testing.B) {
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					if err := c.op(); err != nil {
						b.Fatal(err)
					}
					if typ == ebpf.Hash && i%512 == 0 {
						k.SynchronizeRCU() // replaced elements come back
					}
				}
			})
		}
	}
}
