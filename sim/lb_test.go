package sim_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim"
)

// This file tests testdata/lb.bpf.c, a Cilium-style XDP load balancer with
// Maglev backend selection, on bpfsim; lb_kernel_test.go runs the same
// packets in this machine's kernel and compares.

const lbObject = "testdata/lb.bpf.o"

// What lb.bpf.c fixes: the Maglev table size, XDP verdicts, the indexes of
// lb_stats.
const (
	lbMaglevM = 251

	xdpDrop = 1
	xdpPass = 2
	xdpTX   = 3

	statForwarded     = 0
	statPassed        = 1
	statDropMalformed = 2
	statDropNoBackend = 3
	statMax           = 4
)

// The map keys and values of lb.bpf.c. Addresses and ports are in network
// byte order, as the program keeps them.
type (
	ipv4Addr [4]byte
	netPort  [2]byte

	lbServiceKey struct {
		VIP   ipv4Addr
		Port  netPort
		Proto uint8
		Pad   uint8
	}
	lbService struct {
		ID, BackendCount uint32
	}
	lbBackend struct {
		IP   ipv4Addr
		Port netPort
		MAC  [6]byte
	}
	lbCTKey struct {
		Saddr, Daddr ipv4Addr
		Sport, Dport netPort
		Proto        uint8
		Pad          [3]uint8
	}
	lbCTEntry struct {
		LastSeen, Packets    uint64
		BackendID, ServiceID uint32
	}
	lbStats struct {
		Packets, Bytes uint64
	}
)

func portOf(p uint16) netPort { return netPort{byte(p >> 8), byte(p)} }

const (
	protoICMP = 1
	protoTCP  = 6
	protoUDP  = 17
)

var (
	lbMAC     = [6]byte{0x02, 0x1b, 0, 0, 0, 1} // the load balancer's
	clientMAC = [6]byte{0x02, 0xc1, 0, 0, 0, 1}
	clientIP  = ipv4Addr{192, 168, 7, 21}
)

// The test configuration: backends by id (0 means none), services with
// the backends their Maglev tables spread flows over.
type lbBackendConf struct {
	id   uint32
	ip   ipv4Addr
	port uint16
}

type lbServiceConf struct {
	id       uint32
	vip      ipv4Addr
	port     uint16
	proto    uint8
	backends []uint32
}

func (b lbBackendConf) mac() [6]byte { return [6]byte{0x02, 0xbe, 0, 0, 0, byte(b.id)} }
func (b lbBackendConf) name() string {
	return fmt.Sprintf("%d.%d.%d.%d:%d", b.ip[0], b.ip[1], b.ip[2], b.ip[3], b.port)
}

var (
	lbBackends = map[uint32]lbBackendConf{
		1: {1, ipv4Addr{10, 0, 1, 1}, 8080},
		2: {2, ipv4Addr{10, 0, 1, 2}, 8080},
		3: {3, ipv4Addr{10, 0, 1, 3}, 8080},
		4: {4, ipv4Addr{10, 0, 2, 1}, 53},
		5: {5, ipv4Addr{10, 0, 2, 2}, 5353},
	}
	webService   = lbServiceConf{0, ipv4Addr{10, 96, 0, 10}, 80, protoTCP, []uint32{1, 2, 3}}
	dnsService   = lbServiceConf{1, ipv4Addr{10, 96, 0, 53}, 53, protoUDP, []uint32{4, 5}}
	emptyService = lbServiceConf{2, ipv4Addr{10, 96, 0, 99}, 443, protoTCP, nil}
	lbServices   = []lbServiceConf{webService, dnsService, emptyService}
)

