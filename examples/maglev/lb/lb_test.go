package lb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/examples/internal/bpfobj"
	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

const testSeed = 0x5eed1234

// The committed object is built from the committed source: a source
// changed without `go generate ./examples/maglev/lb` fails here.
func TestObjectMatchesSource(t *testing.T) {
	bpfobj.CheckFresh(t, "../bpf/maglev.bpf.c", "maglev.bpf.o", "go generate ./examples/maglev/lb")
	onDisk, err := os.ReadFile("maglev.bpf.o")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, object) {
		t.Error("the embedded object is not maglev.bpf.o")
	}
}

func newTestLB(t testing.TB, cpus int) *LB { return newTestLBWith(t, cpus, sim.RuntimeDefault) }

// newTestLBWith loads the balancer into a kernel with the given runtime.
func newTestLBWith(t testing.TB, cpus int, rt sim.Runtime) *LB {
	t.Helper()
	k, err := sim.NewKernel(&sim.Options{CPUs: cpus, Seed: 1, Runtime: rt})
	if err != nil {
		t.Fatal(err)
	}
	lb, err := Load(k, testSeed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lb.Close() })
	return lb
}

// testBackends returns n IPv4 backends with ids from first: 10.1.x.y
// (x.y the id), the port given, a MAC derived from the id.
func testBackends(first uint32, n int, port uint16) []BackendAddr {
	out := make([]BackendAddr, n)
	for i := range out {
		id := first + uint32(i)
		out[i] = BackendAddr{
			ID:   id,
			Addr: netip.AddrFrom4([4]byte{10, 1, byte(id >> 8), byte(id)}),
			Port: port,
			MAC:  [6]byte{0x02, 0xbe, 0, 0, byte(id >> 8), byte(id)},
		}
	}
	return out
}

// backendsFor is testBackends for svc's family: 2001:db8:0:be::x:y for
// IPv6.
func backendsFor(svc Service, first uint32, n int, port uint16) []BackendAddr {
	bs := testBackends(first, n, port)
	if !svc.VIP.Is4() {
		for i := range bs {
			bs[i].Addr = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0xbe, 14: byte(bs[i].ID >> 8), 15: byte(bs[i].ID)})
		}
	}
	return bs
}

// idOf is the backend id in the last two bytes of a test backend's
// address.
func idOf(a netip.Addr) uint32 {
	b := a.As16()
	return uint32(b[14])<<8 | uint32(b[15])
}

// fillTable is a deterministic stand-in for a Maglev table: backends in
// turn, with a stride that mixes them.
func fillTable(backends []BackendAddr, m int) []uint32 {
	t := make([]uint32, m)
	for i := range t {
		t[i] = backends[(i*7+i/len(backends))%len(backends)].ID
	}
	return t
}

func identityTable(backends []BackendAddr) []uint32 {
	t := make([]uint32, len(backends))
	for i, b := range backends {
		t[i] = b.ID
	}
	return t
}

var (
	webSvc = Service{VIP: netip.MustParseAddr("192.0.2.10"), Port: 80, Proto: ProtoTCP}
	dnsSvc = Service{VIP: netip.MustParseAddr("192.0.2.53"), Port: 53, Proto: ProtoUDP}
	web6   = Service{VIP: netip.MustParseAddr("2001:db8::80"), Port: 443, Proto: ProtoTCP}
	dns6   = Service{VIP: netip.MustParseAddr("2001:db8::53"), Port: 53, Proto: ProtoUDP}
)

// clientFlow is the i-th client's flow to svc, from an address of its
// family.
func clientFlow(svc Service, i int) Flow {
	src := netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})
	if !svc.VIP.Is4() {
		src = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0x0c, 14: byte(i >> 8), 15: byte(i)})
	}
	return Flow{
		Src:     src,
		Dst:     svc.VIP,
		SrcPort: uint16(1024 + i*7919%60000),
		DstPort: svc.Port,
		Proto:   svc.Proto,
	}
}

// balanced is what the balancer must send for f, balanced to b: the same
// packet to b's address and port, from the balancer's MAC to b's.
func balanced(f Flow, b BackendAddr, payload int) []byte {
	f.Dst, f.DstPort = b.Addr, b.Port
	pkt := BuildPacket(f, payload)
	copy(pkt[0:6], b.MAC[:])
	copy(pkt[6:12], LBMAC[:])
	return pkt
}

