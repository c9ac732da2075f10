package sim

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// The simulated kernel's network devices, routes and neighbours, and
// bpf_fib_lookup over them (net/core/filter.c: bpf_ipv4_fib_lookup,
// bpf_ipv6_fib_lookup). A test describes the host an XDP or tc program
// forwards on: devices with addresses (each address makes the kernel's
// local and connected routes, as adding it with `ip addr` does), routes
// (unicast through a gateway or not, blackhole, unreachable, prohibit; in
// the main table or another), neighbours, and which devices forward. The
// lookup is the kernel's: the local table first, unless
// BPF_FIB_LOOKUP_DIRECT asks for the main (or, with TBID, another) table
// alone; the longest prefix, then the lowest metric; the result's device,
// metric, gateway and source address, the MTU check, and the neighbour's
// and the device's MAC addresses.
//
// Not simulated: policy routing rules (so BPF_FIB_LOOKUP_MARK changes
// nothing), multipath routes, route exceptions (learned MTUs), VRFs,
// lightweight tunnels, IPv6 gateways for IPv4 routes.

// NetDevice is a network device. The loopback device, index 1, always
// exists.
type NetDevice struct {
	// Index is the ifindex; 0 takes the next free one, as the kernel
	// numbers devices in a new namespace.
	Index int
	Name  string
	MAC   net.HardwareAddr
	// MTU defaults to 1500.
	MTU int
	// Addrs are the device's addresses with their prefix lengths.
	Addrs []netip.Prefix
	// Forwarding turns on IPv4 and IPv6 forwarding on the device
	// (net.ipv4.conf.<dev>.forwarding, net.ipv6.conf.<dev>.forwarding),
	// off by default as in a new namespace; bpf_fib_lookup answers
	// BPF_FIB_LKUP_RET_FWD_DISABLED for a device that does not forward.
	Forwarding bool
}

// RouteType is a route's type (RTN_*), for the ones bpf_fib_lookup tells
// apart.
type RouteType int

const (
	RouteUnicast RouteType = iota
	RouteBlackhole
	RouteUnreachable
	RouteProhibit
	routeLocal
	routeBroadcast
)

// Route is a route. Table 0 is the main table (254).
type Route struct {
	Dst     netip.Prefix
	Type    RouteType
	Gateway netip.Addr // invalid: directly connected
	Dev     int        // ifindex, for unicast routes
	// Metric is the route's priority; IPv6 routes get 1024 when it is
	// 0, as `ip -6 route add` gives them.
	Metric uint32
	// Src is the preferred source (`src`).
	Src netip.Addr
	// MTU is the route's MTU (`mtu`). Forwarding lookups check it only
	// when locked (`mtu lock`): for IPv4 net.ipv4.ip_forward_use_pmtu is
	// off by default, and IPv6 takes the device's otherwise.
	MTU     int
	MTULock bool
	Table   uint32
}

// Neighbor is a neighbour table entry, reachable (NUD_PERMANENT).
type Neighbor struct {
	Addr netip.Addr
	MAC  net.HardwareAddr
	Dev  int
}

const (
	rtTableMain  = 254
	rtTableLocal = 255
)

// netState is the kernel's network configuration.
type netState struct {
	mu     sync.RWMutex
	devs   map[int]*NetDevice
	routes []Route
	neigh  map[neighKey]net.HardwareAddr
}

type neighKey struct {
	dev  int
	addr netip.Addr
}

func (n *netState) init() {
	if n.devs != nil {
		return
	}
	n.devs = map[int]*NetDevice{}
	n.neigh = map[neighKey]net.HardwareAddr{}
	lo := &NetDevice{Index: loopbackIfindex, Name: "lo", MAC: make(net.HardwareAddr, 6), MTU: loopbackMTU,
		Addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8"), netip.MustParsePrefix("::1/128")}}
	n.devs[lo.Index] = lo
	n.addAddrRoutes(lo)
}

// addAddrRoutes adds the routes the kernel makes for d's addresses: the
// address itself (local table), for IPv4 the prefix's network and
// broadcast addresses (local table), and the connected prefix (main).
func (n *netState) addAddrRoutes(d *NetDevice) {
	for _, p := range d.Addrs {
		a := p.Addr()
		n.routes = append(n.routes, Route{Dst: netip.PrefixFrom(a, a.BitLen()), Type: routeLocal, Dev: d.Index, Src: a, Table: rtTableLocal})
		if a.Is4() && p.Bits() < 32 {
			if d.Index == loopbackIfindex {
				// lo's whole 127/8 is local.
				n.routes = append(n.routes, Route{Dst: p.Masked(), Type: routeLocal, Dev: d.Index, Src: a, Table: rtTableLocal})
				continue
			}
			if p.Bits() < 31 {
				n.routes = append(n.routes,
					Route{Dst: netip.PrefixFrom(broadcastOf(p), 32), Type: routeBroadcast, Dev: d.Index, Src: a, Table: rtTableLocal})
			}
		}
		if d.Index == loopbackIfindex {
			continue
		}
		metric := uint32(0)
		if a.Is6() {
			metric = 256
		}
		n.routes = append(n.routes, Route{Dst: p.Masked(), Dev: d.Index, Src: a, Metric: metric, Table: rtTableMain})
	}
}

func broadcastOf(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := ^uint32(0) >> p.Bits()
	binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(b[:])|host)
	return netip.AddrFrom4(b)
}

