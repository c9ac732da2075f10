package maps

import (
	"runtime"
	"sync/atomic"
)

// A struct bpf_spin_lock is one 4-byte word of a map value: 0 when free, 1
// when held, as a queued spin lock's locked byte. Programs and user space
// take it through the same word, so a program on one simulated CPU and a
// BPF_F_LOCK copy from user space exclude each other as in the kernel.
//
// The kernel spins with interrupts off; a simulated CPU is a goroutine, so
// a waiter yields instead of burning its thread while the holder (which
// the verifier keeps from calling anything) finishes.

// LockSpin takes the lock in word w (__bpf_spin_lock).
func LockSpin(w *uint32) {
	for !atomic.CompareAndSwapUint32(w, 0, 1) {
		runtime.Gosched()
	}
}

// UnlockSpin releases the lock in word w (__bpf_spin_unlock).
func UnlockSpin(w *uint32) { atomic.StoreUint32(w, 0) }
