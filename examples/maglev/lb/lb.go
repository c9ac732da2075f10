// Package lb is the datapath of the Maglev demo: the XDP program of
// examples/maglev/bpf/maglev.bpf.c, embedded, and the user-space side that
// loads it into a simulated kernel and programs its maps the way Cilium's
// agent programs its own (pkg/loadbalancer, pkg/maps/lbmap).
//
// A service (virtual IPv4 or IPv6 address, port, protocol) has a Maglev lookup table of M
// backend ids, computed elsewhere (examples/maglev/maglev); SetService
// puts it in a new inner array of exactly M entries and swaps that array
// into the hash of maps maglev_outer with one update, so that a packet
// meets the old table or the new one, never a mixture. The program hashes
// each flow as Cilium does (FlowHash), takes the slot hash % M, and sends
// the packet to the backend in it.
//
// Map layouts (the same as the C structs):
//
//	services      HASH      svc_key{vip be32, port be16, proto u8, pad u8}
//	                        -> svc_value{lut_size, count, id u32}
//	maglev_outer  HASH_OF_MAPS svc_key -> inner ARRAY u32 slot -> u32 backend
//	                        id (BPF_F_INNER_MAP, template max_entries 251)
//	backends      HASH      u32 id -> backend{addr be32, port be16, mac [6]u8}
//	services6, maglev_outer6, backends6: the same for IPv6, with 16-byte
//	                        addresses (svc6_key{vip [16]u8, port, proto, pad})
//	stats         PERCPU_ARRAY u32 -> u64 packets: index id < MaxBackends
//	                        counts backend id (either family: ids are
//	                        shared); MaxBackends+Stat* the verdicts
//
// Kernel counterpart of the datapath: Cilium's bpf/lib/lb.h and
// bpf/lib/hash.h; of the hash: include/linux/jhash.h.
package lb

import (
	"bytes"
	_ "embed"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

//go:embed maglev.bpf.o
var object []byte

// Limits of the program's maps (maglev.bpf.c).
const (
	MaxServices = 256
	// MaxBackends bounds backend ids: 1 to MaxBackends-1 (0 is "none").
	MaxBackends = 4096
	// TemplateM is max_entries of the inner map template. With
	// BPF_F_INNER_MAP the inner arrays may have any other size.
	TemplateM = 251
)

// ProgramName is the XDP program's name in the object.
const ProgramName = "maglev_lb"

// The verdict counters' indices in the stats map, after MaxBackends.
const (
	StatTX             = iota // forwarded to a backend
	StatPassNotIP             // neither IPv4 nor IPv6 (ARP...)
	StatPassNotService        // IP, but not TCP/UDP to a service (IPv6 extension headers included)
	StatPassFragment          // an IPv4 fragment, left to the stack
	StatDropMalformed         // headers cut short or invalid
	StatDropNoBackend         // a service without a usable backend
	NumStats
)

// StatNames names the verdict counters, by index.
var StatNames = [NumStats]string{"tx", "pass_not_ip", "pass_not_service", "pass_fragment", "drop_malformed", "drop_no_backend"}

// Protocols a service may have.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// Service is what clients address: a virtual IPv4 or IPv6 address, a port
// and a protocol (ProtoTCP or ProtoUDP).
type Service struct {
	VIP   netip.Addr
	Port  uint16
	Proto uint8
}

func (s Service) String() string {
	p := "tcp"
	if s.Proto == ProtoUDP {
		p = "udp"
	}
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(s.VIP, s.Port), p)
}

// BackendAddr is a backend: its id (the value in Maglev tables, 1 to
// MaxBackends-1), address (of the service's family), port (0: the
// service's port) and MAC address.
type BackendAddr struct {
	ID   uint32
	Addr netip.Addr
	Port uint16
	MAC  [6]byte
}

// Flow is a packet's 5-tuple.
type Flow struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            uint8
}

// Spec returns the program and its maps from the embedded object, with
// the hash seed the object was built with (0). Set another with
// SetHashSeed before loading.
func Spec() (*ebpf.CollectionSpec, error) {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object))
	if err != nil {
		return nil, errors.Wrap(err, "the embedded maglev.bpf.o")
	}
	return spec, nil
}

