package sim

import (
	"math"
	"sync"
	"time"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/arraymap"
	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// bpf_timer (kernel/bpf/helpers.c: bpf_timer_init, bpf_timer_set_callback,
// bpf_timer_start, bpf_timer_cancel, bpf_timer_cb,
// bpf_timer_cancel_and_free). A map value may hold a struct bpf_timer; a
// program initialises it for the map, gives it a callback (a function of
// the program, which the timer then holds a reference on) and arms it. On
// expiry the callback runs on the CPU that armed the timer with the map,
// the element's key and its value.
//
// The state behind a value's timer (the kernel's struct bpf_hrtimer) lives
// here, keyed by the timer field's address; the field itself stays zero,
// which is what user space reads anyway. It goes when the element does
// (an array update, a hash delete or replacement: maps.FreeFields) and
// when the map's last user reference does (map_release_uref), which breaks
// the cycle map -> timer -> program -> map.
//
// Time is the kernel's clock. With the default VirtualClock, timers fire
// when Kernel.AdvanceClock moves the clock past their expiry, each callback
// seeing the clock at its own expiry. With a WallClock they fire by
// themselves, in real time, from a goroutine of the Go runtime's timers;
// RunTimers fires the ones already due at once. The three clocks a timer
// may be initialised with (CLOCK_MONOTONIC, CLOCK_REALTIME,
// CLOCK_BOOTTIME) all read the one simulated clock.

// Timer flags and clock ids (include/uapi/linux/bpf.h, linux/time.h).
const (
	bpfFTimerAbs    = 1 << 0
	bpfFTimerCPUPin = 1 << 1

	clockRealtime  = 0
	clockMonotonic = 1
	clockBoottime  = 7
	maxClocks      = 16
)

// maxTimerFirings bounds the callbacks one AdvanceClock or RunTimers runs:
// a callback that re-arms its timer for now would otherwise never let the
// clock move on.
const maxTimerFirings = 1 << 20

// bpfTimer is struct bpf_hrtimer.
type bpfTimer struct {
	m     *maps.Map
	value uint64 // the value the timer is in
	// prog and fn are the callback: a reference on the program, and the
	// function's address as the program saw it (an interpreter function
	// address, or an A64 address in its image).
	prog *Program
	fn   uint64
	// armed timers fire at expires; seq orders timers with one expiry
	// as they were armed.
	armed   bool
	expires uint64
	seq     uint64
	cpu     int
}

// timerTable holds every initialised timer.
type timerTable struct {
	mu     sync.Mutex
	byAddr map[uint64]*bpfTimer // by the address of the value's bpf_timer
	seq    uint64
	// running is, per CPU, the timer whose callback runs there
	// (hrtimer_running).
	running map[int]*bpfTimer
	// aux maps the address a program's fix-up passes
	// bpf_timer_set_callback in R3 (its prog->aux) to the program.
	aux     map[uint64]*Program
	nextAux uint64
	// queue holds an entry for every start, earliest expiry first; an
	// entry whose timer was started again, cancelled or freed since is
	// stale and skipped (its seq is no longer the timer's).
	queue timerQueue
	armed int // the timers armed
	// bgErr is the first error of a callback fired in the background.
	bgErr error
}

// timerEntry is a timer as one start armed it.
type timerEntry struct {
	tm           *bpfTimer
	expires, seq uint64
}

func (e timerEntry) live() bool { return e.tm.armed && e.tm.seq == e.seq }

// timerQueue is a binary heap of timerEntry by expiry, then by start
// order. (container/heap would box every entry it pushes and pops.)
type timerQueue []timerEntry

func (q timerQueue) less(i, j int) bool {
	return q[i].expires < q[j].expires || q[i].expires == q[j].expires && q[i].seq < q[j].seq
}

func (q *timerQueue) push(e timerEntry) {
	*q = append(*q, e)
	h := *q
	for i := len(h) - 1; i > 0; {
		parent := (i - 1) / 2
		if !h.less(i, parent) {
			break
		}
		h[i], h[parent] = h[parent], h[i]
		i = parent
	}
}

func (q *timerQueue) pop() timerEntry {
	h := *q
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h[last] = timerEntry{}
	h = h[:last]
	*q = h
	h.down(0)
	return top
}

func (q timerQueue) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(q) {
			return
		}
		m := l
		if r := l + 1; r < len(q) && q.less(r, l) {
			m = r
		}
		if !q.less(m, i) {
			return
		}
		q[i], q[m] = q[m], q[i]
		i = m
	}
}

// init restores the heap order of the whole queue.
func (q timerQueue) init() {
	for i := len(q)/2 - 1; i >= 0; i-- {
		q.down(i)
	}
}

