package ringbuf

import (
	"sync/atomic"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// BPF_MAP_TYPE_USER_RINGBUF (kernel/bpf/ringbuf.c): the same ring the
// other way round. User space produces records, as libbpf's
// user_ring_buffer__reserve and __submit write them into the mapped
// pages; a program consumes them with bpf_user_ringbuf_drain, which calls
// a callback with each record in a local dynptr.

// UserRingbuf is the map type, for a kernel's registry.
var UserRingbuf = &maps.Type{
	ID:         uapi.MapTypeUserRingbuf,
	Name:       "user_ringbuf",
	AllocCheck: allocCheck,
	Alloc:      allocUser,
	MetaEqual:  maps.DefaultMetaEqual,
}

// User is a user ring buffer: a Ring whose producer is user space.
type User struct {
	*Ring
	busy atomic.Int32 // rb->busy: one drain at a time
}

func allocUser(k maps.Kernel, m *maps.Map) (maps.Ops, error) {
	ops, err := alloc(k, m)
	if err != nil {
		return nil, err
	}
	return &User{Ring: ops.(*Ring)}, nil
}

// The user-space producer's errors, as libbpf's user_ring_buffer__reserve
// reports them.
var (
	errTooBig = errors.Wrap(uapi.E2BIG, "the record does not fit in the ring")
	errFull   = errors.Wrap(uapi.ENOSPC, "the ring has no room for the record")
)

// Reserve is user_ring_buffer__reserve: a record of size bytes, busy until
// Submit or Discard, its header written and the producer position moved
// past it; it returns the record's position.
func (u *User) Reserve(size uint32) (uint64, error) {
	total := (uint64(size) + uapi.BPF_RINGBUF_HDR_SZ + 7) &^ 7
	if total > u.Size() || size&(uapi.BPF_RINGBUF_BUSY_BIT|uapi.BPF_RINGBUF_DISCARD_BIT) != 0 {
		return 0, errTooBig
	}
	cons, prod := u.ConsumerPos(), u.ProducerPos()
	if prod-cons+total > u.Size() {
		return 0, errFull
	}
	atomic.StoreUint32(u.hdrLen(prod), size|uapi.BPF_RINGBUF_BUSY_BIT)
	atomic.StoreUint64(u.pos(producerPage), prod+total)
	return prod, nil
}

// Write copies p into the record at pos, from its first byte.
func (u *User) Write(pos uint64, p []byte) {
	for i := 0; i < len(p); {
		at := (pos + uapi.BPF_RINGBUF_HDR_SZ + uint64(i)) & u.mask
		i += mem.StoreBytes(u.data[at:], p[i:])
	}
}

// Submit and Discard are user_ring_buffer__submit and __discard: the
// record at pos is readable, or to be skipped.
func (u *User) Submit(pos uint64)  { u.commit(pos, 0) }
func (u *User) Discard(pos uint64) { u.commit(pos, uapi.BPF_RINGBUF_DISCARD_BIT) }

func (u *User) commit(pos uint64, bit uint32) {
	l := atomic.LoadUint32(u.hdrLen(pos)) &^ uapi.BPF_RINGBUF_BUSY_BIT
	atomic.StoreUint32(u.hdrLen(pos), l|bit)
}

// maxDrained is BPF_MAX_USER_RINGBUF_SAMPLES.
const maxDrained = 128 * 1024

// Drain is bpf_user_ringbuf_drain's loop: visit gets each ready record's
// address and size in turn until it asks to stop, none is ready, or a
// record is malformed (-EINVAL, -E2BIG); discarded records are skipped.
// It returns the records visited, or the errno; EBUSY when another drain
// is under way.
func (u *User) Drain(flags uint64, visit func(addr uint64, size uint32) (stop bool, err error)) (int64, error) {
	if flags&^(uapi.BPF_RB_NO_WAKEUP|uapi.BPF_RB_FORCE_WAKEUP) != 0 {
		return -int64(uapi.EINVAL), nil
	}
	if !u.busy.CompareAndSwap(0, 1) {
		return -int64(uapi.EBUSY), nil
	}
	defer u.busy.Store(0)
	var samples, discarded int64
	for ; samples < maxDrained; samples++ {
		pos, size, errno := u.peek()
		switch errno {
		case 0:
		case uapi.ENODATA:
			return samples - discarded, nil
		case uapi.EAGAIN:
			discarded++
			continue
		default:
			return -int64(errno), nil
		}
		stop, err := visit(u.m.Addr+dataPage*mem.PageSize+(pos+uapi.BPF_RINGBUF_HDR_SZ)&u.mask, size)
		if err != nil {
			return 0, err
		}
		// __bpf_user_ringbuf_sample_release: past the record.
		atomic.StoreUint64(u.pos(consumerPage), pos+(uint64(size)+uapi.BPF_RINGBUF_HDR_SZ+7)&^7)
		if stop {
			samples++
			break
		}
	}
	return samples - discarded, nil
}

// peek is __bpf_user_ringbuf_peek: the next record's position and size,
// or why there is none to visit (ENODATA, EAGAIN after skipping a
// discarded one, EINVAL or E2BIG for one user space wrote wrong).
func (u *User) peek() (pos uint64, size uint32, errno uapi.Errno) {
	cons, prod := u.ConsumerPos(), u.ProducerPos()
	if prod&7 != 0 {
		return 0, 0, uapi.EINVAL
	}
	if cons >= prod {
		return 0, 0, uapi.ENODATA
	}
	l := atomic.LoadUint32(u.hdrLen(cons))
	flags := l & (uapi.BPF_RINGBUF_BUSY_BIT | uapi.BPF_RINGBUF_DISCARD_BIT)
	size = l &^ flags
	total := (uint64(size) + uapi.BPF_RINGBUF_HDR_SZ + 7) &^ 7
	switch {
	case total > prod-cons:
		return 0, 0, uapi.EINVAL
	case total > u.Size(), size > uapi.DynptrMaxSize:
		return 0, 0, uapi.E2BIG
	case flags&uapi.BPF_RINGBUF_DISCARD_BIT != 0:
		atomic.StoreUint64(u.pos(consumerPage), cons+total)
		return 0, 0, uapi.EAGAIN
	case flags&uapi.BPF_RINGBUF_BUSY_BIT != 0:
		return 0, 0, uapi.ENODATA
	}
	return cons, size, 0
}