func byID(bs []BackendAddr) map[uint32]BackendAddr {
	m := map[uint32]BackendAddr{}
	for _, b := range bs {
		m[b.ID] = b
	}
	return m
}

func mustSet(t testing.TB, c *control, svc Service, table []uint32, bs []BackendAddr) {
	t.Helper()
	if err := c.SetService(svc, table, bs); err != nil {
		t.Fatal(err)
	}
}

// A service's packets reach every backend of its table, at the backend
// its slot names, with the destination rewritten, valid checksums and
// nothing else changed.
func TestPacketsReachTheirSlotsBackendRewritten(t *testing.T) {
	for _, tc := range []struct {
		name     string
		svc      Service
		backends int
		m        int
		port     uint16
	}{
		{"tcp 3 backends M=251", webSvc, 3, 251, 8080},
		{"tcp 31 backends M=4093", webSvc, 31, 4093, 8081},
		{"udp 5 backends M=7 same port", dnsSvc, 5, 7, 53},
		{"udp 2 backends M=1021", dnsSvc, 2, 1021, 5353},
		{"tcp6 3 backends M=251", web6, 3, 251, 8443},
		{"tcp6 33 backends M=4093 same port", web6, 33, 4093, 443},
		{"udp6 4 backends M=509", dns6, 4, 509, 5353},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lb := newTestLB(t, 2)
			bs := backendsFor(tc.svc, 1, tc.backends, tc.port)
			table := fillTable(bs, tc.m)
			mustSet(t, lb.control, tc.svc, table, bs)
			seen := map[uint32]int{}
			for i := range 2000 {
				f := clientFlow(tc.svc, i)
				payload := i % 40
				verdict, out, err := lb.Run(BuildPacket(f, payload), i%2)
				if err != nil {
					t.Fatal(err)
				}
				want := byID(bs)[table[FlowHash(f, testSeed)%uint32(tc.m)]]
				if verdict != XDPTX {
					t.Fatalf("flow %d: verdict %d, want XDP_TX", i, verdict)
				}
				if err := CheckChecksums(out); err != nil {
					t.Fatalf("flow %d: %v\n% x", i, err, out)
				}
				if exp := balanced(f, want, payload); !bytes.Equal(out, exp) {
					t.Fatalf("flow %d to backend %d:\n got % x\nwant % x", i, want.ID, out, exp)
				}
				seen[want.ID]++
			}
			if len(seen) != tc.backends {
				t.Errorf("%d of %d backends reached: %v", len(seen), tc.backends, seen)
			}
		})
	}
}

// The slot the program takes is FlowHash % M: with a table whose slots
// all name different backends, the backend a packet reaches names its
// slot, for three prime sizes (together, the hash modulo about 2^30),
// for IPv4 and IPv6 flows.
func TestSlotIsFlowHashModuloM(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, svc := range []Service{webSvc, web6} {
		for _, m := range []int{251, 1021, 4093} {
			t.Run(fmt.Sprintf("%v M=%d", svc, m), func(t *testing.T) {
				slotIsFlowHash(t, rng, svc, m)
			})
		}
	}
}

func slotIsFlowHash(t *testing.T, rng *rand.Rand, svc Service, m int) {
	lb := newTestLB(t, 1)
	bs := backendsFor(svc, 1, m, 0)
	mustSet(t, lb.control, svc, identityTable(bs), bs)
	for i := range 3000 {
		var src [16]byte
		for j := range src {
			src[j] = byte(rng.Uint32())
		}
		f := Flow{
			Src:     netip.AddrFrom16(src),
			Dst:     svc.VIP,
			SrcPort: uint16(rng.Uint32()),
			DstPort: svc.Port,
			Proto:   svc.Proto,
		}
		if svc.VIP.Is4() {
			f.Src = netip.AddrFrom4([4]byte(src[:4]))
		}
		_, out, err := lb.Run(BuildPacket(f, 0), 0)
		if err != nil {
			t.Fatal(err)
		}
		dst, _, err := ParseDest(out)
		if err != nil {
			t.Fatal(err)
		}
		slot := int(idOf(dst)) - 1
		if want := int(FlowHash(f, testSeed) % uint32(m)); slot != want {
			t.Fatalf("flow %d %+v: slot %d, FlowHash gives %d", i, f, slot, want)
		}
	}
}

