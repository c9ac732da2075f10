//go:build linux

package kdiff

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Mapping arrays into user space, in this machine's kernel through
// cilium/ebpf and in bpfsim: the same sizes, the same read-only
// fallbacks, and a writable mapping keeps the map from being frozen in
// both.
func TestMappedArraysMatchKernel(t *testing.T) {
	k := linuxLikeSim(t)
	for _, c := range []struct {
		name   string
		flags  uint32
		freeze bool
	}{
		{"mmapable", uapi.BPF_F_MMAPABLE, false},
		{"mmapable, frozen", uapi.BPF_F_MMAPABLE, true},
		{"mmapable, read-only for programs", uapi.BPF_F_MMAPABLE | uapi.BPF_F_RDONLY_PROG, false},
		{"not mmapable", 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := &ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 12, MaxEntries: 500, Flags: c.flags}
			km, sm := mapsInBoth(t, k, spec)
			if c.freeze {
				if err := km.Freeze(); err != nil {
					t.Fatal(err)
				}
				if err := sm.Freeze(); err != nil {
					t.Fatal(err)
				}
			}
			kmm, kerr := km.Memory()
			smm, serr := sm.Memory()
			if errors.Is(kerr, ebpf.ErrNotSupported) != errors.Is(serr, ebpf.ErrNotSupported) || (kerr == nil) != (serr == nil) {
				t.Fatalf("Memory: kernel %v, bpfsim %v", kerr, serr)
			}
			if kerr != nil {
				return
			}
			if kmm.Size() != smm.Size() || kmm.ReadOnly() != smm.ReadOnly() {
				t.Fatalf("kernel: %d bytes, read-only %v; bpfsim: %d bytes, read-only %v", kmm.Size(), kmm.ReadOnly(), smm.Size(), smm.ReadOnly())
			}
			kf, sf := km.Freeze(), sm.Freeze()
			if errnoOf(kf) != errnoOf(sf) {
				t.Fatalf("freezing after Memory: kernel %v, bpfsim %v", kf, sf)
			}
			t.Logf("%d bytes, read-only %v; freezing afterwards: %v", kmm.Size(), kmm.ReadOnly(), orNil(errnoOf(kf)))
		})
	}
}

// The global variables of the same object in both, with the same packets:
// the same values, and the same read-only sections.
func TestCollectionVariablesMatchKernel(t *testing.T) {
	k := linuxLikeSim(t)
	spec, err := ebpf.LoadCollectionSpec("../testdata/maps.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	kc, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	sc, err := k.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := kc.Variables["longest"].Set(uint32(100)); err != nil {
		t.Fatal(err)
	}
	if err := sc.Variables["longest"].Set(uint32(100)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{60, 120, 90} {
		if _, err := kc.Programs["count"].Run(&ebpf.RunOptions{Data: make([]byte, n)}); err != nil {
			t.Fatal(err)
		}
		if _, err := sc.Programs["count"].Run(&sim.RunOptions{Data: make([]byte, n)}); err != nil {
			t.Fatal(err)
		}
	}
	if len(kc.Variables) != len(sc.Variables) {
		t.Fatalf("variables: kernel %d, bpfsim %d", len(kc.Variables), len(sc.Variables))
	}
	for name, kv := range kc.Variables {
		sv := sc.Variables[name]
		if sv == nil {
			t.Fatalf("bpfsim has no variable %s", name)
		}
		kb, sb := make([]byte, kv.Size()), make([]byte, sv.Size())
		if err := kv.Get(kb); err != nil {
			t.Fatal(err)
		}
		if err := sv.Get(sb); err != nil {
			t.Fatal(err)
		}
		if string(kb) != string(sb) || kv.ReadOnly() != sv.ReadOnly() {
			t.Errorf("%s: kernel % x (read-only %v), bpfsim % x (read-only %v)", name, kb, kv.ReadOnly(), sb, sv.ReadOnly())
		}
	}
}
