// Command maglev is bpfsim's headline demo: a Cilium-style Maglev load
// balancer running as an XDP program on the simulated kernel.
//
// Read it top to bottom. It
//
//  1. loads the XDP program (bpf/maglev.bpf.c, compiled with clang and
//     committed) into a simulated kernel;
//  2. creates services whose backends are chosen by Maglev consistent
//     hashing: each service gets a lookup table of M slots (M prime, about
//     100 slots per backend) computed exactly as Cilium computes it, stored
//     in an inner array map of its own size under one outer hash-of-maps
//     (BPF_F_INNER_MAP, the seed 001 change that let Cilium size tables per
//     service);
//  3. sends a deterministic traffic mix through the datapath on two
//     simulated CPUs at once;
//  4. reports how evenly the backends share the traffic, how many flows
//     move when a backend goes away, how fast the simulated datapath runs,
//     and the instructions the kernel would run for the two lookups;
//  5. draws the shares and the disruption as an SVG chart.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/bpfsim/bpfsim/examples/maglev/lb"
	"github.com/bpfsim/bpfsim/examples/maglev/maglev"
	"github.com/bpfsim/bpfsim/sim"
)

func main() {
	backends := flag.Int("backends", 100, "backends of the service the report looks at (3 to 1000)")
	services := flag.Int("services", 4, "services behind the load balancer")
	packets := flag.Int("packets", 1_000_000, "packets to send")
	seed := flag.Uint64("seed", 1, "seed of the simulated traffic and kernel")
	tableSize := flag.Uint("table-size", 0, "Maglev table size M of every service, a prime (0: the smallest of Cilium's sizes with 100 slots per backend)")
	svgPath := flag.String("svg", filepath.Join(os.TempDir(), "bpfsim-maglev.svg"), "where to write the chart")
	jit := flag.Bool("jit", false, "run the datapath JITed to arm64 on the A64 emulator, and show the A64 code of the lookups")
	flag.Parse()
	if err := run(config{backends: *backends, services: *services, packets: *packets, seed: *seed, tableSize: uint32(*tableSize), svg: *svgPath, jit: *jit}, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "maglev:", err)
		os.Exit(1)
	}
}

type config struct {
	backends, services, packets int
	seed                        uint64
	tableSize                   uint32
	svg                         string
	jit                         bool
}

// service is one service of the demo, with its backends and table.
type service struct {
	svc      lb.Service
	backends []maglev.Backend
	m        uint32
	table    []uint32
}