// FlowHash is the kernel's jhash_3words on Cilium's words; lookup3's
// hashword() of the same three words must agree (lookup3.c's own test
// checks hashword against hashlittle; here it is written out apart).
func TestFlowHashIsJhash3Words(t *testing.T) {
	rol := func(x uint32, k uint) uint32 { return x<<k | x>>(32-k) }
	hashword := func(k [3]uint32, initval uint32) uint32 {
		a := 0xdeadbeef + uint32(len(k))<<2 + initval
		b, c := a, a
		c += k[2]
		b += k[1]
		a += k[0]
		c ^= b
		c -= rol(b, 14)
		a ^= c
		a -= rol(c, 11)
		b ^= a
		b -= rol(a, 25)
		c ^= b
		c -= rol(b, 16)
		a ^= c
		a -= rol(c, 4)
		b ^= a
		b -= rol(a, 14)
		c ^= b
		c -= rol(b, 24)
		return c
	}
	f := Flow{Src: netip.MustParseAddr("1.2.3.4"), Dst: webSvc.VIP, SrcPort: 0x1122, DstPort: 80, Proto: ProtoTCP}
	// saddr loaded little-endian: 0x04030201; ports word: (0x2211 << 16) | 0x5000.
	want := hashword([3]uint32{0x04030201, 0x22115000, 6}, 99)
	if got := FlowHash(f, 99); got != want {
		t.Errorf("FlowHash = %#x, hashword = %#x", got, want)
	}
	// The destination address is not hashed.
	g := f
	g.Dst = netip.MustParseAddr("203.0.113.1")
	if FlowHash(f, 99) != FlowHash(g, 99) {
		t.Error("FlowHash depends on the destination address")
	}
}

// Traffic that is not for a service goes to the stack untouched.
func TestNonServiceTrafficPasses(t *testing.T) {
	lb := newTestLB(t, 1)
	bs := testBackends(1, 3, 8080)
	mustSet(t, lb.control, webSvc, fillTable(bs, 251), bs)
	bs6 := backendsFor(web6, 10, 3, 8080)
	mustSet(t, lb.control, web6, fillTable(bs6, 251), bs6)
	base, base6 := clientFlow(webSvc, 1), clientFlow(web6, 1)
	with := func(change func(*Flow)) []byte {
		f := base
		change(&f)
		return BuildPacket(f, 10)
	}
	with6 := func(change func(*Flow)) []byte {
		f := base6
		change(&f)
		return BuildPacket(f, 10)
	}
	// A hop-by-hop options header (PadN) before the TCP header.
	hopByHop := BuildPacket(base6, 10)
	hopByHop = append(append(append([]byte{}, hopByHop[:14+40]...), ProtoTCP, 0, 1, 4, 0, 0, 0, 0), hopByHop[14+40:]...)
	hopByHop[14+6] = 0
	binary.BigEndian.PutUint16(hopByHop[14+4:], binary.BigEndian.Uint16(hopByHop[14+4:])+8)
	arp := BuildPacket(base, 28)
	binary.BigEndian.PutUint16(arp[12:], 0x0806)
	fragment := BuildPacket(base, 10)
	binary.BigEndian.PutUint16(fragment[14+6:], 0x2000) // more fragments
	later := BuildPacket(base, 10)
	binary.BigEndian.PutUint16(later[14+6:], 0x0010) // offset 128
	for _, tc := range []struct {
		name string
		pkt  []byte
		stat int
	}{
		{"ARP", arp, StatPassNotIP},
		{"IPv6 TCP to another address", with6(func(f *Flow) { f.Dst = netip.MustParseAddr("2001:db8::81") }), StatPassNotService},
		{"IPv6 TCP to the IPv4 service's port", with6(func(f *Flow) { f.DstPort = 80 }), StatPassNotService},
		{"ICMPv6 to the VIP", with6(func(f *Flow) { f.Proto = 58 }), StatPassNotService},
		{"IPv6 with an extension header", hopByHop, StatPassNotService},
		{"IPv4 TCP to the IPv6 service's port", with(func(f *Flow) { f.DstPort = 443 }), StatPassNotService},
		{"ICMP to the VIP", with(func(f *Flow) { f.Proto = 1 }), StatPassNotService},
		{"TCP to another address", with(func(f *Flow) { f.Dst = netip.MustParseAddr("192.0.2.11") }), StatPassNotService},
		{"TCP to another port", with(func(f *Flow) { f.DstPort = 8080 }), StatPassNotService},
		{"UDP to the TCP service's port", with(func(f *Flow) { f.Proto = ProtoUDP }), StatPassNotService},
		{"first fragment", fragment, StatPassFragment},
		{"later fragment", later, StatPassFragment},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := lb.Stats()
			if err != nil {
				t.Fatal(err)
			}
			verdict, out, err := lb.Run(tc.pkt, 0)
			if err != nil {
				t.Fatal(err)
			}
			if verdict != XDPPass || !bytes.Equal(out, tc.pkt) {
				t.Errorf("verdict %d, packet changed: %v; want XDP_PASS, unchanged", verdict, !bytes.Equal(out, tc.pkt))
			}
			after, _ := lb.Stats()
			if after[tc.stat] != before[tc.stat]+1 {
				t.Errorf("%s: %d -> %d, want one more", StatNames[tc.stat], before[tc.stat], after[tc.stat])
			}
		})
	}
}

