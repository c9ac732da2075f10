package sim_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// fibProgramFor copies struct bpf_fib_lookup from the packet at base to
// the stack, calls bpf_fib_lookup with plen and the flags the packet holds
// after the struct, copies the struct back and returns the result.
func fibProgramFor(typ ebpf.ProgramType, base int16, plen int32) asm.Instructions {
	dataOff, endOff := int16(76), int16(80) // __sk_buff data, data_end
	if typ == ebpf.XDP {
		dataOff, endOff = 0, 4
	}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R1, dataOff, asm.Word),
		asm.LoadMem(asm.R8, asm.R1, endOff, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R7),
		asm.Add.Imm(asm.R1, int32(base)+68),
		asm.JGT.Reg(asm.R1, asm.R8, "short"),
	}
	for i := int16(0); i < 64; i += 8 {
		insns = append(insns, asm.LoadMem(asm.R1, asm.R7, base+i, asm.DWord), asm.StoreMem(asm.R10, -64+i, asm.R1, asm.DWord))
	}
	insns = append(insns,
		asm.LoadMem(asm.R4, asm.R7, base+64, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, -64),
		asm.Mov.Imm(asm.R3, plen),
		asm.FnFibLookup.Call(),
		// bpf_fib_lookup leaves the packet alone, so r7's checked range
		// still holds after the call.
		asm.Mov.Reg(asm.R9, asm.R0),
	)
	for i := int16(0); i < 64; i += 8 {
		insns = append(insns, asm.LoadMem(asm.R1, asm.R10, -64+i, asm.DWord), asm.StoreMem(asm.R7, base+i, asm.R1, asm.DWord))
	}
	return append(insns, asm.Mov.Reg(asm.R0, asm.R9), asm.Return(),
		asm.Mov.Imm(asm.R0, -1).WithSymbol("short"), asm.Return())
}

// fibParams builds struct bpf_fib_lookup and the flags after it.
func fibParams(dst netip.Addr, ifindex uint32, totLen uint16, flags uint32, tbid uint32) []byte {
	p := make([]byte, 68)
	le := binary.LittleEndian
	p[0] = 2
	if dst.Is6() {
		p[0] = 10
	}
	p[1] = 6
	binary.BigEndian.PutUint16(p[2:], 40000)
	binary.BigEndian.PutUint16(p[4:], 443)
	le.PutUint16(p[6:], totLen)
	le.PutUint32(p[8:], ifindex)
	b := dst.AsSlice()
	copy(p[32:], b)
	le.PutUint32(p[48:], tbid)
	le.PutUint32(p[64:], flags)
	return p
}

// fibHost is the host both kernels forward on: two dummy devices, one
// forwarding, with routes of every type, a route in another table, one
// with an MTU, and neighbours for some gateways.
var fibHostScript = []string{
	"link set lo up",
	// veth pairs (the kernel may lack the dummy driver): p1 gets
	// ifindex 2 and d1 3, p2 4 and d2 5.
	"link add d1 type veth peer name p1", "link set p1 up", "link set d1 address 02:00:00:00:00:01 mtu 1500 up",
	"link add d2 type veth peer name p2", "link set p2 up", "link set d2 address 02:00:00:00:00:02 mtu 9000 up",
	"addr add 10.1.0.1/24 dev d1", "addr add 10.2.0.1/24 dev d2",
	"-6 addr add 2001:db8:1::1/64 dev d1 nodad", "-6 addr add 2001:db8:2::1/64 dev d2 nodad",
	"route add 192.168.0.0/16 via 10.1.0.254 dev d1 metric 10",
	"route add 192.168.1.0/24 via 10.2.0.254 dev d2",
	"route add 172.16.0.0/12 via 10.1.0.253 dev d1 mtu lock 1400",
	"route add 10.77.0.0/16 via 10.1.0.254 dev d1 mtu 1300",
	"-6 route add 2001:db8:300::/48 via 2001:db8:1::fe dev d1 mtu 1300",
	"-6 route add 2001:db8:400::/48 via 2001:db8:1::fe dev d1 mtu lock 1300",
	"route add blackhole 198.51.100.0/24", "route add unreachable 203.0.113.0/24", "route add prohibit 192.0.2.0/24",
	"route add 100.64.0.0/10 dev d2 src 10.2.0.1",
	"route add 10.99.0.0/16 via 10.1.0.254 dev d1 table 100",
	"-6 route add 2001:db8:100::/48 via 2001:db8:1::fe dev d1",
	"-6 route add blackhole 2001:db8:dead::/48", "-6 route add unreachable 2001:db8:beef::/48", "-6 route add prohibit 2001:db8:f00d::/48",
	"neigh add 10.1.0.254 lladdr 02:aa:00:00:00:01 dev d1 nud permanent",
	"neigh add 10.2.0.7 lladdr 02:aa:00:00:00:07 dev d2 nud permanent",
	"neigh add 10.2.0.254 lladdr 02:aa:00:00:00:02 dev d2 nud permanent",
	"-6 neigh add 2001:db8:1::fe lladdr 02:aa:00:00:00:fe dev d1 nud permanent",
}

