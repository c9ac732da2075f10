// Benchmark and cross-check: bpfsim's maglev.Table against Cilium's
// pkg/maglev GetLookupTable on the same backends, in one run; and the
// same tables from both.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/hive/cell"

	cmtypes "github.com/cilium/cilium/pkg/clustermesh/types"
	"github.com/cilium/cilium/pkg/loadbalancer"
	cmaglev "github.com/cilium/cilium/pkg/maglev"

	"github.com/bpfsim/bpfsim/examples/maglev/maglev"
)

var sizes = []struct {
	m uint32
	n int
}{{65537, 1000}, {16381, 100}, {65537, 100}, {65537, 3}}

func inputs(n int) ([]maglev.Backend, []cmaglev.BackendInfo) {
	bs := make([]maglev.Backend, n)
	infos := make([]cmaglev.BackendInfo, n)
	for i := range bs {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		bs[i] = maglev.Backend{Addr: a, Port: 8080, Proto: 6, ID: uint32(100 + i)}
		infos[i] = cmaglev.BackendInfo{
			ID:     loadbalancer.BackendID(100 + i),
			Addr:   loadbalancer.NewL3n4Addr(loadbalancer.TCP, cmtypes.AddrClusterFrom(a, 0), 8080, loadbalancer.ScopeExternal),
			Weight: 100,
		}
	}
	return bs, infos
}

func cilium(tb testing.TB, m uint32) *cmaglev.Maglev {
	cfg, err := cmaglev.UserConfig{TableSize: cmaglev.DefaultTableSize, HashSeed: cmaglev.DefaultHashSeed}.ToConfig()
	if err != nil {
		tb.Fatal(err)
	}
	cfg.TableSize = uint(m)
	lc := &cell.DefaultLifecycle{}
	ml := cmaglev.New(cfg, lc)
	log := slog.New(slog.DiscardHandler)
	if err := lc.Start(log, context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { lc.Stop(log, context.Background()) })
	return ml
}

func TestSameTables(t *testing.T) {
	seeds, _ := maglev.ParseSeed(maglev.DefaultSeed)
	for _, s := range sizes {
		bs, infos := inputs(s.n)
		ours, err := maglev.Table(bs, s.m, seeds)
		if err != nil {
			t.Fatal(err)
		}
		theirs := cilium(t, s.m).GetLookupTable(slices.Values(infos))
		for i := range ours {
			if ours[i] != uint32(theirs[i]) {
				t.Fatalf("M=%d N=%d slot %d: %d, Cilium %d", s.m, s.n, i, ours[i], theirs[i])
			}
		}
	}
}

func BenchmarkTable(b *testing.B) {
	seeds, _ := maglev.ParseSeed(maglev.DefaultSeed)
	for _, s := range sizes {
		bs, infos := inputs(s.n)
		b.Run(fmt.Sprintf("M=%d/N=%d/bpfsim", s.m, s.n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := maglev.Table(bs, s.m, seeds); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("M=%d/N=%d/cilium", s.m, s.n), func(b *testing.B) {
			ml := cilium(b, s.m)
			b.ReportAllocs()
			for b.Loop() {
				ml.GetLookupTable(slices.Values(infos))
			}
		})
	}
}
