package sim

import (
	"bytes"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/kfunc"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// The dynptr kfuncs (kernel/bpf/helpers.c, net/core/filter.c): dynptrs
// over an skb's or an XDP buffer's packet, slices of any dynptr, and the
// accessors. They are the kernel's own kfuncs, in its vmlinux BTF from
// the start; bpfsim registers each the first time a program or a caller
// of KfuncID names it, so that a kernel that never sees one builds no BTF.

// builtinKfunc is one of the kernel's own kfuncs.
type builtinKfunc struct {
	flags kfunc.Flags
	// internal: called only in the verifier's stead (specialize_kfunc).
	internal bool
	types    []ebpf.ProgramType // nil: every type (BPF_PROG_TYPE_UNSPEC's set)
	// proto makes the BTF prototype from the vmlinux types named.
	proto func(typ func(string) btf.Type) *btf.FuncProto
	// inline is the BPF body of an inlinable kfunc (seed 003).
	inline asm.Instructions
	fn     func(k *Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error)
}

// skbKfuncTypes are the program types bpf_kfunc_set_skb is registered for
// that bpfsim loads.
var skbKfuncTypes = []ebpf.ProgramType{ebpf.SchedCLS, ebpf.SchedACT, ebpf.SocketFilter, ebpf.CGroupSKB}

var (
	btfInt  = &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	btfU32  = &btf.Int{Name: "u32", Size: 4}
	btfU64  = &btf.Int{Name: "u64", Size: 8}
	btfBool = &btf.Int{Name: "bool", Size: 1, Encoding: btf.Bool}
)

func param(name string, t btf.Type) btf.FuncParam { return btf.FuncParam{Name: name, Type: t} }

// dynptrParam is a struct bpf_dynptr pointer, const when the kfunc only
// reads the dynptr.
func dynptrParam(typ func(string) btf.Type, name string, isConst bool) btf.FuncParam {
	var t btf.Type = typ("bpf_dynptr")
	if isConst {
		t = &btf.Const{Type: t}
	}
	return param(name, &btf.Pointer{Target: t})
}

var builtinKfuncs = map[string]*builtinKfunc{
	"bpf_dynptr_from_skb": {
		types: skbKfuncTypes,
		proto: func(typ func(string) btf.Type) *btf.FuncProto {
			return &btf.FuncProto{Return: btfInt, Params: []btf.FuncParam{
				param("s", &btf.Pointer{Target: typ("__sk_buff")}), param("flags", btfU64),
				dynptrParam(typ, "ptr__uninit", false)}}
		},
		fn: func(k *Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			return func(m *interp.Machine, ctx, flags, ptr, _, _ uint64) (uint64, error) {
				return k.dynptrFromSKB(m, ctx, flags, ptr, false)
			}
		},
	},
	"bpf_dynptr_from_skb_rdonly": {
		internal: true,
		proto: func(typ func(string) btf.Type) *btf.FuncProto {
			return &btf.FuncProto{Return: btfInt, Params: []btf.FuncParam{
				param("skb", &btf.Pointer{Target: typ("__sk_buff")}), param("flags", btfU64),
				dynptrParam(typ, "ptr__uninit", false)}}
		},
		fn: func(k *Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			return func(m *interp.Machine, ctx, flags, ptr, _, _ uint64) (uint64, error) {
				return k.dynptrFromSKB(m, ctx, flags, ptr, true)
			}
		},
	},
	"bpf_dynptr_from_xdp": {
		types: []ebpf.ProgramType{ebpf.XDP},
		proto: func(typ func(string) btf.Type) *btf.FuncProto {
			return &btf.FuncProto{Return: btfInt, Params: []btf.FuncParam{
				param("x", &btf.Pointer{Target: typ("xdp_md")}), param("flags", btfU64),
				dynptrParam(typ, "ptr__uninit", false)}}
		},
		fn: func(k *Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			return k.kfuncDynptrFromXDP
		},
	},
	"bpf_dynptr_slice":      sliceKfunc(false),
	"bpf_dynptr_slice_rdwr": sliceKfunc(true),
	"bpf_dynptr_adjust": {
		proto: func(typ func(string) btf.Type) *btf.FuncProto {
			return &btf.FuncProto{Return: btfInt, Params: []btf.FuncParam{
				dynptrParam(typ, "p", true), param("start", btfU32), param("end", btfU32)}}
		},
		fn: func(k *Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			return kfuncDynptrAdjust
		},
	},
	"bpf_dynptr_is_null": accessorKfunc(btfBool, func(d dynptr) uint64 { return b2u(d.data == 0) }, asm.Instructions{
		asm.LoadMem(asm.R1, asm.R1, 0, asm.DWord),
		asm.Mov.Imm(asm.R0, 1),
		asm.JEq.Imm(asm.R1, 0, "out"),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return().WithSymbol("out"),
	}),
	"bpf_dynptr_is_rdonly": accessorKfunc(btfBool, func(d dynptr) uint64 { return b2u(d.data != 0 && d.rdonly()) }, asm.Instructions{
		asm.LoadMem(asm.R0, asm.R1, 0, asm.DWord),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R0, asm.R1, uapi.DynptrOffSize, asm.Word),
		asm.RSh.Imm32(asm.R0, 31),
		asm.Return().WithSymbol("out"),
	}),
	"bpf_dynptr_size": accessorKfunc(&btf.Typedef{Name: "__u32", Type: btfU32}, func(d dynptr) uint64 {
		if d.data == 0 {
			return uint64(uint32(errnoRet(uapi.EINVAL)))
		}
		return uint64(d.size())
	}, asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord),
		asm.Mov.Imm32(asm.R0, -int32(uapi.EINVAL)),
		asm.JEq.Imm(asm.R2, 0, "out"),
		asm.LoadMem(asm.R0, asm.R1, uapi.DynptrOffSize, asm.Word),
		asm.And.Imm32(asm.R0, uapi.DynptrSizeMask),
		asm.Return().WithSymbol("out"),
	}),
	"bpf_dynptr_copy": {
		proto: func(typ func(string) btf.Type) *btf.FuncProto {
			return &btf.FuncProto{Return: btfInt, Params: []btf.FuncParam{
				dynptrParam(typ, "dst_ptr", false), param("dst_off", btfU32),
				dynptrParam(typ, "src_ptr", false), param("src_off", btfU32), param("size", btfU32)}}
		},
		fn: func(k *Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			return k.kfuncDynptrCopy
		},
	},
	"bpf_dynptr_memset": {
		proto: func(typ func(string) btf.Type) *btf.FuncProto {
			return &btf.FuncProto{Return: btfInt, Params: []btf.FuncParam{
				dynptrParam(typ, "p", false), param("offset", btfU32), param("size", btfU32),
				param("val", &btf.Int{Name: "u8", Size: 1})}}
		},
		fn: func(k *Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			return k.kfuncDynptrMemset
		},
	},
	"bpf_dynptr_clone": {
		proto: func(typ func(string) btf.Type) *btf.FuncProto {
			return &btf.FuncProto{Return: btfInt, Params: []btf.FuncParam{
				dynptrParam(typ, "p", true), dynptrParam(typ, "clone__uninit", false)}}
		},
		fn: func(k *Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			return kfuncDynptrClone
		},
	},
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// accessorKfunc is a kfunc that reads a dynptr and returns what get says,
// inlined as body.
func accessorKfunc(ret btf.Type, get func(d dynptr) uint64, body asm.Instructions) *builtinKfunc {
	return &builtinKfunc{
		inline: body,
		proto: func(typ func(string) btf.Type) *btf.FuncProto {
			return &btf.FuncProto{Return: ret, Params: []btf.FuncParam{dynptrParam(typ, "p", true)}}
		},
		fn: func(k *Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			return func(m *interp.Machine, p, _, _, _, _ uint64) (uint64, error) {
				d, err := loadDynptr(m, p)
				if err != nil {
					return 0, err
				}
				return get(d), nil
			}
		},
	}
}

