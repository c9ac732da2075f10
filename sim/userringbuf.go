package sim

import (
	"sync"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps/ringbuf"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// User ring buffers (BPF_MAP_TYPE_USER_RINGBUF, kernel/bpf/ringbuf.c):
// user space writes records, as libbpf's user_ring_buffer API writes them
// into the mapped ring, and a program drains them with
// bpf_user_ringbuf_drain, whose callback gets each record in a dynptr.

// drainDynptrs is the memory of the dynptrs bpf_user_ringbuf_drain hands
// its callbacks, one per CPU (the kernel's is on its stack): made on first
// use.
type drainDynptrs struct {
	once sync.Once
	addr uint64
	err  error
}

// drainDynptr returns the address of CPU cpu's dynptr.
func (k *Kernel) drainDynptr(cpu int) (uint64, error) {
	d := &k.drainDynptrs
	d.once.Do(func() {
		d.addr, d.err = k.mem.Alloc(uint64(len(k.cpus))*uapi.DynptrSize, mem.AllocOptions{
			Region: mem.RegionVmalloc, Perm: mem.PermRW, Name: "bpf_user_ringbuf_drain dynptrs",
		})
	})
	return d.addr + uint64(cpu)*uapi.DynptrSize, d.err
}

// helperUserRingbufDrain is bpf_user_ringbuf_drain(map, callback_fn,
// callback_ctx, flags): the callback runs with each ready record in a
// local dynptr, and callback_ctx, until it returns 1 or no record is
// ready; the result is the records drained (discarded ones not counted),
// or -EINVAL for flags or a malformed record, -E2BIG for one too large,
// -EBUSY when another drain is under way.
func (k *Kernel) helperUserRingbufDrain(m *interp.Machine, r1, fn, ctx, flags, _ uint64) (uint64, error) {
	var u *ringbuf.User
	if mp, ok := k.progMap(m, r1); ok {
		u, _ = mp.Ops.(*ringbuf.User)
	}
	if u == nil {
		return 0, errors.Wrapf(uapi.EFAULT, "pc %d: bpf_user_ringbuf_drain: %#x is not a user ring buffer", m.PC(), r1)
	}
	call, err := k.callback(m, fn)
	if err != nil {
		return 0, err
	}
	slot, err := k.drainDynptr(m.CPU)
	if err != nil {
		return 0, err
	}
	n, err := u.Drain(flags, func(addr uint64, size uint32) (bool, error) {
		if err := storeDynptr(m, slot, newDynptr(addr, uapi.DynptrTypeLocal, size)); err != nil {
			return false, err
		}
		ret, err := call(slot, ctx, 0, 0)
		return ret != 0, err
	})
	return uint64(n), err
}

// UserRingbufWriter writes records into a user ring buffer map, as
// libbpf's struct user_ring_buffer does through the mapped ring.
type UserRingbufWriter struct {
	h    *Map
	ring *ringbuf.User
}

// NewUserRingbufWriter writes into the user ring buffer m; it holds its
// own handle on the map until Close.
func NewUserRingbufWriter(m *Map) (*UserRingbufWriter, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	u, ok := m.m.Ops.(*ringbuf.User)
	if !ok {
		return nil, errors.Wrapf(uapi.EINVAL, "map %s is a %s, not a user ring buffer", m.m.Name, m.m.Type.Name)
	}
	h, err := m.Clone()
	if err != nil {
		return nil, err
	}
	return &UserRingbufWriter{h: h, ring: u}, nil
}

// UserRingbufRecord is a record reserved in a user ring buffer: busy, so
// that a drain stops before it, until submitted or discarded.
type UserRingbufRecord struct {
	ring *ringbuf.User
	pos  uint64
	size uint32
}

// Reserve is user_ring_buffer__reserve: a busy record of size bytes, or
// E2BIG for one the ring cannot hold, ENOSPC when it has no room now.
func (w *UserRingbufWriter) Reserve(size uint32) (UserRingbufRecord, error) {
	if err := w.h.check(); err != nil {
		return UserRingbufRecord{}, err
	}
	pos, err := w.ring.Reserve(size)
	if err != nil {
		return UserRingbufRecord{}, err
	}
	return UserRingbufRecord{ring: w.ring, pos: pos, size: size}, nil
}

// Write copies p into the record, up to its size.
func (r UserRingbufRecord) Write(p []byte) { r.ring.Write(r.pos, p[:min(len(p), int(r.size))]) }

// Submit makes the record readable by a drain; Discard makes drains skip
// it (user_ring_buffer__submit and __discard).
func (r UserRingbufRecord) Submit()  { r.ring.Submit(r.pos) }
func (r UserRingbufRecord) Discard() { r.ring.Discard(r.pos) }

// Close drops the writer's handle on the map.
func (w *UserRingbufWriter) Close() error { return w.h.Close() }
