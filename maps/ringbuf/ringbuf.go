// Package ringbuf simulates BPF_MAP_TYPE_RINGBUF (kernel/bpf/ringbuf.c):
// one ring of records shared by every CPU, which programs fill with
// bpf_ringbuf_output and user space drains in order.
//
// The ring is the kernel's: a power-of-two data area behind a consumer
// position and a producer position that only grow; each record is an
// 8-byte header (its length, with a busy and a discard bit, and its page
// offset) and its bytes, padded to 8, written across the end of the area
// as the kernel's double mapping of the data pages lets it. A record is
// refused (EAGAIN) when it would take the producer more than the ring's
// size past the consumer, or past the oldest record not yet committed.
// Everything lives in simulated memory, laid out as struct bpf_ringbuf:
// a page of fields, the consumer position's page, the producer
// position's page, then the data.
package ringbuf

import (
	"encoding/binary"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Layout of struct bpf_ringbuf, in pages.
const (
	consumerPage = 1
	producerPage = 2
	dataPage     = 3
)

// Ringbuf is the map type, for a kernel's registry.
var Ringbuf = &maps.Type{
	ID:         uapi.MapTypeRingbuf,
	Name:       "ringbuf",
	AllocCheck: allocCheck,
	Alloc:      alloc,
	MetaEqual:  maps.DefaultMetaEqual,
}

// allocCheck is ringbuf_map_alloc's check: no key, no value, and a data
// size (max_entries) that is a power of two and a whole number of pages.
// (Every such 32-bit size is below RINGBUF_MAX_DATA_SZ; the simulated
// memory limit refuses the large ones with ENOMEM.)
func allocCheck(attr *maps.Attr) error {
	n := uint64(attr.MaxEntries)
	switch {
	case attr.Flags&^uapi.BPF_F_NUMA_NODE != 0:
		return errors.Wrapf(uapi.EINVAL, "ring buffer map_flags %#x include unsupported flags", attr.Flags)
	case attr.KeySize != 0 || attr.ValueSize != 0 || n&(n-1) != 0 || n%mem.PageSize != 0 || n == 0:
		return errors.Wrapf(uapi.EINVAL, "a ring buffer has no key or value and a power-of-two size of whole pages (got %d, %d, %d)",
			attr.KeySize, attr.ValueSize, attr.MaxEntries)
	}
	return nil
}

// Ring is struct bpf_ringbuf.
type Ring struct {
	m    *maps.Map
	k    maps.Kernel
	mask uint64
	mu   spinLock // rb->spinlock, for producers
	meta []byte   // the three header pages
	data []byte
	pend uint64 // pending_pos: the oldest record maybe not committed

	// Readers waiting for records (rb->waitq): a wake-up closes wake
	// and makes another. waiters counts them, so that commits with
	// nobody waiting take no lock.
	wakeMu  sync.Mutex
	wake    chan struct{}
	waiters atomic.Int32
}

func alloc(k maps.Kernel, m *maps.Map) (maps.Ops, error) {
	size := uint64(m.MaxEntries)
	// The data pages are mapped twice in a row, as the kernel vmaps them,
	// so that a record reserved across the end of the data is one range
	// of addresses for the program that fills it.
	addr, err := k.Memory().Alloc(dataPage*mem.PageSize+size, mem.AllocOptions{
		Region: mem.RegionVmalloc, Perm: mem.PermRW, Name: "bpf_ringbuf", Mirror: size,
	})
	if err != nil {
		return nil, err
	}
	m.Addr = addr
	all, err := k.Memory().Bytes(addr, dataPage*mem.PageSize+size)
	if err != nil {
		k.Memory().Free(addr)
		return nil, err
	}
	return &Ring{m: m, k: k, mask: size - 1, meta: all[:dataPage*mem.PageSize], data: all[dataPage*mem.PageSize:]}, nil
}

// pos returns the consumer or producer position word.
func (r *Ring) pos(page int) *uint64 {
	return (*uint64)(unsafe.Pointer(&r.meta[page*mem.PageSize]))
}

// ConsumerPos and ProducerPos are the positions, as user space reads
// them from the mapped pages.
func (r *Ring) ConsumerPos() uint64 { return atomic.LoadUint64(r.pos(consumerPage)) }
func (r *Ring) ProducerPos() uint64 { return atomic.LoadUint64(r.pos(producerPage)) }

// Size is the data area's size.
func (r *Ring) Size() uint64 { return r.mask + 1 }

// hdrLen is the length word of the record header at pos.
func (r *Ring) hdrLen(pos uint64) *uint32 {
	return (*uint32)(unsafe.Pointer(&r.data[pos&r.mask]))
}

// Output is bpf_ringbuf_output: reserve a record, copy data in, commit.
// A full ring is EAGAIN; unknown flags EINVAL.
func (r *Ring) Output(data []byte, flags uint64) error {
	if flags&^(uapi.BPF_RB_NO_WAKEUP|uapi.BPF_RB_FORCE_WAKEUP) != 0 {
		return errors.Wrapf(uapi.EINVAL, "ring buffer output flags %#x", flags)
	}
	pos, ok := r.reserve(uint64(len(data)))
	if !ok {
		return errors.Wrap(uapi.EAGAIN, "the ring buffer is full")
	}
	for i := 0; i < len(data); {
		at := (pos + uapi.BPF_RINGBUF_HDR_SZ + uint64(i)) & r.mask
		i += mem.StoreBytes(r.data[at:], data[i:])
	}
	// Commit: clear the busy bit, the consumer may read the record.
	atomic.StoreUint32(r.hdrLen(pos), uint32(len(data)))
	r.notify(pos, flags)
	return nil
}

// Reserve is bpf_ringbuf_reserve: the simulated address of a new busy
// record of size bytes, which the program fills and then commits with
// Commit; 0 when the ring has no room or flags are set (the helper takes
// none).
func (r *Ring) Reserve(size, flags uint64) uint64 {
	if flags != 0 {
		return 0
	}
	pos, ok := r.reserve(size)
	if !ok {
		return 0
	}
	return r.m.Addr + dataPage*mem.PageSize + pos&r.mask + uapi.BPF_RINGBUF_HDR_SZ
}

// RingOfSample is bpf_ringbuf_restore_from_rec: the address of the ring
// (the map's struct bpf_ringbuf) a reserved sample belongs to, from the
// page offset in the sample's header. read reads the header's 8 bytes.
func RingOfSample(sample uint64, read func(addr uint64, p []byte) error) (uint64, error) {
	var hdr [uapi.BPF_RINGBUF_HDR_SZ]byte
	if err := read(sample-uapi.BPF_RINGBUF_HDR_SZ, hdr[:]); err != nil {
		return 0, err
	}
	pgOff := uint64(binary.LittleEndian.Uint32(hdr[4:]))
	return (sample-uapi.BPF_RINGBUF_HDR_SZ)&^(mem.PageSize-1) - pgOff*mem.PageSize, nil
}

// Commit is bpf_ringbuf_commit, for bpf_ringbuf_submit and
// bpf_ringbuf_discard: the reserved record at sample becomes readable,
// or is marked discarded for the reader to skip. The verifier makes
// programs commit each record they reserved exactly once; a sample that
// is not a busy record of this ring is EFAULT, for programs run
// unverified. flags may wake the readers waiting for a record (notify).
func (r *Ring) Commit(sample uint64, discard bool, flags uint64) error {
	off := sample - r.m.Addr - dataPage*mem.PageSize - uapi.BPF_RINGBUF_HDR_SZ
	if sample < r.m.Addr || off > r.mask || off&7 != 0 {
		return errors.Wrapf(uapi.EFAULT, "%#x is not a record of ring buffer %s", sample, r.m.Name)
	}
	hdr := r.hdrLen(off)
	l := atomic.LoadUint32(hdr)
	if l&uapi.BPF_RINGBUF_BUSY_BIT == 0 {
		return errors.Wrapf(uapi.EFAULT, "the record at %#x of ring buffer %s was already committed", sample, r.m.Name)
	}
	l &^= uapi.BPF_RINGBUF_BUSY_BIT
	if discard {
		l |= uapi.BPF_RINGBUF_DISCARD_BIT
	}
	atomic.StoreUint32(hdr, l)
	r.notify(off, flags)
	return nil
}

// notify is bpf_ringbuf_commit's wake-up of the readers for the record
// just committed at pos: with BPF_RB_FORCE_WAKEUP, or, unless
// BPF_RB_NO_WAKEUP, when the consumer has read everything before it
// (waiting for this very record). Other commits wake nobody: a reader
// that sleeps through them reads their records at its next wake-up or
// deadline, as with the kernel's epoll.
func (r *Ring) notify(pos, flags uint64) {
	if r.waiters.Load() == 0 {
		return
	}
	if flags&uapi.BPF_RB_FORCE_WAKEUP != 0 ||
		flags&uapi.BPF_RB_NO_WAKEUP == 0 && r.ConsumerPos()&r.mask == pos&r.mask {
		r.WakeReaders()
	}
}

// WakeReaders wakes every reader waiting for records.
func (r *Ring) WakeReaders() {
	r.wakeMu.Lock()
	if r.wake != nil {
		close(r.wake)
		r.wake = nil
	}
	r.wakeMu.Unlock()
}

// Wait registers a reader about to wait for records: the channel is
// closed at the next wake-up, and done must be called once the reader
// stops waiting. A reader checks for records after Wait, so that a
// record committed in between is seen or wakes it.
func (r *Ring) Wait() (wake <-chan struct{}, done func()) {
	r.waiters.Add(1)
	r.wakeMu.Lock()
	if r.wake == nil {
		r.wake = make(chan struct{})
	}
	ch := r.wake
	r.wakeMu.Unlock()
	return ch, func() { r.waiters.Add(-1) }
}

// reserve is __bpf_ringbuf_reserve: the position of a new busy record of
// size bytes, or false if the ring has no room.
func (r *Ring) reserve(size uint64) (uint64, bool) {
	length := (size + uapi.BPF_RINGBUF_HDR_SZ + 7) &^ 7
	if size > r.mask || length > r.mask+1 {
		return 0, false
	}
	cons := r.ConsumerPos()
	r.mu.lock()
	defer r.mu.unlock()
	prod := atomic.LoadUint64(r.pos(producerPage))
	for r.pend < prod {
		l := atomic.LoadUint32(r.hdrLen(r.pend))
		if l&uapi.BPF_RINGBUF_BUSY_BIT != 0 {
			break
		}
		r.pend += (uint64(l&^uapi.BPF_RINGBUF_DISCARD_BIT) + uapi.BPF_RINGBUF_HDR_SZ + 7) &^ 7
	}
	next := prod + length
	if next-cons > r.mask || next-r.pend > r.mask {
		return 0, false
	}
	hdr := r.data[prod&r.mask:]
	// pg_off: the header's page from the start of struct bpf_ringbuf.
	binary.LittleEndian.PutUint32(hdr[4:], uint32(dataPage+(prod&r.mask)/mem.PageSize))
	atomic.StoreUint32(r.hdrLen(prod), uint32(size)|uapi.BPF_RINGBUF_BUSY_BIT)
	atomic.StoreUint64(r.pos(producerPage), next)
	return prod, true
}

// Query is bpf_ringbuf_query: the data not yet consumed, the ring's size,
// or a position; 0 for another flag.
func (r *Ring) Query(flags uint64) uint64 {
	switch flags {
	case uapi.BPF_RB_AVAIL_DATA:
		return r.ProducerPos() - r.ConsumerPos()
	case uapi.BPF_RB_RING_SIZE:
		return r.mask + 1
	case uapi.BPF_RB_CONS_POS:
		return r.ConsumerPos()
	case uapi.BPF_RB_PROD_POS:
		return r.ProducerPos()
	}
	return 0
}

// Consume is a reader's step, as libbpf and cilium/ebpf read the mapped
// ring: the next committed record's bytes (nil for a discarded one, which
// is skipped), with the consumer position moved past it; ok is false when
// no record is ready (none written, or the oldest still busy).
func (r *Ring) Consume() (sample []byte, ok bool) {
	for {
		cons, prod := r.ConsumerPos(), r.ProducerPos()
		if cons >= prod {
			return nil, false
		}
		l := atomic.LoadUint32(r.hdrLen(cons))
		if l&uapi.BPF_RINGBUF_BUSY_BIT != 0 {
			return nil, false
		}
		n := uint64(l &^ uapi.BPF_RINGBUF_DISCARD_BIT)
		if l&uapi.BPF_RINGBUF_DISCARD_BIT == 0 {
			sample = make([]byte, n)
			for i := uint64(0); i < n; {
				at := (cons + uapi.BPF_RINGBUF_HDR_SZ + i) & r.mask
				i += uint64(mem.LoadBytes(sample[i:], r.data[at:]))
			}
		}
		atomic.StoreUint64(r.pos(consumerPage), cons+(n+uapi.BPF_RINGBUF_HDR_SZ+7)&^7)
		if sample != nil {
			return sample, true
		}
	}
}

// LookupElem and the other element operations are ENOTSUPP, as
// ringbuf_map_lookup_elem and its siblings are.
func (r *Ring) LookupElem(int, []byte) (uint64, error) { return 0, errNotSupp }
func (r *Ring) UpdateElem(int, []byte, []byte, uint64) error {
	return errNotSupp
}
func (r *Ring) DeleteElem(int, []byte) error    { return errNotSupp }
func (r *Ring) GetNextKey([]byte, []byte) error { return errNotSupp }
func (r *Ring) Free()                           { r.k.Memory().Free(r.m.Addr) }

var errNotSupp = errors.Wrap(uapi.ENOTSUPP, "a ring buffer has no elements")

// spinLock is rb->spinlock: producers hold it for a few loads and stores,
// so they spin rather than sleep, as the kernel's do; it costs less than a
// sync.Mutex on the path every record takes.
type spinLock struct{ v atomic.Uint32 }

func (l *spinLock) lock() {
	for !l.v.CompareAndSwap(0, 1) {
		runtime.Gosched()
	}
}

func (l *spinLock) unlock() { l.v.Store(0) }
