package sim

import (
	"bytes"
	"encoding/binary"
	"math"

	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// bpf_strncmp (kernel/bpf/helpers.c): a program's bytes against a
// constant string, which the verifier checked is NUL-terminated in a
// read-only map (ARG_PTR_TO_CONST_STR); strncmp's result, -1, 0 or 1.

const funcStrncmp = 182

var strncmpProto = &verifier.FuncProto{
	Args: [5]verifier.ArgType{verifier.ArgPtrToMem, verifier.ArgConstSize, verifier.ArgPtrToConstStr},
}

func (k *Kernel) registerStringHelpers() {
	if err := k.RegisterHelper(&Helper{ID: funcStrncmp, Proto: strncmpProto, Fn: k.helperStrncmp}); err != nil {
		panic(err) // the table has unique ids
	}
}

// helperStrncmp is bpf_strncmp(s1, s1_sz, s2): lib/string.c's strncmp of
// at most s1_sz bytes, stopping at a NUL both strings share.
func (k *Kernel) helperStrncmp(m *interp.Machine, s1, size, s2, _, _ uint64) (uint64, error) {
	if err := checkHelperSize(m, size); err != nil {
		return 0, err
	}
	a, err := readArg(m, s1, uint32(size), 0)
	if err != nil {
		return 0, err
	}
	for i := uint64(0); i < size; i++ {
		c, f := m.TLB.Load8(s2 + i)
		if f != nil {
			f.PC = m.PC()
			return 0, f
		}
		switch c1 := uint64(a[i]); {
		case c1 < c:
			return ^uint64(0), nil // -1
		case c1 > c:
			return 1, nil
		case c1 == 0:
			return 0, nil
		}
	}
	return 0, nil
}

// bpf_snprintf and bpf_trace_vprintk (kernel/bpf/helpers.c,
// kernel/trace/bpf_trace.c): the bprintf family with their arguments in an
// array of u64 in the program's memory, data_len bytes of it, up to
// MAX_BPRINTF_VARARGS. bpf_snprintf writes into the program's buffer and
// returns the length the whole text needs with its NUL; its format is a
// constant string the verifier checks against the argument count
// (check_bpf_snprintf_call). bpf_trace_vprintk is bpf_trace_printk with
// more arguments (libbpf's bpf_printk with more than three).

const (
	funcSnprintf     = 165
	funcTraceVprintk = 177

	maxBprintfVarargs = 12 // MAX_BPRINTF_VARARGS
)

var (
	snprintfProto = &verifier.FuncProto{GPLOnly: true, CheckFormat: checkFormat,
		Args: [5]verifier.ArgType{verifier.ArgPtrToUninitMemOrNull, verifier.ArgConstSizeOrZero,
			verifier.ArgPtrToConstStr, verifier.ArgPtrToMemOrNull, verifier.ArgConstSizeOrZero}}
	traceVprintkProto = &verifier.FuncProto{GPLOnly: true,
		Args: [5]verifier.ArgType{verifier.ArgPtrToMem, verifier.ArgConstSize,
			verifier.ArgPtrToMemOrNull, verifier.ArgConstSizeOrZero}}
)

// checkFormat is bpf_bprintf_prepare without arguments, as the verifier
// runs it.
func checkFormat(format string, nargs int) error {
	_, _, err := bprintf(nil, format, make([]uint64, nargs))
	return err
}

func (k *Kernel) registerFormatHelpers() {
	for _, h := range []*Helper{
		{ID: funcSnprintf, Proto: snprintfProto, Fn: k.helperSnprintf},
		{ID: funcTraceVprintk, Proto: traceVprintkProto, Fn: k.helperTraceVprintk},
	} {
		if err := k.RegisterHelper(h); err != nil {
			panic(err) // the table has unique ids
		}
	}
}

// formatArgs reads the data_len bytes of u64 arguments at args: EINVAL
// for a length not a multiple of 8, past MAX_BPRINTF_VARARGS, or with no
// array.
func formatArgs(m *interp.Machine, args, dataLen uint64) ([]uint64, uapi.Errno, error) {
	dataLen = uint64(uint32(dataLen))
	if dataLen%8 != 0 || dataLen > maxBprintfVarargs*8 || dataLen != 0 && args == 0 {
		return nil, uapi.EINVAL, nil
	}
	raw := make([]byte, dataLen)
	if err := m.ReadMem(args, raw); err != nil {
		return nil, 0, err
	}
	out := make([]uint64, dataLen/8)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(raw[8*i:])
	}
	return out, 0, nil
}

// helperSnprintf is bpf_snprintf(str, str_size, fmt, args, data_len).
func (k *Kernel) helperSnprintf(m *interp.Machine, str, size, fmtAddr, args, dataLen uint64) (uint64, error) {
	size = uint64(uint32(size))
	if err := checkHelperSize(m, size); err != nil {
		return 0, err
	}
	argv, e, err := formatArgs(m, args, dataLen)
	if err != nil || e != 0 {
		return errnoRet(e), err
	}
	// The verifier checked the format is NUL-terminated within its map
	// value; an unverified program's is read up to a page.
	format, e, err := readFormat(m, fmtAddr, mem.PageSize)
	if err != nil || e != 0 {
		return errnoRet(e), err
	}
	text, n, err := bprintf(m, format, argv)
	if err != nil {
		return errnoRet(err.(uapi.Errno)), nil
	}
	if size > 0 {
		out := append([]byte(text[:min(uint64(len(text)), size-1)]), 0)
		if err := m.WriteMem(str, out); err != nil {
			return 0, err
		}
	}
	return uint64(n) + 1, nil
}

