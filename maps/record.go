package maps

import (
	"unsafe"

	"github.com/bpfsim/bpfsim/sim/mem"
)

// A map value holds, besides the program's own bytes, the fields its
// Record lists, which the kernel manages itself (include/linux/bpf.h:
// copy_map_value, copy_map_value_locked, check_and_init_map_value). The
// kernel's copies of values never carry them: an update copies the value
// around them, so a value's lock stays as it is whatever user space
// writes; a lookup hands them out zeroed; a BPF_F_LOCK copy is made while
// holding the value's own lock, so it never sees half of what a program
// writes under that lock.
//
// Values live in simulated memory, which programs on other simulated CPUs
// read and write at the same time. The functions here reach it only
// through the mem package's accessors (atomic in race-enabled builds), and
// the lock word only atomically (LockSpin, UnlockSpin, sync/atomic), never
// with a plain copy: a copy must not undo a lock a program took meanwhile.
// A spin lock's offset is a multiple of 4 and values are 8-byte aligned,
// so the lock word is an aligned 32-bit word.

// RecordEqual is btf_record_equal: map_meta_equal's test that an inner
// map's special fields are the template's.
func RecordEqual(a, b *Record) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// spinLockWord is the lock word of a value in simulated memory.
func spinLockWord(rec *Record, v []byte) *uint32 {
	p := unsafe.Pointer(&v[rec.SpinLockOff])
	if uintptr(p)&3 != 0 {
		panic("maps: a bpf_spin_lock that is not 4-byte aligned")
	}
	return (*uint32)(p)
}

// holes returns the byte ranges of rec's fields in a value, in order of
// offset: what copy_map_value copies around.
func holes(rec *Record) (n int, h [2][2]uint32) {
	if rec.Has(FieldSpinLock) {
		h[n] = [2]uint32{rec.SpinLockOff, rec.SpinLockOff + SpinLockSize}
		n++
	}
	if rec.Has(FieldTimer) {
		h[n] = [2]uint32{rec.TimerOff, rec.TimerOff + TimerSize}
		if n == 1 && h[0][0] > h[1][0] {
			h[0], h[1] = h[1], h[0]
		}
		n++
	}
	return n, h
}

// copyAround copies src to dst with copy, except the bytes of rec's fields.
func copyAround(rec *Record, dst, src []byte, copy func(dst, src []byte) int) {
	n, h := holes(rec)
	at := uint32(0)
	for _, r := range h[:n] {
		copy(dst[at:r[0]], src[at:r[0]])
		at = r[1]
	}
	copy(dst[at:], src[at:])
}

// StoreValue is copy_map_value into a map value: dst is the value in
// simulated memory, src the value_size bytes of an update. The bytes of
// the fields rec lists keep what dst holds. rec may be nil.
func StoreValue(rec *Record, dst, src []byte) {
	if rec == nil {
		mem.StoreBytes(dst, src)
		return
	}
	copyAround(rec, dst, src, mem.StoreBytes)
}

// LoadValue is copy_map_value out of a map value followed by
// check_and_init_map_value, as bpf_map_copy_value and the lookup-and-delete
// paths do: src is the value in simulated memory, dst a buffer of the
// caller's, which gets the value with the fields rec lists zeroed.
func LoadValue(rec *Record, dst, src []byte) {
	if rec == nil {
		mem.LoadBytes(dst, src)
		return
	}
	copyAround(rec, dst, src, mem.LoadBytes)
	ZeroSpecialFields(rec, dst)
}

// StoreValueLocked is copy_map_value_locked(map, dst, src, false), the
// copy of a BPF_F_LOCK update: StoreValue made while holding dst's spin
// lock. rec must have one.
func StoreValueLocked(rec *Record, dst, src []byte) {
	w := spinLockWord(rec, dst)
	LockSpin(w)
	StoreValue(rec, dst, src)
	UnlockSpin(w)
}

// LoadValueLocked is copy_map_value_locked(map, dst, src, true) followed by
// check_and_init_map_value, the copy of a BPF_F_LOCK lookup: LoadValue
// made while holding src's spin lock. rec must have one.
func LoadValueLocked(rec *Record, dst, src []byte) {
	w := spinLockWord(rec, src)
	LockSpin(w)
	LoadValue(rec, dst, src)
	UnlockSpin(w)
}

// ZeroSpecialFields is check_and_init_map_value on a buffer of the
// caller's (not simulated memory): the bytes of the fields rec lists
// become 0. rec may be nil.
func ZeroSpecialFields(rec *Record, v []byte) {
	n, h := holes(rec)
	for _, r := range h[:n] {
		clear(v[r[0]:r[1]])
	}
}

// InitSpecialFields is check_and_init_map_value on a value in simulated
// memory that no one can reach yet (a hash element about to be linked):
// its lock word becomes 0, free, whatever the element's previous use or
// the poison of its free left there. rec may be nil.
func InitSpecialFields(rec *Record, v []byte) {
	if rec.Has(FieldSpinLock) {
		UnlockSpin(spinLockWord(rec, v))
	}
	if rec.Has(FieldTimer) {
		mem.Fill(v[rec.TimerOff:rec.TimerOff+TimerSize], 0)
	}
}
