package sim

import (
	"encoding/binary"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/perfarray"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Perf events and the perf event helpers (kernel/trace/bpf_trace.c,
// net/core/filter.c): bpf_perf_event_output writes samples to the BPF
// output event of a perf event array slot, bpf_perf_event_read and
// bpf_perf_event_read_value read a counter event.
//
// In the kernel the helper id 25 is a different function per program
// type: bpf_perf_event_output for tracing programs, bpf_xdp_event_output
// for XDP and bpf_skb_event_output for socket filters and tc, the last two
// taking in the flags' upper bits a number of packet bytes to append to
// the sample. The simulated helper tells them apart by its context
// argument (which the verifier proved is the program's context): the XDP
// or skb context of the CPU's test run, or anything else.

// PerfEvent is a user-space handle on a perf event, the fd
// perf_event_open returns. Its FD is what user space writes into a perf
// event array.
type PerfEvent struct {
	k      *Kernel
	proc   *Process
	ev     *perfarray.Event
	fd     int
	closed atomic.Bool
}

// NewPerfEvent opens a BPF output event (PERF_TYPE_SOFTWARE,
// PERF_COUNT_SW_BPF_OUTPUT, sample_type PERF_SAMPLE_RAW) on cpu, with a
// ring buffer of ringPages data pages (a power of two), enabled, waking
// its reader on every sample: what cilium/ebpf's perf reader opens for
// each CPU.
func (k *Kernel) NewPerfEvent(cpu, ringPages int) (*PerfEvent, error) {
	return k.init.NewPerfEvent(cpu, ringPages)
}

// NewPerfEvent is Kernel.NewPerfEvent with the fd in this process.
func (p *Process) NewPerfEvent(cpu, ringPages int) (*PerfEvent, error) {
	return p.OpenPerfEvent(perfarray.EventAttr{Type: uapi.PERF_TYPE_SOFTWARE, Config: uapi.PERF_COUNT_SW_BPF_OUTPUT}, cpu, ringPages)
}

// OpenPerfEvent opens a perf event of any kind on cpu
// (perf_event_open(attr, -1, cpu)). Only BPF output events take ring
// pages; the counter of other events is set with Event().SetCount.
func (k *Kernel) OpenPerfEvent(attr perfarray.EventAttr, cpu int, ringPages int) (*PerfEvent, error) {
	return k.init.OpenPerfEvent(attr, cpu, ringPages)
}

// OpenPerfEvent is Kernel.OpenPerfEvent with the fd in this process.
func (p *Process) OpenPerfEvent(attr perfarray.EventAttr, cpu int, ringPages int) (*PerfEvent, error) {
	// Perf event ids are the machine's, as the kernel numbers them.
	ev, err := perfarray.NewEvent(p.k, attr, cpu, ringPages, p.k.nextPerfID.Add(1))
	if err != nil {
		return nil, err
	}
	p.k.perfEvents.Add(1)
	ev.OnFree(func() { p.k.perfEvents.Add(-1) })
	// The event's file holds the reference NewEvent returned.
	f := p.k.newFile(ev, func(f *file) {
		f.k.openFiles.Add(-1)
		f.obj.(*perfarray.Event).Put()
	})
	fd, err := p.fds.install(f)
	if err != nil {
		p.k.openFiles.Add(-1)
		ev.Put()
		return nil, err
	}
	return &PerfEvent{k: p.k, proc: p, ev: ev, fd: fd}, nil
}

// FD returns the event's simulated file descriptor.
func (e *PerfEvent) FD() int { return e.fd }

// ID returns the event's id, what a PERF_RECORD_LOST names.
func (e *PerfEvent) ID() uint32 { return e.ev.ObjectID() }

// CPU returns the CPU the event is bound to.
func (e *PerfEvent) CPU() int { return e.ev.CPU() }

// Event returns the kernel's event, to set a counter or reach the ring.
func (e *PerfEvent) Event() *perfarray.Event { return e.ev }

// Close closes the fd. Perf event arrays keep their own references: an
// event stays in a slot until the slot is cleared.
func (e *PerfEvent) Close() error {
	if !e.closed.CompareAndSwap(false, true) {
		return nil
	}
	if err := e.proc.fds.close(e.fd); err != nil && !e.proc.fds.isClosed() {
		return err
	}
	return nil
}

// fixupPerfEventArray does what cilium/ebpf's MapSpec.fixupMagicFields
// does for a perf event array: key and value are 4 bytes, and
// max_entries, when 0 or more than the possible CPUs, is the number of
// possible CPUs. It clamps a cpumap's max_entries too (cpumap.go).
func fixupPerfEventArray(spec *ebpf.MapSpec, cpus int) (*ebpf.MapSpec, error) {
	if spec.Type == ebpf.CPUMap {
		return fixupCPUMap(spec, cpus), nil
	}
	if spec.Type != ebpf.PerfEventArray {
		return spec, nil
	}
	if spec.KeySize != 0 && spec.KeySize != 4 {
		return nil, errors.Wrap(uapi.EINVAL, "KeySize must be zero or four for perf event array")
	}
	if spec.ValueSize != 0 && spec.ValueSize != 4 {
		return nil, errors.Wrap(uapi.EINVAL, "ValueSize must be zero or four for perf event array")
	}
	spec = spec.Copy()
	spec.KeySize, spec.ValueSize = 4, 4
	if n := uint32(cpus); spec.MaxEntries == 0 || spec.MaxEntries > n {
		spec.MaxEntries = n
	}
	return spec, nil
}

func (k *Kernel) registerPerfHelpers() {
	for _, h := range []*Helper{
		{ID: uapi.FuncPerfEventOutput, Fn: k.helperPerfEventOutput},
		{ID: uapi.FuncPerfEventRead, Fn: k.helperPerfEventRead},
		{ID: uapi.FuncPerfEventReadValue, Fn: k.helperPerfEventReadValue},
	} {
		if err := k.RegisterHelper(h); err != nil {
			panic(err)
		}
	}
}

// perfMap turns a helper's map argument back into a perf event array.
// The verifier guarantees it; an unverified program that passes anything
// else stops with an error naming the helper.
func (k *Kernel) perfMap(m *interp.Machine, addr uint64) (*maps.Map, error) {
	mp, ok := k.progMap(m, addr)
	if !ok || mp.Attr.Type != uapi.MapTypePerfEventArray {
		return nil, errors.Wrapf(uapi.EFAULT, "pc %d: %s: %#x is not a perf event array",
			m.PC(), uapi.HelperName(m.Program().Insns()[m.PC()].Imm), addr)
	}
	return mp, nil
}

// packetOf returns the packet of the XDP or skb context ctx of this CPU's
// test run: its address and length, and ok false for any other context.
func packetOf(cpu *CPU, ctx uint64) (data uint64, n uint64, ok bool) {
	if x := cpu.run.xdp; x != nil && (ctx == x.ctx || ctx == x.buff) {
		return x.data, x.dataEnd - x.data, true
	}
	if s := cpu.run.skb; s != nil && ctx == s.ctx {
		return s.data, uint64(s.len), true
	}
	return 0, 0, false
}

// helperPerfEventOutput is bpf_perf_event_output(ctx, map, flags, data,
// size) and, for packet programs, bpf_xdp_event_output and
// bpf_skb_event_output.
func (k *Kernel) helperPerfEventOutput(m *interp.Machine, ctx, r2, flags, data, size uint64) (uint64, error) {
	mp, err := k.perfMap(m, r2)
	if err != nil {
		return 0, err
	}
	cpu := k.cpuOf(m)
	var pkt []byte
	if pktAddr, pktLen, ok := packetOf(cpu, ctx); ok {
		if flags&^(uapi.BPF_F_CTXLEN_MASK|uapi.BPF_F_INDEX_MASK) != 0 {
			return errnoRet(uapi.EINVAL), nil
		}
		n := (flags & uapi.BPF_F_CTXLEN_MASK) >> 32
		if n > pktLen {
			return errnoRet(uapi.EFAULT), nil
		}
		if n > 0 {
			if pkt, err = readArg(m, pktAddr, uint32(n), 1); err != nil {
				return 0, err
			}
		}
	} else if flags&^uapi.BPF_F_INDEX_MASK != 0 {
		return errnoRet(uapi.EINVAL), nil
	}
	ev, err := perfarray.OutputTarget(mp, m.CPU, flags)
	if err != nil {
		return ret(err), nil
	}
	if size > 1<<16 {
		// More than a perf record holds (the verifier bounds size by the
		// memory it points to; an unverified program may pass anything).
		return errnoRet(uapi.E2BIG), nil
	}
	var meta []byte
	if size > 0 {
		if meta, err = readArg(m, data, uint32(size), 0); err != nil {
			return 0, err
		}
	}
	return ret(ev.Output(meta, pkt)), nil
}

// helperPerfEventRead is bpf_perf_event_read(map, flags): the counter, or
// -errno, in one u64 ("this api is ugly ... but that's uapi").
func (k *Kernel) helperPerfEventRead(m *interp.Machine, r1, flags, _, _, _ uint64) (uint64, error) {
	mp, err := k.perfMap(m, r1)
	if err != nil {
		return 0, err
	}
	v, _, _, err := perfarray.ReadCounter(mp, m.CPU, flags)
	if err != nil {
		return ret(err), nil
	}
	return v, nil
}

// perfEventValueSize is sizeof(struct bpf_perf_event_value): counter,
// enabled, running.
const perfEventValueSize = 24

// helperPerfEventReadValue is bpf_perf_event_read_value(map, flags, buf,
// size): on any error the buffer is zeroed.
func (k *Kernel) helperPerfEventReadValue(m *interp.Machine, r1, flags, buf, size, _ uint64) (uint64, error) {
	mp, err := k.perfMap(m, r1)
	if err != nil {
		return 0, err
	}
	if uint32(size) > 1<<16 {
		// The verifier bounds size by the buffer; an unverified program
		// may pass anything.
		return 0, errors.Wrapf(uapi.EFAULT, "pc %d: bpf_perf_event_read_value: a %d-byte buffer", m.PC(), uint32(size))
	}
	out := k.cpuOf(m).scratch(1, int(uint32(size)))
	clear(out)
	res := uint64(0)
	if uint32(size) != perfEventValueSize {
		res = errnoRet(uapi.EINVAL)
	} else if v, en, run, err := perfarray.ReadCounter(mp, m.CPU, flags); err != nil {
		res = ret(err)
	} else {
		binary.LittleEndian.PutUint64(out[0:], v)
		binary.LittleEndian.PutUint64(out[8:], en)
		binary.LittleEndian.PutUint64(out[16:], run)
	}
	if f := m.TLB.Write(buf, out); f != nil {
		f.PC = m.PC()
		return 0, f
	}
	return res, nil
}