func run(cfg config, out *os.File) error {
	if cfg.backends < 3 || cfg.backends > 1000 {
		return fmt.Errorf("--backends must be between 3 and 1000, not %d", cfg.backends)
	}
	if cfg.services < 1 || cfg.services > 64 {
		return fmt.Errorf("--services must be between 1 and 64, not %d", cfg.services)
	}
	seeds, err := maglev.ParseSeed(maglev.DefaultSeed)
	if err != nil {
		return err
	}

	// 1. A simulated kernel with two CPUs, and the program loaded into it.
	runtime := sim.RuntimeInterpreter
	if cfg.jit {
		runtime = sim.RuntimeJIT
	}
	k, err := sim.NewKernel(&sim.Options{CPUs: 2, Seed: cfg.seed, Runtime: runtime})
	if err != nil {
		return err
	}
	balancer, err := lb.Load(k, seeds.Jhash0)
	if err != nil {
		return err
	}
	defer balancer.Close()

	// 2. Services. The first one is the one the report looks at; the
	// others have 3, 17 and 250 backends in turn, so that tables of
	// several sizes share the outer map.
	svcs := make([]*service, cfg.services)
	nextID := uint32(1)
	for i := range svcs {
		n := cfg.backends
		if i > 0 {
			n = []int{3, 17, 250}[(i-1)%3]
		}
		s := &service{svc: lb.Service{VIP: netip.AddrFrom4([4]byte{10, 96, 0, byte(i + 1)}), Port: 80, Proto: 6}}
		if i%2 == 1 {
			s.svc.Port, s.svc.Proto = 53, 17
		}
		for j := 0; j < n; j++ {
			s.backends = append(s.backends, maglev.Backend{
				Addr: netip.AddrFrom4([4]byte{172, byte(16 + i), byte(j / 250), byte(j%250 + 1)}), Port: 8080,
				Proto: s.svc.Proto, ID: nextID,
			})
			nextID++
		}
		s.m = cfg.tableSize
		if s.m == 0 {
			s.m = tableSize(len(s.backends))
		}
		if err := s.install(balancer, seeds); err != nil {
			return err
		}
		svcs[i] = s
	}
	first := svcs[0]
	fmt.Fprintf(out, "bpfsim Maglev demo: %d services on %d backends; the first service has %d backends and a table of %s slots\n",
		len(svcs), nextID-1, len(first.backends), humanize.Comma(int64(len(first.table))))

	// 3. Traffic: flows from many clients, each flow several packets,
	// sent from two goroutines, each on its own simulated CPU.
	rnd := rand.New(rand.NewPCG(cfg.seed, 0x6d61676c6576))
	flows := makeFlows(rnd, svcs, cfg.packets)
	start := time.Now()
	if err := send(balancer, flows, cfg.packets, out); err != nil {
		return err
	}
	elapsed := time.Since(start)

	// 4a. Balance: the table gives each backend about M/N slots; traffic
	// follows the table.
	counts, err := balancer.BackendCounts()
	if err != nil {
		return err
	}
	shares := reportBalance(out, first, counts)

	// 4b. Disruption: remove one backend of the first service, as
	// Cilium does: compute the new table, fill a new inner map and swap
	// it into the outer map in one update. Flows that were on other
	// backends should mostly stay.
	removed := first.backends[len(first.backends)/2]
	before := assignments(balancer, flows, first)
	oldTable := first.table
	first.backends = append(append([]maglev.Backend(nil), first.backends[:len(first.backends)/2]...), first.backends[len(first.backends)/2+1:]...)
	if err := first.install(balancer, seeds); err != nil {
		return err
	}
	after := assignments(balancer, flows, first)
	dis := reportDisruption(out, first, removed, oldTable, before, after)

	// 4c. Speed of the simulated datapath.
	how := "interpreted"
	if balancer.Program().Runtime() == sim.RuntimeJIT {
		how = "JITed to arm64, on the A64 emulator"
	}
	fmt.Fprintf(out, "\nThroughput (%s): %s packets in %s on 2 simulated CPUs: %s packets/s\n", how,
		humanize.Comma(int64(cfg.packets)), elapsed.Round(time.Millisecond), humanize.Comma(int64(float64(cfg.packets)/elapsed.Seconds())))

	// 4d. What the kernel would run for the lookups.
	fmt.Fprintf(out, "\nThe lookup path as `bpftool prog dump xlated` would show it:\n\n%s\n", annotatedLookups(balancer.Program().Xlated()))
	if cfg.jit {
		jited, err := balancer.Program().DumpJited()
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "\nThe same lookups as the arm64 JIT wrote them (`bpfsim dump jited`):\n\n%s\n", jitedLookups(jited))
	}

	// 5. The chart.
	if err := writeChart(cfg.svg, first, shares, dis); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nChart of shares and disruption: %s\n", cfg.svg)
	return nil
}

// install computes the service's Maglev table and installs it.
func (s *service) install(balancer *lb.LB, seeds maglev.Seeds) error {
	table, err := maglev.Table(s.backends, s.m, seeds)
	if err != nil {
		return err
	}
	s.table = table
	addrs := make([]lb.BackendAddr, len(s.backends))
	for i, b := range s.backends {
		addrs[i] = lb.BackendAddr{ID: b.ID, Addr: b.Addr, Port: b.Port, MAC: [6]byte{0x02, 0, 0, 0, byte(b.ID >> 8), byte(b.ID)}}
	}
	return balancer.SetService(s.svc, table, addrs)
}

// tableSize picks the smallest of Cilium's table sizes with at least 100
// slots per backend (the Maglev paper's M > 100·N).
func tableSize(n int) uint32 {
	for _, m := range maglev.SupportedSizes {
		if int(m) >= 100*n {
			return m
		}
	}
	return maglev.SupportedSizes[len(maglev.SupportedSizes)-1]
}

// flow is one simulated connection and the packet that carries it.
type flow struct {
	svc *service
	f   lb.Flow
	pkt []byte
}

// makeFlows makes about one flow per 5 packets, spread over the services
// in proportion to their backends (bigger services get more traffic).
func makeFlows(rnd *rand.Rand, svcs []*service, packets int) []flow {
	total := 0
	for _, s := range svcs {
		total += len(s.backends)
	}
	n := max(packets/5, 1)
	flows := make([]flow, n)
	for i := range flows {
		pick := rnd.IntN(total)
		s := svcs[0]
		for _, c := range svcs {
			if pick < len(c.backends) {
				s = c
				break
			}
			pick -= len(c.backends)
		}
		f := lb.Flow{
			Src:     netip.AddrFrom4([4]byte{100, byte(rnd.IntN(64)), byte(rnd.IntN(256)), byte(1 + rnd.IntN(254))}),
			Dst:     s.svc.VIP,
			SrcPort: uint16(1024 + rnd.IntN(64511)),
			DstPort: s.svc.Port,
			Proto:   s.svc.Proto,
		}
		flows[i] = flow{svc: s, f: f, pkt: lb.BuildPacket(f, 64)}
	}
	return flows
}