// SetHashSeed sets the flow hash's seed, the .rodata constant hash_seed,
// in spec: the program then loads with it as a constant.
func SetHashSeed(spec *ebpf.CollectionSpec, seed uint32) error {
	v, ok := spec.Variables["hash_seed"]
	if !ok {
		return errors.Wrap(uapi.EINVAL, "the object has no hash_seed")
	}
	return v.Set(seed)
}

// LB is the balancer loaded into a simulated kernel.
type LB struct {
	*control
	k    *sim.Kernel
	coll *sim.Collection
	prog *sim.Program
}

// Load loads the balancer into k, with its maps empty and the flow hash
// seeded with hashSeed.
func Load(k *sim.Kernel, hashSeed uint32) (*LB, error) {
	spec, err := Spec()
	if err != nil {
		return nil, err
	}
	if err := SetHashSeed(spec, hashSeed); err != nil {
		return nil, err
	}
	coll, err := k.NewCollection(spec)
	if err != nil {
		return nil, errors.Wrap(err, "loading the balancer")
	}
	lb := &LB{k: k, coll: coll, prog: coll.Programs[ProgramName]}
	lb.control = newControl(mapSet{
		services:  coll.Maps["services"],
		outer:     coll.Maps["maglev_outer"],
		backends:  coll.Maps["backends"],
		services6: coll.Maps["services6"],
		outer6:    coll.Maps["maglev_outer6"],
		backends6: coll.Maps["backends6"],
		stats:     coll.Maps["stats"],
		newInner:  func(n int) (innerMap, error) { return k.NewMap(InnerSpec(n)) },
	})
	return lb, nil
}

// InnerSpec is the spec of a service's inner array of n slots.
func InnerSpec(n int) *ebpf.MapSpec {
	return &ebpf.MapSpec{
		Name:       "maglev_lut",
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  4,
		MaxEntries: uint32(n),
		Flags:      uapi.BPF_F_INNER_MAP,
	}
}

// Program is the loaded XDP program.
func (lb *LB) Program() *sim.Program { return lb.prog }

// Map returns one of the program's maps by name: services, maglev_outer,
// backends, services6, maglev_outer6, backends6, stats.
func (lb *LB) Map(name string) *sim.Map { return lb.coll.Maps[name] }

// Run runs the program on one packet on a simulated CPU and returns its
// verdict (XDP_DROP 1, XDP_PASS 2, XDP_TX 3) and the packet as it left.
func (lb *LB) Run(pkt []byte, cpu int) (verdict uint32, out []byte, err error) {
	if cpu < 0 {
		return 0, nil, errors.Wrapf(uapi.EINVAL, "CPU %d", cpu)
	}
	res, err := lb.prog.Test(&sim.RunOptions{Data: pkt, CPU: uint32(cpu)})
	if err != nil {
		return 0, nil, err
	}
	return uint32(res.R0), res.Data, nil
}

// Close unloads the balancer: the program and its maps, and with them
// every inner map.
func (lb *LB) Close() error {
	lb.coll.Close()
	return nil
}

// XDP verdicts.
const (
	XDPAborted = 0
	XDPDrop    = 1
	XDPPass    = 2
	XDPTX      = 3
)

// ---- The control plane, the same for bpfsim's maps and the kernel's.

// bpfMap is what the control plane needs of a map: *sim.Map and
// *ebpf.Map both have it.
type bpfMap interface {
	Lookup(key, valueOut any) error
	Update(key, value any, flags ebpf.MapUpdateFlags) error
	Delete(key any) error
}

// innerMap is a freshly created inner array.
type innerMap interface {
	bpfMap
	Close() error
}

type mapSet struct {
	services, outer, backends    bpfMap // IPv4
	services6, outer6, backends6 bpfMap // IPv6
	stats                        bpfMap
	newInner                     func(n int) (innerMap, error)
}

// family returns the maps of v4 or v6 services.
func (m *mapSet) family(v4 bool) (services, outer, backends bpfMap) {
	if v4 {
		return m.services, m.outer, m.backends
	}
	return m.services6, m.outer6, m.backends6
}