// Frames whose headers are cut short or invalid are dropped.
func TestMalformedPacketsAreDropped(t *testing.T) {
	lb := newTestLB(t, 1)
	bs := testBackends(1, 3, 8080)
	mustSet(t, lb.control, webSvc, fillTable(bs, 251), bs)
	tcp := BuildPacket(clientFlow(webSvc, 1), 0)
	udp := BuildPacket(clientFlow(dnsSvc, 1), 0)
	tcp6 := BuildPacket(clientFlow(web6, 1), 0)
	udp6 := BuildPacket(clientFlow(dns6, 1), 0)
	vlan := append(append(append([]byte{}, tcp[:12]...), 0x81, 0x00, 0x00, 0x05), tcp[12:]...)
	mutate := func(pkt []byte, f func([]byte)) []byte {
		p := append([]byte{}, pkt...)
		f(p)
		return p
	}
	for _, tc := range []struct {
		name string
		pkt  []byte
	}{
		// (Frames under 14 bytes never reach XDP: the kernel's test run
		// refuses them with EINVAL, and so does bpfsim's.)
		{"Ethernet only", tcp[:14]},
		{"VLAN tag cut", vlan[:16]},
		{"IPv4 header cut", tcp[:14+19]},
		{"VLAN IPv4 header cut", vlan[:18+19]},
		{"IP version 6 in an IPv4 frame", mutate(tcp, func(p []byte) { p[14] = 6<<4 | 5 })},
		{"IHL 4", mutate(tcp, func(p []byte) { p[14] = 4<<4 | 4 })},
		{"TCP header cut", tcp[:14+20+19]},
		{"UDP header cut", udp[:14+20+7]},
		{"IHL 15, TCP beyond the frame", mutate(tcp, func(p []byte) { p[14] = 4<<4 | 15 })},
		{"IPv6 header cut", tcp6[:14+39]},
		{"IP version 4 in an IPv6 frame", mutate(tcp6, func(p []byte) { p[14] = 4 << 4 })},
		{"TCP header cut after IPv6", tcp6[:14+40+19]},
		{"UDP header cut after IPv6", udp6[:14+40+7]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := lb.Stats()
			verdict, _, err := lb.Run(tc.pkt, 0)
			if err != nil {
				t.Fatal(err)
			}
			if verdict != XDPDrop {
				t.Errorf("verdict %d, want XDP_DROP", verdict)
			}
			after, _ := lb.Stats()
			if after[StatDropMalformed] != before[StatDropMalformed]+1 {
				t.Errorf("drop_malformed %d -> %d, want one more", before[StatDropMalformed], after[StatDropMalformed])
			}
		})
	}
}

