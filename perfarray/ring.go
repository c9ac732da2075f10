package perfarray

import (
	"encoding/binary"
	"math/bits"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Layout of struct perf_event_mmap_page (include/uapi/linux/perf_event.h):
// the page user space maps first, whose data_head the kernel advances and
// whose data_tail the reader advances.
const (
	offDataHead   = 1024
	offDataTail   = 1032
	offDataOffset = 1040
	offDataSize   = 1048

	headerSize = 8                  // struct perf_event_header
	lostSize   = headerSize + 8 + 8 // header, id, lost
	// maxRecord is the largest record: perf_event_header.size is a u16.
	maxRecord = 0xffff &^ 7
	// MaxRingPages bounds a ring's data pages (the kernel's bound is the
	// locked-memory limit; bpfsim's keeps a typo from eating the memory).
	MaxRingPages = 1 << 14
)

// Ring is a perf ring buffer (struct perf_buffer, kernel/events/
// ring_buffer.c) as user space maps it: one page of struct
// perf_event_mmap_page, then a power of two of data pages holding records
// back to back, wrapping at the end.
//
// The ring lives in the simulated address space, one vmalloc area, so its
// pages count against the kernel's memory and show in its area list as the
// kernel's buffer pages would. The kernel's writer and the user-space
// reader share it through the Go view of those pages: the writer publishes
// records by storing data_head (release), the reader frees space by
// storing data_tail; each loads the other's index atomically, which orders
// the record bytes as the kernel's barriers do.
type Ring struct {
	k    maps.Kernel
	addr uint64
	user []byte // the perf_event_mmap_page
	data []byte // the data pages
	mask uint64

	// mu serialises writers (the kernel's local_cmpxchg on rb->head);
	// head is rb->head, lost is rb->lost: samples dropped since the last
	// PERF_RECORD_LOST was written.
	mu   sync.Mutex
	head uint64
	lost uint64
	// lostTotal is event->lost_samples.
	lostTotal atomic.Uint64
	// readMu serialises readers.
	readMu sync.Mutex

	wakeup atomic.Pointer[func()]
	freed  atomic.Bool

	// The kernel's wake-up accounting, under mu (kernel/events/
	// ring_buffer.c): wakeMark is rb->wakeup, which a watermark moves on
	// in steps of watermark bytes and wakeup_events counts on by one;
	// a record that moves it wakes the reader. events is rb->events.
	watermark    uint64
	wakeupEvents uint64
	events       uint64
	wakeMark     uint64
}

func newRing(k maps.Kernel, pages int) (*Ring, error) {
	if pages <= 0 || pages&(pages-1) != 0 || pages > MaxRingPages {
		return nil, errors.Wrapf(uapi.EINVAL, "a perf ring needs a power of two of data pages up to %d, not %d", MaxRingPages, pages)
	}
	size := uint64(pages) * mem.PageSize
	addr, err := k.Memory().Vmalloc(mem.PageSize+size, mem.PermRW, "perf_buffer")
	if err != nil {
		return nil, err
	}
	all, err := k.Memory().Bytes(addr, mem.PageSize+size)
	if err != nil {
		_ = k.Memory().Free(addr)
		return nil, err
	}
	r := &Ring{k: k, addr: addr, user: all[:mem.PageSize], data: all[mem.PageSize:], mask: size - 1}
	binary.LittleEndian.PutUint64(r.user[offDataOffset:], mem.PageSize)
	binary.LittleEndian.PutUint64(r.user[offDataSize:], size)
	return r, nil
}

func (r *Ring) word(off int) *uint64 { return (*uint64)(unsafe.Pointer(&r.user[off])) }

// Addr returns where the ring's first page lives in simulated memory.
func (r *Ring) Addr() uint64 { return r.addr }

// Size returns the size of the data area in bytes.
func (r *Ring) Size() int { return len(r.data) }

// Lost returns how many samples the ring has dropped since it was made
// (event->lost_samples).
func (r *Ring) Lost() uint64 { return r.lostTotal.Load() }

// setWakeups sets when the ring wakes its reader from the event's
// attributes, as ring_buffer_init and perf_output_sample read them.
func (r *Ring) setWakeups(attr EventAttr) {
	size := uint64(len(r.data))
	var wm uint64
	if attr.Watermark {
		wm = min(uint64(attr.WakeupWatermark), size)
	}
	if wm == 0 {
		wm = size / 2
	}
	r.watermark = wm
	if !attr.Watermark {
		r.wakeupEvents = uint64(attr.WakeupEvents)
	}
}

// SetWakeup sets what the ring calls when a record it writes wakes the
// reader (see EventAttr). nil removes it.
func (r *Ring) SetWakeup(fn func()) {
	if fn == nil {
		r.wakeup.Store(nil)
		return
	}
	r.wakeup.Store(&fn)
}

func (r *Ring) free() {
	if r.freed.CompareAndSwap(false, true) {
		_ = r.k.Memory().Free(r.addr)
	}
}

// put copies b into the data area at the free-running position pos.
func (r *Ring) put(pos uint64, b []byte) {
	off := pos & r.mask
	n := mem.StoreBytes(r.data[off:], b)
	mem.StoreBytes(r.data, b[n:])
}

// get copies from the data area at pos into b.
func (r *Ring) get(pos uint64, b []byte) {
	off := pos & r.mask
	n := mem.LoadBytes(b, r.data[off:])
	mem.LoadBytes(b[n:], r.data)
}

// output writes one PERF_RECORD_SAMPLE whose PERF_SAMPLE_RAW data is the
// concatenation of frags, as perf_prepare_sample and perf_output_sample
// lay it out: the header, a u32 size, the data and padding, the size
// counting the padding so that the record ends 8-byte aligned. If samples
// were lost before, a PERF_RECORD_LOST with their count goes first, and
// both must fit. A record that does not fit is counted lost (ENOSPC).
func (r *Ring) output(id uint64, frags ...[]byte) error {
	sum := 0
	for _, f := range frags {
		sum += len(f)
	}
	raw := (sum+4+7)&^7 - 4
	size := headerSize + 4 + raw
	if size > maxRecord {
		// The kernel's u16 header size would wrap; bpfsim refuses.
		return errors.Wrapf(uapi.E2BIG, "a sample of %d bytes does not fit a perf record", sum)
	}
	r.mu.Lock()
	need := uint64(size)
	if r.lost > 0 {
		need += lostSize
	}
	tail := atomic.LoadUint64(r.word(offDataTail))
	// ring_buffer_has_space: CIRC_SPACE keeps one byte free, so a full
	// ring is never mistaken for an empty one.
	if (tail-(r.head+1))&r.mask < need {
		r.lost++
		r.lostTotal.Add(1)
		r.mu.Unlock()
		return errors.Wrapf(uapi.ENOSPC, "perf ring is full (%d of %d bytes free, %d needed)", (tail-(r.head+1))&r.mask, len(r.data), need)
	}
	pos := r.head
	// perf_output_begin and perf_output_sample: the reader is woken if
	// the record moves the wake-up mark.
	mark := r.wakeMark
	if end := pos + need; end-r.wakeMark > r.watermark {
		r.wakeMark += r.watermark
	}
	if r.wakeupEvents > 0 {
		if r.events++; r.events >= r.wakeupEvents {
			r.events -= r.wakeupEvents
			r.wakeMark++
		}
	}
	wake := r.wakeMark != mark
	var hdr [lostSize]byte
	if r.lost > 0 {
		binary.LittleEndian.PutUint32(hdr[0:], uapi.PERF_RECORD_LOST)
		binary.LittleEndian.PutUint16(hdr[4:], 0)
		binary.LittleEndian.PutUint16(hdr[6:], lostSize)
		binary.LittleEndian.PutUint64(hdr[8:], id)
		binary.LittleEndian.PutUint64(hdr[16:], r.lost)
		r.put(pos, hdr[:])
		pos += lostSize
		r.lost = 0
	}
	binary.LittleEndian.PutUint32(hdr[0:], uapi.PERF_RECORD_SAMPLE)
	// The helpers run with kernel registers (perf_fetch_caller_regs).
	binary.LittleEndian.PutUint16(hdr[4:], uapi.PERF_RECORD_MISC_KERNEL)
	binary.LittleEndian.PutUint16(hdr[6:], uint16(size))
	binary.LittleEndian.PutUint32(hdr[8:], uint32(raw))
	r.put(pos, hdr[:12])
	pos += 12
	for _, f := range frags {
		r.put(pos, f)
		pos += uint64(len(f))
	}
	// The padding is skipped, not written (perf_output_skip): it keeps
	// whatever an earlier record left there, the "trailing garbage"
	// cilium/ebpf warns of. A fresh ring's pages are zero.
	pos += uint64(raw - sum)
	r.head = pos
	atomic.StoreUint64(r.word(offDataHead), pos)
	r.mu.Unlock()
	if fn := r.wakeup.Load(); fn != nil && wake {
		(*fn)()
	}
	return nil
}

// Record is one record read from a ring, as cilium/ebpf's perf.Record: a
// sample's raw data (with the kernel's padding to 8 bytes after the u32
// size, stale ring bytes) or the count of lost samples.
type Record struct {
	// CPU is the CPU of the ring the record came from.
	CPU int
	// RawSample is what the program passed to bpf_perf_event_output,
	// followed by the padding that makes u32 size + data a multiple of 8:
	// 0 to 7 bytes of whatever the ring held there before.
	RawSample []byte
	// LostSamples is the count of a PERF_RECORD_LOST.
	LostSamples uint64
	// Remaining is how many bytes the ring still holds unread.
	Remaining int
}

// ErrUnknownRecord is returned for a record of a type other than SAMPLE
// and LOST (after skipping it).
var ErrUnknownRecord = errors.New("unknown perf record type")

// Read takes the oldest record off the ring into rec, reusing its
// RawSample's storage. It returns false if the ring is empty.
func (r *Ring) Read(rec *Record) (bool, error) {
	r.readMu.Lock()
	defer r.readMu.Unlock()
	head := atomic.LoadUint64(r.word(offDataHead))
	tail := atomic.LoadUint64(r.word(offDataTail))
	if head == tail {
		return false, nil
	}
	var hdr [lostSize]byte
	r.get(tail, hdr[:headerSize])
	typ := binary.LittleEndian.Uint32(hdr[0:])
	size := uint64(binary.LittleEndian.Uint16(hdr[6:]))
	if size < headerSize || size > head-tail {
		return false, errors.Errorf("corrupt perf ring: record of %d bytes with %d unread", size, head-tail)
	}
	var err error
	switch typ {
	case uapi.PERF_RECORD_SAMPLE:
		r.get(tail+headerSize, hdr[:4])
		n := uint64(binary.LittleEndian.Uint32(hdr[:4]))
		if headerSize+4+n > size {
			return false, errors.Errorf("corrupt perf ring: sample of %d bytes in a record of %d", n, size)
		}
		if uint64(cap(rec.RawSample)) < n {
			rec.RawSample = make([]byte, n)
		}
		rec.RawSample = rec.RawSample[:n]
		r.get(tail+headerSize+4, rec.RawSample)
		rec.LostSamples = 0
	case uapi.PERF_RECORD_LOST:
		r.get(tail+headerSize, hdr[:16])
		rec.LostSamples = binary.LittleEndian.Uint64(hdr[8:])
		rec.RawSample = rec.RawSample[:0]
	default:
		err = errors.Wrapf(ErrUnknownRecord, "type %d", typ)
	}
	tail += size
	atomic.StoreUint64(r.word(offDataTail), tail)
	rec.Remaining = int((head - tail) & r.mask)
	return true, err
}

// pagesFor rounds a buffer size in bytes up to a power of two of pages,
// as cilium/ebpf's perf reader sizes its rings.
func PagesFor(bytes int) int {
	n := (bytes + mem.PageSize - 1) / mem.PageSize
	if n <= 1 {
		return 1
	}
	return 1 << bits.Len(uint(n-1))
}
