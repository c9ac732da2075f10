package maglev

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// backends returns n TCP backends 10.x.y.z:8080 with ids 100, 101, …
func backends(n int) []Backend {
	bs := make([]Backend, n)
	for i := range bs {
		bs[i] = Backend{
			Addr:  netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
			Port:  8080,
			Proto: 6,
			ID:    uint32(100 + i),
		}
	}
	return bs
}

func mustSeeds(t testing.TB, s string) Seeds {
	t.Helper()
	seeds, err := ParseSeed(s)
	if err != nil {
		t.Fatal(err)
	}
	return seeds
}

func mustTable(t testing.TB, bs []Backend, m uint32, seeds Seeds) []uint32 {
	t.Helper()
	tbl, err := Table(bs, m, seeds)
	if err != nil {
		t.Fatal(err)
	}
	if len(tbl) != int(m) {
		t.Fatalf("table has %d slots, want %d", len(tbl), m)
	}
	return tbl
}

func counts(tbl []uint32) map[uint32]int {
	c := map[uint32]int{}
	for _, id := range tbl {
		c[id]++
	}
	return c
}

func changed(a, b []uint32) int {
	n := 0
	for i := range a {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

// TestWorkedExample is KERNEL-NOTES §14.3: M=7, three backends with the
// given (offset, skip), taking turns B0, B1, B2. Cilium's weighting with all
// weights equal passes nobody over, so it must give the paper's round robin
// whether the weights are "in use" (average > 1, e.g. the default 100) or
// not (all 1).
func TestWorkedExample(t *testing.T) {
	const b0, b1, b2 = 0, 1, 2
	for _, w := range []uint64{1, 2, DefaultWeight, 65535} {
		t.Run(fmt.Sprintf("weights=%d", w), func(t *testing.T) {
			all := fill(7, []cursor{{3, 4}, {0, 2}, {3, 1}}, []uint64{w, w, w}, []uint32{b0, b1, b2})
			if want := []uint32{b1, b0, b1, b0, b2, b2, b0}; !slices.Equal(all, want) {
				t.Fatalf("table %v, want %v", all, want)
			}
			without := fill(7, []cursor{{3, 4}, {3, 1}}, []uint64{w, w}, []uint32{b0, b2})
			if want := []uint32{b0, b0, b0, b0, b2, b2, b2}; !slices.Equal(without, want) {
				t.Fatalf("table without B1 %v, want %v", without, want)
			}
			// Slots 1, 3, 4, 5 keep their backend; B1's 0 and 2 move, and
			// so does 6 (B0→B2): Maglev's disruption is small, not minimal.
			var moved []int
			for i := range all {
				if all[i] != without[i] {
					moved = append(moved, i)
				}
			}
			if want := []int{0, 2, 6}; !slices.Equal(moved, want) {
				t.Fatalf("moved slots %v, want %v", moved, want)
			}
		})
	}
}

// paperTable is the paper's Populate (Maglev §3.4, pseudocode 1) with each
// permutation written out in full and plain round robin: the reference for
// the lazy cursors and for Cilium's weighting with equal weights.
func paperTable(m uint32, cs []cursor, ids []uint32) []uint32 {
	perm := make([][]uint32, len(cs))
	for i, c := range cs {
		perm[i] = make([]uint32, m)
		for j := range m {
			perm[i][j] = uint32((uint64(c.next) + uint64(j)*uint64(c.skip)) % uint64(m))
		}
	}
	next := make([]int, len(cs))
	entry := make([]uint32, m)
	for j := range entry {
		entry[j] = sentinel
	}
	filled := uint32(0)
	for {
		for i := range cs {
			c := perm[i][next[i]]
			for entry[c] != sentinel {
				next[i]++
				c = perm[i][next[i]]
			}
			entry[c] = ids[i]
			next[i]++
			if filled++; filled == m {
				return entry
			}
		}
	}
}

func TestEqualWeightsGiveThePapersRoundRobin(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, m := range []uint32{2, 7, 251, 4093} {
		for _, n := range []int{1, 2, 5, 50, 250} {
			if uint32(n) > m {
				continue
			}
			cs := make([]cursor, n)
			ids := make([]uint32, n)
			for i := range cs {
				cs[i] = cursor{next: rng.Uint32N(m), skip: 1 + rng.Uint32N(m-1)}
				ids[i] = uint32(i)
			}
			want := paperTable(m, cs, ids)
			for _, w := range []uint64{1, 2, 100, 65535} {
				ws := make([]uint64, n)
				for i := range ws {
					ws[i] = w
				}
				if got := fill(m, slices.Clone(cs), ws, ids); !slices.Equal(got, want) {
					t.Errorf("M=%d N=%d weight %d: %d slots differ from the paper's round robin", m, n, w, changed(got, want))
				}
			}
		}
	}
}

// TestBalance: at M=65537, N=100 every backend gets 655 or 656 slots
// (Cilium's figure: max/min 1.0015).
func TestBalance(t *testing.T) {
	seeds := mustSeeds(t, DefaultSeed)
	for _, n := range []int{100, 1000} {
		tbl := mustTable(t, backends(n), 65537, seeds)
		c := counts(tbl)
		if len(c) != n {
			t.Fatalf("N=%d: %d backends have slots", n, len(c))
		}
		lo, hi := 1<<30, 0
		for _, k := range c {
			lo, hi = min(lo, k), max(hi, k)
		}
		ratio := float64(hi) / float64(lo)
		t.Logf("M=65537 N=%d: %d..%d slots per backend, max/min %.4f", n, lo, hi, ratio)
		// Round robin with the default (equal) weights hands out turns
		// evenly: counts differ by at most one.
		if hi-lo > 1 {
			t.Errorf("N=%d: slot counts %d..%d differ by more than one", n, lo, hi)
		}
		if n == 100 && ratio > 1.002 {
			t.Errorf("N=100: max/min %.4f > 1.002", ratio)
		}
	}
}

// TestDisruption: removing one of 100 backends at M=65537 moves its 1% of
// the slots plus a little more; Cilium measured 1.55% (adding one: 1.54%).
// Bound: 1.6 × 1/N. Slots of the removed backend must all move, and the
// rest of the table must stay a valid balance.
func TestDisruption(t *testing.T) {
	const n, m = 100, 65537
	seeds := mustSeeds(t, DefaultSeed)
	bs := backends(n + 1)
	base := mustTable(t, bs[:n], m, seeds)
	worst, sum := 0.0, 0.0
	removals := []int{0, 1, 17, 42, 50, 63, 77, 98, 99}
	for _, r := range removals {
		rest := slices.Delete(slices.Clone(bs[:n]), r, r+1)
		after := mustTable(t, rest, m, seeds)
		for i := range base {
			if after[i] == bs[r].ID {
				t.Fatalf("removed backend %d still holds slot %d", bs[r].ID, i)
			}
		}
		f := float64(changed(base, after)) / m
		worst, sum = max(worst, f), sum+f
		if f > 1.6/n {
			t.Errorf("removing backend %d changed %.2f%% of the slots, more than %.2f%%", r, 100*f, 160.0/n)
		}
	}
	added := mustTable(t, bs, m, seeds)
	fa := float64(changed(base, added)) / m
	if fa > 1.6/n {
		t.Errorf("adding a backend changed %.2f%% of the slots, more than %.2f%%", 100*fa, 160.0/n)
	}
	t.Logf("M=%d N=%d: removing one backend changes %.2f%% of the slots on average, %.2f%% at worst (%d removals); adding one %.2f%% (ideal %.2f%%)",
		m, n, 100*sum/float64(len(removals)), 100*worst, len(removals), 100*fa, 100.0/n)
}

// TestWeightsProportional: a backend's turns, hence its slots, follow its
// weight. Cilium's scheme lets backend i take its (a+1)-th turn at turn n
// only if (n+1)·w_i ≥ ⌊w_i/N + a·Σw⌋, so it ends with at most M·w_i/Σw +
// 1 + 1/Σw slots; as the M slots all go to someone, it has at least
// M·w_i/Σw − (N−1)(1 + 1/Σw).
func TestWeightsProportional(t *testing.T) {
	cases := []struct {
		name    string
		weights []uint16
	}{
		{"1 to 10", []uint16{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"hundreds", []uint16{100, 200, 300, 50, 0 /* 100 */}},
		{"one heavy", []uint16{1000, 1, 1, 1, 1, 1, 1, 1}},
		{"extremes", []uint16{65535, 1, 65535, 7}},
	}
	for _, m := range []uint32{16381, 65537} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("M=%d/%s", m, tc.name), func(t *testing.T) {
				bs := backends(len(tc.weights))
				var sum float64
				for i, w := range tc.weights {
					bs[i].Weight = w
					if w == 0 {
						w = DefaultWeight
					}
					sum += float64(w)
				}
				c := counts(mustTable(t, bs, m, mustSeeds(t, DefaultSeed)))
				worst := 0.0
				for i, b := range bs {
					w := float64(b.Weight)
					if w == 0 {
						w = DefaultWeight
					}
					want := float64(m) * w / sum
					d := float64(c[b.ID]) - want
					worst = max(worst, d, -d)
					hi := 1 + 1/sum
					lo := -float64(len(bs)-1) * hi
					if d > hi || d < lo {
						t.Errorf("backend %d weight %v: %d slots, want %.1f%+.2f%+.2f", i, w, c[b.ID], want, lo, hi)
					}
				}
				t.Logf("largest deviation from M·w/Σw: %.2f slots (%.4f%% of M)", worst, 100*worst/float64(m))
			})
		}
	}
}

