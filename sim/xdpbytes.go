package sim

import (
	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// The XDP helpers that reach the packet through the buffer rather than
// through packet pointers (net/core/filter.c): bpf_xdp_get_buff_len,
// bpf_xdp_load_bytes and bpf_xdp_store_bytes. They exist for
// multi-buffer packets, whose fragments no pointer reaches; a test run's
// packet is one linear buffer, so they see its data to data_end.

// Helper ids (include/uapi/linux/bpf.h).
const (
	funcXDPGetBuffLen = 188
	funcXDPLoadBytes  = 189
	funcXDPStoreBytes = 190
)

// xdpBytesMax bounds an offset and a length (bpf_xdp_pointer's 0xffff).
const xdpBytesMax = 0xffff

var (
	xdpGetBuffLenProto = &verifier.FuncProto{Args: [5]verifier.ArgType{verifier.ArgPtrToCtx}}
	xdpLoadBytesProto  = &verifier.FuncProto{Args: [5]verifier.ArgType{
		verifier.ArgPtrToCtx, verifier.ArgAnything, verifier.ArgPtrToUninitMem, verifier.ArgConstSize}}
	// The kernel declares the source of a store as uninitialised memory
	// too (6.18), so the verifier lets a program store bytes it never
	// wrote; bpfsim's prototype says the same.
	xdpStoreBytesProto = &verifier.FuncProto{Args: [5]verifier.ArgType{
		verifier.ArgPtrToCtx, verifier.ArgAnything, verifier.ArgPtrToUninitMem, verifier.ArgConstSize}}
)

func (k *Kernel) registerXDPBytesHelpers() {
	for _, h := range []*Helper{
		{ID: funcXDPGetBuffLen, Proto: xdpGetBuffLenProto, Fn: func(m *interp.Machine, r1, _, _, _, _ uint64) (uint64, error) {
			x, err := xdpOf(m, r1, "bpf_xdp_get_buff_len")
			if err != nil {
				return 0, err
			}
			return x.dataEnd - x.data, nil
		}},
		{ID: funcXDPLoadBytes, Proto: xdpLoadBytesProto, Fn: func(m *interp.Machine, r1, off, buf, n, _ uint64) (uint64, error) {
			x, err := xdpOf(m, r1, "bpf_xdp_load_bytes")
			if err != nil {
				return 0, err
			}
			src, e := x.window(off, n)
			if e != 0 {
				return errnoRet(e), nil
			}
			if err := m.WriteMem(buf, src); err != nil {
				return 0, err
			}
			return 0, nil
		}},
		{ID: funcXDPStoreBytes, Proto: xdpStoreBytesProto, Fn: func(m *interp.Machine, r1, off, buf, n, _ uint64) (uint64, error) {
			x, err := xdpOf(m, r1, "bpf_xdp_store_bytes")
			if err != nil {
				return 0, err
			}
			dst, e := x.window(off, n)
			if e != 0 {
				return errnoRet(e), nil
			}
			src := make([]byte, len(dst))
			if err := m.ReadMem(buf, src); err != nil {
				return 0, err
			}
			copy(dst, src)
			return 0, nil
		}},
	} {
		if err := k.RegisterHelper(h); err != nil {
			panic(err) // the table has unique ids
		}
		k.helperTypes[h.ID] = []ebpf.ProgramType{ebpf.XDP}
	}
	// Tracing and syscall programs get a bpf_xdp_get_buff_len of their
	// own, which takes a struct xdp_buff by BTF pointer.
	k.helperVariantsMissing[funcXDPGetBuffLen] = []ebpf.ProgramType{ebpf.Syscall, ebpf.Tracing}
}

// window is bpf_xdp_pointer for a linear buffer: the n bytes at off from
// data, or EFAULT for an offset or length past 0xffff, EINVAL for bytes
// past the packet's end.
func (x *xdpBuff) window(off, n uint64) ([]byte, uapi.Errno) {
	off, n = uint64(uint32(off)), uint64(uint32(n))
	if off > xdpBytesMax || n > xdpBytesMax {
		return nil, uapi.EFAULT
	}
	if off+n > x.dataEnd-x.data {
		return nil, uapi.EINVAL
	}
	start := x.data - x.page + off
	return x.bytes[start : start+n], 0
}