// maglevTable builds a service's lookup table as Maglev does (Eisenbud et
// al., NSDI 2016, section 3.4): each backend walks its own permutation of
// the m slots, offset + j*skip mod m with offset and skip hashed from its
// name, and the backends take turns claiming their next free slot until
// the table is full. Each backend gets m/n slots, give or take one, and a
// change of backends moves few slots.
func maglevTable(backends []uint32, m uint64) []uint32 {
	table := make([]uint32, m) // all 0, "no backend", if there are none
	if len(backends) == 0 {
		return table
	}
	hash := func(s, salt string) uint64 {
		h := fnv.New64a()
		h.Write([]byte(salt + s))
		return h.Sum64()
	}
	offset := make([]uint64, len(backends))
	skip := make([]uint64, len(backends))
	next := make([]uint64, len(backends))
	for i, id := range backends {
		name := lbBackends[id].name()
		offset[i] = hash(name, "offset") % m
		skip[i] = hash(name, "skip")%(m-1) + 1
	}
	taken := make([]bool, m)
	for filled := uint64(0); ; {
		for i, id := range backends {
			slot := (offset[i] + next[i]*skip[i]) % m
			for taken[slot] {
				next[i]++
				slot = (offset[i] + next[i]*skip[i]) % m
			}
			table[slot], taken[slot] = id, true
			next[i]++
			if filled++; filled == m {
				return table
			}
		}
	}
}

// lbMap is what filling a map takes; *sim.Map and *ebpf.Map both have it.
type lbMap interface {
	Update(key, value any, flags ebpf.MapUpdateFlags) error
}

// installLB fills the balancer's maps with the backends and services
// given; maps returns a map by its name in the object.
func installLB(t testing.TB, maps func(name string) lbMap, backends map[uint32]lbBackendConf, services []lbServiceConf) {
	t.Helper()
	for id, b := range backends {
		if err := maps("lb4_backends").Update(id, lbBackend{b.ip, portOf(b.port), b.mac()}, ebpf.UpdateAny); err != nil {
			t.Fatalf("backend %d: %v", id, err)
		}
	}
	for _, s := range services {
		key := lbServiceKey{VIP: s.vip, Port: portOf(s.port), Proto: s.proto}
		if err := maps("lb4_services").Update(key, lbService{s.id, uint32(len(s.backends))}, ebpf.UpdateAny); err != nil {
			t.Fatalf("service %d: %v", s.id, err)
		}
		installMaglev(t, maps("lb4_maglev"), s.id, maglevTable(s.backends, lbMaglevM))
	}
}

func installMaglev(t testing.TB, m lbMap, service uint32, table []uint32) {
	t.Helper()
	for slot, id := range table {
		if err := m.Update(service*lbMaglevM+uint32(slot), id, ebpf.UpdateAny); err != nil {
			t.Fatalf("Maglev slot %d of service %d: %v", slot, service, err)
		}
	}
}

// lbHashSeed reads the flow hash's seed from the object's .rodata.
func lbHashSeed(t testing.TB, spec *ebpf.CollectionSpec) uint32 {
	t.Helper()
	var seed uint32
	v, ok := spec.Variables["hash_seed"]
	if !ok {
		t.Fatal("the object has no hash_seed")
	}
	if err := v.Get(&seed); err != nil {
		t.Fatal(err)
	}
	return seed
}

// lbFlowHash is flow_hash of lb.bpf.c: jhash2 of the 5-tuple as the
// program loads it (little-endian loads of network-order fields).
func lbFlowHash(seed uint32, k lbCTKey) uint32 {
	rol := func(w uint32, s uint) uint32 { return w<<s | w>>(32-s) }
	a := 0xdeadbeef + 16 + seed
	b, c := a, a
	a += binary.LittleEndian.Uint32(k.Saddr[:])
	b += binary.LittleEndian.Uint32(k.Daddr[:])
	c += uint32(binary.LittleEndian.Uint16(k.Sport[:]))<<16 | uint32(binary.LittleEndian.Uint16(k.Dport[:]))
	// lookup3.c's mix, then final, one step a line.
	a, c = (a-c)^rol(c, 4), c+b
	b, a = (b-a)^rol(a, 6), a+c
	c, b = (c-b)^rol(b, 8), b+a
	a, c = (a-c)^rol(c, 16), c+b
	b, a = (b-a)^rol(a, 19), a+c
	c, b = (c-b)^rol(b, 4), b+a
	a += uint32(k.Proto)
	c = (c ^ b) - rol(b, 14)
	a = (a ^ c) - rol(c, 11)
	b = (b ^ a) - rol(a, 25)
	c = (c ^ b) - rol(b, 16)
	a = (a ^ c) - rol(c, 4)
	b = (b ^ a) - rol(a, 14)
	c = (c ^ b) - rol(b, 24)
	return c
}

