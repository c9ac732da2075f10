package sim_test

import (
	"encoding/binary"
	"testing"
)

// A variable set on the CollectionSpec before loading is what the data
// section holds, as with cilium/ebpf's NewCollection: lb.bpf.c's
// `volatile const __u32 hash_seed` reaches the program through .rodata.
func TestCollectionAppliesVariableSpecs(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  bool
		want uint32
	}{
		{"as compiled", false, 0x2b7e1516},
		{"set before loading", true, 0xfeedf00d},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := loadLBSpec(t)
			if tc.set {
				if err := spec.Variables["hash_seed"].Set(tc.want); err != nil {
					t.Fatal(err)
				}
			}
			coll, err := newKernel(t, nil).NewCollection(spec)
			if err != nil {
				t.Fatal(err)
			}
			defer coll.Close()
			var rodata []byte
			if err := coll.Maps[".rodata"].Lookup(uint32(0), &rodata); err != nil {
				t.Fatal(err)
			}
			off := spec.Variables["hash_seed"].Offset
			if got := binary.LittleEndian.Uint32(rodata[off:]); got != tc.want {
				t.Errorf(".rodata hash_seed = %#x, want %#x", got, tc.want)
			}
			// The spec itself is not changed by loading it.
			if c := spec.Maps[".rodata"].Contents[0].Value.([]byte); binary.LittleEndian.Uint32(c[off:]) != 0x2b7e1516 {
				t.Errorf("the spec's .rodata contents changed: % x", c)
			}
		})
	}
	// Overlapping or oversized variables are refused, as cilium/ebpf does.
	spec := loadLBSpec(t)
	v := spec.Variables["hash_seed"]
	v.Value = make([]byte, 64)
	if _, err := newKernel(t, nil).NewCollection(spec); err == nil {
		t.Error("a variable running past its section was accepted")
	}
}
