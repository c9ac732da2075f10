package insn_test

import (
	"testing"

	"github.com/bpfsim/bpfsim/sim/insn"
)

func TestFormatLikeTheKernelsDisassembler(t *testing.T) {
	i := func(code uint8, dst, src uint8, off int16, imm int32) insn.Insn {
		return insn.Insn{Code: code, Dst: dst, Src: src, Off: off, Imm: imm}
	}
	for _, c := range []struct {
		in   insn.Insn
		want string
	}{
		{i(0xb7, 0, 0, 0, 1), "(b7) r0 = 1"},
		{i(0xbf, 6, 1, 0, 0), "(bf) r6 = r1"},
		{i(0xb4, 2, 0, 0, -1), "(b4) w2 = -1"},
		{i(0x07, 3, 0, 0, 8), "(07) r3 += 8"},
		{i(0x0c, 1, 2, 0, 0), "(0c) w1 += w2"},
		{i(0x3f, 0, 1, 1, 0), "(3f) r0 s/= r1"},
		{i(0x97, 0, 0, 1, 7), "(97) r0 s%= 7"},
		{i(0x9c, 3, 4, 0, 0), "(9c) w3 %= w4"},
		{i(0xc7, 1, 0, 0, 3), "(c7) r1 s>>= 3"},
		{i(0x87, 5, 0, 0, 0), "(87) r5 = -r5"},
		{i(0x84, 5, 0, 0, 0), "(84) w5 = -w5"},
		{i(0xbf, 1, 2, 8, 0), "(bf) r1 = (s8)r2"},
		{i(0xbc, 1, 2, 16, 0), "(bc) w1 = (s16)w2"},
		{i(0xd4, 1, 0, 0, 16), "(d4) r1 = le16 r1"},
		{i(0xdc, 1, 0, 0, 32), "(dc) r1 = be32 r1"},
		{i(0xd7, 1, 0, 0, 64), "(d7) r1 = bswap64 r1"},
		{i(0xbf, 0, 0, -1, 0), "(bf) r0 = &(void __percpu *)(r0)"},
		{i(0x61, 1, 6, 4, 0), "(61) r1 = *(u32 *)(r6 +4)"},
		{i(0x79, 2, 10, -8, 0), "(79) r2 = *(u64 *)(r10 -8)"},
		{i(0x91, 2, 1, 0, 0), "(91) r2 = *(s8 *)(r1 +0)"},
		{i(0x73, 10, 1, -1, 0), "(73) *(u8 *)(r10 -1) = r1"},
		{i(0x62, 10, 0, -4, 7), "(62) *(u32 *)(r10 -4) = 7"},
		{i(0xdb, 10, 1, -8, 0x00), "(db) lock *(u64 *)(r10 -8) += r1"},
		{i(0xc3, 10, 1, -8, 0x50), "(c3) lock *(u32 *)(r10 -8) &= r1"},
		{i(0xdb, 10, 1, -8, 0x41), "(db) r1 = atomic64_fetch_or((u64 *)(r10 -8), r1)"},
		{i(0xc3, 10, 1, -8, 0xa1), "(c3) r1 = atomic_fetch_xor((u32 *)(r10 -8), r1)"},
		{i(0xdb, 10, 2, -8, 0xe1), "(db) r2 = atomic64_xchg((u64 *)(r10 -8), r2)"},
		{i(0xdb, 10, 2, -8, 0xf1), "(db) r0 = atomic64_cmpxchg((u64 *)(r10 -8), r0, r2)"},
		{i(0xdb, 0, 1, 0, 0x100), "(db) r0 = load_acquire((u64 *)(r1 +0))"},
		{i(0xd3, 1, 2, 0, 0x110), "(d3) store_release((u8 *)(r1 +0), r2)"},
		{i(0x20, 0, 0, 0, 12), "(20) r0 = *(u32 *)skb[12]"},
		{i(0x50, 0, 3, 0, 2), "(50) r0 = *(u8 *)skb[r3 + 2]"},
		{i(0x05, 0, 0, 3, 0), "(05) goto pc+3"},
		{i(0x06, 0, 0, 0, -9), "(06) gotol pc-9"},
		{i(0x15, 1, 0, 2, 0), "(15) if r1 == 0x0 goto pc+2"},
		{i(0x2d, 3, 2, 21, 0), "(2d) if r3 > r2 goto pc+21"},
		{i(0xa6, 3, 0, -1, -1), "(a6) if w3 < 0xffffffff goto pc-1"},
		{i(0xde, 3, 4, 0, 0), "(de) if w3 s<= w4 goto pc+0"},
		{i(0xe5, 0, 0, 5, 0), "(e5) may_goto pc+5"},
		{i(0x85, 0, 0, 0, 5), "(85) call bpf_ktime_get_ns#5"},
		{i(0x85, 0, 1, 0, 4), "(85) call pc+4"},
		{i(0x85, 0, 2, 0, 77), "(85) call kernel-function#77"},
		{i(0x85, 0, 0, 0, 99999), "(85) call unknown#99999"},
		{i(0x95, 0, 0, 0, 0), "(95) exit"},
		{i(0xff, 0, 0, 0, 0), "(ff) invalid"},
	} {
		if got := insn.Format([]insn.Insn{c.in}, 0, nil); got != c.want {
			t.Errorf("%v: got %q, want %q", c.in, got, c.want)
		}
	}
}

func TestDumpSkipsTheSecondHalfOfLddwAndUsesSymbols(t *testing.T) {
	p := []insn.Insn{
		{Code: insn.LD | insn.IMM | insn.DW, Dst: 1, Src: insn.PseudoMapFD, Imm: 3},
		{},
		{Code: insn.LD | insn.IMM | insn.DW, Dst: 2, Imm: -1},
		{Imm: 0x7fffffff},
		{Code: insn.JMP | insn.CALL, Imm: 1},
		{Code: insn.JMP | insn.EXIT},
	}
	sym := &insn.Symbols{
		Imm64: func(_ int, in insn.Insn, imm uint64) string {
			if in.Src == insn.PseudoMapFD {
				return "map[id:3]"
			}
			return ""
		},
		Call: func(int, insn.Insn) string { return "array_map_lookup_elem" },
	}
	want := "   0: (18) r1 = map[id:3]\n" +
		"   2: (18) r2 = 0x7fffffffffffffff\n" +
		"   4: (85) call array_map_lookup_elem#1\n" +
		"   5: (95) exit\n"
	if got := insn.Dump(p, sym); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestDecodeEncodeRoundTrip(t *testing.T) {
	raw := []byte{0xb7, 0x10, 0xfe, 0xff, 0x78, 0x56, 0x34, 0x12, 0x95, 0, 0, 0, 0, 0, 0, 0}
	insns, err := insn.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if insns[0] != (insn.Insn{Code: 0xb7, Dst: 0, Src: 1, Off: -2, Imm: 0x12345678}) {
		t.Errorf("decoded %v", insns[0])
	}
	if string(insn.Encode(insns)) != string(raw) {
		t.Error("encode is not the inverse of decode")
	}
	if _, err := insn.Decode(raw[:9]); err == nil {
		t.Error("decoded a truncated instruction")
	}
}