// TestWeightsIgnoredWhenAverageIsAtMostOne: Cilium's "weights in use" rule
// is Σw/N > 1 in integer division, so weights 1 and 2 (average 1) are
// plain round robin while 1 and 3 (average 2) are honoured.
func TestWeightsIgnoredWhenAverageIsAtMostOne(t *testing.T) {
	seeds := mustSeeds(t, DefaultSeed)
	bs := backends(2)
	bs[0].Weight, bs[1].Weight = 1, 1
	even := counts(mustTable(t, bs, 1021, seeds))
	bs[1].Weight = 2
	oneTwo := counts(mustTable(t, bs, 1021, seeds))
	bs[1].Weight = 3
	oneThree := counts(mustTable(t, bs, 1021, seeds))
	if oneTwo[bs[0].ID] != even[bs[0].ID] || oneTwo[bs[0].ID] != 511 {
		t.Errorf("weights 1,2: %v, want the round robin's %v", oneTwo, even)
	}
	if got := oneThree[bs[1].ID]; got < 765 || got > 767 {
		t.Errorf("weights 1,3: %v, want about 255/766", oneThree)
	}
}

func TestTableIsDeterministic(t *testing.T) {
	seeds := mustSeeds(t, DefaultSeed)
	bs := backends(300)
	for i := range bs {
		bs[i].Weight = uint16(1 + i%5*50)
	}
	want := mustTable(t, bs, 16381, seeds)
	rng := rand.New(rand.NewPCG(5, 6))
	var wg sync.WaitGroup
	for g := range 4 {
		perm := slices.Clone(bs)
		rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		wg.Go(func() {
			for range 3 {
				got, err := Table(perm, 16381, seeds)
				if err != nil {
					t.Error(err)
					return
				}
				if !slices.Equal(got, want) {
					t.Errorf("goroutine %d: %d slots differ", g, changed(got, want))
					return
				}
			}
		})
	}
	wg.Wait()
	// The input slice is not reordered.
	for i := range bs {
		if bs[i].ID != uint32(100+i) {
			t.Fatalf("Table reordered its input")
		}
	}
	// Another seed gives another table.
	other := mustTable(t, bs, 16381, mustSeeds(t, "AAAAAAAAAAAAAAAA"))
	if changed(other, want) < 16381/2 {
		t.Errorf("a different Murmur seed changed only %d slots", changed(other, want))
	}
}