// Tagged frames, IP options and UDP without a checksum are balanced
// too, with everything the program does not rewrite left alone.
func TestVLANOptionsAndUDPWithoutChecksum(t *testing.T) {
	lb := newTestLB(t, 1)
	bs := testBackends(1, 4, 8080)
	table := fillTable(bs, 251)
	mustSet(t, lb.control, webSvc, table, bs)
	dbs := testBackends(100, 2, 5353)
	dtable := fillTable(dbs, 251)
	mustSet(t, lb.control, dnsSvc, dtable, dbs)

	t.Run("VLAN", func(t *testing.T) {
		f := clientFlow(webSvc, 9)
		plain := BuildPacket(f, 5)
		tagged := append(append(append([]byte{}, plain[:12]...), 0x81, 0x00, 0x20, 0x07), plain[12:]...)
		verdict, out, err := lb.Run(tagged, 0)
		if err != nil || verdict != XDPTX {
			t.Fatalf("verdict %d, %v", verdict, err)
		}
		exp := balanced(f, byID(bs)[table[FlowHash(f, testSeed)%251]], 5)
		exp = append(append(append([]byte{}, exp[:12]...), 0x81, 0x00, 0x20, 0x07), exp[12:]...)
		if !bytes.Equal(out, exp) {
			t.Errorf("\n got % x\nwant % x", out, exp)
		}
	})
	t.Run("IP options", func(t *testing.T) {
		f := clientFlow(webSvc, 10)
		pkt := withOptions(BuildPacket(f, 3), 3)
		verdict, out, err := lb.Run(pkt, 0)
		if err != nil || verdict != XDPTX {
			t.Fatalf("verdict %d, %v", verdict, err)
		}
		if err := CheckChecksums(out); err != nil {
			t.Fatal(err)
		}
		want := byID(bs)[table[FlowHash(f, testSeed)%251]]
		if dst, port, _ := ParseDest(out); dst != want.Addr || port != want.Port {
			t.Errorf("sent to %v:%d, want %v:%d", dst, port, want.Addr, want.Port)
		}
	})
	t.Run("UDP checksum 0", func(t *testing.T) {
		f := clientFlow(dnsSvc, 11)
		pkt := BuildPacket(f, 12)
		pkt[14+20+6], pkt[14+20+7] = 0, 0
		verdict, out, err := lb.Run(pkt, 0)
		if err != nil || verdict != XDPTX {
			t.Fatalf("verdict %d, %v", verdict, err)
		}
		if c := binary.BigEndian.Uint16(out[14+20+6:]); c != 0 {
			t.Errorf("UDP checksum %#x, want 0 (none) kept", c)
		}
		if err := CheckChecksums(out); err != nil {
			t.Fatal(err)
		}
	})
}

// withOptions inserts words 32-bit words of IP options (NOPs) in an
// untagged IPv4 frame and fixes the lengths and checksums.
func withOptions(pkt []byte, words int) []byte {
	opts := bytes.Repeat([]byte{1}, 4*words)
	out := append(append(append([]byte{}, pkt[:14+20]...), opts...), pkt[14+20:]...)
	ip := out[14:]
	ip[0] = 4<<4 | byte(5+words)
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], ^onesSum(0, ip[:20+4*words]))
	return out
}