// maglevPick is the backend a new flow to s gets.
func maglevPick(seed uint32, s lbServiceConf, flow lbCTKey) uint32 {
	return maglevTable(s.backends, lbMaglevM)[lbFlowHash(seed, flow)%lbMaglevM]
}

// lbPacket describes a test packet; bytes builds it with valid checksums.
type lbPacket struct {
	vlan         bool
	src, dst     ipv4Addr
	sport, dport uint16
	proto        uint8
	optionWords  int // IP options, in 32-bit words
	payload      int
	noUDPCsum    bool // a UDP checksum of 0: "none"
	fragment     bool // a non-first fragment
	macSrc       [6]byte
	macDst       [6]byte
}

// flowTo is a packet from the client to service s.
func flowTo(s lbServiceConf, sport uint16) lbPacket {
	return lbPacket{src: clientIP, dst: s.vip, sport: sport, dport: s.port, proto: s.proto, payload: 32, macSrc: clientMAC, macDst: lbMAC}
}

func (p lbPacket) tuple() lbCTKey {
	return lbCTKey{Saddr: p.src, Daddr: p.dst, Sport: portOf(p.sport), Dport: portOf(p.dport), Proto: p.proto}
}

func (p lbPacket) l3Offset() int {
	if p.vlan {
		return 18
	}
	return 14
}

func (p lbPacket) bytes() []byte {
	var b []byte
	b = append(b, p.macDst[:]...)
	b = append(b, p.macSrc[:]...)
	if p.vlan {
		b = append(b, 0x81, 0x00, 0x00, 0x2a) // VLAN 42
	}
	b = append(b, 0x08, 0x00)

	var l4 []byte
	switch p.proto {
	case protoTCP:
		l4 = make([]byte, 20)
		l4[12] = 5 << 4                   // data offset
		l4[13] = 0x18                     // PSH, ACK
		l4[14], l4[15] = 1, 0             // window
		copy(l4[4:8], "\x00\x01\xe2\x40") // seq
	case protoUDP:
		l4 = make([]byte, 8)
		binary.BigEndian.PutUint16(l4[4:], uint16(8+p.payload))
	default:
		l4 = []byte{8, 0, 0, 0, 0, 1, 0, 1} // ICMP echo request
	}
	if p.proto == protoTCP || p.proto == protoUDP {
		binary.BigEndian.PutUint16(l4[0:], p.sport)
		binary.BigEndian.PutUint16(l4[2:], p.dport)
	}
	for i := range p.payload {
		l4 = append(l4, byte('a'+i%26))
	}

	ihl := 5 + p.optionWords
	ip := make([]byte, ihl*4)
	ip[0] = 0x40 | byte(ihl)
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)+len(l4)))
	binary.BigEndian.PutUint16(ip[4:], 0x1c46)
	if p.fragment {
		binary.BigEndian.PutUint16(ip[6:], 185) // offset 1480
	} else {
		binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
	}
	ip[8], ip[9] = 64, p.proto
	copy(ip[12:], p.src[:])
	copy(ip[16:], p.dst[:])
	for i := 20; i < len(ip); i++ {
		ip[i] = 1 // NOP options
	}
	binary.BigEndian.PutUint16(ip[10:], ^csumFold(onesSum(0, ip)))

	switch {
	case p.proto == protoTCP:
		binary.BigEndian.PutUint16(l4[16:], l4Checksum(p.src, p.dst, p.proto, l4))
	case p.proto == protoUDP && !p.noUDPCsum:
		c := l4Checksum(p.src, p.dst, p.proto, l4)
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[6:], c)
	case p.proto == protoICMP:
		binary.BigEndian.PutUint16(l4[2:], ^csumFold(onesSum(0, l4)))
	}
	return append(append(b, ip...), l4...)
}

