//go:build linux

package kdiff

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// strtoxProgram puts s (up to 64 bytes) on the stack and calls
// bpf_strtol (105) or bpf_strtoul (106) on its first n bytes with flags;
// *res, pre-set to a pattern, and the result go to the packet's first 16
// bytes.
func strtoxProgram(fn asm.BuiltinFunc, s string, n int32, flags int64) asm.Instructions {
	var buf [64]byte
	copy(buf[:], s)
	ins := asm.Instructions{asm.Mov.Reg(asm.R9, asm.R1)}
	for i := 0; i < 64; i += 8 {
		ins = append(ins,
			asm.LoadImm(asm.R1, int64(binary.LittleEndian.Uint64(buf[i:])), asm.DWord),
			asm.StoreMem(asm.R10, int16(-64+i), asm.R1, asm.DWord))
	}
	ins = append(ins,
		asm.LoadImm(asm.R1, 0x5a5a5a5a5a5a5a5a, asm.DWord),
		asm.StoreMem(asm.R10, -72, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R10),
		asm.Add.Imm(asm.R1, -64),
		asm.Mov.Imm(asm.R2, n),
		asm.LoadImm(asm.R3, flags, asm.DWord),
		asm.Mov.Reg(asm.R4, asm.R10),
		asm.Add.Imm(asm.R4, -72),
		fn.Call(),
		asm.Mov.Reg(asm.R6, asm.R0),
		asm.LoadMem(asm.R2, asm.R9, 0, asm.Word),
		asm.LoadMem(asm.R3, asm.R9, 4, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 16),
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
		asm.LoadMem(asm.R1, asm.R10, -72, asm.DWord),
		asm.StoreMem(asm.R2, 0, asm.R1, asm.DWord),
		asm.StoreMem(asm.R2, 8, asm.R6, asm.DWord),
		asm.Mov.Imm(asm.R0, 2).WithSymbol("out"),
		asm.Return(),
	)
	return ins
}

// bpf_strtol and bpf_strtoul on numbers of every base and sign, at the
// edges of their ranges, with spaces, prefixes, trailing text, lengths
// that cut them, and bad flags: the same results and the same *res.
func TestStrtoxMatchesKernel(t *testing.T) {
	k := linuxLikeSim(t)
	kern, err := OpenKernel()
	if err != nil {
		t.Fatal(err)
	}
	s := &Sim{K: k}
	strs := []string{"123", "  -42abc", "0x1f", "0X1F!", "0x", "0xg", "077", "09", "-", "", " ", "\xa0 7", "\t\n+5",
		"18446744073709551615", "18446744073709551616", "99999999999999999999x", "9223372036854775807", "9223372036854775808",
		"-9223372036854775808", "-9223372036854775809", "ff", "FFFFFFFFFFFFFFFF", "10000000000000000", "1\x002",
		"-0", "- 1", "0000000000000000000000000000000000000000000000000000000000000000123"[:64]}
	runs := 0
	for _, fn := range []asm.BuiltinFunc{105, 106} {
		for _, str := range strs {
			for _, flags := range []int64{0, 8, 10, 16, 2, 0x20 | 10} {
				lens := []int32{int32(max(len(str), 1)), 1, 3}
				for _, n := range lens {
					name := fmt.Sprintf("%v(%q, %d, %#x)", fn, str, n, flags)
					p := &Program{Spec: &ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: strtoxProgram(fn, str, n, flags)},
						Packet: make([]byte, 64)}
					kOut, sOut := kern.Run(p), s.Run(p)
					if d := Diff(kOut, sOut); d != "" {
						t.Errorf("%s: %s", name, d)
					}
					if kOut.Rejected != nil {
						t.Fatalf("%s: the kernel refused it: %v", name, kOut.Rejected)
					}
					if fn == 105 && str == "  -42abc" && n == 8 && flags == 0 {
						// A reading a person can check: -42 from 5 bytes.
						if res, ret := int64(binary.LittleEndian.Uint64(kOut.Packet)), binary.LittleEndian.Uint64(kOut.Packet[8:]); res != -42 || ret != 5 {
							t.Errorf("%s: the kernel read %d, returned %d", name, res, ret)
						}
					}
					runs++
				}
			}
		}
	}
	t.Logf("%d runs compared", runs)
}