// A service's table is replaced while another CPU sends its packets:
// every packet meets the old table or the new one (never a drop), and
// once SetService returns every packet meets the new one. Tables change
// size too (251 <-> 4093).
func TestServiceReplacementIsAtomic(t *testing.T) {
	lb := newTestLB(t, 2)
	a := testBackends(1, 3, 8080)
	b := testBackends(10, 3, 9090)
	tables := []struct {
		bs    []BackendAddr
		table []uint32
	}{
		{a, fillTable(a, 251)},
		{b, fillTable(b, 251)},
		{a, fillTable(a, 4093)},
		{b, fillTable(b, 4093)},
		{b, fillTable(b, 251)},
	}
	mustSet(t, lb.control, webSvc, tables[0].table, tables[0].bs)

	var stop atomic.Bool
	var wg sync.WaitGroup
	var sent, toA, toB atomic.Int64
	var failure atomic.Value
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			f := clientFlow(webSvc, i%500)
			verdict, out, err := lb.Run(BuildPacket(f, 0), 1)
			if err != nil {
				failure.Store(err.Error())
				return
			}
			if verdict != XDPTX {
				failure.Store(fmt.Sprintf("packet %d: verdict %d", i, verdict))
				return
			}
			_, port, _ := ParseDest(out)
			switch port {
			case 8080:
				toA.Add(1)
			case 9090:
				toB.Add(1)
			default:
				failure.Store(fmt.Sprintf("packet %d to port %d", i, port))
				return
			}
			sent.Add(1)
		}
	}()
	for round := range 40 {
		next := tables[(round+1)%len(tables)]
		mustSet(t, lb.control, webSvc, next.table, next.bs)
		// From now on, the new table only.
		for i := range 50 {
			f := clientFlow(webSvc, i)
			verdict, out, err := lb.Run(BuildPacket(f, 0), 0)
			if err != nil {
				t.Fatal(err)
			}
			want := byID(next.bs)[next.table[FlowHash(f, testSeed)%uint32(len(next.table))]]
			if exp := balanced(f, want, 0); verdict != XDPTX || !bytes.Equal(out, exp) {
				t.Fatalf("round %d, flow %d: verdict %d, sent to %v; want backend %d", round, i, verdict, out[30:34], want.ID)
			}
		}
	}
	stop.Store(true)
	wg.Wait()
	if f := failure.Load(); f != nil {
		t.Fatal(f)
	}
	t.Logf("%d packets during 40 replacements: %d to the A backends, %d to the B backends", sent.Load(), toA.Load(), toB.Load())
	// Backends of the last table only.
	last := byID(tables[40%len(tables)].bs)
	var id uint32
	var bk [12]byte
	it := lb.Map("backends").Iterate()
	n := 0
	for it.Next(&id, &bk) {
		if _, ok := last[id]; !ok {
			t.Errorf("backend %d of an old table is still in the backends map", id)
		}
		n++
	}
	if n != len(last) {
		t.Errorf("%d backends in the map, want %d", n, len(last))
	}
}

// The swap leaves the old inner array alone (no packet can see a table
// half written) and frees it once the outer map has let go of it.
func TestReplacementSwapsInnerArrays(t *testing.T) {
	lb := newTestLB(t, 1)
	a := testBackends(1, 3, 8080)
	mustSet(t, lb.control, webSvc, fillTable(a, 251), a)
	var old *sim.Map
	if err := lb.Map("maglev_outer").Lookup(svcKey(webSvc), &old); err != nil {
		t.Fatal(err)
	}
	oldID := old.ID()
	if old.MaxEntries() != 251 || old.Flags()&uapi.BPF_F_INNER_MAP == 0 {
		t.Errorf("inner array: %d entries, flags %#x", old.MaxEntries(), old.Flags())
	}
	b := testBackends(10, 3, 9090)
	mustSet(t, lb.control, webSvc, fillTable(b, 4093), b)
	var slot0 uint32
	if err := old.Lookup(uint32(0), &slot0); err != nil || slot0 != a[0].ID {
		t.Errorf("old table slot 0 = %d, %v; want %d, untouched", slot0, err, a[0].ID)
	}
	var cur *sim.Map
	if err := lb.Map("maglev_outer").Lookup(svcKey(webSvc), &cur); err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	if cur.ID() == oldID || cur.MaxEntries() != 4093 {
		t.Errorf("the service's table is map %d of %d entries, want a new one of 4093", cur.ID(), cur.MaxEntries())
	}
	old.Close()
	k := lb.Program().Kernel()
	k.SynchronizeRCU()
	if slices.Contains(k.MapIDs(), oldID) {
		t.Errorf("the old inner array (map %d) is still alive", oldID)
	}
}

// Deleting a service sends its packets to the stack and drops the
// backends no other service uses.
func TestDeleteService(t *testing.T) {
	lb := newTestLB(t, 1)
	shared := testBackends(1, 2, 8080)
	own := testBackends(50, 1, 8080)
	mustSet(t, lb.control, webSvc, fillTable(shared, 251), shared)
	both := append(append([]BackendAddr{}, shared...), own...)
	other := Service{VIP: netip.MustParseAddr("192.0.2.20"), Port: 80, Proto: ProtoTCP}
	mustSet(t, lb.control, other, fillTable(both, 509), both)
	if err := lb.DeleteService(other); err != nil {
		t.Fatal(err)
	}
	f := clientFlow(other, 3)
	if verdict, _, _ := lb.Run(BuildPacket(f, 0), 0); verdict != XDPPass {
		t.Errorf("after the delete: verdict %d, want XDP_PASS", verdict)
	}
	var bk [12]byte
	if err := lb.Map("backends").Lookup(uint32(50), &bk); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("backend 50 (only the deleted service's): %v, want gone", err)
	}
	if err := lb.Map("backends").Lookup(uint32(1), &bk); err != nil {
		t.Errorf("backend 1 (still the web service's): %v", err)
	}
	if verdict, _, _ := lb.Run(BuildPacket(clientFlow(webSvc, 3), 0), 0); verdict != XDPTX {
		t.Errorf("the other service: verdict %d, want XDP_TX", verdict)
	}
	if err := lb.DeleteService(other); !errors.Is(err, uapi.ENOENT) {
		t.Errorf("deleting it again: %v, want ENOENT", err)
	}
	if got := lb.Services(); len(got) != 1 || got[0] != webSvc {
		t.Errorf("services %v", got)
	}
}

