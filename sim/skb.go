package sim

import (
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// Socket filter and tc (sched_cls, sched_act) test runs: the struct
// __sk_buff context, after net/bpf/test_run.c (bpf_prog_test_run_skb) and
// net/core/filter.c (the __sk_buff access rules and rewrites).
//
// The kernel builds an skb around a copy of the input on the loopback
// device and calls eth_type_trans, which sets pkt_type and protocol from
// the Ethernet header and pulls it. tc programs get the header pushed
// back, so their data starts at the Ethernet header; socket filters see
// data start after it. After the run the header is pushed back for
// socket filters too, zeroed: that is the output packet's start.
//
// Programs read __sk_buff fields with 4-byte (or narrower) loads that the
// verifier rewrites into loads of sk_buff fields of their own sizes
// (convert_ctx_accesses). bpfsim maps __sk_buff as a device whose loads
// and stores compute the rewritten access's result, and refuses what the
// verifier refuses with its message, when the access runs.

// __sk_buff test-run geometry.
const (
	// skbHeadroom is NET_SKB_PAD + NET_IP_ALIGN as on x86-64, the build
	// machine the kernel-differential tests compare with (64 + 0).
	skbHeadroom = 64
	// skbTailroom is SKB_DATA_ALIGN(sizeof(struct skb_shared_info)).
	skbTailroom = 320
	// SKBMaxData is the largest packet an skb test run takes.
	SKBMaxData = mem.PageSize - skbHeadroom - skbTailroom
	// skbBufSize is the test-run skb's buffer: room for a packet grown
	// to BPF_SKB_MAX_LEN (bpf_skb_change_tail, _change_head) with its
	// headroom and shared info, where the kernel would reallocate.
	skbBufSize = 5 * mem.PageSize
	// SKBContextSize is sizeof(struct __sk_buff).
	SKBContextSize = 192
)

// struct __sk_buff field offsets (include/uapi/linux/bpf.h).
const (
	skbLen            = 0
	skbPktType        = 4
	skbMark           = 8
	skbQueueMapping   = 12
	skbProtocol       = 16
	skbVlanPresent    = 20
	skbVlanTCI        = 24
	skbVlanProto      = 28
	skbPriority       = 32
	skbIngressIfindex = 36
	skbIfindex        = 40
	skbTCIndex        = 44
	skbCB             = 48 // __u32 cb[5]
	skbCBEnd          = 68
	skbHash           = 68
	skbTCClassid      = 72
	skbData           = 76
	skbDataEnd        = 80
	skbNapiID         = 84
	skbFamily         = 88 // family .. local_port: the socket's, for cgroup_skb
	skbRemoteIP4      = 92
	skbLocalIP4       = 96
	skbRemoteIP6      = 100
	skbLocalIP6       = 116
	skbRemotePort     = 132
	skbLocalPort      = 136
	skbDataMeta       = 140
	skbFlowKeys       = 144
	skbTstamp         = 152
	skbWireLen        = 160
	skbGSOSegs        = 164
	skbSk             = 168
	skbGSOSize        = 176
	skbTstampType     = 180
	skbHwtstamp       = 184
)

// Values the kernel's test run gives an skb.
const (
	// Packet types (include/uapi/linux/if_packet.h).
	packetHost      = 0
	packetMulticast = 2
	packetOtherhost = 3

	ethP8023Min = 0x0600 // ETH_P_802_3_MIN: smaller type fields are lengths
	ethP8023    = 0x0001 // ETH_P_802_3, raw 802.3 (Novell)
	ethP8022    = 0x0004 // ETH_P_802_2, 802.2 LLC

	noQueueMapping = 0xffff // NO_QUEUE_MAPPING: stores of it are ignored
	gsoMaxSegs     = 65535  // GSO_MAX_SEGS
	gsoLegacyMax   = 65536  // GSO_LEGACY_MAX_SIZE, the largest wire_len
)

// enodev is ENODEV, what a context naming a missing device gets.
const enodev = uapi.Errno(19)

// skbShape says how a field may be accessed.
type skbShape uint8

const (
	shapeNone skbShape = iota
	shapeU32           // loads of 1, 2 or 4 bytes, narrowed as the kernel narrows
	shapePtr           // data, data_end, data_meta: 4-byte zero-extending loads only
	shapeU64           // tstamp, hwtstamp: 8-byte accesses only
	shapeU8            // tstamp_type: 1-byte loads only
	shapeSock          // sk: an 8-byte load of a socket pointer
)

// skbAccess is who may access a field.
type skbAccess uint8

const (
	readSF  skbAccess = 1 << iota // socket filters may load it
	readTC                        // tc programs may load it
	writeTC                       // tc programs may store it
	readCG                        // cgroup_skb programs may load it
	writeCG                       // cgroup_skb programs may store it

	readAll = readSF | readTC | readCG
)

// skbField is one __sk_buff field other than cb[].
type skbField struct {
	name   string
	off    uint64
	shape  skbShape
	access skbAccess
	// target is the size of the sk_buff field the kernel's rewrite loads:
	// a narrow load shifts and masks only when it is smaller than that.
	target int
	get    func(s *skBuff) uint64
	set    func(s *skBuff, v uint64)
}

func zero(*skBuff) uint64 { return 0 }

// skbFields lists the fields by offset; fieldAt finds one.
var skbFields = []skbField{
	{"len", skbLen, shapeU32, readAll, 4, func(s *skBuff) uint64 { return uint64(s.len) }, nil},
	{"pkt_type", skbPktType, shapeU32, readAll, 1, func(s *skBuff) uint64 { return uint64(s.pktType) }, nil},
	{"mark", skbMark, shapeU32, readAll | writeTC | writeCG, 4,
		func(s *skBuff) uint64 { return uint64(s.mark) }, func(s *skBuff, v uint64) { s.mark = uint32(v) }},
	{"queue_mapping", skbQueueMapping, shapeU32, readAll | writeTC, 2,
		func(s *skBuff) uint64 { return uint64(s.queueMapping) }, func(s *skBuff, v uint64) {
			// The rewrite skips the store of a value >= NO_QUEUE_MAPPING.
			if v < noQueueMapping {
				s.queueMapping = uint16(v)
			}
		}},
	{"protocol", skbProtocol, shapeU32, readAll, 2, func(s *skBuff) uint64 { return uint64(s.protocol) }, nil},
	{"vlan_present", skbVlanPresent, shapeU32, readAll, 4, func(s *skBuff) uint64 {
		if s.vlanProto != 0 { // vlan_all != 0
			return 1
		}
		return 0
	}, nil},
	{"vlan_tci", skbVlanTCI, shapeU32, readAll, 2, func(s *skBuff) uint64 { return uint64(s.vlanTCI) }, nil},
	{"vlan_proto", skbVlanProto, shapeU32, readAll, 2, func(s *skBuff) uint64 { return uint64(s.vlanProto) }, nil},
	{"priority", skbPriority, shapeU32, readAll | writeTC | writeCG, 4,
		func(s *skBuff) uint64 { return uint64(s.priority) }, func(s *skBuff, v uint64) { s.priority = uint32(v) }},
	{"ingress_ifindex", skbIngressIfindex, shapeU32, readAll, 4, func(s *skBuff) uint64 { return uint64(s.skbIif) }, nil},
	{"ifindex", skbIfindex, shapeU32, readAll, 4, func(*skBuff) uint64 { return loopbackIfindex }, nil},
	{"tc_index", skbTCIndex, shapeU32, readAll | writeTC, 2,
		func(s *skBuff) uint64 { return uint64(s.tcIndex) }, func(s *skBuff, v uint64) { s.tcIndex = uint16(v) }},
	{"hash", skbHash, shapeU32, readAll, 4, func(s *skBuff) uint64 { return uint64(s.hash) }, nil},
	{"tc_classid", skbTCClassid, shapeU32, readTC | writeTC, 2,
		func(s *skBuff) uint64 { return uint64(s.tcClassid) }, func(s *skBuff, v uint64) { s.tcClassid = uint16(v) }},
	{"data", skbData, shapePtr, readTC | readCG, 8, func(s *skBuff) uint64 { return s.data }, nil},
	{"data_end", skbDataEnd, shapePtr, readTC | readCG, 8, func(s *skBuff) uint64 { return s.data + uint64(s.len) }, nil},
	{"napi_id", skbNapiID, shapeU32, readAll, 4, zero, nil},
	// The socket's fields, cgroup_skb's only: the test run's socket has
	// the family and the addresses of the packet, no ports.
	{"family", skbFamily, shapeU32, readCG, 2, func(s *skBuff) uint64 { return uint64(s.family) }, nil},
	{"remote_ip4", skbRemoteIP4, shapeU32, readCG, 4, func(s *skBuff) uint64 { return uint64(s.ip4Word(1)) }, nil},
	{"local_ip4", skbLocalIP4, shapeU32, readCG, 4, func(s *skBuff) uint64 { return uint64(s.ip4Word(0)) }, nil},
	{"remote_ip6[0]", skbRemoteIP6, shapeU32, readCG, 4, func(s *skBuff) uint64 { return uint64(s.ip6Word(1, 0)) }, nil},
	{"remote_ip6[1]", skbRemoteIP6 + 4, shapeU32, readCG, 4, func(s *skBuff) uint64 { return uint64(s.ip6Word(1, 1)) }, nil},
	{"remote_ip6[2]", skbRemoteIP6 + 8, shapeU32, readCG, 4, func(s *skBuff) uint64 { return uint64(s.ip6Word(1, 2)) }, nil},
	{"remote_ip6[3]", skbRemoteIP6 + 12, shapeU32, readCG, 4, func(s *skBuff) uint64 { return uint64(s.ip6Word(1, 3)) }, nil},
	{"local_ip6[0]", skbLocalIP6, shapeU32, readCG, 4, func(s *skBuff) uint64 { return uint64(s.ip6Word(0, 0)) }, nil},
	{"local_ip6[1]", skbLocalIP6 + 4, shapeU32, readCG, 4, func(s *skBuff) uint64 { return uint64(s.ip6Word(0, 1)) }, nil},
	{"local_ip6[2]", skbLocalIP6 + 8, shapeU32, readCG, 4, func(s *skBuff) uint64 { return uint64(s.ip6Word(0, 2)) }, nil},
	{"local_ip6[3]", skbLocalIP6 + 12, shapeU32, readCG, 4, func(s *skBuff) uint64 { return uint64(s.ip6Word(0, 3)) }, nil},
	{"remote_port", skbRemotePort, shapeU32, readCG, 4, zero, nil},
	{"local_port", skbLocalPort, shapeU32, readCG, 4, zero, nil},
	{"data_meta", skbDataMeta, shapePtr, readTC, 8, func(s *skBuff) uint64 { return s.data }, nil},
	{"tstamp", skbTstamp, shapeU64, readAll&^readSF | writeTC | writeCG, 8,
		func(s *skBuff) uint64 { return s.tstamp }, func(s *skBuff, v uint64) { s.tstamp = v }},
	{"wire_len", skbWireLen, shapeU32, readTC, 4, func(s *skBuff) uint64 { return uint64(s.pktLen) }, nil},
	{"gso_segs", skbGSOSegs, shapeU32, readAll, 2, func(s *skBuff) uint64 { return uint64(s.gsoSegs) }, nil},
	{"sk", skbSk, shapeSock, readAll, 8, zero, nil},
	{"gso_size", skbGSOSize, shapeU32, readAll, 2, func(s *skBuff) uint64 { return uint64(s.gsoSize) }, nil},
	{"tstamp_type", skbTstampType, shapeU8, readTC, 1, zero, nil},
	{"hwtstamp", skbHwtstamp, shapeU64, readTC | readCG, 8, func(s *skBuff) uint64 { return s.hwtstamp }, nil},
}

// skbFieldIndex maps each __sk_buff byte to 1 + the index in skbFields of
// the field that covers it, or to 0 for cb[], padding and the fields no skb
// program type may touch.
var skbFieldIndex = func() (idx [SKBContextSize]uint8) {
	for i, f := range skbFields {
		size := uint64(4)
		switch f.shape {
		case shapeU64, shapeSock:
			size = 8
		case shapeU8:
			size = 1 // the next three bytes are padding
		}
		for b := f.off; b < f.off+size; b++ {
			idx[b] = uint8(i + 1)
		}
	}
	return idx
}()

// fieldAt returns the field that covers offset off, or nil.
func fieldAt(off uint64) *skbField {
	if off >= SKBContextSize || skbFieldIndex[off] == 0 {
		return nil
	}
	return &skbFields[skbFieldIndex[off]-1]
}

// skBuff is a CPU's skb test-run state: the page that holds the packet
// (the skb's head), the sk_buff fields programs can observe, and the
// __sk_buff mapping they see them through.
type skBuff struct {
	tc     bool   // a tc program: the Ethernet header is in the data
	cgroup bool   // a cgroup_skb program: its own access rules
	page   uint64 // skb->head
	bytes  []byte
	ctx    uint64 // the __sk_buff mapping

	data uint64 // skb->data
	len  uint32 // skb->len, all of it linear
	// dirty bounds the bytes of the buffer the run may have written:
	// the first page, or more once the packet grew past it.
	dirty int

	pktType      uint8
	protocol     uint16 // skb->protocol as a little-endian load of the __be16 reads it
	mark         uint32
	priority     uint32
	skbIif       uint32
	queueMapping uint16
	tcIndex      uint16
	tcClassid    uint16
	cb           [skbCBEnd - skbCB]byte // qdisc_skb_cb's data
	pktLen       uint32                 // qdisc_skb_cb's pkt_len: wire_len
	tstamp       uint64
	hwtstamp     uint64
	gsoSegs      uint16
	gsoSize      uint16
	hash         uint32 // skb->hash: 0 until bpf_set_hash
	// ip_summed is CHECKSUM_NONE, or CHECKSUM_UNNECESSARY at csum_level
	// after bpf_csum_level raised it.
	csumUnnecessary bool
	csumLevel       uint8
	// encapsulation is skb->encapsulation, which bpf_skb_adjust_room's
	// encapsulating grow sets.
	encapsulation bool
	// tunnel is the tunnel info bpf_skb_set_tunnel_key gave it.
	tunnel *tunnelInfo
	// The offloaded VLAN tag bpf_skb_vlan_push sets: vlan_proto as a
	// little-endian load of the __be16 reads it (0: no tag), vlan_tci.
	vlanProto uint16
	vlanTCI   uint16
	// mac and network are the link-layer and network headers' addresses.
	mac, network uint64
	// The test run's socket: the family by the packet's protocol, the
	// addresses from its IP header (local the source, remote the
	// destination) when the header is all there.
	family uint16
	addrs  [32]byte // IPv4: saddr, daddr; IPv6: saddr, daddr
}

// ip4Word returns the IPv4 source (i 0) or destination address as a
// little-endian load of its network-order bytes reads it.
func (s *skBuff) ip4Word(i int) uint32 {
	if s.family != afInet {
		return 0
	}
	return binary.LittleEndian.Uint32(s.addrs[4*i:])
}

// ip6Word returns word w of the IPv6 source (i 0) or destination.
func (s *skBuff) ip6Word(i, w int) uint32 {
	if s.family != afInet6 {
		return 0
	}
	return binary.LittleEndian.Uint32(s.addrs[16*i+4*w:])
}

// Address families of the test run's socket.
const (
	afInet  = 2
	afInet6 = 10
)

func (s *skBuff) readable(f *skbField) bool {
	switch {
	case s.cgroup:
		return f.access&readCG != 0
	case s.tc:
		return f.access&readTC != 0
	}
	return f.access&readSF != 0
}

func (s *skBuff) writable(f *skbField) bool {
	switch {
	case s.cgroup:
		return f.access&writeCG != 0
	case s.tc:
		return f.access&writeTC != 0
	}
	return false
}

// Load serves a program's read of an __sk_buff field, with the verifier's
// rules (bpf_skb_is_valid_access and the per-type checks) and the
// rewritten load's result, including narrow loads.
func (s *skBuff) Load(off uint64, size int, signExtend bool) (uint64, error) {
	if off%uint64(size) != 0 {
		return 0, ctxAccessError(off, size)
	}
	if off >= skbCB && off < skbCBEnd {
		if off+uint64(size) > skbCBEnd {
			return 0, ctxAccessError(off, size)
		}
		var v uint64
		for i := size - 1; i >= 0; i-- {
			v = v<<8 | uint64(s.cb[off-skbCB+uint64(i)])
		}
		return extend(v, size, signExtend), nil
	}
	if s.tc && off == verifier.SKBClonedOffset && size == 1 {
		// The unclone prologue's test of sk_buff's cloned bit: this
		// context is the __sk_buff, not the sk_buff the kernel's
		// prologue reads, and a test run's skb is never cloned. (A
		// verified tc program cannot read this byte of __sk_buff's
		// local_ip6 itself.)
		return 0, nil
	}
	f := fieldAt(off)
	if f == nil || !s.readable(f) {
		return 0, ctxAccessError(off, size)
	}
	switch f.shape {
	case shapeU32:
		if size > 4 {
			return 0, ctxAccessError(off, size)
		}
		v := f.get(s)
		if size < f.target {
			// The kernel loads the whole field and keeps the bytes asked
			// for (little-endian); a load at least as wide as the sk_buff
			// field gets all of it, wherever in the __sk_buff field it is.
			v = v >> (8 * (off - f.off)) & (1<<(8*size) - 1)
		}
		return extend(v, size, signExtend), nil
	case shapePtr:
		if size != 4 || signExtend {
			return 0, ctxAccessError(off, size)
		}
	case shapeU64:
		if size != 8 {
			return 0, ctxAccessError(off, size)
		}
	case shapeU8:
		if size != 1 {
			return 0, ctxAccessError(off, size)
		}
		return extend(f.get(s), size, signExtend), nil
	case shapeSock:
		if size != 8 {
			return 0, ctxAccessError(off, size)
		}
		return 0, fmt.Errorf("__sk_buff->sk is not simulated by bpfsim yet")
	}
	return f.get(s), nil
}

// extend sign-extends the low size bytes of v for a BPF_MEMSX load, as the
// kernel's rewrite does with a movsx after the narrowed load.
func extend(v uint64, size int, signExtend bool) uint64 {
	if !signExtend || size == 8 {
		return v
	}
	shift := 64 - 8*uint(size)
	return uint64(int64(v<<shift) >> shift)
}

// Store serves a program's write of an __sk_buff field: cb[] for every skb
// program, mark, priority, tc_index, tc_classid, queue_mapping and tstamp
// for tc programs.
func (s *skBuff) Store(off uint64, size int, v uint64) error {
	if off%uint64(size) != 0 {
		return ctxAccessError(off, size)
	}
	if off >= skbCB && off < skbCBEnd {
		if off+uint64(size) > skbCBEnd {
			return ctxAccessError(off, size)
		}
		for i := 0; i < size; i++ {
			s.cb[off-skbCB+uint64(i)] = byte(v >> (8 * i))
		}
		return nil
	}
	f := fieldAt(off)
	if f == nil || !s.writable(f) || off != f.off {
		return ctxAccessError(off, size)
	}
	if (f.shape == shapeU64) != (size == 8) || (f.shape == shapeU32 && size != 4) {
		return ctxAccessError(off, size)
	}
	f.set(s, v)
	return nil
}

// checkLdAbs refuses legacy packet access in programs whose context is not
// an skb, as check_ld_abs does (only types with gen_ld_abs may use it).
func checkLdAbs(typ ebpf.ProgramType, insns []insn.Insn) error {
	switch typ {
	case ebpf.SocketFilter, ebpf.SchedCLS, ebpf.SchedACT:
		return nil
	}
	for i, in := range insns {
		if in.Class() == insn.LD && (in.Mode() == insn.ABS || in.Mode() == insn.IND) {
			return errors.Wrapf(uapi.EINVAL, "insn %d: BPF_LD_[ABS|IND] instructions not allowed for this program type", i)
		}
	}
	return nil
}

// skbCtxAllowed are the __sk_buff bytes a context input may set
// (convert___skb_to_skb); every other byte must be zero.
var skbCtxAllowed = [][2]int{
	{skbMark, skbMark + 4},
	{skbPriority, skbTCIndex}, // priority, ingress_ifindex, ifindex
	{skbCB, skbCBEnd},
	{skbTstamp, skbSk}, // tstamp, wire_len, gso_segs
	{skbGSOSize, skbGSOSize + 4},
	{skbHwtstamp, SKBContextSize},
}

// checkSKBContext returns the index of the first byte of in that a context
// input may not set, or -1.
func checkSKBContext(in []byte) int {
	allowed := func(i int) bool {
		for _, r := range skbCtxAllowed {
			if i >= r[0] && i < r[1] {
				return true
			}
		}
		return false
	}
	for i, b := range in {
		if b != 0 && !allowed(i) {
			return i
		}
	}
	return -1
}

func (k *Kernel) prepareSKB(cpu *CPU, typ ebpf.ProgramType, data, ctxIn []byte, ctxOut bool) (*runEnv, error) {
	// The kernel (6.18, measured) refuses a packet shorter than an
	// Ethernet header, and an IPv4 or IPv6 one whose network header is
	// not all there, for tc programs too.
	if len(data) < ethHlen {
		return nil, errors.Wrapf(uapi.EINVAL, "skb input of %d bytes: want an Ethernet header (%d) at least", len(data), ethHlen)
	}
	switch uint16(data[12])<<8 | uint16(data[13]) {
	case 0x0800:
		if len(data) < ethHlen+20 {
			return nil, errors.Wrapf(uapi.EINVAL, "IPv4 skb input of %d bytes: want an IPv4 header after the Ethernet one (%d)", len(data), ethHlen+20)
		}
	case 0x86dd:
		if len(data) < ethHlen+40 {
			return nil, errors.Wrapf(uapi.EINVAL, "IPv6 skb input of %d bytes: want an IPv6 header after the Ethernet one (%d)", len(data), ethHlen+40)
		}
	}
	if len(data) > SKBMaxData {
		return nil, errors.Wrapf(uapi.EINVAL, "skb input of %d bytes exceeds %d: non-linear skbs are not simulated", len(data), SKBMaxData)
	}
	// bpf_ctx_init: a context exists if the caller passes one in or asks
	// for one back; a longer input must be zero past __sk_buff.
	var ctx []byte
	if ctxIn != nil || ctxOut {
		ctx = make([]byte, SKBContextSize)
		copy(ctx, ctxIn)
		for i := SKBContextSize; i < len(ctxIn); i++ {
			if ctxIn[i] != 0 {
				return nil, errors.Wrapf(uapi.E2BIG, "__sk_buff input byte %d past the struct's %d is not zero", i, SKBContextSize)
			}
		}
	}
	le := binary.LittleEndian
	if ctx != nil && le.Uint32(ctx[skbIfindex:]) > loopbackIfindex {
		return nil, errors.Wrapf(enodev, "ifindex %d: bpfsim simulates only the loopback device (1)", le.Uint32(ctx[skbIfindex:]))
	}

	s := cpu.run.skb
	if s == nil {
		s = &skBuff{}
		var err error
		if s.page, err = k.mem.Vmalloc(skbBufSize, mem.PermRW, "skb_test_run"); err != nil {
			return nil, err
		}
		if s.bytes, err = k.mem.Bytes(s.page, skbBufSize); err != nil {
			return nil, err
		}
		s.dirty = skbBufSize
		s.ctx, err = k.mem.Alloc(mem.PageSize, mem.AllocOptions{Perm: mem.PermRW, Name: "__sk_buff", Device: s})
		if err != nil {
			return nil, err
		}
		cpu.run.skb = s
	}
	dirty := s.dirty
	*s = skBuff{page: s.page, bytes: s.bytes, ctx: s.ctx,
		tc: typ == ebpf.SchedCLS || typ == ebpf.SchedACT, cgroup: typ == ebpf.CGroupSKB}
	// Only what the last run could have written needs clearing.
	clear(s.bytes[:max(dirty, mem.PageSize)])
	s.dirty = mem.PageSize
	copy(s.bytes[skbHeadroom:], data)
	mac := s.page + skbHeadroom

	// eth_type_trans on the loopback device, whose address and broadcast
	// address are all zeros: pkt_type from the destination (so even
	// ff:ff:ff:ff:ff:ff is multicast, not broadcast), protocol from the
	// type field (or the 802.3 guess), and the header pulled.
	switch dst := [6]byte(data[0:6]); {
	case dst == [6]byte{}:
		s.pktType = packetHost
	case dst[0]&1 != 0:
		s.pktType = packetMulticast
	default:
		s.pktType = packetOtherhost
	}
	proto := uint16(data[12])<<8 | uint16(data[13])
	switch {
	case proto >= ethP8023Min:
	case len(data) >= ethHlen+2 && data[14] == 0xff && data[15] == 0xff:
		proto = ethP8023
	default:
		proto = ethP8022
	}
	s.protocol = proto>>8 | proto<<8 // the __be16 as a little-endian load reads it
	// The socket the kernel makes for the run (sk_alloc of AF_UNSPEC)
	// gets the family and addresses of an IP packet.
	switch l3 := data[ethHlen:]; proto {
	case 0x0800:
		s.family = afInet
		if len(l3) >= 20 {
			copy(s.addrs[:8], l3[12:20])
		}
	case 0x86dd:
		s.family = afInet6
		if len(l3) >= 40 {
			copy(s.addrs[:], l3[8:40])
		}
	}
	s.data, s.len = mac+ethHlen, uint32(len(data)-ethHlen)
	if s.tc {
		s.data, s.len = mac, uint32(len(data))
	}

	// convert___skb_to_skb.
	if ctx != nil {
		if i := checkSKBContext(ctx); i >= 0 {
			return nil, errors.Wrapf(uapi.EINVAL, "__sk_buff input byte %d is not zero: only mark, priority, ingress_ifindex, ifindex, cb, tstamp, wire_len, gso_segs, gso_size and hwtstamp may be set", i)
		}
		s.mark = le.Uint32(ctx[skbMark:])
		s.priority = le.Uint32(ctx[skbPriority:])
		s.skbIif = le.Uint32(ctx[skbIngressIfindex:])
		s.tstamp = le.Uint64(ctx[skbTstamp:])
		copy(s.cb[:], ctx[skbCB:skbCBEnd])
		s.pktLen = s.len
		if w := le.Uint32(ctx[skbWireLen:]); w != 0 {
			if w < s.len || w > gsoLegacyMax {
				return nil, errors.Wrapf(uapi.EINVAL, "wire_len %d: want 0 or %d to %d", w, s.len, gsoLegacyMax)
			}
			s.pktLen = w
		}
		segs := le.Uint32(ctx[skbGSOSegs:])
		if segs > gsoMaxSegs {
			return nil, errors.Wrapf(uapi.EINVAL, "gso_segs %d exceeds %d", segs, gsoMaxSegs)
		}
		s.gsoSegs = uint16(segs)
		s.gsoSize = uint16(le.Uint32(ctx[skbGSOSize:]))
		s.hwtstamp = le.Uint64(ctx[skbHwtstamp:])
	}

	s.mac, s.network = mac, mac+ethHlen
	s.setPacket(cpu.machine)
	return &runEnv{r1: s.ctx, output: func() ([]byte, []byte, error) {
		return s.output(ctx)
	}}, nil
}

// setPacket tells the machine where legacy packet access finds the
// packet and its headers.
func (s *skBuff) setPacket(m *interp.Machine) {
	m.Packet = interp.Packet{
		Data:   s.data,
		Len:    s.len,
		MacOff: int32(int64(s.mac) - int64(s.data)),
		NetOff: int32(int64(s.network) - int64(s.data)),
	}
}

// output returns the packet and, if the run has a context, the __sk_buff
// after the run (convert_skb_to___skb writes back what it tracks; the
// other bytes keep the input's values).
func (s *skBuff) output(ctx []byte) ([]byte, []byte, error) {
	lo, hi := s.data-s.page, s.data-s.page+uint64(s.len)
	var pkt []byte
	if !s.tc {
		// The Ethernet header is pushed back, zeroed.
		pkt = make([]byte, ethHlen, ethHlen+s.len)
	}
	pkt = append(pkt, s.bytes[lo:hi]...)
	if ctx == nil {
		return pkt, nil, nil
	}
	out := append([]byte(nil), ctx...)
	le := binary.LittleEndian
	le.PutUint32(out[skbMark:], s.mark)
	le.PutUint32(out[skbPriority:], s.priority)
	le.PutUint32(out[skbIngressIfindex:], s.skbIif)
	le.PutUint32(out[skbIfindex:], loopbackIfindex)
	le.PutUint64(out[skbTstamp:], s.tstamp)
	copy(out[skbCB:skbCBEnd], s.cb[:])
	le.PutUint32(out[skbWireLen:], s.pktLen)
	le.PutUint32(out[skbGSOSegs:], uint32(s.gsoSegs))
	le.PutUint64(out[skbHwtstamp:], s.hwtstamp)
	return pkt, out, nil
}