func sliceKfunc(rdwr bool) *builtinKfunc {
	return &builtinKfunc{
		flags:  kfunc.RetNull,
		inline: sliceBody(rdwr),
		proto: func(typ func(string) btf.Type) *btf.FuncProto {
			return &btf.FuncProto{Return: &btf.Pointer{Target: &btf.Void{}}, Params: []btf.FuncParam{
				dynptrParam(typ, "p", true), param("offset", btfU32),
				param("buffer__opt", &btf.Pointer{Target: &btf.Void{}}), param("buffer__szk", btfU32)}}
		},
		fn: func(k *Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error) {
			return func(m *interp.Machine, p, off, buf, n, _ uint64) (uint64, error) {
				return k.kfuncDynptrSlice(m, p, off, buf, n, rdwr)
			}
		},
	}
}

// sliceBody is bpf_dynptr_slice (rdwr: _rdwr) in BPF, over bpfsim's
// structures: the dynptr's data, size word and offset; an xdp dynptr's
// data is the xdp_buff, whose data pointer comes first. The type switch
// is what inlining decides away, the dynptr's type being known at each
// call; an skb dynptr's slice stays a call (its packet is behind the
// __sk_buff bpfsim's skb programs see, which socket filters may not
// read).
func sliceBody(rdwr bool) asm.Instructions {
	body := asm.Instructions{
		asm.Mov.Reg32(asm.R2, asm.R2), // offset and buffer__szk are u32
		asm.Mov.Reg32(asm.R4, asm.R4),
		asm.LoadMem(asm.R0, asm.R1, 0, asm.DWord),
		asm.JEq.Imm(asm.R0, 0, "null"),
		asm.LoadMem(asm.R5, asm.R1, uapi.DynptrOffSize, asm.Word),
	}
	if rdwr {
		body = append(body, asm.JSLT.Imm32(asm.R5, 0, "null")) // read-only
	}
	return append(body,
		asm.LoadMem(asm.R1, asm.R1, uapi.DynptrOffOffset, asm.Word),
		asm.Mov.Reg32(asm.R3, asm.R5),
		asm.And.Imm32(asm.R3, uapi.DynptrSizeMask),
		asm.JGT.Reg(asm.R4, asm.R3, "null"), // bpf_dynptr_check_off_len
		asm.Sub.Reg(asm.R3, asm.R4),
		asm.JGT.Reg(asm.R2, asm.R3, "null"),
		asm.Add.Reg(asm.R2, asm.R1),
		asm.RSh.Imm32(asm.R5, uapi.DynptrTypeShift),
		asm.And.Imm32(asm.R5, uapi.DynptrTypeMask),
		asm.JEq.Imm32(asm.R5, uapi.DynptrTypeXDP, "xdp"),
		asm.JEq.Imm32(asm.R5, uapi.DynptrTypeSKB, "skb"),
		asm.Add.Reg(asm.R0, asm.R2), // local and ring buffer: data + offset + off
		asm.Return(),
		asm.LoadMem(asm.R0, asm.R0, verifier.XDPBuffData, asm.DWord).WithSymbol("xdp"),
		asm.Add.Reg(asm.R0, asm.R2),
		asm.Return(),
		asm.Instruction{OpCode: asm.OpCode(asm.JumpClass).SetJumpOp(asm.Call), Src: asm.PseudoKfuncCall, Constant: -1}.WithSymbol("skb"),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("null"),
		asm.Return(),
	)
}