func TestParseSeed(t *testing.T) {
	seeds, err := ParseSeed(DefaultSeed)
	if err != nil {
		t.Fatal(err)
	}
	// base64 "JLfvgnHc2kaSUFaI" = 24 b7 ef 82 | 71 dc da 46 | 92 50 56 88.
	if want := (Seeds{Murmur: 0x24b7ef82, Jhash0: 0x71dcda46, Jhash1: 0x92505688}); seeds != want {
		t.Errorf("ParseSeed(DefaultSeed) = %#v, want %#v", seeds, want)
	}
	for _, bad := range []string{"", "not base64!!", "AAAAAAAAAAA=", "AAAAAAAAAAAAAAAAAAAA", "JLfvgnHc2kaSUFa"} {
		if _, err := ParseSeed(bad); !errors.Is(err, uapi.EINVAL) {
			t.Errorf("ParseSeed(%q) = %v, want EINVAL", bad, err)
		}
	}
}

func TestHashStringIsCiliums(t *testing.T) {
	for _, tc := range []struct {
		b    Backend
		want string
	}{
		{Backend{Addr: netip.MustParseAddr("10.0.0.1"), Port: 80, Proto: 6}, "[10.0.0.1:80/TCP,State:active]"},
		{Backend{Addr: netip.MustParseAddr("192.168.1.254"), Port: 53, Proto: 17, Weight: 7, ID: 9}, "[192.168.1.254:53/UDP,State:active]"},
		{Backend{Addr: netip.MustParseAddr("2001:db8::1"), Port: 443, Proto: 6}, "[[2001:db8::1]:443/TCP,State:active]"},
		{Backend{Addr: netip.MustParseAddr("::ffff:10.0.0.1"), Port: 0, Proto: 132}, "[[::ffff:10.0.0.1]:0/SCTP,State:active]"},
		{Backend{Addr: netip.MustParseAddr("10.0.0.1"), Port: 65535, Proto: 1}, "[10.0.0.1:65535/1,State:active]"},
	} {
		if got := HashString(tc.b); got != tc.want {
			t.Errorf("HashString(%v) = %q, want %q", tc.b, got, tc.want)
		}
	}
}