// control programs the maps. Its methods are safe for concurrent use.
type control struct {
	maps mapSet

	mu       sync.Mutex
	services map[Service]*serviceState
	nextID   uint32
	// backends are the configured backends, refs how many services use
	// each; seen is every backend id ever configured (for the counts).
	backends map[uint32]BackendAddr
	refs     map[uint32]int
	seen     map[uint32]bool
}

type serviceState struct {
	id       uint32
	lutSize  uint32
	backends []uint32
}

func newControl(m mapSet) *control {
	return &control{
		maps:     m,
		services: map[Service]*serviceState{},
		nextID:   1,
		backends: map[uint32]BackendAddr{},
		refs:     map[uint32]int{},
		seen:     map[uint32]bool{},
	}
}

// svcKey is struct svc_key or svc6_key: {vip, port (network order),
// proto, pad}.
func svcKey(s Service) []byte {
	var vip []byte
	if s.VIP.Is4() {
		a := s.VIP.As4()
		vip = a[:]
	} else {
		a := s.VIP.As16()
		vip = a[:]
	}
	k := make([]byte, len(vip)+4)
	n := copy(k, vip)
	binary.BigEndian.PutUint16(k[n:], s.Port)
	k[n+2] = s.Proto
	return k
}

// svcValue is struct svc_value.
func svcValue(lutSize, count, id uint32) []byte {
	v := make([]byte, 12)
	binary.LittleEndian.PutUint32(v[0:], lutSize)
	binary.LittleEndian.PutUint32(v[4:], count)
	binary.LittleEndian.PutUint32(v[8:], id)
	return v
}

