package sim

import (
	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Tracing programs with a generic context: kprobes, tracepoints and raw
// tracepoints. Their context is whatever the attach point hands them (a
// struct pt_regs, a tracepoint's record, an array of u64 arguments), so a
// test run takes it as raw bytes: r1 points to a read-only copy of
// RunOptions.Context in simulated memory, and RunResult.Context (and
// ContextOut) return it after the run.
//
// The kernel test-runs only raw tracepoints (bpf_prog_test_run_raw_tp:
// the context is the u64 argument array, at most MAX_BPF_FUNC_ARGS of
// them, with no data and a single run). bpfsim follows it there, and also
// returns the context, which the kernel refuses to (ctx_out gives EINVAL).
//
// Kprobe and tracepoint programs have no test run in the kernel
// (BPF_PROG_TEST_RUN fails with ENOTSUPP). bpfsim runs them as an
// extension, with the same raw context and any Repeat, so that their logic
// can be tested: the caller lays out pt_regs or the tracepoint record
// itself.
//
// The kernel's verifier refuses stores to these contexts; bpfsim maps the
// copy read-only, so a store faults when it runs.

// maxRawTpArgs is MAX_BPF_FUNC_ARGS: a raw tracepoint has at most 12
// arguments of 8 bytes.
const maxRawTpArgs = 12

// roBuffer is a rawBuffer that programs see read-only.
type roBuffer struct {
	rawBuffer
	ro uint64 // the start of the area last made read-only
}

// load copies in to the buffer and returns its address and bytes, as
// rawBuffer.load does, with the area mapped read-only.
func (b *roBuffer) load(space *mem.Space, in []byte) (uint64, []byte, error) {
	addr, buf, err := b.rawBuffer.load(space, in)
	if err != nil || addr == 0 {
		return addr, buf, err
	}
	if b.ro != b.start {
		if err := space.SetPerm(b.start, b.size, mem.PermRead); err != nil {
			return 0, nil, err
		}
		b.ro = b.start
	}
	return addr, buf, nil
}

func (k *Kernel) prepareTracing(cpu *CPU, typ ebpf.ProgramType, data, ctx []byte, repeat uint32) (*runEnv, error) {
	if len(data) != 0 {
		return nil, errors.Wrapf(uapi.EINVAL, "%s programs take a context and no data", typ)
	}
	switch {
	case typ == ebpf.RawTracepoint && repeat > 1:
		return nil, errors.Wrap(uapi.EINVAL, "raw tracepoint programs run once: Repeat must be 0 or 1")
	case typ == ebpf.RawTracepoint && len(ctx) > maxRawTpArgs*8:
		return nil, errors.Wrapf(uapi.EINVAL, "a raw tracepoint context of %d bytes exceeds %d arguments of 8 bytes", len(ctx), maxRawTpArgs)
	case len(ctx) > 0xffff:
		return nil, errors.Wrapf(uapi.EINVAL, "context of %d bytes exceeds U16_MAX", len(ctx))
	}
	// A run without a context passes NULL, as the kernel does for a raw
	// tracepoint run with no ctx_in.
	addr, buf, err := cpu.run.trace.load(k.mem, ctx)
	if err != nil {
		return nil, err
	}
	return &runEnv{r1: addr, output: func() ([]byte, []byte, error) {
		if len(ctx) == 0 {
			return nil, nil, nil
		}
		return nil, append([]byte(nil), buf...), nil
	}}, nil
}