// AddNetDevice adds a device and returns its ifindex.
func (k *Kernel) AddNetDevice(d NetDevice) (int, error) {
	n := &k.net
	n.mu.Lock()
	defer n.mu.Unlock()
	n.init()
	if d.Index == 0 {
		d.Index = 1
		for n.devs[d.Index] != nil {
			d.Index++
		}
	}
	switch {
	case d.Index < 0 || n.devs[d.Index] != nil:
		return 0, errors.Wrapf(uapi.EEXIST, "ifindex %d is taken", d.Index)
	case d.MAC != nil && len(d.MAC) != 6:
		return 0, errors.Wrapf(uapi.EINVAL, "MAC address %v is not 6 bytes", d.MAC)
	}
	if d.MTU == 0 {
		d.MTU = 1500
	}
	if d.MAC == nil {
		d.MAC = make(net.HardwareAddr, 6)
	}
	d.Addrs = append([]netip.Prefix(nil), d.Addrs...)
	n.devs[d.Index] = &d
	n.addAddrRoutes(&d)
	return d.Index, nil
}

// NetDeviceExists is maps.NetDevices: the devmaps' question.
func (k *Kernel) NetDeviceExists(ifindex uint32) bool {
	n := &k.net
	n.mu.Lock()
	defer n.mu.Unlock()
	n.init()
	return n.devs[int(ifindex)] != nil
}

// AddRoute adds a route.
func (k *Kernel) AddRoute(r Route) error {
	n := &k.net
	n.mu.Lock()
	defer n.mu.Unlock()
	n.init()
	if !r.Dst.IsValid() {
		return errors.Wrap(uapi.EINVAL, "route without a destination")
	}
	if r.Type == RouteUnicast && n.devs[r.Dev] == nil {
		return errors.Wrapf(uapi.ENODEV, "route to %v: no device %d", r.Dst, r.Dev)
	}
	if r.Gateway.IsValid() && r.Gateway.Is4() != r.Dst.Addr().Is4() {
		return errors.Wrapf(uapi.EINVAL, "route to %v through %v: IPv6 gateways for IPv4 routes are not simulated", r.Dst, r.Gateway)
	}
	if r.Table == 0 {
		r.Table = rtTableMain
	}
	if r.Metric == 0 && r.Dst.Addr().Is6() {
		r.Metric = 1024
	}
	r.Dst = r.Dst.Masked()
	n.routes = append(n.routes, r)
	return nil
}

// AddNeighbor adds a neighbour.
func (k *Kernel) AddNeighbor(nb Neighbor) error {
	n := &k.net
	n.mu.Lock()
	defer n.mu.Unlock()
	n.init()
	if n.devs[nb.Dev] == nil {
		return errors.Wrapf(uapi.ENODEV, "neighbour %v: no device %d", nb.Addr, nb.Dev)
	}
	if len(nb.MAC) != 6 {
		return errors.Wrapf(uapi.EINVAL, "MAC address %v is not 6 bytes", nb.MAC)
	}
	n.neigh[neighKey{nb.Dev, nb.Addr}] = append(net.HardwareAddr(nil), nb.MAC...)
	return nil
}

// lookup finds the route for dst in table (0: all the kernel looks in
// without policy rules), or nil. For IPv4, with no rules, the local table
// is merged into the main one (fib_trie's merged tables), so a lookup of
// either sees both; IPv6 looks in the local table, then the main one. oif,
// if not 0, is the device the packet must leave by: IPv4 keeps to routes
// through it, IPv6 only prefers them.
func (n *netState) lookup(dst netip.Addr, table uint32, oif int) *Route {
	var tables [][]uint32
	switch {
	case dst.Is4() && (table == 0 || table == rtTableMain || table == rtTableLocal):
		tables = [][]uint32{{rtTableLocal, rtTableMain}}
	case table == 0:
		tables = [][]uint32{{rtTableLocal}, {rtTableMain}}
	default:
		tables = [][]uint32{{table}}
	}
	for _, ts := range tables {
		var best *Route
		for i := range n.routes {
			r := &n.routes[i]
			if (r.Table != ts[0] && (len(ts) == 1 || r.Table != ts[1])) || r.Dst.Addr().Is4() != dst.Is4() || !r.Dst.Contains(dst) {
				continue
			}
			if dst.Is4() && oif != 0 && r.Type == RouteUnicast && r.Dev != oif {
				continue
			}
			better := best == nil || r.Dst.Bits() > best.Dst.Bits() ||
				r.Dst.Bits() == best.Dst.Bits() && (r.Metric < best.Metric ||
					r.Metric == best.Metric && oif != 0 && r.Dev == oif && best.Dev != oif)
			if better {
				best = r
			}
		}
		if best != nil {
			return best
		}
	}
	return nil
}

