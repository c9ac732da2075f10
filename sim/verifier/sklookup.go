package verifier

import "github.com/bpfsim/bpfsim/sim/insn"

// sk_lookup programs (net/core/filter.c's sk_lookup_verifier_ops): the
// context is struct bpf_sk_lookup, read-only, over the kernel's struct
// bpf_sk_lookup_kern, which convert_ctx_access reads instead.

// Offsets in struct bpf_sk_lookup.
const (
	skLookupSK             = 0
	skLookupFamily         = 8
	skLookupProtocol       = 12
	skLookupRemoteIP4      = 16
	skLookupRemoteIP6      = 20
	skLookupRemotePort     = 36
	skLookupRemotePortPad  = 38
	skLookupLocalIP4       = 40
	skLookupLocalIP6       = 44
	skLookupLocalPort      = 60
	skLookupIngressIfindex = 64
	SkLookupSize           = 72
)

// Offsets in struct bpf_sk_lookup_kern (6.18, read from its BTF), which
// the simulated kernel's test run builds.
const (
	SkLookupKernFamily         = 0
	SkLookupKernProtocol       = 2
	SkLookupKernSport          = 4
	SkLookupKernDport          = 6
	SkLookupKernV4Saddr        = 8
	SkLookupKernV4Daddr        = 12
	SkLookupKernV6Saddr        = 16 // a struct in6_addr pointer
	SkLookupKernV6Daddr        = 24
	SkLookupKernSelectedSK     = 32
	SkLookupKernIngressIfindex = 40
	SkLookupKernSize           = 48
)

// skLookupType is sk_lookup_is_valid_access and its conversion.
type skLookupType struct{}

func (skLookupType) DirectPacketAccess(bool) bool { return false }

// ReturnRange: SK_DROP or SK_PASS.
func (skLookupType) ReturnRange() (lo, hi int64, ok bool) { return 0, 1, true }

func (skLookupType) ValidAccess(off, size int, write, _ bool) (CtxField, bool) {
	if off < 0 || off >= SkLookupSize || off%size != 0 || write {
		return CtxField{}, false
	}
	narrow := func(fieldSize int) (CtxField, bool) {
		// bpf_ctx_narrow_access_ok.
		return CtxField{FieldSize: fieldSize}, size <= fieldSize
	}
	switch {
	case off == skLookupSK:
		// PTR_TO_SOCKET_OR_NULL: bpfsim has no sockets.
		return CtxField{Kind: CtxUnsupported, Msg: "bpf_sk_lookup's sk (a socket) is not simulated by bpfsim yet"}, size == 8
	case off < skLookupSK+8:
		return CtxField{}, false
	case off == skLookupRemotePort && size == 4:
		// A 4-byte read of the 2-byte port, for backward
		// compatibility.
		return CtxField{}, true
	case off >= skLookupRemotePort && off < skLookupLocalIP4:
		return narrow(2)
	case off < skLookupIngressIfindex+4:
		return narrow(4)
	}
	return CtxField{}, false
}

// ConvertCtxAccess is convert_ctx_accesses's handling of a load with
// sk_lookup_convert_ctx_access: a load narrower than its field (fieldSize)
// reads the whole field and shifts and masks its part out, but only when
// it is narrower than the kernel's field too, so that a 2-byte read of the
// upper half of family (a 2-byte field in bpf_sk_lookup_kern) reads
// family, as in the kernel.
func (skLookupType) ConvertCtxAccess(in *insn.Insn, fieldSize int) []insn.Insn {
	size := insn.SizeBytes(in.Code & 0x18)
	base := *in
	off := int(in.Off)
	if narrow := size < fieldSize; narrow {
		base.Off = int16(off &^ (fieldSize - 1))
		base.Code = insn.LDX | insn.MEM | sizeCode(fieldSize)
	}
	dst, src := base.Dst, base.Src
	ldx := func(size uint8, dst, src uint8, off int) insn.Insn {
		return insn.Insn{Code: insn.LDX | insn.MEM | size, Dst: dst, Src: src, Off: int16(off)}
	}
	var seq []insn.Insn
	target := 4
	switch o := int(base.Off); {
	case o == skLookupFamily:
		seq, target = []insn.Insn{ldx(insn.H, dst, src, SkLookupKernFamily)}, 2
	case o == skLookupProtocol:
		seq, target = []insn.Insn{ldx(insn.H, dst, src, SkLookupKernProtocol)}, 2
	case o == skLookupRemoteIP4:
		seq = []insn.Insn{ldx(insn.W, dst, src, SkLookupKernV4Saddr)}
	case o == skLookupLocalIP4:
		seq = []insn.Insn{ldx(insn.W, dst, src, SkLookupKernV4Daddr)}
	case o >= skLookupRemoteIP6 && o < skLookupRemotePort, o >= skLookupLocalIP6 && o < skLookupLocalPort:
		ptr, first := SkLookupKernV6Saddr, skLookupRemoteIP6
		if o >= skLookupLocalIP6 {
			ptr, first = SkLookupKernV6Daddr, skLookupLocalIP6
		}
		// The address through its pointer, NULL for IPv4.
		seq = []insn.Insn{
			ldx(insn.DW, dst, src, ptr),
			{Code: insn.JMP | insn.JEQ | insn.K, Dst: dst, Off: 1},
			ldx(base.Code&0x18, dst, dst, o-first),
		}
	case o == skLookupRemotePort:
		seq, target = []insn.Insn{ldx(insn.H, dst, src, SkLookupKernSport)}, 2
	case o == skLookupRemotePortPad:
		seq, target = []insn.Insn{{Code: insn.ALU | insn.MOV | insn.K, Dst: dst}}, 2
	case o == skLookupLocalPort:
		seq, target = []insn.Insn{ldx(insn.H, dst, src, SkLookupKernDport)}, 2
	case o == skLookupIngressIfindex:
		seq = []insn.Insn{ldx(insn.W, dst, src, SkLookupKernIngressIfindex)}
	default:
		return nil
	}
	if size < fieldSize && size < target {
		if shift := (off & (fieldSize - 1)) * 8; shift != 0 {
			seq = append(seq, insn.Insn{Code: insn.ALU | insn.RSH | insn.K, Dst: dst, Imm: int32(shift)})
		}
		seq = append(seq, insn.Insn{Code: insn.ALU | insn.AND | insn.K, Dst: dst, Imm: int32(1)<<(size*8) - 1})
	}
	if in.Mode() == insn.MEMSX {
		seq = append(seq, insn.Insn{Code: insn.ALU64 | insn.MOV | insn.X, Dst: dst, Src: dst, Off: int16(size * 8)})
	}
	return seq
}

// sizeCode is the BPF size of a load of n bytes.
func sizeCode(n int) uint8 {
	switch n {
	case 1:
		return insn.B
	case 2:
		return insn.H
	case 4:
		return insn.W
	}
	return insn.DW
}
