package sim

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/perfarray"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// releaseFile plays the last close of h's file (map_release), which the
// simulated processes will do on close.
func (h *Map) releaseFile() {
	if r, ok := h.m.Ops.(maps.FileReleaser); ok {
		r.ReleaseFile(h.file)
	}
}

func TestPerfEventsLiveAsLongAsTheFileThatInstalledThemUnlessPreserved(t *testing.T) {
	for _, tc := range []struct {
		name     string
		flags    uint32
		survives bool
	}{
		{"without BPF_F_PRESERVE_ELEMS", 0, false},
		{"with BPF_F_PRESERVE_ELEMS", uapi.BPF_F_PRESERVE_ELEMS, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := NewKernel(&Options{CPUs: 2})
			if err != nil {
				t.Fatal(err)
			}
			a, err := k.NewMap(&ebpf.MapSpec{Type: ebpf.PerfEventArray, Flags: tc.flags})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			// A second handle on the same map is another file.
			a.m.Get() // newMapHandle turns a reference into the fd's
			b := k.newMapHandle(a.m)
			defer b.Close()
			e0, err := k.NewPerfEvent(0, 1)
			if err != nil {
				t.Fatal(err)
			}
			e1, err := k.NewPerfEvent(1, 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Put(uint32(0), uint32(e0.FD())); err != nil {
				t.Fatal(err)
			}
			if err := b.Put(uint32(1), uint32(e1.FD())); err != nil {
				t.Fatal(err)
			}
			// Closing the events' own fds leaves the slots' references.
			e0.Close()
			e1.Close()
			a.releaseFile()
			k.SynchronizeRCU()
			got0 := perfarray.SlotEvent(a.m, 0) != nil
			if got0 != tc.survives || perfarray.SlotEvent(a.m, 1) == nil {
				t.Fatalf("after releasing the first file: slot 0 filled %v (want %v), slot 1 filled %v (want true)",
					got0, tc.survives, perfarray.SlotEvent(a.m, 1) != nil)
			}
			if !tc.survives && e0.Event().Refs() != 0 {
				t.Fatalf("removed event still has %d references", e0.Event().Refs())
			}
			b.releaseFile()
			k.SynchronizeRCU()
			if got1 := perfarray.SlotEvent(a.m, 1) != nil; got1 != tc.survives {
				t.Fatalf("after releasing the second file: slot 1 filled %v, want %v", got1, tc.survives)
			}
			if tc.survives {
				// The map's free clears preserved slots.
				a.Close()
				b.Close()
				k.SynchronizeRCU()
				if e0.Event().Refs() != 0 || e1.Event().Refs() != 0 {
					t.Fatalf("after the map's free: refs %d %d, want 0", e0.Event().Refs(), e1.Event().Refs())
				}
			}
		})
	}
}