// arm arms tm to fire at expires; the caller holds t.mu.
func (t *timerTable) arm(tm *bpfTimer, expires uint64, cpu int) {
	if !tm.armed {
		t.armed++
	}
	t.seq++
	tm.armed, tm.expires, tm.seq, tm.cpu = true, expires, t.seq, cpu
	t.queue.push(timerEntry{tm, expires, tm.seq})
	// A timer started again and again before it fires leaves stale
	// entries: drop them once they outnumber the live ones.
	if len(t.queue) > 64 && len(t.queue) > 4*t.armed {
		live := t.queue[:0]
		for _, e := range t.queue {
			if e.live() {
				live = append(live, e)
			}
		}
		clear(t.queue[len(live):])
		t.queue = live
		t.queue.init()
	}
}

// disarm disarms tm; the caller holds t.mu.
func (t *timerTable) disarm(tm *bpfTimer) {
	if tm.armed {
		tm.armed = false
		t.armed--
	}
}

// progAuxBase is where bpfsim places the prog->aux addresses it hands out:
// in the kernel's direct map, one 1 KiB slot each.
const progAuxBase = 0xffff_8881_0000_0000

// newProgAux gives p the address of its struct bpf_prog_aux.
func (k *Kernel) newProgAux(p *Program) uint64 {
	t := &k.timers
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.aux == nil {
		t.aux = map[uint64]*Program{}
	}
	addr := progAuxBase + t.nextAux*0x400
	t.nextAux++
	t.aux[addr] = p
	return addr
}

// dropProgAux forgets the address of a program being freed.
func (k *Kernel) dropProgAux(addr uint64) {
	if addr == 0 {
		return
	}
	t := &k.timers
	t.mu.Lock()
	delete(t.aux, addr)
	t.mu.Unlock()
}

func (k *Kernel) registerTimerHelpers() {
	for _, h := range []*Helper{
		{ID: uapi.FuncTimerInit, Proto: verifier.HelperProtos[uapi.FuncTimerInit], Fn: k.helperTimerInit},
		{ID: uapi.FuncTimerSetCallback, Proto: verifier.HelperProtos[uapi.FuncTimerSetCallback], Fn: k.helperTimerSetCallback},
		{ID: uapi.FuncTimerStart, Proto: verifier.HelperProtos[uapi.FuncTimerStart], Fn: k.helperTimerStart},
		{ID: uapi.FuncTimerCancel, Proto: verifier.HelperProtos[uapi.FuncTimerCancel], Fn: k.helperTimerCancel},
	} {
		if err := k.RegisterHelper(h); err != nil {
			panic(err) // the ids are unique
		}
	}
}

// helperTimerInit is bpf_timer_init(timer, map, flags).
func (k *Kernel) helperTimerInit(m *interp.Machine, timer, mapAddr, flags, _, _ uint64) (uint64, error) {
	if clock := flags & (maxClocks - 1); flags >= maxClocks ||
		(clock != clockMonotonic && clock != clockRealtime && clock != clockBoottime) {
		return errnoRet(uapi.EINVAL), nil
	}
	mp, err := k.helperMap(m, mapAddr)
	if err != nil {
		return 0, err
	}
	off, ok := mp.Timer()
	if !ok || timer < uint64(off) {
		return 0, errors.Wrapf(uapi.EFAULT, "pc %d: bpf_timer_init: map %s holds no timer", m.PC(), mp.Name)
	}
	t := &k.timers
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byAddr[timer] != nil {
		return errnoRet(uapi.EBUSY), nil
	}
	if _, users := mp.Refs(); users == 0 {
		// Only a map user space holds (or has pinned) may hold timers.
		return errnoRet(uapi.EPERM), nil
	}
	if t.byAddr == nil {
		t.byAddr = map[uint64]*bpfTimer{}
	}
	t.byAddr[timer] = &bpfTimer{m: mp, value: timer - uint64(off)}
	return 0, nil
}

// helperTimerSetCallback is bpf_timer_set_callback(timer, callback_fn,
// aux): aux is the program's, which the verifier's fix-up loads into R3.
func (k *Kernel) helperTimerSetCallback(m *interp.Machine, timer, fn, aux, _, _ uint64) (uint64, error) {
	t := &k.timers
	t.mu.Lock()
	defer t.mu.Unlock()
	tm := t.byAddr[timer]
	if tm == nil {
		return errnoRet(uapi.EINVAL), nil
	}
	if _, users := tm.m.Refs(); users == 0 {
		return errnoRet(uapi.EPERM), nil
	}
	prog := t.aux[aux]
	if prog == nil {
		return 0, errors.Wrapf(uapi.EFAULT, "pc %d: bpf_timer_set_callback: r3=%#x is no program's aux (unverified programs cannot set timer callbacks)", m.PC(), aux)
	}
	if tm.prog != prog {
		if !prog.tryGet() {
			return errnoRet(uapi.ENOENT), nil
		}
		if tm.prog != nil {
			tm.prog.put()
		}
		tm.prog = prog
	}
	tm.fn = fn
	return 0, nil
}