// Bad input is refused with EINVAL (E2BIG for sizes) and changes nothing.
func TestSetServiceRefusesBadInput(t *testing.T) {
	lb := newTestLB(t, 1)
	bs := testBackends(1, 3, 8080)
	table := fillTable(bs, 251)
	mustSet(t, lb.control, webSvc, table, bs)
	v6 := bs[0]
	v6.Addr = netip.MustParseAddr("2001:db8::1")
	clash := bs[0]
	clash.Addr = netip.MustParseAddr("10.9.9.9")
	other := Service{VIP: netip.MustParseAddr("192.0.2.30"), Port: 80, Proto: ProtoTCP}
	for _, tc := range []struct {
		name     string
		svc      Service
		table    []uint32
		backends []BackendAddr
		errno    error
	}{
		{"empty table", webSvc, nil, bs, uapi.EINVAL},
		{"IPv6 service, IPv4 backends", web6, table, bs, uapi.EINVAL},
		{"IPv4-mapped IPv6 VIP", Service{VIP: netip.MustParseAddr("::ffff:192.0.2.99"), Port: 80, Proto: ProtoTCP}, table, bs, uapi.EINVAL},
		{"no VIP", Service{Port: 80, Proto: ProtoTCP}, table, bs, uapi.EINVAL},
		{"ICMP", Service{VIP: webSvc.VIP, Port: 80, Proto: 1}, table, bs, uapi.EINVAL},
		{"unknown id in the table", webSvc, append(append([]uint32{}, table[:250]...), 99), bs, uapi.EINVAL},
		{"backend id 0", webSvc, []uint32{0}, []BackendAddr{{ID: 0, Addr: bs[0].Addr}}, uapi.EINVAL},
		{"backend id MaxBackends", webSvc, []uint32{MaxBackends}, []BackendAddr{{ID: MaxBackends, Addr: bs[0].Addr}}, uapi.EINVAL},
		{"IPv6 backend in an IPv4 service", webSvc, []uint32{1}, []BackendAddr{v6}, uapi.EINVAL},
		{"an id used elsewhere with another address", other, []uint32{1}, []BackendAddr{clash}, uapi.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := lb.SetService(tc.svc, tc.table, tc.backends)
			if !errors.Is(err, tc.errno) {
				t.Fatalf("err %v, want %v", err, tc.errno)
			}
			f := clientFlow(webSvc, 5)
			want := byID(bs)[table[FlowHash(f, testSeed)%251]]
			verdict, out, err := lb.Run(BuildPacket(f, 0), 0)
			if err != nil || verdict != XDPTX || !bytes.Equal(out, balanced(f, want, 0)) {
				t.Errorf("after the refusal the service changed: verdict %d, %v", verdict, err)
			}
			if got := lb.Services(); len(got) != 1 {
				t.Errorf("services %v", got)
			}
		})
	}
}