// registerBuiltinKfunc registers the kernel's kfunc name, if it is one.
func (k *Kernel) registerBuiltinKfunc(name string) bool {
	b, ok := builtinKfuncs[name]
	if !ok {
		return false
	}
	proto, err := k.so.btf.withTypes(b.proto)
	if err != nil {
		return false
	}
	var body []insn.Insn
	if b.inline != nil {
		if body, err = insn.FromAsm(b.inline); err != nil {
			return false
		}
	}
	err = k.registerKfunc(&kfunc.Func{Name: name, Proto: proto, Flags: b.flags, ProgTypes: b.types, Fn: b.fn(k), Inline: body}, b.internal)
	return err == nil || errors.Is(err, uapi.EEXIST)
}

// dynptrFromSKB is bpf_dynptr_from_skb(s, flags, ptr__uninit): a dynptr
// over the packet from skb->data, skb->len bytes; and, rdonly, the
// bpf_dynptr_from_skb_rdonly the verifier calls instead for the program
// types that may not write packets. Any flag is -EINVAL and a NULL
// dynptr.
func (k *Kernel) dynptrFromSKB(m *interp.Machine, ctx, flags, ptr uint64, rdonly bool) (uint64, error) {
	s, err := k.skbOf(m, ctx, "bpf_dynptr_from_skb")
	if err != nil {
		return 0, err
	}
	if flags != 0 {
		return errnoRet(uapi.EINVAL), storeDynptr(m, ptr, dynptr{})
	}
	d := newDynptr(ctx, uapi.DynptrTypeSKB, s.len)
	if rdonly {
		d.word |= uapi.DynptrRdonlyBit
	}
	return 0, storeDynptr(m, ptr, d)
}