// send sends packets packets, flow after flow, from two goroutines on
// CPUs 0 and 1, with a progress bar on a terminal.
func send(balancer *lb.LB, flows []flow, packets int, out *os.File) error {
	bar := newProgress(out, packets)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for cpu := 0; cpu < 2; cpu++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := cpu; i < packets; i += 2 {
				fl := &flows[i%len(flows)]
				verdict, _, err := balancer.Run(fl.pkt, cpu)
				if err == nil && verdict != xdpTX {
					err = fmt.Errorf("a packet of flow %v got verdict %d, not XDP_TX", fl.f, verdict)
				}
				if err != nil {
					errs[cpu] = err
					return
				}
				if cpu == 0 && i%20000 == 0 {
					bar.set(i)
				}
			}
		}()
	}
	wg.Wait()
	bar.done()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

const xdpTX = 3

// assignments returns, for each flow of s, the backend the datapath sends
// it to.
func assignments(balancer *lb.LB, flows []flow, s *service) map[int]netip.Addr {
	got := map[int]netip.Addr{}
	for i := range flows {
		if flows[i].svc != s {
			continue
		}
		_, out, err := balancer.Run(flows[i].pkt, 0)
		if err != nil {
			continue
		}
		if addr, _, err := lb.ParseDest(out); err == nil {
			got[i] = addr
		}
	}
	return got
}

// shares is what the balance report found for each backend of a service.
type shares struct {
	ids     []uint32
	slots   []float64 // fraction of the table's slots
	traffic []float64 // fraction of the service's packets
}

func reportBalance(out *os.File, s *service, counts map[uint32]uint64) shares {
	n := len(s.backends)
	slotCount := map[uint32]int{}
	for _, id := range s.table {
		slotCount[id]++
	}
	var total uint64
	for _, b := range s.backends {
		total += counts[b.ID]
	}
	sh := shares{}
	minSlots, maxSlots := len(s.table), 0
	var maxDev float64
	for _, b := range s.backends {
		c := slotCount[b.ID]
		minSlots, maxSlots = min(minSlots, c), max(maxSlots, c)
		sh.ids = append(sh.ids, b.ID)
		sh.slots = append(sh.slots, float64(c)/float64(len(s.table)))
		t := 0.0
		if total > 0 {
			t = float64(counts[b.ID]) / float64(total)
		}
		sh.traffic = append(sh.traffic, t)
		maxDev = max(maxDev, abs(t*float64(n)-1))
	}
	ideal := 1 / float64(n)
	fmt.Fprintf(out, "\nBalance of the first service (%d backends, %s slots):\n", n, humanize.Comma(int64(len(s.table))))
	fmt.Fprintf(out, "  slots per backend: %d to %d (ideal %.1f): max/min %.4f\n", minSlots, maxSlots, float64(len(s.table))/float64(n), float64(maxSlots)/float64(minSlots))
	fmt.Fprintf(out, "  traffic: %s packets; each backend's share is within %.1f%% of the ideal %.2f%%\n",
		humanize.Comma(int64(total)), maxDev*100, ideal*100)
	fmt.Fprintf(out, "  (the table is exact; traffic adds the randomness of a finite number of flows)\n")
	// A few backends, to see the numbers.
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return sh.traffic[order[a]] > sh.traffic[order[b]] })
	fmt.Fprintf(out, "  busiest: ")
	for _, i := range order[:min(3, n)] {
		fmt.Fprintf(out, "%s %.2f%%  ", s.backends[i].Addr, sh.traffic[i]*100)
	}
	fmt.Fprintf(out, "\n  quietest: ")
	for _, i := range order[max(0, n-3):] {
		fmt.Fprintf(out, "%s %.2f%%  ", s.backends[i].Addr, sh.traffic[i]*100)
	}
	fmt.Fprintln(out)
	return sh
}

// disruption is what the removal of a backend changed.
type disruption struct {
	slotsMoved, flowsMoved, ideal float64
}

