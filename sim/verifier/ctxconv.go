package verifier

import (
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// CtxConverter is the convert_ctx_access of a program type's struct
// bpf_verifier_ops: it rewrites a load from the uapi context (struct
// xdp_md, say) into loads from the kernel's own structure behind it
// (struct xdp_buff), so that the program reads kernel memory directly.
// Program types without one keep their context loads as written, and the
// simulated kernel serves those from a device mapping instead.
type CtxConverter interface {
	// ConvertCtxAccess returns what replaces in, a load the verifier
	// marked as a context access (InsnAux.CtxAccess).
	ConvertCtxAccess(in *insn.Insn) []insn.Insn
}

// The kernel structures behind struct xdp_md, laid out as on this
// project's reference kernel (6.18, read from its BTF): struct xdp_buff,
// struct xdp_rxq_info, struct xdp_txq_info and the ifindex member of
// struct net_device. The simulated kernel builds its test-run context
// with the same layout.
const (
	XDPBuffData          = 0
	XDPBuffDataEnd       = 8
	XDPBuffDataMeta      = 16
	XDPBuffDataHardStart = 24
	XDPBuffRxq           = 32
	XDPBuffTxq           = 40
	XDPBuffFrameSz       = 48
	XDPBuffSize          = 56

	XDPRxqDev        = 0 // struct xdp_rxq_info: dev, then queue_index
	XDPRxqQueueIndex = 8
	XDPTxqDev        = 0 // struct xdp_txq_info: dev
	NetDeviceIfindex = 224
)

// ConvertCtxAccess is xdp_convert_ctx_access: the packet pointers are
// 64-bit fields of the xdp_buff; the interface index and queue are
// reached through the receive (or, for egress_ifindex, transmit) queue's
// info, one load per pointer followed.
func (xdpType) ConvertCtxAccess(in *insn.Insn) []insn.Insn {
	dst, src := in.Dst, in.Src
	ldx := func(size uint8, dst, src uint8, off int16) insn.Insn {
		return insn.Insn{Code: insn.LDX | insn.MEM | size, Dst: dst, Src: src, Off: off}
	}
	switch in.Off {
	case uapi.XDPMDData:
		return []insn.Insn{ldx(insn.DW, dst, src, XDPBuffData)}
	case uapi.XDPMDDataMeta:
		return []insn.Insn{ldx(insn.DW, dst, src, XDPBuffDataMeta)}
	case uapi.XDPMDDataEnd:
		return []insn.Insn{ldx(insn.DW, dst, src, XDPBuffDataEnd)}
	case uapi.XDPMDIngressIfindex:
		return []insn.Insn{
			ldx(insn.DW, dst, src, XDPBuffRxq),
			ldx(insn.DW, dst, dst, XDPRxqDev),
			ldx(insn.W, dst, dst, NetDeviceIfindex),
		}
	case uapi.XDPMDRxQueueIndex:
		return []insn.Insn{
			ldx(insn.DW, dst, src, XDPBuffRxq),
			ldx(insn.W, dst, dst, XDPRxqQueueIndex),
		}
	case uapi.XDPMDEgressIfindex:
		return []insn.Insn{
			ldx(insn.DW, dst, src, XDPBuffTxq),
			ldx(insn.DW, dst, dst, XDPTxqDev),
			ldx(insn.W, dst, dst, NetDeviceIfindex),
		}
	}
	return nil
}