// helperTimerStart is bpf_timer_start(timer, nsecs, flags).
func (k *Kernel) helperTimerStart(m *interp.Machine, timer, nsecs, flags, _, _ uint64) (uint64, error) {
	if flags&^(bpfFTimerAbs|bpfFTimerCPUPin) != 0 {
		return errnoRet(uapi.EINVAL), nil
	}
	t := &k.timers
	t.mu.Lock()
	defer t.mu.Unlock()
	tm := t.byAddr[timer]
	if tm == nil || tm.prog == nil {
		return errnoRet(uapi.EINVAL), nil
	}
	// ktime_t is signed: a time past its end never comes.
	at := uint64(math.MaxInt64)
	switch now := k.clock.Now(); {
	case flags&bpfFTimerAbs != 0:
		at = min(nsecs, at)
	case nsecs <= at-now:
		at = now + nsecs
	}
	t.arm(tm, at, m.CPU)
	if _, wall := k.clock.(*WallClock); wall {
		// Real time: the timer fires by itself.
		var d time.Duration
		if now := k.clock.Now(); at > now {
			d = time.Duration(min(at-now, math.MaxInt64))
		}
		time.AfterFunc(d, k.runTimersInBackground)
	}
	return 0, nil
}

// helperTimerCancel is bpf_timer_cancel(timer): 1 if the timer was armed,
// 0 if not. The callback is dropped either way, so the timer needs a new
// one before it can be started again.
func (k *Kernel) helperTimerCancel(m *interp.Machine, timer, _, _, _, _ uint64) (uint64, error) {
	t := &k.timers
	t.mu.Lock()
	tm := t.byAddr[timer]
	if tm == nil {
		t.mu.Unlock()
		return errnoRet(uapi.EINVAL), nil
	}
	if t.running[m.CPU] == tm {
		// The callback cancelling its own timer would wait for itself.
		t.mu.Unlock()
		return errnoRet(uapi.EDEADLK), nil
	}
	prog := tm.prog
	tm.prog, tm.fn = nil, 0
	was := tm.armed
	t.disarm(tm)
	t.mu.Unlock()
	if prog != nil {
		prog.put()
	}
	if was {
		return 1, nil
	}
	return 0, nil
}

// FreeFields is bpf_obj_free_fields for a value of m: its timer is
// cancelled and forgotten (bpf_timer_cancel_and_free).
func (k *Kernel) FreeFields(m *maps.Map, value uint64) {
	off, ok := m.Timer()
	if !ok {
		return
	}
	t := &k.timers
	t.mu.Lock()
	tm := t.byAddr[value+uint64(off)]
	if tm != nil {
		delete(t.byAddr, value+uint64(off))
		t.disarm(tm)
	}
	t.mu.Unlock()
	tm.free()
}

// FreeTimers cancels and forgets every timer in m's values.
func (k *Kernel) FreeTimers(m *maps.Map) {
	t := &k.timers
	t.mu.Lock()
	var gone []*bpfTimer
	for addr, tm := range t.byAddr {
		if tm.m == m {
			gone = append(gone, tm)
			delete(t.byAddr, addr)
			t.disarm(tm)
		}
	}
	t.mu.Unlock()
	for _, tm := range gone {
		tm.free()
	}
}

// free drops the program of a timer no one can reach any more, which its
// table has disarmed.
func (tm *bpfTimer) free() {
	if tm == nil {
		return
	}
	if tm.prog != nil {
		tm.prog.put()
		tm.prog = nil
	}
}

// ArmedTimers returns how many timers are armed.
func (k *Kernel) ArmedTimers() int {
	t := &k.timers
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.armed
}

// AdvanceClock moves the kernel's VirtualClock forward by d and runs the
// callback of every timer that expires on the way, in order of expiry
// (timers armed by the callbacks included), with the clock reading each
// timer's expiry while its callback runs. It returns the callbacks run,
// and the first error a callback's run met (a fault; the other timers
// still fire). A kernel with another clock gets EINVAL.
func (k *Kernel) AdvanceClock(d time.Duration) (int, error) {
	vc, ok := k.clock.(*VirtualClock)
	if !ok {
		return 0, errors.Wrap(uapi.EINVAL, "AdvanceClock needs the kernel's clock to be a VirtualClock")
	}
	until := vc.Now()
	if d > 0 {
		until += uint64(d)
	}
	n, err := k.fireTimers(until, vc)
	vc.Set(until)
	return n, err
}