func reportDisruption(out *os.File, s *service, removed maglev.Backend, oldTable []uint32, before, after map[int]netip.Addr) disruption {
	moved := 0
	for i, id := range oldTable {
		if s.table[i] != id {
			moved++
		}
	}
	flowsMoved, flows := 0, 0
	for i, a := range before {
		if a == removed.Addr {
			continue // had to move
		}
		flows++
		if after[i] != a {
			flowsMoved++
		}
	}
	d := disruption{
		slotsMoved: float64(moved) / float64(len(oldTable)),
		ideal:      1 / float64(len(s.backends)+1),
	}
	if flows > 0 {
		d.flowsMoved = float64(flowsMoved) / float64(flows)
	}
	fmt.Fprintf(out, "\nRemoving backend %s (one of %d):\n", removed.Addr, len(s.backends)+1)
	fmt.Fprintf(out, "  %.2f%% of the table's slots changed (ideal: only the removed backend's %.2f%%, %.2fx the ideal)\n",
		d.slotsMoved*100, d.ideal*100, d.slotsMoved/d.ideal)
	fmt.Fprintf(out, "  %.2f%% of the flows on other backends moved (%s of %s); a larger table moves fewer (--table-size)\n",
		d.flowsMoved*100, humanize.Comma(int64(flowsMoved)), humanize.Comma(int64(flows)))
	return d
}

// annotatedLookups picks the lines of the xlated dump that do the two map
// lookups, with a note on each.
func annotatedLookups(xlated string) string {
	lines := strings.Split(strings.TrimRight(xlated, "\n"), "\n")
	var b strings.Builder
	shown := map[int]bool{}
	show := func(from, to int, note string) {
		for i := max(from, 0); i <= min(to, len(lines)-1); i++ {
			if shown[i] {
				continue
			}
			shown[i] = true
			if i == from && note != "" {
				fmt.Fprintf(&b, "  %-60s <- %s\n", lines[i], note)
			} else {
				fmt.Fprintf(&b, "  %s\n", lines[i])
			}
		}
	}
	for i, l := range lines {
		switch {
		case strings.Contains(l, "call __htab_map_lookup_elem") && i+3 < len(lines) && strings.Contains(lines[i+3], "= *(u64 *)(r0 +0)"):
			show(i-2, i-1, "")
			show(i, i, "outer hash of maps: the helper call became a direct call into the hash table")
			show(i+1, i+2, "")
			show(i+3, i+3, "the element holds the inner map's address: that is the lookup's result")
		case strings.Contains(l, "call array_map_lookup_elem"):
			show(i-1, i-1, "")
			show(i, i, "the inner array has BPF_F_INNER_MAP: its size varies, so no inlining, a direct call")
		}
	}
	if b.Len() == 0 {
		return "  (no map lookups found in the xlated code)"
	}
	return b.String()
}

// jitedLookups picks the A64 code of the two map lookups out of a
// DumpJited listing: each BPF instruction near a lookup call, with the
// A64 instructions it became.
func jitedLookups(listing string) string {
	// Blocks: a BPF instruction's "; N: ..." line and the code after it.
	type block struct{ lines []string }
	var blocks []block
	for _, l := range strings.Split(strings.TrimRight(listing, "\n"), "\n") {
		switch {
		case strings.HasPrefix(l, "; ") && len(l) > 2 && l[2] >= '0' && l[2] <= '9':
			blocks = append(blocks, block{lines: []string{l}})
		case len(blocks) > 0 && !strings.HasPrefix(l, ";"):
			blocks[len(blocks)-1].lines = append(blocks[len(blocks)-1].lines, l)
		}
	}
	var b strings.Builder
	shown := map[int]bool{}
	show := func(from, to int, note string) {
		for i := max(from, 0); i <= min(to, len(blocks)-1); i++ {
			if shown[i] {
				continue
			}
			shown[i] = true
			for j, l := range blocks[i].lines {
				if j == 0 && i == from && note != "" {
					fmt.Fprintf(&b, "  %-60s <- %s\n", l, note)
				} else {
					fmt.Fprintf(&b, "  %s\n", l)
				}
			}
		}
	}
	for i, bl := range blocks {
		switch head := bl.lines[0]; {
		case strings.Contains(head, "call __htab_map_lookup_elem") && i+3 < len(blocks) && strings.Contains(blocks[i+3].lines[0], "= *(u64 *)(r0 +0)"):
			show(i-1, i-1, "")
			show(i, i, "a BL (or the address in x10 and BLR) into the kernel's hash lookup")
			show(i+1, i+3, "the inlined rest, then the load of the inner map's address")
		case strings.Contains(head, "call array_map_lookup_elem"):
			show(i, i, "the inner array: a direct call, result moved from x0 to x7 (R0)")
		}
	}
	if b.Len() == 0 {
		return "  (no map lookups found in the JIT's code)"
	}
	return b.String()
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}
