package verifier

import (
	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// ProgType is the verifier's view of a program type (struct
// bpf_verifier_ops): which parts of the context a program may read or
// write, and whether it may touch packet data directly.
type ProgType interface {
	// ValidAccess is is_valid_access for a load (write false) or store of
	// size bytes at off in the context; ldsx marks a sign-extending load.
	ValidAccess(off, size int, write, ldsx bool) (CtxField, bool)
	// DirectPacketAccess is may_access_direct_pkt_data.
	DirectPacketAccess(write bool) bool
}

// CtxField describes an allowed context access.
type CtxField struct {
	// Kind is what a load yields.
	Kind CtxKind
	// FieldSize is the size of the field a narrower load reads part of
	// (ctx_field_size), 0 when the access is the field's own size.
	FieldSize int
	// Arg is the slot of a BTF-described context (BTFCtxType).
	Arg *BTFCtxArg
	// Msg is a line for the log: why an access is refused, printed
	// before "invalid bpf_context access", or a note on an allowed one.
	Msg string
}

// CtxKind is what a context load yields.
type CtxKind uint8

const (
	CtxScalar     CtxKind = iota // a number
	CtxPacket                    // the packet's start (PTR_TO_PACKET)
	CtxPacketEnd                 // one past its end (PTR_TO_PACKET_END)
	CtxPacketMeta                // the metadata's start (PTR_TO_PACKET_META)
	CtxBTFID                     // a kernel object (PTR_TO_BTF_ID), CtxField.Arg says which
	CtxBuf                       // a buffer (PTR_TO_BUF), CtxField.Arg says how
	// CtxUnsupported is an access the kernel allows to what bpfsim
	// does not simulate (CtxField.Msg says what): the load is refused
	// with EINVAL, naming it.
	CtxUnsupported
)

// ReturnRanger is implemented by the program types whose R0 at exit
// check_return_code may restrict: when ok, it must be a scalar in
// [lo, hi].
type ReturnRanger interface {
	ReturnRange() (lo, hi int64, ok bool)
}

// VoidReturner is implemented by the program types whose programs may
// return nothing (a struct_ops member returning void): when ReturnsVoid,
// R0 need not be set at exit.
type VoidReturner interface {
	ReturnsVoid() bool
}

// ProgTypeFor returns the context rules of a program type bpfsim
// verifies, loaded with expected attach type attach (which only cgroup_skb
// programs look at so far).
func ProgTypeFor(t ebpf.ProgramType, attach ebpf.AttachType) (ProgType, bool) {
	switch t {
	case ebpf.CGroupSKB:
		return skbType{cgroup: true, egress: attach == ebpf.AttachCGroupInetEgress}, true
	case ebpf.XDP:
		return xdpType{}, true
	case ebpf.SocketFilter:
		return skbType{filter: true}, true
	case ebpf.SchedCLS, ebpf.SchedACT:
		return skbType{}, true
	case ebpf.Kprobe:
		return rawCtxType{min: 0, max: ptRegsSize, exact: true, tracing: true}, true
	case ebpf.TracePoint:
		return rawCtxType{min: 8, max: perfMaxTraceSize, tracing: true}, true
	case ebpf.RawTracepoint:
		return rawCtxType{min: 0, max: 8 * 12, tracing: true}, true
	case ebpf.Syscall:
		return rawCtxType{min: 0, max: 0xffff, write: true}, true
	case ebpf.SkLookup:
		return skLookupType{}, true
	}
	return nil, false
}

// Sizes of tracing contexts: struct pt_regs of arm64, the simulated
// architecture (31 registers, sp, pc, pstate and the kernel's extra
// fields up to 336 bytes, of which user_pt_regs is the first 272), and
// PERF_MAX_TRACE_SIZE.
const (
	ptRegsSize       = 336
	perfMaxTraceSize = 2048
)

// xdpType is xdp_is_valid_access: struct xdp_md is read-only, six u32
// fields, of which egress_ifindex only for devmap programs.
type xdpType struct{}

func (xdpType) ValidAccess(off, size int, write, ldsx bool) (CtxField, bool) {
	if off == uapi.XDPMDEgressIfindex || write {
		return CtxField{}, false
	}
	var f CtxField
	switch off {
	case uapi.XDPMDData:
		f.Kind = CtxPacket
	case uapi.XDPMDDataEnd:
		f.Kind = CtxPacketEnd
	case uapi.XDPMDDataMeta:
		f.Kind = CtxPacketMeta
	}
	if f.Kind != CtxScalar && ldsx {
		return CtxField{}, false
	}
	if off < 0 || off >= uapi.XDPMDSize || off%size != 0 || size != 4 {
		return CtxField{}, false
	}
	return f, true
}

func (xdpType) DirectPacketAccess(bool) bool { return true }

// Offsets in struct __sk_buff.
const (
	skbMark       = 8
	skbQueueMap   = 12
	skbPriority   = 32
	skbTCIndex    = 44
	skbCB         = 48
	skbCBEnd      = 68
	skbTCClassid  = 72
	skbData       = 76
	skbDataEnd    = 80
	skbFamily     = 88
	skbRemoteIP4  = 92
	skbLocalIP4   = 96
	skbRemoteIP6  = 100
	skbLocalIP6   = 116
	skbLocalPort  = 136
	skbLocalPortE = 140
	skbDataMeta   = 140
	skbFlowKeys   = 144
	skbTstamp     = 152
	skbWireLen    = 160
	skbSk         = 168
	skbTstampType = 180
	skbHwtstamp   = 184
	skbSize       = 192
	skbFieldU32   = 4
)

// skbType is the __sk_buff access rules of socket filters
// (sk_filter_is_valid_access), of tc programs (tc_cls_act_is_valid_access)
// and of cgroup_skb programs (cg_skb_is_valid_access), all on
// bpf_skb_is_valid_access.
type skbType struct {
	filter bool
	cgroup bool
	egress bool // a cgroup_skb program for BPF_CGROUP_INET_EGRESS
}

// ReturnRange is check_return_code's for cgroup_skb: 0 drops the packet,
// 1 lets it pass; on egress 2 and 3 do the same and ask for congestion
// notification. Socket filters and tc programs may return anything.
func (t skbType) ReturnRange() (lo, hi int64, ok bool) {
	switch {
	case !t.cgroup:
		return 0, 0, false
	case t.egress:
		return 0, 3, true
	}
	return 0, 1, true
}

func in(off, start, end int) bool { return off >= start && off < end }

func (t skbType) ValidAccess(off, size int, write, ldsx bool) (CtxField, bool) {
	var f CtxField
	if t.cgroup {
		return t.cgroupValid(off, size, write, ldsx)
	}
	if t.filter {
		switch {
		case in(off, skbTCClassid, skbTCClassid+4), in(off, skbData, skbData+4),
			in(off, skbDataMeta, skbDataMeta+4), in(off, skbDataEnd, skbDataEnd+4),
			in(off, skbFamily, skbLocalPortE), in(off, skbTstamp, skbTstamp+8),
			in(off, skbWireLen, skbWireLen+4), in(off, skbHwtstamp, skbHwtstamp+8):
			return f, false
		}
		if write && !in(off, skbCB, skbCBEnd) {
			return f, false
		}
	} else {
		if write {
			switch {
			case in(off, skbMark, skbMark+4), in(off, skbTCIndex, skbTCIndex+4),
				in(off, skbPriority, skbPriority+4), in(off, skbTCClassid, skbTCClassid+4),
				in(off, skbCB, skbCBEnd), in(off, skbTstamp, skbTstamp+8),
				in(off, skbQueueMap, skbQueueMap+4):
			default:
				return f, false
			}
		}
		switch {
		case in(off, skbData, skbData+4):
			f.Kind = CtxPacket
		case in(off, skbDataMeta, skbDataMeta+4):
			f.Kind = CtxPacketMeta
		case in(off, skbDataEnd, skbDataEnd+4):
			f.Kind = CtxPacketEnd
		case in(off, skbFamily, skbLocalPortE):
			return CtxField{}, false
		case off == skbTstampType:
			return CtxField{}, size == 1
		}
	}
	return t.skbValid(off, size, write, ldsx, f)
}

// cgroupValid is cg_skb_is_valid_access: no tc_classid, data_meta or
// wire_len; data and data_end for a privileged loader; stores to mark,
// priority, cb[] and tstamp only. The socket fields (family to
// local_port) are the cgroup's socket's, readable as in
// bpf_skb_is_valid_access.
func (t skbType) cgroupValid(off, size int, write, ldsx bool) (CtxField, bool) {
	var f CtxField
	switch {
	case in(off, skbTCClassid, skbTCClassid+4), in(off, skbDataMeta, skbDataMeta+4), in(off, skbWireLen, skbWireLen+4):
		return f, false
	}
	if write {
		switch {
		case in(off, skbMark, skbMark+4), in(off, skbPriority, skbPriority+4),
			in(off, skbCB, skbCBEnd), in(off, skbTstamp, skbTstamp+8):
		default:
			return f, false
		}
	}
	switch {
	case in(off, skbData, skbData+4):
		f.Kind = CtxPacket
	case in(off, skbDataEnd, skbDataEnd+4):
		f.Kind = CtxPacketEnd
	}
	return t.skbValid(off, size, write, ldsx, f)
}

// skbValid is bpf_skb_is_valid_access.
func (skbType) skbValid(off, size int, write, ldsx bool, f CtxField) (CtxField, bool) {
	if off < 0 || off >= skbSize || off%size != 0 {
		return CtxField{}, false
	}
	switch {
	case in(off, skbCB, skbCBEnd):
		return f, off+size <= skbCBEnd
	case in(off, skbData, skbData+4), in(off, skbDataMeta, skbDataMeta+4), in(off, skbDataEnd, skbDataEnd+4):
		return f, !ldsx && size == skbFieldU32
	case in(off, skbRemoteIP6, skbLocalIP6+16), in(off, skbRemoteIP4, skbRemoteIP4+4), in(off, skbLocalIP4, skbLocalIP4+4):
		return f, size == skbFieldU32
	case in(off, skbFlowKeys, skbFlowKeys+8):
		return CtxField{}, false
	case in(off, skbHwtstamp, skbHwtstamp+8):
		return f, !write && size == 8
	case in(off, skbTstamp, skbTstamp+8):
		return f, size == 8
	case in(off, skbSk, skbSk+8):
		// A socket pointer (PTR_TO_SOCK_COMMON_OR_NULL): sockets are not
		// simulated, so bpfsim refuses the field rather than hand out a
		// pointer it cannot check.
		return CtxField{}, false
	case off == skbTstampType, in(off, skbTstampType+1, skbHwtstamp):
		return CtxField{}, false
	}
	if write {
		return f, size == skbFieldU32
	}
	if size != skbFieldU32 {
		f.FieldSize = skbFieldU32
	}
	return f, size <= skbFieldU32 && size&(size-1) == 0
}

// DirectPacketAccess is may_access_direct_pkt_data: tc programs read and
// write the packet, cgroup_skb programs only read it, socket filters
// neither.
func (t skbType) DirectPacketAccess(write bool) bool {
	if t.cgroup {
		return !write
	}
	return !t.filter
}

// rawCtxType is the context of tracing programs and syscall programs: a
// byte range [min, max) read (or also written) with aligned accesses
// (kprobe_prog_is_valid_access, tp_prog_is_valid_access,
// bpf_tracing_ctx_access, syscall_prog_is_valid_access).
type rawCtxType struct {
	min, max int
	exact    bool // the access must end inside the context too
	write    bool
	tracing  bool // is_tracing_prog_type
}

func (t rawCtxType) spinLockRefusal() string {
	if t.tracing {
		return "tracing progs cannot use bpf_spin_lock yet"
	}
	return ""
}

func (t skbType) spinLockRefusal() string {
	if t.filter {
		return "socket filter progs cannot use bpf_spin_lock yet"
	}
	return ""
}

// spinLockRefuser is implemented by the program types that
// check_map_prog_compatibility keeps from maps whose values hold a
// bpf_spin_lock: the kernel's message, or "" for none.
type spinLockRefuser interface {
	spinLockRefusal() string
	// refusesTimers: is_tracing_prog_type, whose programs may not use a
	// map whose values hold a bpf_timer.
	refusesTimers() bool
}

func (t rawCtxType) refusesTimers() bool { return t.tracing }
func (t skbType) refusesTimers() bool    { return false }

func (t rawCtxType) ValidAccess(off, size int, write, _ bool) (CtxField, bool) {
	if off < t.min || off >= t.max || (write && !t.write) || off%size != 0 {
		return CtxField{}, false
	}
	if t.exact && off+size > t.max {
		return CtxField{}, false
	}
	return CtxField{}, true
}

func (rawCtxType) DirectPacketAccess(bool) bool { return false }
