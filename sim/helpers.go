package sim

import (
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Helper is a kernel function that programs call by id, the counterpart of
// a struct bpf_func_proto's func. See interp.Helper.
type Helper = interp.Helper

// RegisterHelper adds h to the kernel's helper table, so programs loaded
// afterwards may call it. Later parts of bpfsim extend the table this way,
// and so can users who simulate a helper of their own. Replacing an
// existing id is EEXIST.
func (k *Kernel) RegisterHelper(h *Helper) error {
	if h == nil || h.Fn == nil {
		return errors.Wrap(uapi.EINVAL, "helper has no function")
	}
	if h.Name == "" {
		h.Name = uapi.HelperName(h.ID)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.helpers[h.ID]; ok {
		return errors.Wrapf(uapi.EEXIST, "helper %s#%d is already registered", h.Name, h.ID)
	}
	k.helpers[h.ID] = h
	return nil
}

// resolveHelper is the loader's lookup: a program that calls a helper the
// simulated kernel does not have is rejected at load, naming the helper,
// instead of running against a stub.
func (k *Kernel) resolveHelper(id int32) (*Helper, error) {
	k.mu.Lock()
	h, ok := k.helpers[id]
	k.mu.Unlock()
	if ok {
		return h, nil
	}
	if name := uapi.HelperName(id); name != "" {
		return nil, errors.Wrapf(uapi.EINVAL, "program calls %s#%d, which bpfsim does not implement yet", name, id)
	}
	return nil, errors.Wrapf(uapi.EINVAL, "invalid func unknown#%d", id)
}

// cpuOf returns the simulated CPU a helper runs on.
func (k *Kernel) cpuOf(m *interp.Machine) *CPU { return m.Data.(*CPU) }

func (k *Kernel) registerBaseHelpers() {
	for _, h := range []*Helper{
		{ID: uapi.FuncKtimeGetNs, Fn: func(m *interp.Machine, _, _, _, _, _ uint64) (uint64, error) {
			return k.clock.Now(), nil
		}},
		{ID: uapi.FuncGetPrandomU32, Fn: func(m *interp.Machine, _, _, _, _, _ uint64) (uint64, error) {
			return uint64(k.cpuOf(m).rnd.next()), nil
		}},
		{ID: uapi.FuncGetSmpProcessorID, Fn: func(m *interp.Machine, _, _, _, _, _ uint64) (uint64, error) {
			return uint64(m.CPU), nil
		}},
		{ID: uapi.FuncTracePrintk, Fn: k.tracePrintk},
		{ID: uapi.FuncLoop, Fn: k.helperLoop},
		{ID: uapi.FuncForEachMapElem, Fn: k.helperForEachMapElem},
	} {
		if err := k.RegisterHelper(h); err != nil {
			panic(err) // the base table has unique ids
		}
	}
}

// helperLoop is bpf_loop(nr_loops, callback_fn, callback_ctx, flags)
// (kernel/bpf/bpf_iter.c), for the calls the verifier does not inline:
// the callback runs with (i, callback_ctx) until it returns non-zero,
// nr_loops times at most; the result is the number of calls.
func (k *Kernel) helperLoop(m *interp.Machine, nrLoops, fn, ctx, flags, _ uint64) (uint64, error) {
	if flags != 0 {
		return errnoRet(uapi.EINVAL), nil
	}
	n := uint64(uint32(nrLoops)) // a u32 in the helper's prototype
	if n > uapi.BPF_MAX_LOOPS {
		return errnoRet(uapi.E2BIG), nil
	}
	call, err := k.callback(m, fn)
	if err != nil {
		return 0, err
	}
	for i := uint64(0); i < n; i++ {
		ret, err := call(i, ctx, 0, 0)
		if err != nil {
			return 0, err
		}
		if ret != 0 {
			return i + 1, nil
		}
	}
	return n, nil
}

// callback returns a function that calls the program's callback at fn:
// an interpreter's function address runs on the machine (CallFunc), a
// JIT image address on the CPU's A64 state, as the kernel's helpers call
// a JITed callback.
func (k *Kernel) callback(m *interp.Machine, fn uint64) (func(a, b, c, d uint64) (uint64, error), error) {
	if start, ok := interp.FuncStart(fn); ok {
		return func(a, b, c, d uint64) (uint64, error) { return m.CallFunc(start, a, b, c, d) }, nil
	}
	cpu, ok := m.Data.(*CPU)
	if !ok || cpu.jit == nil || cpu.jit.cpu == nil {
		return nil, errors.Wrapf(uapi.EFAULT, "pc %d: %#x is no callback", m.PC(), fn)
	}
	c := cpu.jit.cpu
	return func(a, b, c2, d uint64) (uint64, error) { return c.Run(fn, a, b, c2, d, 0) }, nil
}

// tracePrintk is bpf_trace_printk(fmt, fmt_size, arg1, arg2, arg3).
func (k *Kernel) tracePrintk(m *interp.Machine, fmtAddr, fmtSize, a1, a2, a3 uint64) (uint64, error) {
	format, e, err := readFormat(m, fmtAddr, fmtSize)
	if err != nil || e != 0 {
		return errnoRet(e), err
	}
	return k.traceFormat(m, format, []uint64{a1, a2, a3}[:maxTracePrintkArgs])
}

// traceFormat formats format with args into the trace buffer, returning the
// helper's result: the formatted length, or -EINVAL for a bad format.
func (k *Kernel) traceFormat(m *interp.Machine, format string, args []uint64) (uint64, error) {
	msg, n, err := bprintf(m, format, args)
	if err != nil {
		return errnoRet(err.(uapi.Errno)), nil
	}
	k.trace.add(TraceRecord{CPU: m.CPU, Time: k.clock.Now(), Msg: traceMessage(msg)})
	return uint64(n), nil
}

// readFormat reads a format of at most fmtSize bytes, which must hold a
// NUL (strnchr in bpf_bprintf_prepare), else EINVAL. The verifier
// guarantees the bytes are readable; unverified programs that pass a bad
// pointer fault here.
func readFormat(m *interp.Machine, fmtAddr, fmtSize uint64) (string, uapi.Errno, error) {
	var format []byte
	for i := uint64(0); ; i++ {
		if i == uint64(uint32(fmtSize)) {
			return "", uapi.EINVAL, nil
		}
		v, f := m.TLB.Load8(fmtAddr + i)
		if f != nil {
			f.PC = m.PC()
			return "", 0, f
		}
		if v == 0 {
			return string(format), 0, nil
		}
		format = append(format, byte(v))
	}
}

// errnoRet is how a helper returns -errno in r0.
func errnoRet(e uapi.Errno) uint64 { return uint64(-int64(e)) }
