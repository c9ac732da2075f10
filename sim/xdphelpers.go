package sim

import (
	"encoding/binary"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// The helpers that move an XDP packet's bounds (net/core/filter.c):
// bpf_xdp_adjust_head (room for an encapsulation header, or a header
// pulled off), bpf_xdp_adjust_meta (metadata before the packet) and
// bpf_xdp_adjust_tail (grow or trim the end). They move the test-run
// buffer's data, data_meta and data_end, in the Go state and in the
// xdp_buff converted programs read. And bpf_redirect, whose kernel
// function differs between XDP and tc programs.

// Helper ids (include/uapi/linux/bpf.h).
const (
	funcXDPAdjustHead = 44
	funcXDPAdjustMeta = 54
	funcXDPAdjustTail = 65
)

const (
	// xdpFrameSize is sizeof(struct xdp_frame), which the kernel keeps
	// free at the start of the buffer (6.18, x86-64 and arm64).
	xdpFrameSize = 40
	// xdpMetaMax is the most metadata bpf_xdp_adjust_meta allows: what
	// skb_shared_info's u8 meta_len can hold (xdp_metalen_invalid).
	xdpMetaMax = 255
)

var xdpAdjustProto = &verifier.FuncProto{ChangesPktData: true,
	Args: [5]verifier.ArgType{verifier.ArgPtrToCtx, verifier.ArgAnything}}

func (k *Kernel) registerXDPHelpers() {
	for _, h := range []struct {
		id int32
		fn func(x *xdpBuff, delta int64) uapi.Errno
	}{
		{funcXDPAdjustHead, (*xdpBuff).adjustHead},
		{funcXDPAdjustMeta, (*xdpBuff).adjustMeta},
		{funcXDPAdjustTail, (*xdpBuff).adjustTail},
	} {
		fn, name := h.fn, uapi.HelperName(h.id)
		err := k.RegisterHelper(&Helper{ID: h.id, Proto: xdpAdjustProto, Fn: func(m *interp.Machine, r1, r2, _, _, _ uint64) (uint64, error) {
			x, err := xdpOf(m, r1, name)
			if err != nil {
				return 0, err
			}
			if e := fn(x, int64(int32(r2))); e != 0 {
				return errnoRet(e), nil
			}
			x.publish()
			return 0, nil
		}})
		if err != nil {
			panic(err) // the table has unique ids
		}
		k.helperTypes[h.id] = []ebpf.ProgramType{ebpf.XDP}
	}
	err := k.RegisterHelper(&Helper{ID: funcRedirect, Proto: redirectProto, Fn: func(m *interp.Machine, _, flags, _, _, _ uint64) (uint64, error) {
		return redirect(m, flags), nil
	}})
	if err != nil {
		panic(err)
	}
	k.helperTypes[funcRedirect] = []ebpf.ProgramType{ebpf.XDP, ebpf.SchedCLS, ebpf.SchedACT}

	// bpf_redirect_map: the map's own redirect (devmap.go's for a devmap).
	// The verifier's fix-up makes most calls direct calls of the map
	// type's redirect (dev_map_redirect, ksyms.go), which shares this.
	err = k.RegisterHelper(&Helper{ID: uapi.FuncRedirectMap, Proto: redirectMapProto, Fn: k.helperRedirectMap})
	if err != nil {
		panic(err)
	}
	k.helperTypes[uapi.FuncRedirectMap] = []ebpf.ProgramType{ebpf.XDP}
}

// helperRedirectMap is bpf_redirect_map: the map's own redirect.
func (k *Kernel) helperRedirectMap(m *interp.Machine, r1, index, flags, _, _ uint64) (uint64, error) {
	mp, err := k.helperMap(m, r1)
	if err != nil {
		return 0, err
	}
	r, ok := mp.Ops.(maps.Redirector)
	if !ok {
		return 0, errors.Wrapf(uapi.EFAULT, "pc %d: bpf_redirect_map on a %s map", m.PC(), mp.Type.Name)
	}
	return r.Redirect(index, flags), nil
}

var redirectMapProto = &verifier.FuncProto{Args: [5]verifier.ArgType{verifier.ArgConstMapPtr, verifier.ArgAnything, verifier.ArgAnything}}

// funcRedirect is bpf_redirect's id.
const funcRedirect = 23

var redirectProto = &verifier.FuncProto{Args: [5]verifier.ArgType{verifier.ArgAnything, verifier.ArgAnything}}

// Verdicts bpf_redirect returns.
const (
	xdpAborted    = 0
	xdpRedirect   = 4
	tcActShot     = 2
	tcActRedirect = 7
	bpfFIngress   = 1 // BPF_F_INGRESS
)

// redirect is bpf_redirect(ifindex, flags): the verdict that sends the
// packet to device ifindex, which a test run returns as it is (the
// kernel's does not carry it out): XDP's bpf_xdp_redirect takes no flags,
// tc's takes BPF_F_INGRESS only; other flags give XDP_ABORTED and
// TC_ACT_SHOT.
func redirect(m *interp.Machine, flags uint64) uint64 {
	cpu, _ := m.Data.(*CPU)
	if cpu != nil && cpu.runType == ebpf.XDP {
		if flags != 0 {
			return xdpAborted
		}
		return xdpRedirect
	}
	if flags&^bpfFIngress != 0 {
		return tcActShot
	}
	return tcActRedirect
}

// xdpOf returns the test-run buffer whose context (xdp_md, or the
// xdp_buff of a converted program) is r1.
func xdpOf(m *interp.Machine, r1 uint64, name string) (*xdpBuff, error) {
	cpu, ok := m.Data.(*CPU)
	if !ok || cpu.run.xdp == nil || (cpu.run.xdp.ctx != r1 && cpu.run.xdp.buff != r1) {
		return nil, errors.Wrapf(uapi.EFAULT, "pc %d: %s: r1=%#x is not the context of an XDP test run", m.PC(), name, r1)
	}
	return cpu.run.xdp, nil
}

// adjustHead is bpf_xdp_adjust_head: data moves by delta, the metadata
// with it, between the end of the xdp_frame the kernel keeps at the start
// and 14 bytes before the end.
func (x *xdpBuff) adjustHead(delta int64) uapi.Errno {
	metalen := x.data - x.meta
	data := int64(x.data) + delta
	if data < int64(x.page+xdpFrameSize+metalen) || data > int64(x.dataEnd)-ethHlen {
		return uapi.EINVAL
	}
	if metalen != 0 {
		m := x.meta - x.page
		copy(x.bytes[int64(m)+delta:], x.bytes[m:m+metalen])
	}
	x.meta = uint64(int64(x.meta) + delta)
	x.data = uint64(data)
	x.dirty = max(x.dirty, int(x.dataEnd-x.page))
	return 0
}

// adjustMeta is bpf_xdp_adjust_meta: the metadata grows or shrinks by
// -delta, to a multiple of 4 bytes of at most 255, after the xdp_frame.
func (x *xdpBuff) adjustMeta(delta int64) uapi.Errno {
	meta := int64(x.meta) + delta
	if meta < int64(x.page+xdpFrameSize) || meta > int64(x.data) {
		return uapi.EINVAL
	}
	if n := int64(x.data) - meta; n%4 != 0 || n > xdpMetaMax {
		return uapi.EACCES
	}
	x.meta = uint64(meta)
	return 0
}

// adjustTail is bpf_xdp_adjust_tail: data_end moves by delta, up to the
// end of the frame less the skb_shared_info tailroom and down to 14 bytes
// after data; grown bytes are zeroed.
func (x *xdpBuff) adjustTail(delta int64) uapi.Errno {
	end := int64(x.dataEnd) + delta
	if end > int64(x.page+uint64(len(x.bytes))-xdpTailroom) || end < int64(x.data)+ethHlen {
		return uapi.EINVAL
	}
	if delta > 0 {
		clear(x.bytes[x.dataEnd-x.page : uint64(end)-x.page])
	}
	x.dataEnd = uint64(end)
	x.dirty = max(x.dirty, int(x.dataEnd-x.page))
	return 0
}

// publish writes the bounds into the xdp_buff converted programs read.
func (x *xdpBuff) publish() {
	le := binary.LittleEndian
	le.PutUint64(x.buffBytes[verifier.XDPBuffData:], x.data)
	le.PutUint64(x.buffBytes[verifier.XDPBuffDataEnd:], x.dataEnd)
	le.PutUint64(x.buffBytes[verifier.XDPBuffDataMeta:], x.meta)
}