func TestSupportedSizesAreAcceptedPrimes(t *testing.T) {
	seeds := mustSeeds(t, DefaultSeed)
	for _, m := range append(slices.Clone(SupportedSizes), 2, 3, 65537, MaxSize) {
		if !isPrime(m) {
			t.Errorf("%d is not prime", m)
		}
		if _, err := Table(backends(1), m, seeds); err != nil {
			t.Errorf("M=%d: %v", m, err)
		}
	}
}

func TestTableRejects(t *testing.T) {
	seeds := mustSeeds(t, DefaultSeed)
	firstPrimeAbove := func(m uint32) uint32 {
		for m++; !isPrime(m); m++ {
		}
		return m
	}
	withBackend := func(i int, f func(*Backend)) []Backend {
		bs := backends(5)
		f(&bs[i])
		return bs
	}
	for _, tc := range []struct {
		name     string
		backends []Backend
		m        uint32
	}{
		{"M=0", backends(1), 0},
		{"M=1", backends(1), 1},
		{"M not prime", backends(3), 65536},
		{"M a square of a prime", backends(3), 251 * 251},
		{"M above MaxSize", backends(3), firstPrimeAbove(MaxSize)},
		{"no backends", nil, 251},
		{"more backends than slots", backends(8), 7},
		{"duplicate ids", withBackend(3, func(b *Backend) { b.ID = 100 }), 251},
		{"duplicate address, port and protocol", withBackend(4, func(b *Backend) { b.Addr = netip.AddrFrom4([4]byte{10, 0, 0, 1}) }), 251},
		{"invalid address", withBackend(2, func(b *Backend) { b.Addr = netip.Addr{} }), 251},
		{"unknown protocol", withBackend(0, func(b *Backend) { b.Proto = 1 }), 251},
		{"sentinel id", withBackend(1, func(b *Backend) { b.ID = 0xffffffff }), 251},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tbl, err := Table(tc.backends, tc.m, seeds)
			if !errors.Is(err, uapi.EINVAL) {
				t.Fatalf("Table = %d slots, %v; want EINVAL", len(tbl), err)
			}
			if tbl != nil {
				t.Fatalf("Table returned a table with its error")
			}
		})
	}
	// Same address and port but another protocol is another backend.
	bs := backends(2)
	bs[1].Addr, bs[1].Proto = bs[0].Addr, 17
	if _, err := Table(bs, 251, seeds); err != nil {
		t.Errorf("TCP and UDP backends on one address:port: %v", err)
	}
}

func BenchmarkTable(b *testing.B) {
	seeds := mustSeeds(b, DefaultSeed)
	for _, bc := range []struct {
		m uint32
		n int
	}{{65537, 3}, {65537, 100}, {65537, 1000}, {16381, 100}} {
		bs := backends(bc.n)
		b.Run(fmt.Sprintf("M=%d/N=%d", bc.m, bc.n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Table(bs, bc.m, seeds); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