// RunTimers runs the callbacks of the timers due at the clock's current
// time, as AdvanceClock(0) does; with a WallClock it is how timers fire.
func (k *Kernel) RunTimers() (int, error) {
	vc, _ := k.clock.(*VirtualClock)
	return k.fireTimers(k.clock.Now(), vc)
}

// runTimersInBackground is RunTimers for a timer of a WallClock kernel
// that came due. A callback's run that fails is kept for TimerError.
func (k *Kernel) runTimersInBackground() {
	if _, err := k.RunTimers(); err != nil {
		t := &k.timers
		t.mu.Lock()
		if t.bgErr == nil {
			t.bgErr = err
		}
		t.mu.Unlock()
	}
}

// TimerError returns the first error a timer callback met when it fired
// by itself (a WallClock kernel's timers), if any.
func (k *Kernel) TimerError() error {
	t := &k.timers
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.bgErr
}

// fireTimers fires timers due by until, earliest first.
func (k *Kernel) fireTimers(until uint64, vc *VirtualClock) (int, error) {
	var first error
	for n := 0; ; n++ {
		if n == maxTimerFirings {
			return n, errors.Wrapf(uapi.ELOOP, "%d timer callbacks ran without the clock reaching %d", n, until)
		}
		tm, prog, fn := k.nextTimer(until)
		if tm == nil {
			return n, first
		}
		if vc != nil {
			vc.Set(tm.expires)
		}
		if err := k.runTimerCallback(tm, prog, fn); err != nil && first == nil {
			first = err
		}
	}
}

// nextTimer disarms and returns the armed timer that expires first by
// until, with a reference on its program for the callback's run.
func (k *Kernel) nextTimer(until uint64) (*bpfTimer, *Program, uint64) {
	t := &k.timers
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.queue) > 0 && !t.queue[0].live() {
		t.queue.pop()
	}
	if len(t.queue) == 0 || t.queue[0].expires > until {
		return nil, nil, 0
	}
	next := t.queue.pop().tm
	t.disarm(next)
	if next.prog == nil || !next.prog.tryGet() {
		return next, nil, 0
	}
	return next, next.prog, next.fn
}

// runTimerCallback is bpf_timer_cb: the callback runs on the CPU that
// armed the timer, with the map, the element's key and the value.
func (k *Kernel) runTimerCallback(tm *bpfTimer, prog *Program, fn uint64) error {
	if prog == nil {
		return nil
	}
	defer prog.put()
	c, err := k.cpu(uint32(tm.cpu))
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &k.timers
	t.mu.Lock()
	if t.running == nil {
		t.running = map[int]*bpfTimer{}
	}
	t.running[c.ID] = tm
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.running, c.ID)
		t.mu.Unlock()
	}()

	key := tm.value - roundUp8(uint64(tm.m.KeySize))
	if tm.m.Attr.Type == uapi.MapTypeArray {
		// The index, in a variable on the kernel's stack.
		slot, err := c.pushHelperSlot(k)
		if err != nil {
			return err
		}
		defer c.popHelperSlot()
		elemSize := roundUp8(uint64(tm.m.ValueSize))
		idx := (tm.value - tm.m.Addr - arraymap.ValueOffset) / elemSize
		if f := c.machine.TLB.Store32(slot, idx); f != nil {
			return f
		}
		key = slot
	}
	m := c.machine
	m.MaxInsns, m.Packet = DefaultMaxInsns, interp.Packet{}
	k.rcu.readLock(c.ID)
	defer k.rcu.readUnlock(c.ID)
	defer c.releaseSpinLock()
	if start, ok := interp.FuncStart(fn); ok {
		code, err := prog.interpCode()
		if err != nil {
			return err
		}
		_, err = m.RunFunc(code, start, tm.m.Addr, key, tm.value)
		return errors.Wrapf(err, "timer callback of program %s", prog.name)
	}
	if prog.jit == nil {
		return errors.Wrapf(uapi.EFAULT, "timer callback %#x of program %s is no function", fn, prog.name)
	}
	_, err = k.runJITAt(c, prog, fn, tm.m.Addr, key, tm.value)
	return errors.Wrapf(err, "timer callback of program %s", prog.name)
}

func roundUp8(n uint64) uint64 { return (n + 7) &^ 7 }
