package sim

import (
	"encoding/binary"
	"fmt"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// XDP test-run geometry (net/bpf/test_run.c, include/net/xdp.h).
const (
	// XDPPacketHeadroom is XDP_PACKET_HEADROOM, the room before the packet.
	XDPPacketHeadroom = 256
	// xdpTailroom is SKB_DATA_ALIGN(sizeof(struct skb_shared_info)) on
	// x86-64 and arm64.
	xdpTailroom = 320
	// XDPMaxData is the largest packet a single-buffer XDP test run takes.
	XDPMaxData = mem.PageSize - XDPPacketHeadroom - xdpTailroom
	// ethHlen is ETH_HLEN, the smallest packet a test run accepts.
	ethHlen = 14
	// loopbackIfindex is what ingress_ifindex reads: test runs receive on
	// the loopback device's first queue.
	loopbackIfindex = 1
)

// xdpBuff is a CPU's XDP test-run state: a page that holds the packet, and
// the context a program gets in r1.
//
// Programs read xdp_md fields with 4-byte loads, yet data, data_end and
// data_meta are 64-bit pointers. The kernel's verifier rewrites those loads
// into loads of the struct xdp_buff behind the context
// (convert_ctx_accesses), and so does bpfsim's (verifier.CtxConverter): a
// verified program gets the address of an xdp_buff in simulated memory,
// laid out as the kernel's, with the receive queue info and the loopback
// device it points to. A program loaded unverified reads the uapi struct
// as written; it gets an xdp_md mapped as a device whose loads return the
// 64-bit pointers, which gives it the same register values.
type xdpBuff struct {
	page  uint64 // data_hard_start
	bytes []byte
	ctx   uint64 // the xdp_md mapping, for unverified programs
	// buff is the xdp_buff (and what it points to) for converted
	// programs; buffBytes is its page, which programs may only read.
	buff      uint64
	buffBytes []byte
	data      uint64
	dataEnd   uint64
	meta      uint64
	// dirty is how many bytes from the start of the page the last run
	// may have made non-zero.
	dirty int
}

// Where the converted context's structures sit in their page: the
// xdp_buff, the receive queue's struct xdp_rxq_info, and the net_device
// of the loopback interface test runs receive on.
const (
	xdpBuffRxqInfo   = 64
	xdpBuffNetDevice = 256
)

// Load serves a program's read of an xdp_md field.
func (x *xdpBuff) Load(off uint64, size int, signExtend bool) (uint64, error) {
	if size != 4 || signExtend || off%4 != 0 || off >= uapi.XDPMDSize {
		return 0, ctxAccessError(off, size)
	}
	switch off {
	case uapi.XDPMDData:
		return x.data, nil
	case uapi.XDPMDDataEnd:
		return x.dataEnd, nil
	case uapi.XDPMDDataMeta:
		return x.meta, nil
	case uapi.XDPMDIngressIfindex:
		return loopbackIfindex, nil
	}
	return 0, nil // rx_queue_index, egress_ifindex
}

// Store refuses writes: no xdp_md field is writable.
func (x *xdpBuff) Store(off uint64, size int, _ uint64) error {
	return ctxAccessError(off, size)
}

func ctxAccessError(off uint64, size int) error {
	return fmt.Errorf("invalid bpf_context access off=%d size=%d", off, size)
}

// verified says the program stays within its packet; converted, that it
// reads the xdp_buff rather than the xdp_md.
func (k *Kernel) prepareXDP(cpu *CPU, data []byte, verified, converted bool) (*runEnv, error) {
	if len(data) < ethHlen {
		return nil, errors.Wrapf(uapi.EINVAL, "XDP input of %d bytes is shorter than an Ethernet header", len(data))
	}
	if len(data) > XDPMaxData {
		return nil, errors.Wrapf(uapi.EINVAL, "XDP input of %d bytes exceeds %d: multi-buffer XDP is not simulated yet", len(data), XDPMaxData)
	}
	x := cpu.run.xdp
	if x == nil {
		x = &xdpBuff{}
		var err error
		if x.page, err = k.mem.Vmalloc(mem.PageSize, mem.PermRW, "xdp_test_run"); err != nil {
			return nil, err
		}
		if x.bytes, err = k.mem.Bytes(x.page, mem.PageSize); err != nil {
			return nil, err
		}
		x.ctx, err = k.mem.Alloc(mem.PageSize, mem.AllocOptions{Perm: mem.PermRW, Name: "xdp_md", Device: x})
		if err != nil {
			return nil, err
		}
		if x.buff, err = k.mem.Vmalloc(mem.PageSize, mem.PermRead, "xdp_buff"); err != nil {
			return nil, err
		}
		if x.buffBytes, err = k.mem.Bytes(x.buff, mem.PageSize); err != nil {
			return nil, err
		}
		// The receive queue info and the device stay as they are: queue
		// 0 of the loopback device, as bpf_prog_test_run_xdp uses when
		// no context comes in.
		le := binary.LittleEndian
		le.PutUint64(x.buffBytes[verifier.XDPBuffRxq:], x.buff+xdpBuffRxqInfo)
		le.PutUint64(x.buffBytes[xdpBuffRxqInfo+verifier.XDPRxqDev:], x.buff+xdpBuffNetDevice)
		le.PutUint32(x.buffBytes[xdpBuffRxqInfo+verifier.XDPRxqQueueIndex:], 0)
		le.PutUint32(x.buffBytes[xdpBuffNetDevice+verifier.NetDeviceIfindex:], loopbackIfindex)
		le.PutUint32(x.buffBytes[verifier.XDPBuffFrameSz:], mem.PageSize)
		cpu.run.xdp = x
	}
	// The buffer starts zeroed, as the kernel's kzalloc'd one does: only
	// what the last run could have written needs clearing. A verified
	// program writes inside its packet; an unverified one anywhere.
	clear(x.bytes[:x.dirty])
	copy(x.bytes[XDPPacketHeadroom:], data)
	x.dirty = XDPPacketHeadroom + len(data)
	if !verified {
		x.dirty = len(x.bytes)
	}
	x.data = x.page + XDPPacketHeadroom
	x.dataEnd = x.data + uint64(len(data))
	x.meta = x.data
	r1 := x.ctx
	if converted {
		le := binary.LittleEndian
		le.PutUint64(x.buffBytes[verifier.XDPBuffData:], x.data)
		le.PutUint64(x.buffBytes[verifier.XDPBuffDataEnd:], x.dataEnd)
		le.PutUint64(x.buffBytes[verifier.XDPBuffDataMeta:], x.meta)
		le.PutUint64(x.buffBytes[verifier.XDPBuffDataHardStart:], x.page)
		r1 = x.buff
	}
	return &runEnv{r1: r1, output: func() ([]byte, []byte, error) {
		// The output starts at the metadata (bpf_test_finish from
		// data_meta).
		lo, hi := x.meta-x.page, x.dataEnd-x.page
		return append([]byte(nil), x.bytes[lo:hi]...), nil, nil
	}}, nil
}