// kfuncDynptrFromXDP is bpf_dynptr_from_xdp(x, flags, ptr__uninit): a
// dynptr over the XDP buffer's packet, data to data_end.
func (k *Kernel) kfuncDynptrFromXDP(m *interp.Machine, ctx, flags, ptr, _, _ uint64) (uint64, error) {
	x, err := xdpOf(m, ctx, "bpf_dynptr_from_xdp")
	if err != nil {
		return 0, err
	}
	if flags != 0 {
		return errnoRet(uapi.EINVAL), storeDynptr(m, ptr, dynptr{})
	}
	return 0, storeDynptr(m, ptr, newDynptr(ctx, uapi.DynptrTypeXDP, uint32(x.dataEnd-x.data)))
}

// kfuncDynptrSlice is bpf_dynptr_slice and bpf_dynptr_slice_rdwr(p,
// offset, buffer__opt, buffer__szk): the address of the bytes, or NULL
// (a NULL dynptr, bytes out of its bounds, a read-only one for rdwr). A
// test run's packet is linear, so a packet dynptr's slice points into
// the packet and the buffer goes unused.
func (k *Kernel) kfuncDynptrSlice(m *interp.Machine, p, off, _, n uint64, rdwr bool) (uint64, error) {
	d, err := loadDynptr(m, p)
	if err != nil {
		return 0, err
	}
	return k.sliceAddr(m, d, uint64(uint32(off)), uint64(uint32(n)), rdwr)
}

// sliceAddr is what bpf_dynptr_slice (rdwr: _rdwr) returns without a
// buffer, 0 for NULL.
func (k *Kernel) sliceAddr(m *interp.Machine, d dynptr, off, n uint64, rdwr bool) (uint64, error) {
	if d.data == 0 || rdwr && d.rdonly() || d.checkOffLen(off, n) != 0 {
		return 0, nil
	}
	return k.dynptrAddr(m, d, off)
}

// dynptrAddr is the address of the byte at off in d's data.
func (k *Kernel) dynptrAddr(m *interp.Machine, d dynptr, off uint64) (uint64, error) {
	at := uint64(d.offset) + off
	switch d.typ() {
	case uapi.DynptrTypeSKB:
		s, err := k.skbOf(m, d.data, "bpf_dynptr_slice")
		if err != nil {
			return 0, err
		}
		return s.data + at, nil
	case uapi.DynptrTypeXDP:
		x, err := xdpOf(m, d.data, "bpf_dynptr_slice")
		if err != nil {
			return 0, err
		}
		return x.data + at, nil
	}
	return d.data + at, nil
}

// kfuncDynptrAdjust is bpf_dynptr_adjust(p, start, end): the dynptr
// narrowed to [start, end) of what it was.
func kfuncDynptrAdjust(m *interp.Machine, p, start, end, _, _ uint64) (uint64, error) {
	d, err := loadDynptr(m, p)
	if err != nil {
		return 0, err
	}
	start, end = uint64(uint32(start)), uint64(uint32(end))
	size := uint64(d.size())
	switch {
	case d.data == 0:
		return errnoRet(uapi.EINVAL), nil
	case start > size || end > size:
		return errnoRet(uapi.ERANGE), nil
	case start > end:
		return errnoRet(uapi.EINVAL), nil
	}
	d.offset += uint32(start)
	d.word = d.word&^uapi.DynptrSizeMask | uint32(end-start)
	return 0, storeDynptr(m, p, d)
}

// kfuncDynptrClone is bpf_dynptr_clone(p, clone__uninit): a copy, or
// -EINVAL and a NULL clone of a NULL dynptr.
func kfuncDynptrClone(m *interp.Machine, p, clone, _, _, _ uint64) (uint64, error) {
	d, err := loadDynptr(m, p)
	if err != nil {
		return 0, err
	}
	if d.data == 0 {
		return errnoRet(uapi.EINVAL), storeDynptr(m, clone, dynptr{})
	}
	return 0, storeDynptr(m, clone, d)
}