// backendValue is struct backend or backend6: {addr, port (network
// order), mac}.
func backendValue(b BackendAddr) []byte {
	var addr []byte
	if b.Addr.Is4() {
		a := b.Addr.As4()
		addr = a[:]
	} else {
		a := b.Addr.As16()
		addr = a[:]
	}
	v := make([]byte, len(addr)+8)
	n := copy(v, addr)
	binary.BigEndian.PutUint16(v[n:], b.Port)
	copy(v[n+2:], b.MAC[:])
	return v
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

// waitForPrograms returns once every program that was running has
// finished. User space has no synchronize_rcu, but every update or delete
// of a map of maps ends with one (maybe_wait_bpf_programs), even a delete
// of a key that is not there: the key of protocol 0, which no service has.
func waitForPrograms(outer bpfMap, v4 bool) error {
	vip := netip.IPv6Unspecified()
	if v4 {
		vip = netip.IPv4Unspecified()
	}
	err := outer.Delete(svcKey(Service{VIP: vip}))
	if errors.Is(err, uapi.ENOENT) || errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}

func checkService(svc Service) error {
	if !svc.VIP.IsValid() || svc.VIP.Is4In6() || svc.VIP.Zone() != "" {
		return errors.Wrapf(uapi.EINVAL, "service %v: the VIP must be an IPv4 or IPv6 address", svc.VIP)
	}
	if svc.Proto != ProtoTCP && svc.Proto != ProtoUDP {
		return errors.Wrapf(uapi.EINVAL, "service %v: protocol %d is neither TCP nor UDP", svc, svc.Proto)
	}
	return nil
}

// SetService creates or replaces svc with a Maglev table (backend ids, one
// per slot; its length is M) and the backends the table names. The new
// table goes into a new inner array (BPF_F_INNER_MAP, max_entries M),
// filled before it is swapped into maglev_outer with one update: running
// packets see the old table or the new one. The old inner array's only
// reference was the outer map's, so the kernel frees it once no program
// can still be using it. Backends that no service uses any more leave the
// backends map afterwards.
//
// When M changes, the slot count the program reads from services and the
// table it reads from maglev_outer are two updates: they come in the order
// that keeps every slot the program computes inside the table it finds
// (the bigger table first), so that no packet is dropped meanwhile; such a
// packet may meet a backend of the new table at the old M's slot.
//
// Bad input (no table, ids that are not among the backends, backend ids
// out of range, a backend id already used with another address) is
// EINVAL and changes nothing.
func (c *control) SetService(svc Service, table []uint32, backends []BackendAddr) error {
	if err := checkService(svc); err != nil {
		return err
	}
	if len(table) == 0 {
		return errors.Wrapf(uapi.EINVAL, "service %v: an empty Maglev table", svc)
	}
	if len(table) > 1<<24 {
		return errors.Wrapf(uapi.E2BIG, "service %v: a Maglev table of %d slots", svc, len(table))
	}
	c.mu.Lock()
	defer c.mu.Unlock()

	byID := map[uint32]BackendAddr{}
	for _, b := range backends {
		if b.ID == 0 || b.ID >= MaxBackends {
			return errors.Wrapf(uapi.EINVAL, "service %v: backend id %d is not in 1..%d", svc, b.ID, MaxBackends-1)
		}
		if !b.Addr.IsValid() || b.Addr.Is4() != svc.VIP.Is4() || b.Addr.Is4In6() || b.Addr.Zone() != "" {
			return errors.Wrapf(uapi.EINVAL, "service %v: backend %d: %v is not an address of the VIP's family", svc, b.ID, b.Addr)
		}
		if b.Port == 0 {
			b.Port = svc.Port
		}
		if old, ok := byID[b.ID]; ok && old != b {
			return errors.Wrapf(uapi.EINVAL, "service %v: backend id %d given twice", svc, b.ID)
		}
		if cur, ok := c.backends[b.ID]; ok && cur != b && c.refs[b.ID] > c.ownRefs(svc, b.ID) {
			return errors.Wrapf(uapi.EINVAL, "service %v: backend id %d is %v:%d in another service", svc, b.ID, cur.Addr, cur.Port)
		}
		byID[b.ID] = b
	}
	used := map[uint32]bool{}
	for slot, id := range table {
		if _, ok := byID[id]; !ok {
			return errors.Wrapf(uapi.EINVAL, "service %v: slot %d names backend %d, which is not among the backends", svc, slot, id)
		}
		used[id] = true
	}
	old := c.services[svc]
	if old == nil && len(c.services) >= MaxServices {
		return errors.Wrapf(uapi.E2BIG, "service %v: %d services already", svc, MaxServices)
	}
	newBackends := 0
	for id := range used {
		if _, ok := c.backends[id]; !ok {
			newBackends++
		}
	}
	if len(c.backends)+newBackends > MaxBackends {
		return errors.Wrapf(uapi.E2BIG, "service %v: more than %d backends", svc, MaxBackends)
	}

	// 1. The new table, complete before anything can see it.
	inner, err := c.maps.newInner(len(table))
	if err != nil {
		return errors.Wrapf(err, "service %v: creating its inner map", svc)
	}
	defer inner.Close() // the outer map keeps its own reference
	for slot, id := range table {
		if err := inner.Update(u32(uint32(slot)), u32(id), ebpf.UpdateAny); err != nil {
			return errors.Wrapf(err, "service %v: filling slot %d", svc, slot)
		}
	}
	servicesMap, outerMap, backendsMap := c.maps.family(svc.VIP.Is4())
	// 2. The backends it names, before any packet can be sent to them.
	ids := sortedIDs(used)
	for _, id := range ids {
		b := byID[id]
		if cur, ok := c.backends[id]; ok && cur == b {
			continue
		}
		if err := backendsMap.Update(u32(id), backendValue(b), ebpf.UpdateAny); err != nil {
			return errors.Wrapf(err, "service %v: backend %d", svc, id)
		}
		c.backends[id] = b
		c.seen[id] = true
	}
	// 3. The swap.
	st := &serviceState{lutSize: uint32(len(table)), backends: ids}
	if old != nil {
		st.id = old.id
	} else {
		st.id = c.nextID
		c.nextID++
	}
	key := svcKey(svc)
	value := svcValue(st.lutSize, uint32(len(ids)), st.id)
	swapTable := func() error { return outerMap.Update(key, inner, ebpf.UpdateAny) }
	setService := func() error { return servicesMap.Update(key, value, ebpf.UpdateAny) }
	steps := []func() error{swapTable, setService}
	if old != nil && old.lutSize > st.lutSize {
		// Shrinking: the smaller slot count first, while the bigger
		// table still holds every slot it gives; then a grace period,
		// so that no packet that read the bigger count is still on its
		// way to the outer map when the smaller table replaces the
		// bigger one.
		barrier := func() error { return waitForPrograms(outerMap, svc.VIP.Is4()) }
		steps = []func() error{setService, barrier, swapTable}
	}
	for _, step := range steps {
		if err := step(); err != nil {
			c.dropUnused()
			return errors.Wrapf(err, "service %v", svc)
		}
	}
	// 4. Backends only the old table used.
	for _, id := range ids {
		c.refs[id]++
	}
	if old != nil {
		for _, id := range old.backends {
			c.refs[id]--
		}
	}
	c.services[svc] = st
	return c.dropUnused()
}

// ownRefs is 1 if svc uses backend id, so that a service may change its
// own backends.
func (c *control) ownRefs(svc Service, id uint32) int {
	if st := c.services[svc]; st != nil {
		for _, b := range st.backends {
			if b == id {
				return 1
			}
		}
	}
	return 0
}

// dropUnused deletes the backends no service uses.
func (c *control) dropUnused() error {
	var first error
	for _, id := range sortedIDs(keys(c.backends)) {
		if c.refs[id] > 0 {
			continue
		}
		_, _, backendsMap := c.maps.family(c.backends[id].Addr.Is4())
		if err := backendsMap.Delete(u32(id)); err != nil && first == nil {
			first = errors.Wrapf(err, "deleting backend %d", id)
		}
		delete(c.backends, id)
		delete(c.refs, id)
	}
	return first
}

// DeleteService removes svc: first from services, so that its packets go
// to the stack at once, then its table, then the backends no other service
// uses. ENOENT if there is no such service.
func (c *control) DeleteService(svc Service) error {
	if err := checkService(svc); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.services[svc]
	if st == nil {
		return errors.Wrapf(uapi.ENOENT, "service %v", svc)
	}
	key := svcKey(svc)
	servicesMap, outerMap, _ := c.maps.family(svc.VIP.Is4())
	if err := servicesMap.Delete(key); err != nil {
		return errors.Wrapf(err, "service %v", svc)
	}
	delete(c.services, svc)
	for _, id := range st.backends {
		c.refs[id]--
	}
	if err := outerMap.Delete(key); err != nil {
		return errors.Wrapf(err, "service %v: its table", svc)
	}
	return c.dropUnused()
}

// Services lists the configured services.
func (c *control) Services() []Service {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Service, 0, len(c.services))
	for s := range c.services {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.VIP != b.VIP {
			return a.VIP.Less(b.VIP)
		}
		if a.Port != b.Port {
			return a.Port < b.Port
		}
		return a.Proto < b.Proto
	})
	return out
}