func (n *netState) tableExists(t uint32) bool {
	if t == rtTableMain || t == rtTableLocal {
		return true
	}
	for _, r := range n.routes {
		if r.Table == t {
			return true
		}
	}
	return false
}

// bpf_fib_lookup.

const (
	funcFibLookup = 69

	fibLookupDirect    = 1 << 0
	fibLookupOutput    = 1 << 1
	fibLookupSkipNeigh = 1 << 2
	fibLookupTBID      = 1 << 3
	fibLookupSrc       = 1 << 4
	fibLookupMark      = 1 << 5

	fibRetSuccess     = 0
	fibRetBlackhole   = 1
	fibRetUnreachable = 2
	fibRetProhibit    = 3
	fibRetNotFwded    = 4
	fibRetFwdDisabled = 5
	fibRetNoNeigh     = 7
	fibRetFragNeeded  = 8
	fibRetNoSrcAddr   = 9

	fibParamsSize = 64 // sizeof(struct bpf_fib_lookup)
	afInetFib     = 2
	afInet6Fib    = 10
	eafnosupport  = uapi.Errno(97)
)

// Offsets in struct bpf_fib_lookup.
const (
	fibFamily  = 0
	fibTotLen  = 6 // and mtu_result
	fibIfindex = 8
	fibMetric  = 12 // rt_metric, over tos and flowinfo
	fibSrc     = 16
	fibDst     = 32
	fibVlan    = 48 // h_vlan_proto, h_vlan_TCI; tbid
	fibSmac    = 52
	fibDmac    = 58
)

var fibLookupProto = &verifier.FuncProto{Args: [5]verifier.ArgType{
	verifier.ArgPtrToCtx, verifier.ArgPtrToMem, verifier.ArgConstSize, verifier.ArgAnything}}

func (k *Kernel) registerFibLookup() {
	if err := k.RegisterHelper(&Helper{ID: funcFibLookup, Proto: fibLookupProto, Fn: k.helperFibLookup}); err != nil {
		panic(err) // the table has unique ids
	}
	k.helperTypes[funcFibLookup] = []ebpf.ProgramType{ebpf.XDP, ebpf.SchedCLS, ebpf.SchedACT}
}

// helperFibLookup is bpf_xdp_fib_lookup and bpf_skb_fib_lookup(ctx,
// params, plen, flags). The verifier lets params be read-only memory, yet
// the helper writes its results there, as the kernel's does.
func (k *Kernel) helperFibLookup(m *interp.Machine, ctx, paramsAddr, plen, flags, _ uint64) (uint64, error) {
	cpu, _ := m.Data.(*CPU)
	xdp := cpu != nil && cpu.run.xdp != nil && (cpu.run.xdp.ctx == ctx || cpu.run.xdp.buff == ctx)
	var s *skBuff
	if !xdp {
		var err error
		if s, err = k.skbOf(m, ctx, "bpf_fib_lookup"); err != nil {
			return 0, err
		}
	}
	if int32(plen) < fibParamsSize {
		return errnoRet(uapi.EINVAL), nil
	}
	if uint32(flags)&^(fibLookupDirect|fibLookupOutput|fibLookupSkipNeigh|fibLookupTBID|fibLookupSrc|fibLookupMark) != 0 {
		return errnoRet(uapi.EINVAL), nil
	}
	p := make([]byte, fibParamsSize)
	if err := m.ReadMem(paramsAddr, p); err != nil {
		return 0, err
	}
	le := binary.LittleEndian
	// XDP checks the MTU against tot_len always; tc when tot_len is
	// given (a test run's skb is never GSO).
	checkMTU := xdp || le.Uint16(p[fibTotLen:]) != 0
	k.net.mu.Lock()
	k.net.init()
	var rc int64
	switch p[fibFamily] {
	case afInetFib, afInet6Fib:
		rc = k.net.fibLookup(p, uint32(flags), checkMTU)
	default:
		rc = -int64(eafnosupport)
	}
	if rc == fibRetSuccess && !checkMTU {
		// is_skb_forwardable on the result's device, whose MTU goes to
		// mtu_result.
		dev := k.net.devs[int(le.Uint32(p[fibIfindex:]))]
		if int(s.len) > dev.MTU+ethHlen+4 { // mtu + hard_header_len + VLAN_HLEN
			rc = fibRetFragNeeded
		}
		le.PutUint16(p[fibTotLen:], uint16(dev.MTU))
	}
	k.net.mu.Unlock()
	if err := m.WriteMem(paramsAddr, p); err != nil {
		return 0, err
	}
	return uint64(rc), nil
}