// kfuncDynptrCopy is bpf_dynptr_copy(dst_ptr, dst_off, src_ptr, src_off,
// size): through slices of both where it can, else a write from the
// source's slice or a read into the destination's; -E2BIG when neither
// has one and the bytes are out of either's bounds; otherwise in chunks,
// through the read and write paths, whose errnos it returns.
func (k *Kernel) kfuncDynptrCopy(m *interp.Machine, dstp, dstOff, srcp, srcOff, size uint64) (uint64, error) {
	dst, err := loadDynptr(m, dstp)
	if err != nil {
		return 0, err
	}
	src, err := loadDynptr(m, srcp)
	if err != nil {
		return 0, err
	}
	dstOff, srcOff, size = uint64(uint32(dstOff)), uint64(uint32(srcOff)), uint64(uint32(size))
	ss, err := k.sliceAddr(m, src, srcOff, size, false)
	if err != nil {
		return 0, err
	}
	ds, err := k.sliceAddr(m, dst, dstOff, size, true)
	if err != nil {
		return 0, err
	}
	switch {
	case ss != 0 && ds != 0:
		return 0, copyMem(m, ds, ss, size)
	case ss != 0:
		b := make([]byte, size)
		if err := m.ReadMem(ss, b); err != nil {
			return 0, err
		}
		errno, err := k.dynptrWrite(m, dst, dstOff, b, 0)
		return errnoRet(errno), err
	case ds != 0:
		b, errno, err := k.dynptrRead(m, src, srcOff, size, 0)
		if err != nil || errno != 0 {
			return errnoRet(errno), err
		}
		return 0, m.WriteMem(ds, b)
	}
	if dst.checkOffLen(dstOff, size) != 0 || src.checkOffLen(srcOff, size) != 0 {
		return errnoRet(uapi.E2BIG), nil
	}
	// The kernel goes through a 256-byte buffer, chunk by chunk.
	for off := uint64(0); off < size; off += 256 {
		chunk := min(256, size-off)
		b, errno, err := k.dynptrRead(m, src, srcOff+off, chunk, 0)
		if err != nil || errno != 0 {
			return errnoRet(errno), err
		}
		if errno, err := k.dynptrWrite(m, dst, dstOff+off, b, 0); err != nil || errno != 0 {
			return errnoRet(errno), err
		}
	}
	return 0, nil
}

// kfuncDynptrMemset is bpf_dynptr_memset(p, offset, size, val): size
// bytes of val through a writable slice, else -EINVAL for a read-only
// dynptr, -E2BIG out of its bounds, or chunk by chunk through the write
// path.
func (k *Kernel) kfuncDynptrMemset(m *interp.Machine, p, off, size, val, _ uint64) (uint64, error) {
	d, err := loadDynptr(m, p)
	if err != nil {
		return 0, err
	}
	off, size = uint64(uint32(off)), uint64(uint32(size))
	if err := checkHelperSize(m, size); err != nil {
		return 0, err
	}
	b := bytes.Repeat([]byte{byte(val)}, int(min(size, 256)))
	s, err := k.sliceAddr(m, d, off, size, true)
	switch {
	case err != nil:
		return 0, err
	case s != 0:
		return 0, m.WriteMem(s, bytes.Repeat([]byte{byte(val)}, int(size)))
	case d.rdonly():
		return errnoRet(uapi.EINVAL), nil
	case d.checkOffLen(off, size) != 0:
		return errnoRet(uapi.E2BIG), nil
	}
	for w := uint64(0); w < size; w += 256 {
		if errno, err := k.dynptrWrite(m, d, off+w, b[:min(256, size-w)], 0); err != nil || errno != 0 {
			return errnoRet(errno), err
		}
	}
	return 0, nil
}

// isBuiltinKfunc reports whether name is one of the kernel's own kfuncs,
// registered or not yet.
func (k *Kernel) isBuiltinKfunc(name string) bool {
	_, ok := builtinKfuncs[name]
	return ok
}
