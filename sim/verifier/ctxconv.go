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
	// marked as a context access (InsnAux.CtxAccess), with fieldSize the
	// size of the field a narrower load reads part of (0 for none).
	ConvertCtxAccess(in *insn.Insn, fieldSize int) []insn.Insn
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
func (xdpType) ConvertCtxAccess(in *insn.Insn, _ int) []insn.Insn {
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

// PrologueGenerator is the gen_prologue of a program type's struct
// bpf_verifier_ops: instructions put before the program when it writes
// its packet directly (convert_ctx_accesses does it first).
type PrologueGenerator interface {
	// GenPrologue returns the prologue, nil for none.
	GenPrologue() []insn.Insn
}

// SKBClonedOffset and SKBClonedMask locate the cloned bit in struct
// sk_buff (CLONED_OFFSET, CLONED_MASK) on this project's reference kernel
// (6.18 on x86-64): the byte the unclone prologue tests.
const (
	SKBClonedOffset = 126
	SKBClonedMask   = 1
)

// GenPrologue is tc_cls_act_prologue (bpf_unclone_prologue): before a tc
// program that writes its packet, a cloned skb is made private with
// bpf_skb_pull_data(skb, 0), and the packet dropped (TC_ACT_SHOT) if that
// fails. Socket filters and cgroup_skb programs cannot write packets.
func (t skbType) GenPrologue() []insn.Insn {
	if t.filter || t.cgroup {
		return nil
	}
	const tcActShot = 2
	return []insn.Insn{
		{Code: insn.LDX | insn.MEM | insn.B, Dst: insn.R6, Src: insn.R1, Off: SKBClonedOffset},
		{Code: insn.ALU | insn.AND | insn.K, Dst: insn.R6, Imm: SKBClonedMask},
		{Code: insn.JMP | insn.JEQ | insn.K, Dst: insn.R6, Off: 7},
		{Code: insn.ALU64 | insn.MOV | insn.X, Dst: insn.R6, Src: insn.R1},
		{Code: insn.ALU64 | insn.XOR | insn.X, Dst: insn.R2, Src: insn.R2},
		{Code: insn.JMP | insn.CALL, Imm: uapi.FuncSKBPullData},
		{Code: insn.JMP | insn.JEQ | insn.K, Dst: insn.R0, Off: 2},
		{Code: insn.ALU | insn.MOV | insn.K, Dst: insn.R0, Imm: tcActShot},
		{Code: insn.JMP | insn.EXIT},
		{Code: insn.ALU64 | insn.MOV | insn.X, Dst: insn.R1, Src: insn.R6},
	}
}

// prologue returns what replaces the program's first instruction: the
// type's prologue, its helper call made direct as do_misc_fixups makes
// it later in the kernel, then the first instruction as the other
// fix-ups left it (first: their patch, nil for none).
func prologue(p *Prog, pg PrologueGenerator, calls KernelCalls, first []insn.Insn) ([]insn.Insn, error) {
	pro := pg.GenPrologue()
	if pro == nil {
		return first, nil
	}
	for i := range pro {
		if in := &pro[i]; in.Code == insn.JMP|insn.CALL && calls != nil {
			imm, _, err := calls.Helper(in.Imm)
			if err != nil {
				return nil, reject(uapi.EFAULT, "the prologue's helper %d: %v", in.Imm, err)
			}
			in.Imm = imm
		}
	}
	if first == nil {
		first = p.Insns[:1]
	}
	return append(pro, first...), nil
}
