package interp_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

func ldAbs(size uint8, k int32) insn.Insn {
	return insn.Insn{Code: insn.LD | insn.ABS | size, Imm: k}
}

func ldInd(size, src uint8, k int32) insn.Insn {
	return insn.Insn{Code: insn.LD | insn.IND | size, Src: src, Imm: k}
}

// packetVM maps a 20-byte "packet" whose first 4 bytes are a link-layer
// header and whose network header starts at byte 8; LD_ABS offset 0 is
// byte dataOff.
func packetVM(t *testing.T, dataOff int32) *testVM {
	vm := newTestVM(t)
	b := make([]byte, 20)
	for i := range b {
		b[i] = byte(0x10 + i)
	}
	base := vm.data(t, b, mem.PermRW)
	vm.m.Packet = interp.Packet{
		Data:   base + uint64(dataOff),
		Len:    uint32(20 - dataOff),
		MacOff: -dataOff,
		NetOff: 8 - dataOff,
	}
	return vm
}

func TestLdAbsLoadsBigEndianPacketBytes(t *testing.T) {
	for _, c := range []struct {
		name    string
		dataOff int32
		insns   []insn.Insn
		want    uint64
	}{
		{"byte", 0, prog(ldAbs(insn.B, 3), exit()), 0x13},
		{"half", 0, prog(ldAbs(insn.H, 3), exit()), 0x1314},
		{"word", 0, prog(ldAbs(insn.W, 16), exit()), 0x20212223},
		{"offset 0 is Data", 4, prog(ldAbs(insn.B, 0), exit()), 0x14},
		{"indirect", 0, prog(movImm(3, 5), ldInd(insn.H, 3, 2), exit()), 0x1718},
		{"indirect offsets are 32-bit", 0, prog(ldImm64(3, 0xffffffff_00000001), ldInd(insn.B, 3, 1), exit()), 0x12},
		{"network header", 4, prog(ldAbs(insn.W, interp.SKFNetOff+1), exit()), 0x191a1b1c},
		{"link-layer header before Data", 4, prog(ldAbs(insn.H, interp.SKFLLOff), exit()), 0x1011},
	} {
		t.Run(c.name, func(t *testing.T) {
			vm := packetVM(t, c.dataOff)
			got, err := vm.run(t, c.insns, nil, 0, 0)
			if err != nil || got != c.want {
				t.Errorf("got %#x, %v; want %#x", got, err, c.want)
			}
		})
	}
}

func TestLdAbsMissEndsTheFunctionWithZero(t *testing.T) {
	for _, c := range []struct {
		name    string
		dataOff int32
		insns   []insn.Insn
		want    uint64
	}{
		{"past the end", 0, prog(ldAbs(insn.W, 17), movImm(0, 5), exit()), 0},
		{"negative offset", 0, prog(ldAbs(insn.B, -1), movImm(0, 5), exit()), 0},
		{"below SKF_LL_OFF", 4, prog(ldAbs(insn.B, interp.SKFLLOff-1), movImm(0, 5), exit()), 0},
		{"indirect past the end", 0, prog(movImm(3, 19), ldInd(insn.H, 3, 0), movImm(0, 5), exit()), 0},
		// main: r6 = 0x66; call sub; r0 += r6; r0 += 7; exit
		// sub:  r6 = 1; r0 = *(u8 *)skb[100] (a miss); r0 = 99; exit
		{"in a callee: returns 0 to the caller with its registers", 0, prog(
			movImm(6, 0x66), callLocal(3), alu64Reg(insn.ADD, 0, 6), alu64Imm(insn.ADD, 0, 7), exit(),
			movImm(6, 1), ldAbs(insn.B, 100), movImm(0, 99), exit()), 0x66 + 7},
	} {
		t.Run(c.name, func(t *testing.T) {
			vm := packetVM(t, c.dataOff)
			got, err := vm.run(t, c.insns, nil, 0, 0)
			if err != nil || got != c.want {
				t.Errorf("got %#x, %v; want %#x", got, err, c.want)
			}
		})
	}
	t.Run("no packet", func(t *testing.T) {
		vm := newTestVM(t)
		got, err := vm.run(t, prog(movImm(0, 5), ldAbs(insn.B, 0), exit()), nil, 0, 0)
		if err != nil || got != 0 {
			t.Errorf("got %#x, %v; want 0", got, err)
		}
	})
}

func TestLdAbsEncodingsTheVerifierRefuses(t *testing.T) {
	for _, c := range []struct {
		name string
		in   insn.Insn
	}{
		{"destination other than r0", insn.Insn{Code: insn.LD | insn.ABS | insn.W, Dst: 1}},
		{"non-zero offset", insn.Insn{Code: insn.LD | insn.ABS | insn.W, Off: 1}},
		{"8-byte size", insn.Insn{Code: insn.LD | insn.IND | insn.DW}},
		{"absolute with a source register", insn.Insn{Code: insn.LD | insn.ABS | insn.B, Src: 2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := interp.Compile(prog(c.in, exit()), nil)
			if !errors.Is(err, uapi.EINVAL) || !strings.Contains(err.Error(), "BPF_LD_[ABS|IND] uses reserved fields") {
				t.Errorf("got %v", err)
			}
		})
	}
}