// BackendCounts sums each backend's per-CPU counters: the packets the
// table sent it, whichever CPU ran them.
func TestBackendCountsSumCPUs(t *testing.T) {
	lb := newTestLB(t, 3)
	bs := testBackends(1, 5, 8080)
	table := fillTable(bs, 251)
	mustSet(t, lb.control, webSvc, table, bs)
	want := map[uint32]uint64{}
	for _, b := range bs {
		want[b.ID] = 0
	}
	for i := range 900 {
		f := clientFlow(webSvc, i)
		if _, _, err := lb.Run(BuildPacket(f, 0), i%3); err != nil {
			t.Fatal(err)
		}
		want[table[FlowHash(f, testSeed)%251]]++
	}
	// An IPv6 service's backends count in the same map.
	bs6 := backendsFor(web6, 20, 3, 8443)
	table6 := fillTable(bs6, 509)
	mustSet(t, lb.control, web6, table6, bs6)
	for _, b := range bs6 {
		want[b.ID] = 0
	}
	for i := range 300 {
		f := clientFlow(web6, i)
		if _, _, err := lb.Run(BuildPacket(f, 0), i%3); err != nil {
			t.Fatal(err)
		}
		want[table6[FlowHash(f, testSeed)%509]]++
	}
	// A packet for no service counts nowhere but in its verdict.
	if _, _, err := lb.Run(BuildPacket(clientFlow(dnsSvc, 1), 0), 0); err != nil {
		t.Fatal(err)
	}
	got, err := lb.BackendCounts()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("counts %v, want %v", got, want)
	}
	stats, err := lb.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if stats[StatTX] != 1200 || stats[StatPassNotService] != 1 {
		t.Errorf("stats %v, want 1200 tx and 1 pass_not_service", stats)
	}
}

// The xlated program shows map-in-map as the kernel compiles it: the
// lookup in the hash of maps inlined (a call of __htab_map_lookup_elem,
// then the 4-instruction sequence that turns the element into the inner
// map pointer), and the lookup in the BPF_F_INNER_MAP inner array a
// direct call of array_map_lookup_elem, since its size is unknown.
func TestXlatedInlinesOuterLookupAndCallsInnerArray(t *testing.T) {
	lb := newTestLB(t, 1)
	x := lb.Program().Xlated()
	if err := checkMapInMapCode(x, lb.Map("maglev_outer").ID()); err != nil {
		t.Fatalf("%v in\n%s", err, x)
	}
	// The services map is a plain hash: no such sequence for it.
	if err := checkMapInMapCode(x, lb.Map("services").ID()); err == nil {
		t.Error("the check finds an outer map lookup in the services map's")
	}
}

// checkMapInMapCode checks an xlated listing in bpftool's syntax for the
// inlined lookup in the outer map (id outerID) and the direct call for
// the inner array.
func checkMapInMapCode(x string, outerID uint32) error {
	outer := regexp.MustCompile(fmt.Sprintf(`(?m)^ +\d+: \(18\) r1 = map\[id:%d\]\n`+
		`^ +\d+: \(85\) call __htab_map_lookup_elem#\d+\n`+
		`^ +\d+: \(15\) if r0 == 0x0 goto pc\+2\n`+
		`^ +\d+: \(07\) r0 \+= (\d+)\n`+
		`^ +\d+: \(79\) r0 = \*\(u64 \*\)\(r0 \+0\)\n`, outerID))
	code := regexp.MustCompile(`(?m)^; .*\n`).ReplaceAllString(x, "")
	m := outer.FindStringSubmatch(code)
	if m == nil {
		return fmt.Errorf("no inlined lookup in maglev_outer (map %d)", outerID)
	}
	// OFF_KEY (the htab_elem header, 48 bytes) + round_up(key_size 8, 8).
	if m[1] != "56" {
		return fmt.Errorf("the element's value is at +%s, want +56", m[1])
	}
	if !regexp.MustCompile(`\(85\) call array_map_lookup_elem#\d+`).MatchString(code) {
		return fmt.Errorf("the inner lookup is not a direct call of array_map_lookup_elem")
	}
	if strings.Contains(code, "call bpf_map_lookup_elem") {
		return fmt.Errorf("a lookup still goes through the helper")
	}
	return nil
}

// The excerpt the demo prints holds both lookups, as the whole listing
// does.
func TestMapInMapListing(t *testing.T) {
	lb := newTestLB(t, 1)
	l, err := lb.MapInMapListing()
	if err != nil {
		t.Fatal(err)
	}
	if err := checkMapInMapCode(l, lb.Map("maglev_outer").ID()); err != nil {
		t.Errorf("%v in\n%s", err, l)
	}
	if !strings.HasPrefix(l, "; ") || strings.Count(l, "\n") > 20 {
		t.Errorf("the excerpt does not start with its source line or is long:\n%s", l)
	}
	t.Logf("\n%s", l)
}