// fibSimHost is fibHostScript for bpfsim.
func fibSimHost(t testing.TB) *sim.Kernel {
	k := newKernel(t, nil)
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	pfx := netip.MustParsePrefix
	addr := netip.MustParseAddr
	for _, i := range []int{2, 4} {
		if _, err := k.AddNetDevice(sim.NetDevice{Index: i, Name: fmt.Sprintf("p%d", i/2)}); err != nil {
			t.Fatal(err)
		}
	}
	d1, err := k.AddNetDevice(sim.NetDevice{Name: "d1", MAC: mac("02:00:00:00:00:01"), MTU: 1500, Forwarding: true,
		Addrs: []netip.Prefix{pfx("10.1.0.1/24"), pfx("2001:db8:1::1/64")}})
	if err != nil {
		t.Fatal(err)
	}
	if d1 != 3 {
		t.Fatalf("d1 is %d, want 3", d1)
	}
	d2, err := k.AddNetDevice(sim.NetDevice{Name: "d2", MAC: mac("02:00:00:00:00:02"), MTU: 9000,
		Addrs: []netip.Prefix{pfx("10.2.0.1/24"), pfx("2001:db8:2::1/64")}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []sim.Route{
		{Dst: pfx("192.168.0.0/16"), Gateway: addr("10.1.0.254"), Dev: d1, Metric: 10},
		{Dst: pfx("192.168.1.0/24"), Gateway: addr("10.2.0.254"), Dev: d2},
		{Dst: pfx("172.16.0.0/12"), Gateway: addr("10.1.0.253"), Dev: d1, MTU: 1400, MTULock: true},
		{Dst: pfx("10.77.0.0/16"), Gateway: addr("10.1.0.254"), Dev: d1, MTU: 1300},
		{Dst: pfx("2001:db8:300::/48"), Gateway: addr("2001:db8:1::fe"), Dev: d1, MTU: 1300},
		{Dst: pfx("2001:db8:400::/48"), Gateway: addr("2001:db8:1::fe"), Dev: d1, MTU: 1300, MTULock: true},
		{Dst: pfx("198.51.100.0/24"), Type: sim.RouteBlackhole},
		{Dst: pfx("203.0.113.0/24"), Type: sim.RouteUnreachable},
		{Dst: pfx("192.0.2.0/24"), Type: sim.RouteProhibit},
		{Dst: pfx("100.64.0.0/10"), Dev: d2, Src: addr("10.2.0.1")},
		{Dst: pfx("10.99.0.0/16"), Gateway: addr("10.1.0.254"), Dev: d1, Table: 100},
		{Dst: pfx("2001:db8:100::/48"), Gateway: addr("2001:db8:1::fe"), Dev: d1},
		{Dst: pfx("2001:db8:dead::/48"), Type: sim.RouteBlackhole},
		{Dst: pfx("2001:db8:beef::/48"), Type: sim.RouteUnreachable},
		{Dst: pfx("2001:db8:f00d::/48"), Type: sim.RouteProhibit},
	} {
		if err := k.AddRoute(r); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []sim.Neighbor{
		{Addr: addr("10.1.0.254"), MAC: mac("02:aa:00:00:00:01"), Dev: d1},
		{Addr: addr("10.2.0.7"), MAC: mac("02:aa:00:00:00:07"), Dev: d2},
		{Addr: addr("10.2.0.254"), MAC: mac("02:aa:00:00:00:02"), Dev: d2},
		{Addr: addr("2001:db8:1::fe"), MAC: mac("02:aa:00:00:00:fe"), Dev: d1},
	} {
		if err := k.AddNeighbor(n); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

// fibCases are the lookups compared: every destination of fibHost's
// routes and beyond them, from a forwarding device and others, with MTUs
// to check and every flag.
func fibCases() (cases [][]byte, names []string) {
	add := func(name string, p []byte) { cases, names = append(cases, p), append(names, name) }
	dsts := []string{"192.168.5.5", "192.168.1.9", "172.16.3.3", "198.51.100.1", "203.0.113.1", "192.0.2.1", "100.64.1.1",
		"10.2.0.7", "10.1.0.1", "10.1.0.255", "127.0.0.1", "8.8.8.8", "10.99.1.1", "10.77.1.1", "2001:db8:300::1", "2001:db8:400::1",
		"2001:db8:100::5", "2001:db8:dead::1", "2001:db8:beef::1", "2001:db8:f00d::1", "2001:db8:1::1", "2001:db8:1::77",
		"fe80::1", "2001:db8:2::9", "2001:db8:9999::1"}
	for _, d := range dsts {
		dst := netip.MustParseAddr(d)
		for _, ifindex := range []uint32{3, 1, 5, 99} {
			add(fmt.Sprintf("%s from %d", d, ifindex), fibParams(dst, ifindex, 0, 0, 0))
		}
		for _, totLen := range []uint16{1300, 1301, 1400, 1401, 1500, 1501, 9000} {
			add(fmt.Sprintf("%s tot_len %d", d, totLen), fibParams(dst, 3, totLen, 0, 0))
		}
		for _, f := range []struct {
			flags, tbid uint32
		}{{1, 0}, {1 | 8, 100}, {1 | 8, 555}, {1 | 8, 255}, {1 | 8, 254}, {4, 0}, {16, 0}, {2, 0}, {32, 0}, {16 | 4, 0}, {1 << 6, 0}} {
			add(fmt.Sprintf("%s flags %#x tbid %d", d, f.flags, f.tbid), fibParams(dst, 3, 0, f.flags, f.tbid))
		}
	}
	bad := fibParams(netip.MustParseAddr("10.2.0.7"), 3, 0, 0, 0)
	bad[0] = 7
	add("family 7", bad)
	return cases, names
}

// On fibSimHost: a forwarded packet gets its route's device, gateway and
// MAC addresses; the other outcomes are the kernel's codes.
func TestFibLookupForwardsOnTheSimulatedHost(t *testing.T) {
	k := fibSimHost(t)
	p, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: fibProgramFor(ebpf.XDP, 0, 64)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, tc := range []struct {
		dst     string
		ifindex uint32
		want    int32
		dmac    string
	}{
		{"192.168.5.5", 3, 0, "02:aa:00:00:00:01"},
		{"192.168.1.9", 3, 0, "02:aa:00:00:00:02"}, // the longer prefix, via d2
		{"198.51.100.1", 3, 1, ""},
		{"203.0.113.1", 3, 2, ""},
		{"192.0.2.1", 3, 3, ""},
		{"10.1.0.1", 3, 4, ""},    // local
		{"8.8.8.8", 3, 4, ""},     // no route
		{"192.168.5.5", 5, 5, ""}, // d2 does not forward
		{"172.16.3.3", 3, 7, ""},  // no neighbour for the gateway
		{"192.168.5.5", 99, -19, ""},
		{"2001:db8:100::5", 3, 0, "02:aa:00:00:00:fe"},
	} {
		pkt := fibParams(netip.MustParseAddr(tc.dst), tc.ifindex, 0, 0, 0)
		out := make([]byte, len(pkt))
		r, err := p.Run(&sim.RunOptions{Data: pkt, DataOut: out})
		if err != nil {
			t.Fatal(err)
		}
		if int32(r) != tc.want {
			t.Errorf("%s from %d: %d, want %d", tc.dst, tc.ifindex, int32(r), tc.want)
			continue
		}
		if tc.dmac != "" {
			if got := net.HardwareAddr(out[58:64]).String(); got != tc.dmac {
				t.Errorf("%s: dmac %s, want %s", tc.dst, got, tc.dmac)
			}
			if got := binary.LittleEndian.Uint32(out[8:]); got != 3 && tc.dmac != "02:aa:00:00:00:02" {
				t.Errorf("%s: ifindex %d, want 3", tc.dst, got)
			}
		}
	}
}

// bpf_check_mtu knows the simulated network's devices: a packet that fits
// loopback's MTU does not fit a 1500-byte device.
func TestCheckMTUOnAnAddedDevice(t *testing.T) {
	k := newKernel(t, nil)
	idx, err := k.AddNetDevice(sim.NetDevice{Name: "eth0", MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ifindex int32
		lenDiff int32
		want    uint32
		wantMTU uint32
	}{
		{0, 1500, 0, 65536},
		{int32(idx), 1400, 0, 1500},
		{int32(idx), 1500, 1, 1500}, // 100 bytes of packet + 1500 > 1500 + 14
		{42, 0, uint32(0x100000000 - 19), 0},
	} {
		insns := asm.Instructions{
			asm.Mov.Imm(asm.R2, 0), asm.StoreMem(asm.R10, -4, asm.R2, asm.Word),
			asm.Mov.Imm(asm.R2, tc.ifindex), asm.Mov.Reg(asm.R3, asm.R10), asm.Add.Imm(asm.R3, -4),
			asm.Mov.Imm(asm.R4, tc.lenDiff), asm.Mov.Imm(asm.R5, 0), asm.FnCheckMtu.Call(),
			asm.LSh.Imm(asm.R0, 32), asm.RSh.Imm(asm.R0, 32),
			asm.LoadMem(asm.R1, asm.R10, -4, asm.Word), asm.LSh.Imm(asm.R1, 32), asm.Or.Reg(asm.R0, asm.R1),
			asm.Return(),
		}
		p, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: insns})
		if err != nil {
			t.Fatal(err)
		}
		res, err := p.Test(&sim.RunOptions{Data: make([]byte, 100)})
		p.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got, mtu := uint32(res.R0), uint32(res.R0>>32); got != tc.want || mtu != tc.wantMTU {
			t.Errorf("ifindex %d len_diff %d: %d (mtu %d), want %d (mtu %d)", tc.ifindex, tc.lenDiff, int32(got), mtu, int32(tc.want), tc.wantMTU)
		}
	}
}

// A devmap takes the devices a test added, as the kernel takes any of its
// own, and still refuses one that does not exist.
func TestDevmapTakesAddedDevices(t *testing.T) {
	k := newKernel(t, nil)
	idx, err := k.AddNetDevice(sim.NetDevice{Name: "eth0"})
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []ebpf.MapType{ebpf.DevMap, ebpf.DevMapHash} {
		m, err := k.NewMap(&ebpf.MapSpec{Type: typ, KeySize: 4, ValueSize: 4, MaxEntries: 4})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Put(uint32(0), uint32(idx)); err != nil {
			t.Errorf("%v: ifindex %d: %v", typ, idx, err)
		}
		if err := m.Put(uint32(1), uint32(idx+1)); !errors.Is(err, uapi.EINVAL) {
			t.Errorf("%v: ifindex %d: %v, want EINVAL", typ, idx+1, err)
		}
		m.Close()
	}
}

// BenchmarkFibLookup measures an XDP program's bpf_fib_lookup of a
// forwarded IPv4 packet on fibSimHost, the copies in and out of the packet
// included.
func BenchmarkFibLookup(b *testing.B) {
	k := fibSimHost(b)
	p, err := k.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: fibProgramFor(ebpf.XDP, 0, 64)})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	pkt := fibParams(netip.MustParseAddr("192.168.5.5"), 3, 0, 0, 0)
	res, err := p.Test(&sim.RunOptions{Data: pkt, Repeat: uint32(b.N)})
	if err != nil || res.R0 != 0 {
		b.Fatalf("%v, %d", err, res.R0)
	}
	b.ReportMetric(float64(res.Duration.Nanoseconds()), "ns/run")
}
