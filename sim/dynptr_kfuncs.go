package sim

import (
	"bytes"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/kfunc"
	"github.com/bpfsim/bpfsim/sim/uapi"
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
	fn    func(k *Kernel) func(m *interp.Machine, r1, r2, r3, r4, r5 uint64) (uint64, error)
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
	"bpf_dynptr_is_null":   accessorKfunc(btfBool, func(d dynptr) uint64 { return b2u(d.data == 0) }),
	"bpf_dynptr_is_rdonly": accessorKfunc(btfBool, func(d dynptr) uint64 { return b2u(d.data != 0 && d.rdonly()) }),
	"bpf_dynptr_size": accessorKfunc(&btf.Typedef{Name: "__u32", Type: btfU32}, func(d dynptr) uint64 {
		if d.data == 0 {
			return uint64(uint32(errnoRet(uapi.EINVAL)))
		}
		return uint64(d.size())
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

// accessorKfunc is a kfunc that reads a dynptr and returns what get says.
func accessorKfunc(ret btf.Type, get func(d dynptr) uint64) *builtinKfunc {
	return &builtinKfunc{
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
		flags: kfunc.RetNull,
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
	err = k.registerKfunc(&kfunc.Func{Name: name, Proto: proto, Flags: b.flags, ProgTypes: b.types, Fn: b.fn(k)}, b.internal)
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