// fibLookup is bpf_ipv4_fib_lookup and bpf_ipv6_fib_lookup on the
// parameters p, which it updates; the caller holds n.mu.
func (n *netState) fibLookup(p []byte, flags uint32, checkMTU bool) int64 {
	le := binary.LittleEndian
	v6 := p[fibFamily] == afInet6Fib
	addrAt := func(off int) netip.Addr {
		if v6 {
			return netip.AddrFrom16([16]byte(p[off : off+16]))
		}
		return netip.AddrFrom4([4]byte(p[off : off+4]))
	}
	dst, src := addrAt(fibDst), addrAt(fibSrc)
	if v6 && (needsStrict(dst) || needsStrict(src)) {
		return fibRetNotFwded // link-local addresses are never forwarded
	}
	ifindex := int(le.Uint32(p[fibIfindex:]))
	dev := n.devs[ifindex]
	if dev == nil {
		return -int64(enodev)
	}
	if !dev.Forwarding {
		return fibRetFwdDisabled
	}
	oif := 0
	if flags&fibLookupOutput != 0 {
		oif = ifindex
	}
	var table uint32
	if flags&fibLookupDirect != 0 {
		table = rtTableMain
		if flags&fibLookupTBID != 0 {
			table = le.Uint32(p[fibVlan:])
			le.PutUint32(p[fibVlan:], 0)
		}
		if !n.tableExists(table) {
			return fibRetNotFwded
		}
	}
	r := n.lookup(dst, table, oif)
	if r == nil {
		return fibRetNotFwded
	}
	switch r.Type {
	case RouteUnicast:
	case RouteBlackhole:
		return fibRetBlackhole
	case RouteUnreachable:
		return fibRetUnreachable
	case RouteProhibit:
		return fibRetProhibit
	default:
		return fibRetNotFwded
	}
	out := n.devs[r.Dev]
	mtu := 0
	if checkMTU {
		mtu = out.MTU
		if r.MTU != 0 && r.MTULock {
			mtu = r.MTU
		}
		if int(le.Uint16(p[fibTotLen:])) > mtu {
			le.PutUint16(p[fibTotLen:], uint16(mtu))
			return fibRetFragNeeded
		}
	}
	le.PutUint32(p[fibMetric:], r.Metric)
	le.PutUint32(p[fibIfindex:], uint32(out.Index))
	if flags&fibLookupSrc != 0 {
		s := r.Src
		if !s.IsValid() {
			s = firstAddr(out, v6)
		}
		if !s.IsValid() && v6 {
			return fibRetNoSrcAddr
		}
		putAddr(p[fibSrc:], s, v6)
	}
	next := dst
	if r.Gateway.IsValid() {
		next = r.Gateway
		putAddr(p[fibDst:], next, v6)
	}
	if flags&fibLookupSkipNeigh == 0 {
		mac, ok := n.neigh[neighKey{out.Index, next}]
		if !ok {
			return fibRetNoNeigh
		}
		copy(p[fibDmac:fibDmac+6], mac)
		copy(p[fibSmac:fibSmac+6], out.MAC)
	}
	// bpf_fib_set_fwd_params.
	le.PutUint32(p[fibVlan:], 0)
	if mtu != 0 {
		le.PutUint16(p[fibTotLen:], uint16(mtu))
	}
	return fibRetSuccess
}

// needsStrict is rt6_need_strict: link-local, multicast and loopback
// addresses.
func needsStrict(a netip.Addr) bool {
	return a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsLoopback()
}

func firstAddr(d *NetDevice, v6 bool) netip.Addr {
	for _, p := range d.Addrs {
		if p.Addr().Is6() == v6 && !p.Addr().IsLinkLocalUnicast() {
			return p.Addr()
		}
	}
	return netip.Addr{}
}

func putAddr(b []byte, a netip.Addr, v6 bool) {
	if v6 {
		s := a.As16()
		copy(b[:16], s[:])
		return
	}
	s := a.As4()
	copy(b[:4], s[:])
}