// onesSum adds b to sum as big-endian 16-bit words (RFC 1071).
func onesSum(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

func csumFold(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

func pseudoHeaderSum(src, dst ipv4Addr, proto uint8, length int) uint32 {
	sum := onesSum(0, src[:])
	sum = onesSum(sum, dst[:])
	return sum + uint32(proto) + uint32(length)
}

// l4Checksum computes a TCP or UDP checksum from scratch; the segment's
// checksum field must be zero.
func l4Checksum(src, dst ipv4Addr, proto uint8, segment []byte) uint16 {
	return ^csumFold(onesSum(pseudoHeaderSum(src, dst, proto, len(segment)), segment))
}

// checkChecksums verifies an IPv4 packet's header checksum and its TCP or
// UDP checksum the way a receiver does: the sums, checksum included, are
// all ones.
func checkChecksums(pkt []byte, l3 int) error {
	ihl := int(pkt[l3]&0xf) * 4
	ip := pkt[l3 : l3+ihl]
	if s := csumFold(onesSum(0, ip)); s != 0xffff {
		return fmt.Errorf("IPv4 header checksum %#04x is wrong (sum %#04x)", binary.BigEndian.Uint16(ip[10:]), s)
	}
	var src, dst ipv4Addr
	copy(src[:], ip[12:])
	copy(dst[:], ip[16:])
	seg := pkt[l3+ihl:]
	if ip[9] == protoUDP && binary.BigEndian.Uint16(seg[6:]) == 0 {
		return nil // no checksum
	}
	if s := csumFold(onesSum(pseudoHeaderSum(src, dst, ip[9], len(seg)), seg)); s != 0xffff {
		return fmt.Errorf("L4 checksum is wrong (sum %#04x)", s)
	}
	return nil
}

// lbRewritten is what the balancer should send for p, forwarded to b:
// destination address and port rewritten, from the balancer's MAC to the
// backend's.
func lbRewritten(p lbPacket, b lbBackendConf) []byte {
	p.dst, p.dport = b.ip, b.port
	p.macSrc, p.macDst = p.macDst, b.mac()
	return p.bytes()
}

func loadLBSpec(t testing.TB) *ebpf.CollectionSpec {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(lbObject)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// lbSim is the balancer loaded in a fresh simulated kernel and configured
// with the test's backends and services.
type lbSim struct {
	k     *sim.Kernel
	clock *sim.VirtualClock
	coll  *sim.Collection
	prog  *sim.Program
	seed  uint32
}

func newLBSim(t testing.TB) *lbSim {
	t.Helper()
	spec := loadLBSpec(t)
	clock := sim.NewVirtualClock()
	k := newKernel(t, &sim.Options{CPUs: 2, Seed: 1, Clock: clock})
	coll, err := k.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(coll.Close)
	installLB(t, func(name string) lbMap { return coll.Maps[name] }, lbBackends, lbServices)
	return &lbSim{k: k, clock: clock, coll: coll, prog: coll.Programs["xdp_lb4"], seed: lbHashSeed(t, spec)}
}

// run sends pkt through the balancer on cpu and returns the verdict and
// the packet it leaves.
func (s *lbSim) run(t testing.TB, pkt []byte, cpu uint32) (uint32, []byte) {
	t.Helper()
	out := make([]byte, len(pkt))
	ret, err := s.prog.Run(&sim.RunOptions{Data: pkt, DataOut: out, CPU: cpu})
	if err != nil {
		t.Fatal(err)
	}
	return ret, out
}

func (s *lbSim) conntrack(t testing.TB, flow lbCTKey) (lbCTEntry, bool) {
	t.Helper()
	var e lbCTEntry
	if err := s.coll.Maps["lb4_ct"].Lookup(flow, &e); err != nil {
		return e, false
	}
	return e, true
}

func (s *lbSim) stats(t testing.TB) [statMax][]lbStats {
	t.Helper()
	var all [statMax][]lbStats
	for i := range all {
		if err := s.coll.Maps["lb_stats"].Lookup(uint32(i), &all[i]); err != nil {
			t.Fatal(err)
		}
	}
	return all
}

// lbCase is one packet through the balancer and what must come out.
type lbCase struct {
	name string
	pkt  lbPacket
	// edit damages the built packet, for malformed cases.
	edit    func([]byte) []byte
	verdict uint32
	stat    int
	// service is the one a forwarded packet belongs to.
	service *lbServiceConf
}

func (c lbCase) bytes() []byte {
	b := c.pkt.bytes()
	if c.edit != nil {
		b = c.edit(b)
	}
	return b
}

func truncateTo(n int) func([]byte) []byte { return func(b []byte) []byte { return b[:n] } }

// lbCases covers every way through the balancer.
func lbCases() []lbCase {
	web, dns, empty := webService, dnsService, emptyService
	tagged := flowTo(web, 40001)
	tagged.vlan = true
	taggedShort := flowTo(web, 40018)
	taggedShort.vlan = true
	withOptions := flowTo(web, 40002)
	withOptions.optionWords = 3
	dnsNoCsum := flowTo(dns, 40003)
	dnsNoCsum.noUDPCsum = true
	otherPort := flowTo(web, 40004)
	otherPort.dport = 8443
	wrongProto := flowTo(web, 40005)
	wrongProto.proto = protoUDP
	ping := flowTo(web, 0)
	ping.proto = protoICMP
	fragment := flowTo(web, 40006)
	fragment.fragment = true
	maxOptions := flowTo(web, 40007)
	maxOptions.optionWords = 10
	return []lbCase{
		{name: "TCP to a VIP is forwarded to a backend", pkt: flowTo(web, 40000), verdict: xdpTX, stat: statForwarded, service: &web},
		{name: "UDP to a VIP is forwarded to a backend", pkt: flowTo(dns, 40000), verdict: xdpTX, stat: statForwarded, service: &dns},
		{name: "UDP without checksum keeps none", pkt: dnsNoCsum, verdict: xdpTX, stat: statForwarded, service: &dns},
		{name: "VLAN-tagged TCP is forwarded with its tag", pkt: tagged, verdict: xdpTX, stat: statForwarded, service: &web},
		{name: "IP options move the TCP header", pkt: withOptions, verdict: xdpTX, stat: statForwarded, service: &web},
		{name: "the longest IP header", pkt: maxOptions, verdict: xdpTX, stat: statForwarded, service: &web},
		{name: "another port of the VIP goes to the stack", pkt: otherPort, verdict: xdpPass, stat: statPassed},
		{name: "another protocol to the VIP's port goes to the stack", pkt: wrongProto, verdict: xdpPass, stat: statPassed},
		{name: "ICMP goes to the stack", pkt: ping, verdict: xdpPass, stat: statPassed},
		{name: "fragments go to the stack", pkt: fragment, verdict: xdpPass, stat: statPassed},
		{name: "a packet not to a VIP goes to the stack", pkt: flowTo(lbServiceConf{vip: ipv4Addr{10, 0, 1, 1}, port: 80, proto: protoTCP}, 40008), verdict: xdpPass, stat: statPassed},
		{name: "IPv6 goes to the stack", pkt: flowTo(web, 40009), edit: func(b []byte) []byte { b[12], b[13] = 0x86, 0xdd; return b }, verdict: xdpPass, stat: statPassed},
		{name: "a service without backends drops", pkt: flowTo(empty, 40010), verdict: xdpDrop, stat: statDropNoBackend},
		{name: "Ethernet header alone is malformed IPv4", pkt: flowTo(web, 40011), edit: truncateTo(14), verdict: xdpDrop, stat: statDropMalformed},
		{name: "truncated VLAN tag", pkt: taggedShort, edit: truncateTo(16), verdict: xdpDrop, stat: statDropMalformed},
		{name: "truncated IPv4 header", pkt: flowTo(web, 40012), edit: truncateTo(14 + 19), verdict: xdpDrop, stat: statDropMalformed},
		{name: "IPv4 header length below 20", pkt: flowTo(web, 40013), edit: func(b []byte) []byte { b[14] = 0x44; return b }, verdict: xdpDrop, stat: statDropMalformed},
		{name: "IP version 6 in an IPv4 frame", pkt: flowTo(web, 40014), edit: func(b []byte) []byte { b[14] = 0x65; return b }, verdict: xdpDrop, stat: statDropMalformed},
		{name: "truncated TCP header", pkt: flowTo(web, 40015), edit: truncateTo(14 + 20 + 19), verdict: xdpDrop, stat: statDropMalformed},
		{name: "truncated UDP header", pkt: flowTo(dns, 40016), edit: truncateTo(14 + 20 + 7), verdict: xdpDrop, stat: statDropMalformed},
		{name: "IP options past the packet's end", pkt: flowTo(web, 40017), edit: func(b []byte) []byte { b[14] = 0x4f; return b[:14+60+10] }, verdict: xdpDrop, stat: statDropMalformed},
	}
}

func TestLBVerdictsAndRewrites(t *testing.T) {
	lb := newLBSim(t)
	var want [statMax]lbStats
	for _, c := range lbCases() {
		t.Run(c.name, func(t *testing.T) {
			in := c.bytes()
			ret, out := lb.run(t, in, 0)
			want[c.stat].Packets++
			want[c.stat].Bytes += uint64(len(in))
			if ret != c.verdict {
				t.Fatalf("verdict %d, want %d", ret, c.verdict)
			}
			if c.verdict != xdpTX {
				if !bytes.Equal(out, in) {
					t.Errorf("a packet not forwarded was changed:\n got % x\nwant % x", out, in)
				}
				if _, ok := lb.conntrack(t, c.pkt.tuple()); ok {
					t.Errorf("a packet not forwarded created a conntrack entry")
				}
				return
			}
			backend := lbBackends[maglevPick(lb.seed, *c.service, c.pkt.tuple())]
			if err := checkChecksums(out, c.pkt.l3Offset()); err != nil {
				t.Error(err)
			}
			if wantOut := lbRewritten(c.pkt, backend); !bytes.Equal(out, wantOut) {
				t.Errorf("forwarded to backend %d as\n% x\nwant\n% x", backend.id, out, wantOut)
			}
			ct, ok := lb.conntrack(t, c.pkt.tuple())
			wantCT := lbCTEntry{LastSeen: lb.clock.Now(), Packets: 1, BackendID: backend.id, ServiceID: c.service.id}
			if !ok || ct != wantCT {
				t.Errorf("conntrack entry %+v (found %v), want %+v", ct, ok, wantCT)
			}
		})
	}

	stats := lb.stats(t)
	for i, want := range want {
		if got := stats[i][0]; got != want {
			t.Errorf("stats[%d] on CPU 0: %+v, want %+v", i, got, want)
		}
		if got := stats[i][1]; got != (lbStats{}) {
			t.Errorf("stats[%d] on CPU 1, which ran nothing: %+v", i, got)
		}
	}
}

// Every packet of a flow goes to the backend its first packet went to, on
// any CPU, and the flow's conntrack entry counts its packets and when the
// last one came.
func TestLBFlowsStayOnTheirBackend(t *testing.T) {
	lb := newLBSim(t)
	const flows = 300
	perBackend := map[uint32]int{}
	for round := range 3 {
		lb.clock.Advance(time.Second)
		for i := range flows {
			pkt := flowTo(webService, uint16(20000+i))
			ret, out := lb.run(t, pkt.bytes(), uint32(i+round)%2)
			want := lbBackends[maglevPick(lb.seed, webService, pkt.tuple())]
			if ret != xdpTX || !bytes.Equal(out, lbRewritten(pkt, want)) {
				t.Fatalf("round %d, flow %d: verdict %d, packet\n% x\nwant it forwarded to backend %d", round, i, ret, out, want.id)
			}
			ct, ok := lb.conntrack(t, pkt.tuple())
			wantCT := lbCTEntry{LastSeen: lb.clock.Now(), Packets: uint64(round + 1), BackendID: want.id, ServiceID: webService.id}
			if !ok || ct != wantCT {
				t.Fatalf("round %d, flow %d: conntrack entry %+v (found %v), want %+v", round, i, ct, ok, wantCT)
			}
			if round == 0 {
				perBackend[want.id]++
			}
		}
	}
	// Maglev spreads flows: each of three backends has a third of the
	// slots, so none gets fewer than a fifth of 300 flows.
	for _, id := range webService.backends {
		if perBackend[id] < flows/5 {
			t.Errorf("backend %d got %d of %d flows: %v", id, perBackend[id], flows, perBackend)
		}
	}
	var packets uint64
	for _, perCPU := range lb.stats(t)[statForwarded] {
		packets += perCPU.Packets
	}
	if packets != 3*flows {
		t.Errorf("%d packets forwarded, want %d", packets, 3*flows)
	}
}

// When the service's backends change, established flows keep theirs while
// it exists; the flows of a removed backend move to the one the new Maglev
// table gives them, and their conntrack entries say so.
func TestLBBackendRemoval(t *testing.T) {
	lb := newLBSim(t)
	var flows []lbPacket
	for i := range 60 {
		p := flowTo(webService, uint16(30000+i))
		flows = append(flows, p)
		if ret, _ := lb.run(t, p.bytes(), 0); ret != xdpTX {
			t.Fatalf("flow %d: verdict %d", i, ret)
		}
	}
	before := make([]uint32, len(flows))
	for i, p := range flows {
		ct, _ := lb.conntrack(t, p.tuple())
		before[i] = ct.BackendID
	}

	// Backend 2 leaves the Maglev table but is still draining.
	shrunk := webService
	shrunk.backends = []uint32{1, 3}
	installMaglev(t, lb.coll.Maps["lb4_maglev"], shrunk.id, maglevTable(shrunk.backends, lbMaglevM))
	for i, p := range flows {
		if _, out := lb.run(t, p.bytes(), 1); !bytes.Equal(out, lbRewritten(p, lbBackends[before[i]])) {
			t.Fatalf("flow %d left backend %d while it still exists", i, before[i])
		}
	}

	// Backend 2 is gone: its flows are balanced again.
	if err := lb.coll.Maps["lb4_backends"].Update(uint32(2), lbBackend{}, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	moved := 0
	for i, p := range flows {
		want := before[i]
		if want == 2 {
			want = maglevPick(lb.seed, shrunk, p.tuple())
			moved++
		}
		_, out := lb.run(t, p.bytes(), 0)
		if !bytes.Equal(out, lbRewritten(p, lbBackends[want])) {
			t.Errorf("flow %d (backend %d before): packet\n% x\nwant it forwarded to backend %d", i, before[i], out, want)
		}
		ct, _ := lb.conntrack(t, p.tuple())
		if ct.BackendID != want {
			t.Errorf("flow %d: conntrack says backend %d, want %d", i, ct.BackendID, want)
		}
	}
	if moved == 0 {
		t.Error("no flow was on backend 2: the test proves nothing")
	}
}

// The Maglev table of the test spreads slots evenly, which is what makes
// the flow spread above likely.
func TestMaglevTableIsBalanced(t *testing.T) {
	for _, n := range []int{1, 2, 3, 5} {
		ids := []uint32{1, 2, 3, 4, 5}[:n]
		count := map[uint32]int{}
		for _, id := range maglevTable(ids, lbMaglevM) {
			count[id]++
		}
		for _, id := range ids {
			if c := count[id]; c < lbMaglevM/n || c > lbMaglevM/n+1 {
				t.Errorf("%d backends: backend %d has %d of %d slots", n, id, c, lbMaglevM)
			}
		}
	}
}
