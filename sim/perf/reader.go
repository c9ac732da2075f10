// Package perf reads the samples programs write with bpf_perf_event_output
// in a simulated kernel, in the style of github.com/cilium/ebpf/perf: a
// Reader opens a BPF output event with a ring buffer on each CPU, installs
// the events in a perf event array, and returns the records of all rings,
// each CPU's in order.
package perf

import (
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/perfarray"
	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// ErrClosed is returned by Read on a closed Reader, as cilium/ebpf's
// perf.ErrClosed (os.ErrClosed).
var ErrClosed = os.ErrClosed

// Record is a sample or a count of lost samples, as cilium/ebpf's
// perf.Record: CPU, RawSample (with the kernel's padding), LostSamples,
// Remaining.
type Record = perfarray.Record

// Reader reads the records programs write to a perf event array.
type Reader struct {
	array  *sim.Map
	events []*sim.PerfEvent
	rings  []*perfarray.Ring

	// wake gets a token when a ring has a new record (the epoll
	// notification of wakeup_events = 1); closed is closed by Close.
	wake      chan struct{}
	closed    chan struct{}
	closeOnce sync.Once

	// mu serialises Read and Close; pending are the rings left to drain
	// since the last wakeup, pendingErr the deadline that ended the wait,
	// returned once they are empty.
	mu         sync.Mutex
	pending    []int
	pendingErr error
	shut       bool

	deadlineMu sync.Mutex
	deadline   time.Time

	pauseMu sync.Mutex
	paused  bool

	bufferSize int
}

// ReaderOptions control a Reader, as cilium/ebpf's perf.ReaderOptions:
// when its rings wake it.
type ReaderOptions struct {
	// Watermark wakes the reader each time this many more bytes were
	// written to a ring (attr.wakeup_watermark); records below it wait
	// for a later wake-up or the deadline. At most the ring's size.
	Watermark int
	// WakeupEvents wakes the reader every this many samples of a ring
	// (attr.wakeup_events); with neither option, every sample, as
	// cilium/ebpf's default. Not with Watermark.
	WakeupEvents int
	// Overwritable rings are not simulated: EINVAL.
	Overwritable bool
}

// NewReader opens one BPF output event per slot of array (one per CPU),
// each with a ring of at least perCPUBuffer bytes rounded up to a power of
// two of pages, and installs them with array.Put, as cilium/ebpf's
// perf.NewReader does. Each sample wakes a blocked Read.
func NewReader(array *sim.Map, perCPUBuffer int) (*Reader, error) {
	return NewReaderWithOptions(array, perCPUBuffer, ReaderOptions{})
}

// NewReaderWithOptions is NewReader with options.
func NewReaderWithOptions(array *sim.Map, perCPUBuffer int, opts ReaderOptions) (*Reader, error) {
	if perCPUBuffer < 1 {
		return nil, errors.New("perCPUBuffer must be larger than 0")
	}
	switch {
	case opts.Watermark > 0 && opts.WakeupEvents > 0:
		return nil, errors.Wrap(uapi.EINVAL, "WakeupEvents and Watermark cannot both be non-zero")
	case opts.Watermark < 0 || opts.WakeupEvents < 0:
		return nil, errors.Wrap(uapi.EINVAL, "negative Watermark or WakeupEvents")
	case opts.Overwritable:
		return nil, errors.Wrap(uapi.EINVAL, "overwritable perf rings are not simulated by bpfsim yet")
	}
	attr := perfarray.EventAttr{Type: uapi.PERF_TYPE_SOFTWARE, Config: uapi.PERF_COUNT_SW_BPF_OUTPUT, WakeupEvents: uint32(opts.WakeupEvents)}
	if opts.Watermark > 0 {
		attr.Watermark, attr.WakeupWatermark = true, uint32(opts.Watermark)
	} else if attr.WakeupEvents == 0 {
		attr.WakeupEvents = 1
	}
	if array.Type() != ebpf.PerfEventArray {
		return nil, errors.Wrapf(uapi.EINVAL, "map %s is not a perf event array", array)
	}
	k := array.Kernel()
	r := &Reader{
		array:  array,
		wake:   make(chan struct{}, 1),
		closed: make(chan struct{}),
	}
	pages := perfarray.PagesFor(perCPUBuffer)
	n := min(int(array.MaxEntries()), k.NumCPUs())
	for cpu := 0; cpu < n; cpu++ {
		ev, err := k.OpenPerfEvent(attr, cpu, pages)
		if err != nil {
			r.closeEvents()
			return nil, errors.Wrapf(err, "failed to create perf ring for CPU %d", cpu)
		}
		ring := ev.Event().Ring()
		ring.SetWakeup(r.notify)
		r.events = append(r.events, ev)
		r.rings = append(r.rings, ring)
		r.bufferSize = ring.Size()
	}
	if err := r.Resume(); err != nil {
		r.closeEvents()
		return nil, err
	}
	return r, nil
}

// notify is the rings' wakeup: a token, unless one is waiting already.
func (r *Reader) notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *Reader) closeEvents() {
	for _, ev := range r.events {
		ev.Event().Ring().SetWakeup(nil)
		ev.Close()
	}
	r.events, r.rings = nil, nil
}

