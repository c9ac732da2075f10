package sim

import (
	"bytes"
	"encoding/binary"
	"time"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// RunOptions control a test run, like cilium/ebpf's RunOptions and the
// kernel's BPF_PROG_TEST_RUN.
type RunOptions struct {
	// Data is the program's input: the packet, from its Ethernet header,
	// for XDP, socket filter and tc programs; the memory for an
	// UnspecifiedProgram.
	Data []byte
	// DataOut receives the data after the run; it must be large enough
	// (ENOSPC otherwise, with as much copied as fits), and is cut to the
	// output's size.
	DataOut []byte
	// Context is the context input: a []byte or a fixed-size value encoded
	// little-endian with encoding/binary.
	Context any
	// ContextOut receives the context after the run: a []byte or a pointer
	// to a fixed-size value.
	ContextOut any
	// Repeat runs the program this many times (default 1) on the same
	// input, as the kernel does; the duration is the mean.
	Repeat uint32
	// Flags are BPF_F_TEST_* flags; none is supported yet.
	Flags uint32
	// CPU is the simulated CPU to run on. Unlike the kernel, which honours
	// it only for raw tracepoints, bpfsim honours it for every type.
	CPU uint32
	// MaxInsns stops a run after this many instructions (default
	// DefaultMaxInsns), since an unverified program may not terminate.
	MaxInsns uint64
	// Task is the task the program runs in, what bpf_get_current_pid_tgid
	// and the other bpf_get_current_* helpers report. nil: the main
	// thread of the program's process, named "bpfsim-test", with uid and
	// gid 0, as the kernel runs a test run in the task that asked for it.
	Task *Task
}

// DefaultMaxInsns is the instruction budget of one run unless RunOptions
// says otherwise.
const DefaultMaxInsns = 1 << 30

// RunResult is everything a test run produced.
type RunResult struct {
	// R0 is the program's return value, all 64 bits of it. The kernel
	// reports only the low 32 (Run returns those).
	R0 uint64
	// Data is the output data: the packet after an XDP run, the memory
	// after a raw run.
	Data []byte
	// Context is the context after the run, for types whose context is
	// copied back.
	Context []byte
	// Duration is the mean wall-clock time of one run.
	Duration time.Duration
	// Insns is the number of instructions the last run executed.
	Insns uint64
}

// Run runs the program once (or Repeat times) and returns its return value,
// like cilium/ebpf's Program.Run.
func (p *Program) Run(opts *RunOptions) (uint32, error) {
	res, err := p.test(opts, false)
	if err != nil {
		return 0, err
	}
	return uint32(res.R0), nil
}

// Test runs the program and returns everything the run produced.
func (p *Program) Test(opts *RunOptions) (*RunResult, error) { return p.test(opts, true) }

// test is Test; timed says whether to measure the duration (reading the
// clock twice is a noticeable part of a short run).
func (p *Program) test(opts *RunOptions, timed bool) (*RunResult, error) {
	if opts == nil {
		opts = &RunOptions{}
	}
	// Like the syscall's fdget, the run holds a reference: a handle
	// closed meanwhile cannot free the program under it.
	if !p.isOpen() || !p.tryGet() {
		return nil, errors.Wrap(uapi.EBADF, "program is closed")
	}
	defer p.put()
	if p.trace != nil {
		return p.testRunTracing(opts) // fentry.go
	}
	if p.tp != nil {
		// bpf_prog_test_run_tracing runs fentry, fexit and fmod_ret
		// programs only.
		if opts.Flags != 0 || opts.CPU != 0 {
			return nil, errors.Wrap(uapi.EINVAL, "a test run of a tracing program takes no flags or CPU")
		}
		return nil, errors.Wrap(uapi.EFAULT, "tp_btf programs cannot be test-run: attach them (AttachTracing) and fire their tracepoint (Tracepoint.Fire)")
	}
	if opts.Flags != 0 {
		return nil, errors.Wrapf(uapi.EINVAL, "test run flags %#x are not supported", opts.Flags)
	}
	ctxIn, err := encodeContext(opts.Context)
	if err != nil {
		return nil, err
	}
	cpu, err := p.k.cpu(opts.CPU)
	if err != nil {
		return nil, err
	}
	repeat := opts.Repeat
	if repeat == 0 || p.typ == ebpf.StructOps {
		repeat = 1 // bpf_struct_ops_test_run runs the program once
	}

	// bpf_prog_test_run_syscall and _raw_tp: the context must hold every
	// byte the verifier saw the program read.
	switch p.typ {
	case ebpf.Syscall, ebpf.RawTracepoint, ebpf.Kprobe, ebpf.TracePoint:
		if p.verified != nil && len(ctxIn) < p.verified.MaxCtxOffset {
			return nil, errors.Wrapf(uapi.EINVAL, "a context of %d bytes is shorter than the %d bytes the program reads", len(ctxIn), p.verified.MaxCtxOffset)
		}
	}
	cpu.mu.Lock()
	defer cpu.mu.Unlock()
	cpu.setRunner(opts.Task, p.procPID())
	defer cpu.setCurrent(nil)
	env, err := p.k.prepareRun(cpu, p, opts.Data, ctxIn, opts.ContextOut != nil, opts.Repeat)
	if err != nil {
		return nil, err
	}
	m := cpu.machine
	m.MaxInsns = opts.MaxInsns
	if m.MaxInsns == 0 {
		m.MaxInsns = DefaultMaxInsns
	}
	res := &RunResult{}
	var start time.Time
	if timed {
		start = time.Now()
	}
	// The run is an RCU read-side critical section: nothing it can reach
	// is freed until it ends.
	p.k.rcu.readLock(cpu.ID)
	cpu.runType = p.typ
	for i := uint32(0); i < repeat && err == nil; i++ {
		if p.jit != nil {
			res.R0, err = p.k.runJIT(cpu, p, env.r1, env.r2)
		} else {
			res.R0, err = m.Run(p.code, env.r1, env.r2)
		}
		res.Insns = m.Executed
	}
	cpu.releaseSpinLock()
	cpu.runType = ebpf.UnspecifiedProgram
	p.k.rcu.readUnlock(cpu.ID)
	if err != nil {
		return nil, errors.Wrapf(err, "program %s", p.name)
	}
	if timed {
		res.Duration = time.Since(start) / time.Duration(repeat)
	}
	if res.Data, res.Context, err = env.output(); err != nil {
		return nil, err
	}
	if err := copyOut(opts, res); err != nil {
		return res, err
	}
	return res, nil
}

// runEnv is what prepareRun set up for one test run.
type runEnv struct {
	r1, r2 uint64
	output func() (data, ctx []byte, err error)
}

// runBuffers are a CPU's reusable test-run areas, allocated on first use.
type runBuffers struct {
	xdp   *xdpBuff
	skb   *skBuff
	raw   rawBuffer
	trace roBuffer
}

// rawBuffer is an area that holds raw input bytes at its end, so that a
// program running past them hits the guard page.
type rawBuffer struct {
	start, size uint64
	bytes       []byte
}

// prepareRun sets up cpu for a test run of a program of type typ. ctxOut
// says whether the caller asked for the context back: the kernel gives skb
// programs a context (and so a wire_len) when either direction is asked for.
func (k *Kernel) prepareRun(cpu *CPU, p *Program, data, ctx []byte, ctxOut bool, repeat uint32) (*runEnv, error) {
	cpu.machine.Packet = interp.Packet{}
	switch typ := p.typ; typ {
	case ebpf.SocketFilter, ebpf.SchedCLS, ebpf.SchedACT, ebpf.CGroupSKB:
		return k.prepareSKB(cpu, typ, data, ctx, ctxOut)
	case ebpf.Kprobe, ebpf.TracePoint, ebpf.RawTracepoint:
		return k.prepareTracing(cpu, typ, data, ctx, repeat)
	case ebpf.StructOps:
		return k.prepareStructOpsRun(cpu, p, ctx) // dummyops.go
	case ebpf.SkLookup:
		return k.prepareSkLookup(cpu, data, ctx) // sklookup.go
	case ebpf.XDP:
		if ctx != nil {
			return nil, errors.Wrap(uapi.EINVAL, "an xdp_md context input is not supported yet")
		}
		return k.prepareXDP(cpu, data, p.verified != nil, p.ctxConverted)
	case ebpf.Syscall:
		// bpf_prog_test_run_syscall: context only, run once.
		if len(data) != 0 || repeat > 1 {
			return nil, errors.Wrap(uapi.EINVAL, "syscall programs take a context and no data, and run once")
		}
		if len(ctx) > 0xffff {
			return nil, errors.Wrapf(uapi.EINVAL, "context of %d bytes exceeds U16_MAX", len(ctx))
		}
		addr, buf, err := cpu.run.raw.load(k.mem, ctx)
		if err != nil {
			return nil, err
		}
		return &runEnv{r1: addr, output: func() ([]byte, []byte, error) {
			return nil, append([]byte(nil), buf...), nil
		}}, nil
	default:
		if ctx != nil {
			return nil, errors.Wrap(uapi.EINVAL, "raw programs take data, not a context")
		}
		addr, buf, err := cpu.run.raw.load(k.mem, data)
		if err != nil {
			return nil, err
		}
		return &runEnv{r1: addr, r2: uint64(len(data)), output: func() ([]byte, []byte, error) {
			return append([]byte(nil), buf...), nil, nil
		}}, nil
	}
}

// load copies in to the end of the buffer, growing it if needed, and
// returns its address (0 for no input) and the simulated bytes.
func (b *rawBuffer) load(space *mem.Space, in []byte) (uint64, []byte, error) {
	if len(in) == 0 {
		return 0, nil, nil
	}
	need := uint64(len(in)+7) &^ 7
	if need > b.size {
		size := uint64(mem.PageSize)
		for size < need {
			size *= 2
		}
		start, err := space.Vmalloc(size, mem.PermRW, "bpf_test_run")
		if err != nil {
			return 0, nil, err
		}
		all, err := space.Bytes(start, size)
		if err != nil {
			return 0, nil, err
		}
		if b.size != 0 {
			if err := space.Free(b.start); err != nil {
				return 0, nil, err
			}
		}
		*b = rawBuffer{start: start, size: size, bytes: all}
	}
	// Place the input so that it ends at most 7 bytes before the guard
	// page, starting 8-byte aligned.
	off := b.size - need
	clear(b.bytes)
	buf := b.bytes[off : off+uint64(len(in))]
	copy(buf, in)
	return b.start + off, buf, nil
}

func encodeContext(ctx any) ([]byte, error) {
	switch c := ctx.(type) {
	case nil:
		return nil, nil
	case []byte:
		return c, nil
	}
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.LittleEndian, ctx); err != nil {
		return nil, errors.Wrapf(uapi.EINVAL, "encoding context: %v", err)
	}
	return buf.Bytes(), nil
}

// copyOut fills DataOut and ContextOut the way the kernel's
// bpf_test_finish does: a short DataOut gets what fits, and ENOSPC.
func copyOut(opts *RunOptions, res *RunResult) error {
	if opts.DataOut != nil {
		copy(opts.DataOut, res.Data)
		if len(opts.DataOut) < len(res.Data) {
			return errors.Wrapf(uapi.ENOSPC, "DataOut holds %d bytes, the output has %d", len(opts.DataOut), len(res.Data))
		}
		// Cut to the output's size, as cilium/ebpf cuts it to
		// data_size_out.
		opts.DataOut = opts.DataOut[:len(res.Data)]
	}
	switch out := opts.ContextOut.(type) {
	case nil:
	case []byte:
		copy(out, res.Context)
		if len(out) < len(res.Context) {
			return errors.Wrapf(uapi.ENOSPC, "ContextOut holds %d bytes, the context has %d", len(out), len(res.Context))
		}
	default:
		if err := binary.Read(bytes.NewReader(res.Context), binary.LittleEndian, out); err != nil {
			return errors.Wrapf(uapi.EINVAL, "decoding context: %v", err)
		}
	}
	return nil
}
