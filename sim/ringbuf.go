package sim

import (
	"bytes"
	"encoding/binary"
	"os"
	"sync"
	"time"

	ciliumringbuf "github.com/cilium/ebpf/ringbuf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/maps/ringbuf"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// BPF ring buffers (kernel/bpf/ringbuf.c): bpf_ringbuf_output, reserve,
// submit, discard and query from programs, and a reader for user space
// shaped like cilium/ebpf's ringbuf.Reader. The verifier's reference
// tracking makes a program submit or discard every record it reserved.

func (k *Kernel) registerRingbufHelpers() {
	for _, h := range []*Helper{
		{ID: uapi.FuncRingbufOutput, Fn: k.helperRingbufOutput},
		{ID: uapi.FuncRingbufReserve, Fn: k.helperRingbufReserve},
		{ID: uapi.FuncRingbufSubmit, Fn: k.helperRingbufSubmit},
		{ID: uapi.FuncRingbufDiscard, Fn: k.helperRingbufDiscard},
		{ID: uapi.FuncRingbufQuery, Fn: k.helperRingbufQuery},
		{ID: uapi.FuncUserRingbufDrain, Fn: k.helperUserRingbufDrain},
	} {
		if err := k.RegisterHelper(h); err != nil {
			panic(err)
		}
	}
}

// ringOf turns a helper's map argument back into a ring buffer.
func (k *Kernel) ringOf(m *interp.Machine, addr uint64) (*ringbuf.Ring, error) {
	mp, ok := k.progMap(m, addr)
	if ok {
		if r, ok := mp.Ops.(*ringbuf.Ring); ok {
			return r, nil
		}
	}
	return nil, errors.Wrapf(uapi.EFAULT, "pc %d: %s: %#x is not a ring buffer",
		m.PC(), uapi.HelperName(m.Program().Insns()[m.PC()].Imm), addr)
}

// helperRingbufOutput is bpf_ringbuf_output(ringbuf, data, size, flags):
// 0, or -EAGAIN when the ring is full, -EINVAL for unknown flags.
func (k *Kernel) helperRingbufOutput(m *interp.Machine, r1, data, size, flags, _ uint64) (uint64, error) {
	r, err := k.ringOf(m, r1)
	if err != nil {
		return 0, err
	}
	b, err := readArg(m, data, uint32(size), 1)
	if err != nil {
		return 0, err
	}
	return ret(r.Output(b, flags)), nil
}

// helperRingbufReserve is bpf_ringbuf_reserve(ringbuf, size, flags): the
// address of size bytes to fill, or NULL.
func (k *Kernel) helperRingbufReserve(m *interp.Machine, r1, size, flags, _, _ uint64) (uint64, error) {
	r, err := k.ringOf(m, r1)
	if err != nil {
		return 0, err
	}
	return r.Reserve(size, flags), nil
}

// helperRingbufSubmit is bpf_ringbuf_submit(data, flags).
func (k *Kernel) helperRingbufSubmit(m *interp.Machine, sample, flags, _, _, _ uint64) (uint64, error) {
	return 0, k.commitSample(m, sample, false, flags)
}

// helperRingbufDiscard is bpf_ringbuf_discard(data, flags).
func (k *Kernel) helperRingbufDiscard(m *interp.Machine, sample, flags, _, _, _ uint64) (uint64, error) {
	return 0, k.commitSample(m, sample, true, flags)
}

// commitSample finds a reserved sample's ring as the kernel does, from the
// page offset in its header, and commits the sample; flags may wake its
// readers.
func (k *Kernel) commitSample(m *interp.Machine, sample uint64, discard bool, flags uint64) error {
	base, err := ringbuf.RingOfSample(sample, func(addr uint64, p []byte) error {
		if f := m.TLB.Read(addr, p); f != nil {
			f.PC = m.PC()
			return f
		}
		return nil
	})
	if err != nil {
		return err
	}
	r, err := k.ringOf(m, base)
	if err != nil {
		return err
	}
	return r.Commit(sample, discard, flags)
}

// helperRingbufQuery is bpf_ringbuf_query(ringbuf, flags).
func (k *Kernel) helperRingbufQuery(m *interp.Machine, r1, flags, _, _, _ uint64) (uint64, error) {
	r, err := k.ringOf(m, r1)
	if err != nil {
		return 0, err
	}
	return r.Query(flags), nil
}

// RingbufRecord is a record read from a ring buffer, like cilium/ebpf's
// ringbuf.Record.
type RingbufRecord struct {
	RawSample []byte
	// Remaining is how many bytes are left to read after this record.
	Remaining int
}

// RingbufReader reads a ring buffer map's records in order, like
// cilium/ebpf's ringbuf.Reader. Until SetDeadline is called, Read does
// not block: it returns os.ErrDeadlineExceeded when no record is ready,
// as cilium/ebpf's does once its deadline passed, which is what a test
// driving programs from one goroutine wants. After SetDeadline, Read
// blocks as cilium/ebpf's does over epoll: until a record is ready, a
// commit wakes the ring's readers (bpf_ringbuf_commit's rule: not for
// BPF_RB_NO_WAKEUP, nor, without BPF_RB_FORCE_WAKEUP, for a record the
// reader was not waiting for), the deadline passes (a zero time: never),
// Flush or Close.
type RingbufReader struct {
	h    *Map
	ring *ringbuf.Ring

	mu       sync.Mutex
	blocking bool
	deadline time.Time
	// pending is the error to return once the records a flush or a
	// deadline found are read.
	pending error
	flush   chan struct{} // Flush sends, a blocked Read receives
	closed  chan struct{} // closed by Close
	once    sync.Once
}

// NewRingbufReader reads the ring buffer m; it holds its own handle on
// the map until Close.
func NewRingbufReader(m *Map) (*RingbufReader, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	r, ok := m.m.Ops.(*ringbuf.Ring)
	if !ok {
		return nil, errors.Wrapf(uapi.EINVAL, "map %s is a %s, not a ring buffer", m.m.Name, m.m.Type.Name)
	}
	h, err := m.Clone()
	if err != nil {
		return nil, err
	}
	return &RingbufReader{h: h, ring: r, flush: make(chan struct{}, 1), closed: make(chan struct{})}, nil
}

// SetDeadline makes Read block until t at most; the zero time blocks
// until a record, a flush or Close, as in cilium/ebpf.
func (rd *RingbufReader) SetDeadline(t time.Time) {
	rd.mu.Lock()
	rd.blocking, rd.deadline = true, t
	rd.mu.Unlock()
	// A blocked Read picks up the new deadline.
	rd.ring.WakeReaders()
}

// Read returns the next record. Without a deadline set, it returns
// os.ErrDeadlineExceeded at once if none is ready; with one, it waits
// (see RingbufReader). After a flush it returns the records then ready
// and then ringbuf.ErrFlushed; after Close, os.ErrClosed.
func (rd *RingbufReader) Read() (RingbufRecord, error) {
	for {
		select {
		case <-rd.closed:
			return RingbufRecord{}, errors.Wrap(os.ErrClosed, "ring buffer reader")
		default:
		}
		if err := rd.h.check(); err != nil {
			return RingbufRecord{}, err
		}
		// Registered before looking, so that a record committed
		// after the look wakes the wait.
		wake, done := rd.ring.Wait()
		if s, ok := rd.ring.Consume(); ok {
			done()
			return RingbufRecord{RawSample: s, Remaining: rd.AvailableBytes()}, nil
		}
		rd.mu.Lock()
		blocking, deadline, pending := rd.blocking, rd.deadline, rd.pending
		rd.pending = nil
		rd.mu.Unlock()
		if pending != nil || !blocking {
			done()
			if pending == nil {
				pending = os.ErrDeadlineExceeded
			}
			return RingbufRecord{}, pending
		}
		var timer *time.Timer
		var timeout <-chan time.Time
		if !deadline.IsZero() {
			timer = time.NewTimer(time.Until(deadline))
			timeout = timer.C
		}
		select {
		case <-wake:
		case <-rd.flush:
			rd.setPending(ciliumringbuf.ErrFlushed)
		case <-timeout:
			rd.setPending(os.ErrDeadlineExceeded)
		case <-rd.closed:
		}
		if timer != nil {
			timer.Stop()
		}
		done()
	}
}

// setPending sets the error Read returns once the ready records are read.
func (rd *RingbufReader) setPending(err error) {
	rd.mu.Lock()
	rd.pending = err
	rd.mu.Unlock()
}

// Flush makes a blocked Read return: the records ready then, and then
// ringbuf.ErrFlushed, as cilium/ebpf's Flush does.
func (rd *RingbufReader) Flush() error {
	select {
	case rd.flush <- struct{}{}:
	default: // a flush is already pending
	}
	return nil
}

// ReadRecords decodes every record ready in rd into a T each, as
// encoding/binary reads a little-endian struct: the loop a test or a tool
// writes to collect what a program has sent so far. It stops at the first
// record that does not decode.
func ReadRecords[T any](rd *RingbufReader) ([]T, error) {
	var out []T
	for {
		rec, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		var v T
		if err := binary.Read(bytes.NewReader(rec.RawSample), binary.LittleEndian, &v); err != nil {
			return out, errors.Wrapf(uapi.EINVAL, "record of %d bytes: %v", len(rec.RawSample), err)
		}
		out = append(out, v)
	}
}

// AvailableBytes is how many bytes the producer has written that the
// reader has not consumed.
func (rd *RingbufReader) AvailableBytes() int {
	return int(rd.ring.ProducerPos() - rd.ring.ConsumerPos())
}

// BufferSize is the ring's data size.
func (rd *RingbufReader) BufferSize() int { return int(rd.ring.Size()) }

// Close drops the reader's handle on the map; a blocked Read returns
// os.ErrClosed.
func (rd *RingbufReader) Close() error {
	var err error
	rd.once.Do(func() {
		close(rd.closed)
		err = rd.h.Close()
	})
	return err
}

var _ maps.Ops = (*ringbuf.Ring)(nil)
