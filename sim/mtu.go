package sim

import (
	"encoding/binary"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// bpf_check_mtu (net/core/filter.c: bpf_xdp_check_mtu,
// bpf_skb_check_mtu): would the packet, grown by len_diff, fit the MTU of
// the device ifindex names (0: the one it arrived on)? The result is
// BPF_MTU_CHK_RET_SUCCESS or _FRAG_NEEDED, and the device's MTU goes to
// *mtu_len (not on an error), which on entry may give an L3 length to check instead of the
// packet's. Test runs arrive on the loopback device, the only device the
// simulated kernel has: MTU 65536, an Ethernet header of 14 bytes; any
// other ifindex is ENODEV.

const (
	funcCheckMTU = 163

	bpfMTUChkSegs = 1 // BPF_MTU_CHK_SEGS

	mtuChkRetSuccess     = 0 // BPF_MTU_CHK_RET_SUCCESS
	mtuChkRetFragNeeded  = 1 // BPF_MTU_CHK_RET_FRAG_NEEDED
	loopbackMTU          = 65536
	loopbackHardHeaderSz = 14
)

var checkMTUProto = &verifier.FuncProto{GPLOnly: true, Args: [5]verifier.ArgType{
	verifier.ArgPtrToCtx, verifier.ArgAnything, verifier.ArgPtrToU32InOut, verifier.ArgAnything, verifier.ArgAnything}}

func (k *Kernel) registerCheckMTU() {
	err := k.RegisterHelper(&Helper{ID: funcCheckMTU, Proto: checkMTUProto, Fn: k.helperCheckMTU})
	if err != nil {
		panic(err) // the table has unique ids
	}
	k.helperTypes[funcCheckMTU] = []ebpf.ProgramType{ebpf.XDP, ebpf.SchedCLS, ebpf.SchedACT}
}

// helperCheckMTU is bpf_check_mtu(ctx, ifindex, mtu_len, len_diff, flags),
// the XDP or the skb variant as the context is.
func (k *Kernel) helperCheckMTU(m *interp.Machine, ctx, ifindex, mtuLen, lenDiff, flags uint64) (uint64, error) {
	raw := make([]byte, 4)
	if err := m.ReadMem(mtuLen, raw); err != nil {
		return 0, err
	}
	in := binary.LittleEndian.Uint32(raw)
	diff := int64(int32(lenDiff))
	devOK := uint32(ifindex) == 0 || uint32(ifindex) == loopbackIfindex
	put := func(v uint32) error { return m.WriteMem(mtuLen, binary.LittleEndian.AppendUint32(nil, v)) }
	ret := func(r int64) uint64 { return uint64(r) }

	cpu, _ := m.Data.(*CPU)
	if cpu != nil && cpu.run.xdp != nil && (cpu.run.xdp.ctx == ctx || cpu.run.xdp.buff == ctx) {
		// bpf_xdp_check_mtu: no flags; *mtu_len is written only on
		// success.
		x := cpu.run.xdp
		switch {
		case flags != 0:
			return errnoRet(uapi.EINVAL), nil
		case !devOK:
			return errnoRet(enodev), nil
		}
		n := int64(x.dataEnd - x.data)
		if in != 0 {
			n = int64(in) + loopbackHardHeaderSz
		}
		r := int64(mtuChkRetSuccess)
		if n+diff > loopbackMTU+loopbackHardHeaderSz {
			r = mtuChkRetFragNeeded
		}
		return ret(r), put(loopbackMTU)
	}
	s, err := k.skbOf(m, ctx, "bpf_check_mtu")
	if err != nil {
		return 0, err
	}
	// bpf_skb_check_mtu: on an error *mtu_len stays as it was.
	switch {
	case flags&^bpfMTUChkSegs != 0, flags&bpfMTUChkSegs != 0 && (diff != 0 || in != 0):
		return errnoRet(uapi.EINVAL), nil
	case !devOK:
		return errnoRet(enodev), nil
	}
	n := int64(s.len)
	if in != 0 {
		n = int64(in) + loopbackHardHeaderSz
	}
	r := int64(mtuChkRetFragNeeded) // a test run's skb is never GSO
	if n+diff <= loopbackMTU+loopbackHardHeaderSz {
		r = mtuChkRetSuccess
	}
	return ret(r), put(loopbackMTU)
}
