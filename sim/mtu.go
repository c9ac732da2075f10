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
// *mtu_len (not on an error), which on entry may give an L3 length to
// check instead of the packet's. Test runs arrive on the loopback device (MTU 65536); other
// devices are the simulated network's (Kernel.AddNetDevice); an ifindex
// of none is ENODEV.

const (
	funcCheckMTU = 163

	bpfMTUChkSegs = 1 // BPF_MTU_CHK_SEGS

	mtuChkRetSuccess    = 0 // BPF_MTU_CHK_RET_SUCCESS
	mtuChkRetFragNeeded = 1 // BPF_MTU_CHK_RET_FRAG_NEEDED
	loopbackMTU         = 65536
	ethHardHeaderLen    = 14 // hard_header_len of loopback and Ethernet devices
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
	// The device: the one the packet arrived on (loopback) for 0, else
	// one of the simulated network's (fib.go).
	k.net.mu.Lock()
	k.net.init()
	idx := int(uint32(ifindex))
	if idx == 0 {
		idx = loopbackIfindex
	}
	var mtu int64
	dev := k.net.devs[idx]
	devOK := dev != nil
	if devOK {
		mtu = int64(dev.MTU)
	}
	k.net.mu.Unlock()
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
			n = int64(in) + ethHardHeaderLen
		}
		r := int64(mtuChkRetSuccess)
		if n+diff > mtu+ethHardHeaderLen {
			r = mtuChkRetFragNeeded
		}
		return ret(r), put(uint32(mtu))
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
		n = int64(in) + ethHardHeaderLen
	}
	r := int64(mtuChkRetFragNeeded) // a test run's skb is never GSO
	if n+diff <= mtu+ethHardHeaderLen {
		r = mtuChkRetSuccess
	}
	return ret(r), put(uint32(mtu))
}