// helperTraceVprintk is bpf_trace_vprintk(fmt, fmt_size, args, data_len).
func (k *Kernel) helperTraceVprintk(m *interp.Machine, fmtAddr, fmtSize, args, dataLen, _ uint64) (uint64, error) {
	argv, e, err := formatArgs(m, args, dataLen)
	if err != nil || e != 0 {
		return errnoRet(e), err
	}
	format, e, err := readFormat(m, fmtAddr, fmtSize)
	if err != nil || e != 0 {
		return errnoRet(e), err
	}
	return k.traceFormat(m, format, argv)
}

// bpf_strtol and bpf_strtoul (kernel/bpf/helpers.c, lib/kstrtox.c): an
// integer at the start of buf_len bytes, after spaces (the kernel's
// isspace, which counts Latin-1's no-break space) and a minus sign, in
// base 8, 10, 16 or, with 0, the base its prefix says; at most 63
// characters of it are looked at. The result goes to *res (0 on an
// error), the characters consumed are returned; -EINVAL for no digits, a
// bad base or flags, a negative number to strtoul; -ERANGE for one that
// does not fit.

const (
	funcStrtol  = 105
	funcStrtoul = 106

	strtoxBaseMask = 0x1f // BPF_STRTOX_BASE_MASK
)

var strtoxProto = &verifier.FuncProto{Args: [5]verifier.ArgType{
	verifier.ArgPtrToMem, verifier.ArgConstSize, verifier.ArgAnything, verifier.ArgPtrToU64Out}}

func (k *Kernel) registerStrtox() {
	for _, h := range []*Helper{
		{ID: funcStrtol, Proto: strtoxProto, Fn: func(m *interp.Machine, buf, n, flags, res, _ uint64) (uint64, error) {
			return strtox(m, buf, n, flags, res, true)
		}},
		{ID: funcStrtoul, Proto: strtoxProto, Fn: func(m *interp.Machine, buf, n, flags, res, _ uint64) (uint64, error) {
			return strtox(m, buf, n, flags, res, false)
		}},
	} {
		if err := k.RegisterHelper(h); err != nil {
			panic(err) // the table has unique ids
		}
	}
}

func strtox(m *interp.Machine, bufAddr, n, flags, resAddr uint64, signed bool) (uint64, error) {
	if err := checkHelperSize(m, n); err != nil {
		return 0, err
	}
	if err := m.WriteMem(resAddr, make([]byte, 8)); err != nil {
		return 0, err
	}
	buf, err := readArg(m, bufAddr, uint32(n), 0)
	if err != nil {
		return 0, err
	}
	v, neg, consumed, e := parseUint(buf, flags)
	switch {
	case e != 0:
		return errnoRet(e), nil
	case !signed && neg:
		return errnoRet(uapi.EINVAL), nil
	case signed && neg && int64(-v) > 0, signed && !neg && int64(v) < 0:
		return errnoRet(uapi.ERANGE), nil
	case neg:
		v = -v
	}
	if err := m.WriteMem(resAddr, binary.LittleEndian.AppendUint64(nil, v)); err != nil {
		return 0, err
	}
	return uint64(consumed), nil
}

// parseUint is __bpf_strtoull.
func parseUint(buf []byte, flags uint64) (v uint64, neg bool, consumed int, e uapi.Errno) {
	base := flags & strtoxBaseMask
	if len(buf) == 0 || base != 0 && base != 8 && base != 10 && base != 16 || flags&^strtoxBaseMask != 0 {
		return 0, false, 0, uapi.EINVAL
	}
	i := 0
	for i < len(buf) && kernelIsSpace(buf[i]) {
		i++
	}
	if neg = i < len(buf) && buf[i] == '-'; neg {
		i++
	}
	if i == len(buf) {
		return 0, neg, 0, uapi.EINVAL
	}
	// A NUL-terminated copy of at most 63 bytes.
	s := buf[i:min(len(buf), i+63)]
	if z := bytes.IndexByte(s, 0); z >= 0 {
		s = s[:z]
	}
	at := func(j int) byte {
		if j < len(s) {
			return s[j]
		}
		return 0
	}
	// _parse_integer_fixup_radix.
	p := 0
	if base == 0 {
		switch {
		case at(0) == '0' && at(1)|0x20 == 'x' && isXDigit(at(2)):
			base = 16
		case at(0) == '0':
			base = 8
		default:
			base = 10
		}
	}
	if base == 16 && at(0) == '0' && at(1)|0x20 == 'x' {
		p = 2
	}
	// _parse_integer: digits while they are digits of the base; an
	// overflow is remembered, the digits still consumed.
	start, overflow := p, false
	for ; p < len(s); p++ {
		c := s[p]
		var d uint64
		switch {
		case c >= '0' && c <= '9':
			d = uint64(c - '0')
		case c|0x20 >= 'a' && c|0x20 <= 'f':
			d = uint64(c|0x20-'a') + 10
		default:
			d = 16
		}
		if d >= base {
			break
		}
		if v&(0xf<<60) != 0 && v > (math.MaxUint64-d)/base {
			overflow = true
		}
		v = v*base + d
	}
	switch {
	case overflow:
		return 0, neg, 0, uapi.ERANGE
	case p == start:
		return 0, neg, 0, uapi.EINVAL
	}
	return v, neg, i + p, 0
}

// kernelIsSpace is the kernel's isspace (lib/ctype.c): Latin-1's
// no-break space is one.
func kernelIsSpace(c byte) bool { return c == ' ' || c >= '\t' && c <= '\r' || c == 0xa0 }

func isXDigit(c byte) bool { return c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'f' }
