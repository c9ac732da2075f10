package sim

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// rcu models the kernel's RCU as BPF relies on it: a program runs inside a
// read-side critical section (rcu_read_lock around the run), and memory it
// can reach is freed only after a grace period, once every program that was
// running when the memory was unlinked has finished (call_rcu,
// synchronize_rcu).
//
// Each CPU publishes the epoch at which its current program started (0 when
// idle). call_rcu opens a new epoch and queues its callback with it; the
// callback may run once no CPU is still inside a section that began before
// that epoch. Callbacks run when a program exits, when call_rcu is called,
// and in Synchronize.
type rcu struct {
	epoch atomic.Uint64
	cpus  []*atomic.Uint64 // epoch each CPU's current section began in, 0 = idle

	mu sync.Mutex
	// users are the read-side sections of user-space paths (a map lookup
	// copying a value out), which run on no simulated CPU; free holds the
	// idle ones for reuse.
	users, free []*atomic.Uint64
	pending     []rcuCallback
	// ready is process's scratch list of callbacks to run.
	ready []rcuCallback
	// running is true while one goroutine runs callbacks, so that they run
	// in order and never concurrently with each other.
	running bool
	done    *sync.Cond
}

type rcuCallback struct {
	epoch uint64
	fn    func()
	obj   rcuFreer // instead of fn: saves building a closure per free
}

// rcuFreer is an object freed by a callback.
type rcuFreer interface{ rcuFree() }

func (cb rcuCallback) run() {
	if cb.obj != nil {
		cb.obj.rcuFree()
		return
	}
	cb.fn()
}

func newRCU(cpus int) *rcu {
	r := &rcu{cpus: make([]*atomic.Uint64, cpus)}
	for i := range r.cpus {
		r.cpus[i] = new(atomic.Uint64)
	}
	r.epoch.Store(1)
	r.done = sync.NewCond(&r.mu)
	return r
}

// readLock enters cpu's read-side critical section.
func (r *rcu) readLock(cpu int) { r.cpus[cpu].Store(r.epoch.Load()) }

// readUnlock leaves it and runs the callbacks that became safe.
func (r *rcu) readUnlock(cpu int) {
	r.cpus[cpu].Store(0)
	r.process()
}

// readLockUser enters a read-side section for a user-space path and
// returns its slot for readUnlockUser.
func (r *rcu) readLockUser() *atomic.Uint64 {
	r.mu.Lock()
	var slot *atomic.Uint64
	if n := len(r.free); n > 0 {
		slot, r.free = r.free[n-1], r.free[:n-1]
	} else {
		slot = new(atomic.Uint64)
		r.users = append(r.users, slot)
	}
	slot.Store(r.epoch.Load())
	r.mu.Unlock()
	return slot
}

// readUnlockUser leaves a user-space section.
func (r *rcu) readUnlockUser(slot *atomic.Uint64) {
	slot.Store(0)
	r.mu.Lock()
	r.free = append(r.free, slot)
	r.mu.Unlock()
	r.process()
}

// callRCU queues fn to run after a grace period.
func (r *rcu) callRCU(fn func()) { r.queue(rcuCallback{fn: fn}) }

// callRCUObj queues o.rcuFree to run after a grace period.
func (r *rcu) callRCUObj(o rcuFreer) { r.queue(rcuCallback{obj: o}) }

func (r *rcu) queue(cb rcuCallback) {
	r.mu.Lock()
	cb.epoch = r.epoch.Add(1)
	r.pending = append(r.pending, cb)
	r.mu.Unlock()
	r.process()
}

// oldestReader returns the smallest epoch a running section began in. The
// caller holds mu.
func (r *rcu) oldestReader() uint64 {
	oldest := ^uint64(0)
	for _, slots := range [][]*atomic.Uint64{r.cpus, r.users} {
		for _, c := range slots {
			if e := c.Load(); e != 0 && e < oldest {
				oldest = e
			}
		}
	}
	return oldest
}

// process runs, in order, every queued callback whose grace period has
// ended.
func (r *rcu) process() {
	r.mu.Lock()
	if r.running {
		r.mu.Unlock()
		return
	}
	r.running = true
	for {
		oldest := r.oldestReader()
		n := 0
		for n < len(r.pending) && r.pending[n].epoch <= oldest {
			n++
		}
		if n == 0 {
			break
		}
		// Only the goroutine that set running uses ready; pending keeps
		// its array, so that queueing does not allocate either.
		ready := append(r.ready[:0], r.pending[:n]...)
		rest := copy(r.pending, r.pending[n:])
		clear(r.pending[rest:])
		r.pending = r.pending[:rest]
		r.mu.Unlock()
		for _, cb := range ready {
			cb.run()
		}
		clear(ready)
		r.mu.Lock()
		r.ready = ready
	}
	r.running = false
	r.done.Broadcast()
	r.mu.Unlock()
}

// synchronize waits until every callback queued so far has run
// (synchronize_rcu followed by rcu_barrier). It must not be called from
// inside a program run on the same goroutine.
func (r *rcu) synchronize() {
	r.mu.Lock()
	target := r.epoch.Add(1)
	r.mu.Unlock()
	for {
		r.process()
		r.mu.Lock()
		idle := !r.running && (len(r.pending) == 0 || r.pending[0].epoch > target) && r.oldestReader() >= target
		r.mu.Unlock()
		if idle {
			return
		}
		runtime.Gosched()
	}
}

// pendingCallbacks reports how many callbacks wait for a grace period.
func (r *rcu) pendingCallbacks() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}
