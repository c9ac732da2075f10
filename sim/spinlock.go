package sim

import (
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// bpf_spin_lock and bpf_spin_unlock (kernel/bpf/helpers.c): a program
// takes the struct bpf_spin_lock of a map value it looked up, works on the
// value and releases the lock. The verifier sees to it that the lock is
// the value's own, that nothing is called in between and that every path
// releases it (sim/verifier/spinlock.go), so the helpers only take and
// drop the word (maps.LockSpin), which user space's BPF_F_LOCK copies
// take too.
//
// A verified program always releases its lock; a run that stops early
// (its instruction budget, a fault bpfsim reports) would leave the lock
// held and every other CPU spinning, so the CPU remembers the word it holds
// and the run's end releases it (releaseSpinLock).

func (k *Kernel) registerSpinLockHelpers() {
	proto := &verifier.FuncProto{Ret: verifier.RetVoid, Args: [5]verifier.ArgType{verifier.ArgPtrToSpinLock}}
	word := func(m *interp.Machine, addr uint64) (*uint32, error) {
		w, f := m.TLB.Word32(addr, true)
		if f != nil {
			return nil, f
		}
		if w == nil {
			return nil, errors.Wrapf(uapi.EFAULT, "bpf_spin_lock at %#x is not in plain memory", addr)
		}
		return w, nil
	}
	for _, h := range []*Helper{
		{ID: uapi.FuncSpinLock, Proto: proto, Fn: func(m *interp.Machine, r1, _, _, _, _ uint64) (uint64, error) {
			w, err := word(m, r1)
			if err != nil {
				return 0, err
			}
			maps.LockSpin(w)
			k.cpuOf(m).heldLock = w
			return 0, nil
		}},
		{ID: uapi.FuncSpinUnlock, Proto: proto, Fn: func(m *interp.Machine, r1, _, _, _, _ uint64) (uint64, error) {
			w, err := word(m, r1)
			if err != nil {
				return 0, err
			}
			maps.UnlockSpin(w)
			k.cpuOf(m).heldLock = nil
			return 0, nil
		}},
	} {
		if err := k.RegisterHelper(h); err != nil {
			panic(err) // the ids are unique
		}
	}
}

// releaseSpinLock drops the lock a run left held by stopping early.
func (c *CPU) releaseSpinLock() {
	if c.heldLock != nil {
		maps.UnlockSpin(c.heldLock)
		c.heldLock = nil
	}
}
