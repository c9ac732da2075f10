// Package mapstest helps test map types outside the simulated kernel: a
// stand-in for the maps.Kernel a type sees, with real simulated memory and
// an RCU that tests drive by hand. bpfsim's own map types use it, and so
// can a user writing a map type of their own.
package mapstest

import (
	"sync"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/mem"
)

// Kernel is the part of the simulated kernel a map type sees. Its RCU is
// real enough for concurrent tests: code that plays a program or a syscall
// runs inside Read (an RCU read-side section), and GracePeriod waits for
// every section open when it started before it runs the queued callbacks.
// Tests that want to see memory before the grace period do not call
// GracePeriod.
type Kernel struct {
	space *mem.Space
	pcpu  *mem.Percpu
	cpus  int
	rnd   uint32
	// Immediate runs callbacks inside CallRCU, for benchmarks, where no
	// reader ever outlives its operation.
	Immediate bool

	readers sync.RWMutex // read sections hold it for reading
	mu      sync.Mutex
	pending []func()
}

var _ maps.Kernel = (*Kernel)(nil)

// NewKernel returns a kernel with cpus possible CPUs and a fresh address
// space.
func NewKernel(cpus int) *Kernel {
	s := mem.New()
	return &Kernel{space: s, pcpu: mem.NewPercpu(s, cpus), cpus: cpus, rnd: 0x12345678}
}

func (k *Kernel) Memory() *mem.Space  { return k.space }
func (k *Kernel) NumCPUs() int        { return k.cpus }
func (k *Kernel) Percpu() *mem.Percpu { return k.pcpu }

// CallRCU queues fn until the next GracePeriod (or runs it at once with
// Immediate).
func (k *Kernel) CallRCU(fn func()) {
	if k.Immediate {
		fn()
		return
	}
	k.mu.Lock()
	k.pending = append(k.pending, fn)
	k.mu.Unlock()
}

// Read runs fn inside an RCU read-side section.
func (k *Kernel) Read(fn func()) {
	k.readers.RLock()
	defer k.readers.RUnlock()
	fn()
}

// SetRandom makes the next Random return r.
func (k *Kernel) SetRandom(r uint32) { k.mu.Lock(); k.rnd = r; k.mu.Unlock() }

// PendingCallbacks reports how many callbacks wait for a grace period.
func (k *Kernel) PendingCallbacks() int { k.mu.Lock(); defer k.mu.Unlock(); return len(k.pending) }

// Random is a xorshift32 stream: seeded, so runs repeat themselves. A seed
// set with SetRandom is returned once as is.
func (k *Kernel) Random() uint32 {
	k.mu.Lock()
	defer k.mu.Unlock()
	r := k.rnd
	x := r
	x ^= x << 13
	x ^= x >> 17
	x ^= x << 5
	k.rnd = x
	return r
}

// GracePeriod waits for the read sections open now, then runs the
// callbacks queued before it started. It returns how many ran.
func (k *Kernel) GracePeriod() int {
	k.mu.Lock()
	fns := k.pending
	k.pending = nil
	k.mu.Unlock()
	k.readers.Lock()
	k.readers.Unlock() //nolint:staticcheck // an empty critical section: waiting is the point
	for _, fn := range fns {
		fn()
	}
	return len(fns)
}