// BufferSize returns the size in bytes of each per-CPU ring.
func (r *Reader) BufferSize() int { return r.bufferSize }

// SetDeadline sets when Read stops waiting for records: it then returns
// the records already in the rings, then os.ErrDeadlineExceeded. The zero
// time waits for ever; a past time never blocks. It applies from the next
// wait on.
func (r *Reader) SetDeadline(t time.Time) {
	r.deadlineMu.Lock()
	r.deadline = t
	r.deadlineMu.Unlock()
}

// Read returns the next record. Records of one CPU come in the order the
// CPU wrote them; the rings are drained one after the other.
func (r *Reader) Read() (Record, error) {
	var rec Record
	return rec, r.ReadInto(&rec)
}

// ReadInto is Read into rec, reusing its sample buffer.
func (r *Reader) ReadInto(rec *Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.shut {
		return errors.Wrap(ErrClosed, "perf ringbuffer")
	}
	for {
		if len(r.pending) == 0 {
			if err := r.pendingErr; err != nil {
				r.pendingErr = nil
				return err
			}
			err := r.wait()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// Return what is in the rings before the deadline error.
				r.pendingErr = err
			} else if err != nil {
				return err
			}
			for i := len(r.rings) - 1; i >= 0; i-- {
				r.pending = append(r.pending, i)
			}
		}
		i := r.pending[len(r.pending)-1]
		ok, err := r.rings[i].Read(rec)
		if !ok && err == nil {
			r.pending = r.pending[:len(r.pending)-1]
			continue
		}
		rec.CPU = r.events[i].CPU()
		return err
	}
}

// wait blocks until a ring has news, the deadline passes or the Reader
// closes.
func (r *Reader) wait() error {
	r.deadlineMu.Lock()
	deadline := r.deadline
	r.deadlineMu.Unlock()
	var timeout <-chan time.Time
	if !deadline.IsZero() {
		d := time.Until(deadline)
		if d <= 0 {
			select {
			case <-r.wake:
				return nil
			case <-r.closed:
				return errors.Wrap(ErrClosed, "perf ringbuffer")
			default:
				return os.ErrDeadlineExceeded
			}
		}
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-r.wake:
		return nil
	case <-r.closed:
		return errors.Wrap(ErrClosed, "perf ringbuffer")
	case <-timeout:
		return os.ErrDeadlineExceeded
	}
}

// Pause removes the Reader's events from the array: programs writing get
// ENOENT until Resume.
func (r *Reader) Pause() error {
	r.pauseMu.Lock()
	defer r.pauseMu.Unlock()
	if r.events == nil {
		return ErrClosed
	}
	for i := range r.events {
		if err := r.array.Delete(uint32(i)); err != nil && !errors.Is(err, uapi.ENOENT) {
			return errors.Wrapf(err, "couldn't delete event fd for CPU %d", i)
		}
	}
	r.paused = true
	return nil
}

// Resume installs the Reader's events in the array again.
func (r *Reader) Resume() error {
	r.pauseMu.Lock()
	defer r.pauseMu.Unlock()
	if r.events == nil {
		return ErrClosed
	}
	for i, ev := range r.events {
		if err := r.array.Put(uint32(i), uint32(ev.FD())); err != nil {
			return errors.Wrapf(err, "couldn't put event fd %d for CPU %d", ev.FD(), i)
		}
	}
	r.paused = false
	return nil
}

// Close interrupts a blocked Read, which returns ErrClosed, and closes
// the Reader's events. Like cilium/ebpf's reader in the kernel, it does
// not empty the array's slots: they hold their own references on the
// events until the map file that installed them is released.
func (r *Reader) Close() error {
	r.closeOnce.Do(func() { close(r.closed) })
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pauseMu.Lock()
	defer r.pauseMu.Unlock()
	if r.shut {
		return nil
	}
	r.shut = true
	r.closeEvents()
	return nil
}
