package perfarray

import (
	"fmt"
	"sync/atomic"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// EventAttr is the part of struct perf_event_attr that BPF looks at.
type EventAttr struct {
	// Type and Config name the event: PERF_TYPE_SOFTWARE with
	// PERF_COUNT_SW_BPF_OUTPUT is the event bpf_perf_event_output
	// writes to; anything else is a counter.
	Type   uint32
	Config uint64
	// Inherit makes the event count child tasks too; such an event cannot
	// be read from atomic context, so perf event arrays refuse it.
	Inherit bool
	// Pinned events must be running on the CPU that reads them.
	Pinned bool
	// Disabled events are created off (not scheduled on their CPU).
	Disabled bool
	// When a BPF output event's ring wakes its reader: every
	// WakeupEvents samples (attr.wakeup_events), or, with Watermark
	// set, each time WakeupWatermark more bytes were written
	// (attr.watermark, attr.wakeup_watermark). Either way the kernel
	// also wakes it each time half the ring more was written, unless a
	// smaller watermark says otherwise. All zero: only at half rings.
	WakeupEvents    uint32
	Watermark       bool
	WakeupWatermark uint32
}

// IsBPFOutput reports whether attr describes a BPF output event.
func (a EventAttr) IsBPFOutput() bool {
	return a.Type == uapi.PERF_TYPE_SOFTWARE && a.Config == uapi.PERF_COUNT_SW_BPF_OUTPUT
}

// Event is a simulated perf event (struct perf_event) bound to one CPU, as
// perf_event_open(attr, pid=-1, cpu) makes it. A BPF output event owns a
// ring buffer that bpf_perf_event_output writes samples to; any event is a
// counter that bpf_perf_event_read reads, whose value the simulation sets.
//
// An Event is a maps.Object: a perf event array slot holds a reference on
// it, as the kernel's holds a reference on the event's file. The last Put
// frees the ring.
type Event struct {
	id   uint32
	attr EventAttr
	cpu  int
	ring *Ring // nil for counters

	refs    atomic.Int64
	enabled atomic.Bool
	// The counter and its times (perf_event_read_local's value, enabled
	// and running), set by the simulation.
	count, timeEnabled, timeRunning atomic.Uint64
	// onFree runs after the last reference goes and the ring is freed.
	onFree func()
}

// OnFree sets a function to run when the event is freed: the kernel
// counts its live objects with it.
func (e *Event) OnFree(fn func()) { e.onFree = fn }

var _ maps.Object = (*Event)(nil)

// NewEvent creates an event on cpu with one reference, held by the caller.
// A BPF output event needs a ring of ringPages data pages (a power of two,
// as perf_mmap requires); other events take none (0).
func NewEvent(k maps.Kernel, attr EventAttr, cpu int, ringPages int, id uint32) (*Event, error) {
	if cpu < 0 || cpu >= k.NumCPUs() {
		// perf_event_open on a CPU that does not exist.
		return nil, errors.Wrapf(uapi.ENODEV, "CPU %d does not exist (%d CPUs)", cpu, k.NumCPUs())
	}
	e := &Event{id: id, attr: attr, cpu: cpu}
	switch {
	case attr.IsBPFOutput():
		r, err := newRing(k, ringPages)
		if err != nil {
			return nil, err
		}
		r.setWakeups(attr)
		e.ring = r
	case ringPages != 0:
		return nil, errors.Wrap(uapi.EINVAL, "only BPF output events are given a ring buffer by bpfsim")
	}
	e.refs.Store(1)
	e.enabled.Store(!attr.Disabled)
	return e, nil
}

// Get takes a reference.
func (e *Event) Get() { e.refs.Add(1) }

// Put drops a reference; the last frees the ring. Perf event arrays drop
// theirs after a grace period, so no program is writing to it by then.
func (e *Event) Put() {
	switch n := e.refs.Add(-1); {
	case n == 0:
		if e.ring != nil {
			e.ring.free()
		}
		if e.onFree != nil {
			e.onFree()
		}
	case n < 0:
		panic(fmt.Sprintf("perf event %d: reference count went negative", e.id))
	}
}

// Refs returns the reference count.
func (e *Event) Refs() int64 { return e.refs.Load() }

// ObjectID returns the event's id.
func (e *Event) ObjectID() uint32 { return e.id }

// Attr returns the event's attributes.
func (e *Event) Attr() EventAttr { return e.attr }

// CPU returns the CPU the event is bound to.
func (e *Event) CPU() int { return e.cpu }

// Ring returns a BPF output event's ring buffer, nil for a counter.
func (e *Event) Ring() *Ring { return e.ring }

// Enable and Disable switch the event on and off (PERF_EVENT_IOC_ENABLE,
// _DISABLE). A disabled event is not on any CPU.
func (e *Event) Enable()  { e.enabled.Store(true) }
func (e *Event) Disable() { e.enabled.Store(false) }

// onCPU is event->oncpu: the CPU the event is scheduled on, -1 if off.
func (e *Event) onCPU() int {
	if e.enabled.Load() {
		return e.cpu
	}
	return -1
}

// SetCount sets the counter value a read returns; SetTimes the times
// enabled and running (which differ when the PMU multiplexes).
func (e *Event) SetCount(v uint64) { e.count.Store(v) }
func (e *Event) AddCount(n uint64) { e.count.Add(n) }
func (e *Event) SetTimes(enabled, running uint64) {
	e.timeEnabled.Store(enabled)
	e.timeRunning.Store(running)
}

// ReadLocal is perf_event_read_local: the counter and its times, read on
// cpu, under the rules of reading from atomic context.
func (e *Event) ReadLocal(cpu int) (value, enabled, running uint64, err error) {
	switch {
	case e.attr.Inherit:
		return 0, 0, 0, errors.Wrap(uapi.EOPNOTSUPP, "an inherited event cannot be read locally")
	case e.cpu != cpu:
		return 0, 0, 0, errors.Wrapf(uapi.EINVAL, "event is bound to CPU %d, read on CPU %d", e.cpu, cpu)
	case e.attr.Pinned && e.onCPU() != cpu:
		return 0, 0, 0, errors.Wrap(uapi.EBUSY, "pinned event is not running on this CPU")
	}
	return e.count.Load(), e.timeEnabled.Load(), e.timeRunning.Load(), nil
}

// Output is perf_event_output for a BPF output event that OutputTarget
// chose: a sample whose raw data is the concatenation of frags.
func (e *Event) Output(frags ...[]byte) error {
	if e.ring == nil {
		return errors.Wrap(uapi.EINVAL, "event is not a BPF output event")
	}
	return e.ring.output(uint64(e.id), frags...)
}