// counter sums index's per-CPU counters.
func (c *control) counter(index uint32) (uint64, error) {
	var perCPU []uint64
	if err := c.maps.stats.Lookup(u32(index), &perCPU); err != nil {
		return 0, errors.Wrapf(err, "stats[%d]", index)
	}
	var n uint64
	for _, v := range perCPU {
		n += v
	}
	return n, nil
}

// BackendCounts returns the packets sent to each backend ever configured,
// summed over CPUs.
func (c *control) BackendCounts() (map[uint32]uint64, error) {
	c.mu.Lock()
	ids := sortedIDs(c.seen)
	c.mu.Unlock()
	out := make(map[uint32]uint64, len(ids))
	for _, id := range ids {
		n, err := c.counter(id)
		if err != nil {
			return nil, err
		}
		out[id] = n
	}
	return out, nil
}

// Stats returns the verdict counters, indexed by Stat*, summed over CPUs.
func (c *control) Stats() ([NumStats]uint64, error) {
	var out [NumStats]uint64
	for i := range out {
		n, err := c.counter(uint32(MaxBackends + i))
		if err != nil {
			return out, err
		}
		out[i] = n
	}
	return out, nil
}

func keys[V any](m map[uint32]V) map[uint32]bool {
	out := make(map[uint32]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

func sortedIDs(m map[uint32]bool) []uint32 {
	out := make([]uint32, 0, len(m))
	for id := range m {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
