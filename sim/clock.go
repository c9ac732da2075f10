package sim

import (
	"sync/atomic"
	"time"
)

// Clock is the simulated kernel's monotonic clock, what bpf_ktime_get_ns
// reads: nanoseconds since boot.
type Clock interface {
	Now() uint64
}

// VirtualClock is a clock that moves only when told to, so that tests of
// time-dependent programs (rate limiters, timeouts) are deterministic. It is
// safe for concurrent use.
type VirtualClock struct{ ns atomic.Uint64 }

// BootTime is where a new VirtualClock starts: one second after boot, so a
// program comparing against a zero timestamp sees time has passed.
const BootTime = uint64(time.Second)

// NewVirtualClock returns a clock reading BootTime.
func NewVirtualClock() *VirtualClock {
	c := &VirtualClock{}
	c.ns.Store(BootTime)
	return c
}

// Now returns the current time in nanoseconds since boot.
func (c *VirtualClock) Now() uint64 { return c.ns.Load() }

// Advance moves the clock forward by d; a negative d is ignored, since the
// clock is monotonic.
func (c *VirtualClock) Advance(d time.Duration) {
	if d > 0 {
		c.ns.Add(uint64(d))
	}
}

// Set moves the clock to ns if that is not in the past.
func (c *VirtualClock) Set(ns uint64) {
	for {
		old := c.ns.Load()
		if ns <= old || c.ns.CompareAndSwap(old, ns) {
			return
		}
	}
}

// WallClock reads the host's monotonic clock, counted from its creation
// plus BootTime.
type WallClock struct{ start time.Time }

// NewWallClock returns a clock that follows real time.
func NewWallClock() *WallClock { return &WallClock{start: time.Now()} }

// Now returns nanoseconds since the simulated boot.
func (c *WallClock) Now() uint64 { return BootTime + uint64(time.Since(c.start)) }
