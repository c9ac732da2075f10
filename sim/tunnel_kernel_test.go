package sim_test

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim/kdiff"
)

// tunnelCase is one sequence of the tunnel helpers.
type tunnelCase struct {
	key              [44]byte
	setSize, setFlag int64
	noSet            bool
	optSize          int64 // -1: no set_tunnel_opt
	getSize, getFlag int64
	optGet           int64
}

// tunnelProgram sets the tunnel key (and options), gets them back, and
// writes what it got into the packet: the key at 0, the options at 44;
// the results go to cb[0..3].
func tunnelProgram(c tunnelCase) asm.Instructions {
	insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	// The key at fp-48, 8 bytes of options at fp-56.
	buf := append(c.key[:], 0, 0, 0, 0)
	for i := 0; i < 48; i += 8 {
		insns = append(insns,
			asm.LoadImm(asm.R1, int64(binary.LittleEndian.Uint64(buf[i:])), asm.DWord),
			asm.StoreMem(asm.R10, int16(-48+i), asm.R1, asm.DWord))
	}
	insns = append(insns, asm.LoadImm(asm.R1, 0x0807060504030201, asm.DWord), asm.StoreMem(asm.R10, -56, asm.R1, asm.DWord))
	call := func(fn asm.BuiltinFunc, off int16, size, flags int64, cb int16) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Mov.Reg(asm.R2, asm.R10), asm.Add.Imm(asm.R2, int32(off)),
			asm.Mov.Imm(asm.R3, int32(size)),
			asm.LoadImm(asm.R4, flags, asm.DWord),
			fn.Call(),
			asm.StoreMem(asm.R6, 48+4*cb, asm.R0, asm.Word),
		}
	}
	if !c.noSet {
		insns = append(insns, call(21, -48, c.setSize, c.setFlag, 0)...)
	}
	if c.optSize >= 0 {
		insns = append(insns, call(30, -56, c.optSize, 0, 1)...)
	}
	// Get into fp-104 (the key) and fp-120 (16 bytes of options),
	// filled with 0xee first.
	insns = append(insns, asm.LoadImm(asm.R1, -0x1111111111111112, asm.DWord))
	for off := int16(-120); off < -48; off += 8 {
		insns = append(insns, asm.StoreMem(asm.R10, off, asm.R1, asm.DWord))
	}
	insns = append(insns, call(20, -104, c.getSize, c.getFlag, 2)...)
	insns = append(insns, call(29, -120, c.optGet, 0, 3)...)
	// Store the 60 bytes at fp-120..fp-60 into the packet.
	insns = append(insns,
		asm.Mov.Reg(asm.R1, asm.R6), asm.Mov.Imm(asm.R2, 0), asm.Mov.Reg(asm.R3, asm.R10), asm.Add.Imm(asm.R3, -120),
		asm.Mov.Imm(asm.R4, 60), asm.Mov.Imm(asm.R5, 0), asm.BuiltinFunc(9).Call(),
		asm.Mov.Imm(asm.R0, 0), asm.Return())
	return insns
}

// bpf_skb_set_tunnel_key, _get_tunnel_key, _set_tunnel_opt and
// _get_tunnel_opt: IPv4 and IPv6 keys, every layout size, every flag, the
// family mismatch, options of every size, and gets with nothing set: the
// same results and bytes in this machine's kernel.
func TestTunnelHelpersMatchKernel(t *testing.T) {
	if _, err := kdiff.OpenKernel(); err != nil {
		t.Skipf("kernel-differential test skipped: this machine cannot load BPF programs: %v", err)
	}
	k := newKernel(t, nil)
	runs := helperRuns()[:1]
	var key [44]byte
	for i := range key {
		key[i] = byte(0x10 + i)
	}
	key[22], key[23] = 0, 0 // tunnel_ext 0
	v4 := key
	binary.LittleEndian.PutUint32(v4[24:], 0) // no label
	var cases []tunnelCase
	for _, k := range [][44]byte{v4, key} {
		for _, setSize := range []int64{44, 8, 22, 24, 28, 32, 40} {
			for _, setFlag := range []int64{0, 1, 2, 4, 8, 16, 0x1e, 0x1f, 32} {
				for _, get := range []struct{ size, flags int64 }{{44, 0}, {44, 1}, {44, 16}, {44, 17}, {8, 0}, {24, 0}, {32, 1}, {40, 0}, {44, 32}} {
					cases = append(cases, tunnelCase{key: k, setSize: setSize, setFlag: setFlag, optSize: -1, getSize: get.size, getFlag: get.flags, optGet: 16})
				}
			}
		}
	}
	ext := v4
	ext[22] = 1
	cases = append(cases,
		tunnelCase{key: ext, setSize: 44, optSize: -1, getSize: 44, optGet: 16},
		tunnelCase{key: v4, noSet: true, optSize: -1, getSize: 44, optGet: 16},
		tunnelCase{key: v4, noSet: true, optSize: 8, getSize: 44, optGet: 16})
	for _, opt := range []int64{0, 4, 6, 8} {
		for _, optGet := range []int64{0, 4, 8, 16} {
			cases = append(cases, tunnelCase{key: v4, setSize: 44, optSize: opt, getSize: 44, getFlag: 16, optGet: optGet})
		}
	}
	compared := 0
	for i, c := range cases {
		name := fmt.Sprintf("case %d (set %d/%#x opt %d get %d/%#x/%d)", i, c.setSize, c.setFlag, c.optSize, c.getSize, c.getFlag, c.optGet)
		compared += len(compareSKBProgram(t, k, ebpf.SchedCLS, name, tunnelProgram(c), runs))
	}
	t.Logf("%d runs compared", compared)
}
