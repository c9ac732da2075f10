package hashmap

import (
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Errors of the paths programs take. They are made once and carry no stack
// trace (errors.WithMessage, not Wrap): a program that deletes a missing
// key or inserts into a full map gets its errno in nanoseconds, not the
// microseconds a stack capture costs.
var (
	errNoKey    = errors.WithMessage(uapi.ENOENT, "hash map has no such key")
	errExists   = errors.WithMessage(uapi.EEXIST, "BPF_NOEXIST: the key exists")
	errNotExist = errors.WithMessage(uapi.ENOENT, "BPF_EXIST: the key does not exist")
	errFull     = errors.WithMessage(uapi.E2BIG, "hash map holds max_entries keys")
	errLock     = errors.WithMessage(uapi.EINVAL, "BPF_F_LOCK needs a bpf_spin_lock in the value")
	errBadCPU   = errors.WithMessage(uapi.EINVAL, "no such CPU")
)

// checkFlags is check_flags: NOEXIST on an existing key, EXIST on a
// missing one.
func checkFlags(exists bool, flags uint64) error {
	switch flags &^ uapi.BPF_F_LOCK {
	case uapi.BPF_NOEXIST:
		if exists {
			return errExists
		}
	case uapi.BPF_EXIST:
		if !exists {
			return errNotExist
		}
	}
	return nil
}

// LookupElem is htab_map_lookup_elem (the value's address) and, for
// PERCPU_HASH, htab_percpu_map_lookup_elem (cpu's copy). 0 if the key is
// missing.
func (h *htab) LookupElem(cpu int, key []byte) (uint64, error) {
	e := h.lookup(key)
	switch {
	case e == nil:
		return 0, nil
	case !h.percpu:
		return e.addr + h.valueOff, nil
	case cpu < 0 || cpu >= h.ncpu:
		return 0, errBadCPU
	}
	return e.pptr + h.percpuA.Offset(cpu), nil
}

// LookupElemAddr is __htab_map_lookup_elem, the function an inlined lookup
// (htab_map_gen_lookup, htab_percpu_map_gen_lookup) calls: the address of
// key's struct htab_elem, or 0. The value is ValueOffset(key_size) bytes
// further; for PERCPU_HASH that slot holds the per-CPU pointer.
func (h *htab) LookupElemAddr(key []byte) uint64 {
	if e := h.lookup(key); e != nil {
		return e.addr
	}
	return 0
}

// UpdateElem is htab_map_update_elem, or for PERCPU_HASH
// htab_percpu_map_update_elem writing only cpu's copy.
//
// With BPF_F_LOCK (a value with a bpf_spin_lock only, else EINVAL) an
// existing key's value is written in place while holding its lock
// (copy_map_value_locked); a missing key gets a new element as without
// the flag, which otherwise keeps its meaning (BPF_NOEXIST, BPF_EXIST).
// The kernel first looks for the key without the bucket lock and takes it
// only for a new key; bpfsim always takes it, since a user-space update
// has no RCU read-side section to keep the element from being reused
// under its copy. The outcome is the same.
func (h *htab) UpdateElem(cpu int, key, value []byte, flags uint64) error {
	if h.percpu {
		if flags > uapi.BPF_EXIST {
			return errors.Wrapf(uapi.EINVAL, "unknown update flags %#x", flags)
		}
		if cpu < 0 || cpu >= h.ncpu {
			return errBadCPU
		}
		return h.updatePercpu(cpu, key, value, flags, false)
	}
	if flags&^uapi.BPF_F_LOCK > uapi.BPF_EXIST {
		return errors.Wrapf(uapi.EINVAL, "unknown update flags %#x", flags)
	}
	rec := h.m.Record
	if flags&uapi.BPF_F_LOCK != 0 && !rec.Has(maps.FieldSpinLock) {
		return errLock
	}
	key = key[:h.keySize]
	hash := HashKey(key, h.hashrnd)
	b := h.bucketForUpdate(hash)
	b.mu.Lock()
	prev, old := h.find(b, hash, key)
	if err := checkFlags(old != nil, flags); err != nil {
		b.mu.Unlock()
		return err
	}
	if old != nil && flags&uapi.BPF_F_LOCK != 0 {
		maps.StoreValueLocked(rec, h.value(old), value)
		b.mu.Unlock()
		return nil
	}
	e, err := h.getElem(old == nil)
	if err != nil {
		b.mu.Unlock()
		return err
	}
	// A new element, never the old one rewritten: a program holding the
	// old value pointer keeps reading the old value until the grace
	// period ends. The new element goes first in the chain, so a
	// concurrent lookup finds it before the old one.
	h.initElem(e, hash, key)
	h.setValue(e, value)
	linkHead(b, e)
	if old != nil {
		if prev == nil {
			prev = e
		}
		unlink(b, prev, old)
	}
	b.mu.Unlock()
	if old != nil {
		h.retire(old, false)
	}
	return nil
}

// updatePercpu is htab_map_update_elem_in_place for PERCPU_HASH: an
// existing key's copies are written where they are (cpu's, or with all
// every CPU's from values); a new key gets an element whose copies are
// zero except the ones written (pcpu_init_value).
func (h *htab) updatePercpu(cpu int, key, values []byte, flags uint64, all bool) error {
	key = key[:h.keySize]
	hash := HashKey(key, h.hashrnd)
	b := h.bucketForUpdate(hash)
	b.mu.Lock()
	defer b.mu.Unlock()
	_, old := h.find(b, hash, key)
	if err := checkFlags(old != nil, flags); err != nil {
		return err
	}
	if old != nil {
		h.writePercpu(old, cpu, values, all, false)
		return nil
	}
	e, err := h.getElem(true)
	if err != nil {
		return err
	}
	h.initElem(e, hash, key)
	h.writePercpu(e, cpu, values, all, true)
	linkHead(b, e)
	return nil
}

// writePercpu is pcpu_copy_value (fresh false) and pcpu_init_value (fresh
// true). With all, values holds one round_up(value_size, 8) slot per CPU.
// Only value_size bytes of a copy are written; a fresh element's padding
// and other copies are cleared of the previous use and the poison.
func (h *htab) writePercpu(e *elem, cpu int, values []byte, all, fresh bool) {
	vs := h.valueSize
	if all {
		for c := 0; c < h.ncpu; c++ {
			dst := h.cpuValue(e, c)
			mem.StoreBytes(dst[:vs], values[uint64(c)*h.pcpuSize:])
			if fresh {
				mem.Fill(dst[vs:], 0)
			}
		}
		return
	}
	if fresh {
		for c := 0; c < h.ncpu; c++ {
			mem.Fill(h.cpuValue(e, c), 0)
		}
	}
	mem.StoreBytes(h.cpuValue(e, cpu)[:vs], values)
}

// DeleteElem is htab_map_delete_elem: the element leaves its chain at once
// and is reused only after a grace period.
func (h *htab) DeleteElem(cpu int, key []byte) error { return h.remove(key, nil) }

// remove takes key's element out of its chain and retires it; before the
// unlink, with the bucket locked, last (if not nil) sees the element, for
// the callers that read it on its way out.
func (h *htab) remove(key []byte, last func(e *elem)) error {
	e, err := h.unlinkKey(key, last)
	if err != nil {
		return err
	}
	h.retire(e, true)
	return nil
}

// unlinkKey takes key's element out of its chain and returns it; before
// the unlink, with the bucket locked, last (if not nil) sees it.
func (h *htab) unlinkKey(key []byte, last func(e *elem)) (*elem, error) {
	key = key[:h.keySize]
	hash := HashKey(key, h.hashrnd)
	b := h.bucket(hash)
	if b == nil {
		return nil, errNoKey
	}
	b.mu.Lock()
	prev, e := h.find(b, hash, key)
	if e == nil {
		b.mu.Unlock()
		return nil, errNoKey
	}
	if last != nil {
		last(e)
	}
	unlink(b, prev, e)
	b.mu.Unlock()
	return e, nil
}

// GetNextKey is htab_map_get_next_key: after a key it finds, the next
// element of its chain or else the head of the next non-empty bucket; for
// a nil or unknown key, the head of the first non-empty bucket. A bucket's
// lock is held while its element's key is copied, so the copy never races
// with that element being freed, whatever RCU protection the caller has.
func (h *htab) GetNextKey(key, next []byte) error {
	i := uint32(0)
	if key != nil {
		key = key[:h.keySize]
		hash := HashKey(key, h.hashrnd)
		if b := h.bucket(hash); b != nil {
			b.mu.Lock()
			_, e := h.find(b, hash, key)
			if e != nil {
				if n := e.next.Load(); n != nil {
					mem.LoadBytes(next, h.key(n))
					b.mu.Unlock()
					return nil
				}
				i = hash&h.mask + 1
			}
			b.mu.Unlock()
		}
	}
	for i < h.nBuckets {
		seg := h.segs[i>>segShift].Load()
		if seg == nil {
			i = (i | segMask) + 1
			continue
		}
		b := &seg[i&segMask]
		if b.head.Load() != nil {
			b.mu.Lock()
			if e := b.head.Load(); e != nil {
				mem.LoadBytes(next, h.key(e))
				b.mu.Unlock()
				return nil
			}
			b.mu.Unlock()
		}
		i++
	}
	return errors.Wrap(uapi.ENOENT, "no key after this one")
}

// LookupAndDeleteElem is htab_map_lookup_and_delete_elem (and its per-CPU
// twin, which copies every CPU's copy, each rounded up to 8 bytes). Of the
// flags only BPF_F_LOCK exists (map_lookup_and_delete_elem refuses others):
// for a value with a bpf_spin_lock (else EINVAL) the copy is made holding
// it. The copy has the lock word zeroed.
func (h *htab) LookupAndDeleteElem(cpu int, key, value []byte, flags uint64) error {
	rec := h.m.Record
	switch {
	case flags&^uapi.BPF_F_LOCK != 0:
		return errors.Wrapf(uapi.EINVAL, "unknown lookup-and-delete flags %#x", flags)
	case flags&uapi.BPF_F_LOCK != 0 && !rec.Has(maps.FieldSpinLock):
		return errLock
	case h.percpu && uint64(len(value)) < h.pcpuSize*uint64(h.ncpu):
		return errors.Wrapf(uapi.EINVAL, "per-CPU value buffer of %d bytes, want %d", len(value), h.pcpuSize*uint64(h.ncpu))
	}
	return h.remove(key, func(e *elem) {
		switch {
		case h.percpu:
			h.copyPercpu(e, value)
		case flags&uapi.BPF_F_LOCK != 0:
			maps.LoadValueLocked(rec, value, h.value(e))
		default:
			maps.LoadValue(rec, value, h.value(e))
		}
	})
}

// copyPercpu copies every CPU's copy of e, round_up(value_size, 8) bytes
// each (copy_map_value_long), into values.
func (h *htab) copyPercpu(e *elem, values []byte) {
	for c := 0; c < h.ncpu; c++ {
		mem.LoadBytes(values[uint64(c)*h.pcpuSize:], h.cpuValue(e, c))
	}
}

// LookupPercpu is bpf_percpu_hash_copy: every CPU's copy of key's value.
func (p *percpuHtab) LookupPercpu(key, values []byte) error {
	h := p.htab
	if uint64(len(values)) < h.pcpuSize*uint64(h.ncpu) {
		return errors.Wrapf(uapi.EINVAL, "per-CPU value buffer of %d bytes, want %d", len(values), h.pcpuSize*uint64(h.ncpu))
	}
	key = key[:h.keySize]
	hash := HashKey(key, h.hashrnd)
	b := h.bucket(hash)
	if b == nil {
		return errNoKey
	}
	// The bucket lock keeps the element from being freed while it is
	// copied, whatever RCU protection the caller has.
	b.mu.Lock()
	defer b.mu.Unlock()
	_, e := h.find(b, hash, key)
	if e == nil {
		return errNoKey
	}
	h.copyPercpu(e, values)
	return nil
}

// UpdatePercpu is bpf_percpu_hash_update: every CPU's copy from values,
// one round_up(value_size, 8) slot per CPU. The flags are those of a
// program's update; BPF_F_CPU and BPF_F_ALL_CPUS are not simulated.
func (p *percpuHtab) UpdatePercpu(key, values []byte, flags uint64) error {
	h := p.htab
	if flags > uapi.BPF_EXIST {
		return errors.Wrapf(uapi.EINVAL, "unsupported update flags %#x", flags)
	}
	if uint64(len(values)) < h.pcpuSize*uint64(h.ncpu) {
		return errors.Wrapf(uapi.EINVAL, "per-CPU value buffer of %d bytes, want %d", len(values), h.pcpuSize*uint64(h.ncpu))
	}
	return h.updatePercpu(0, key, values, flags, true)
}

// LookupPercpuElem is htab_percpu_map_lookup_percpu_elem: another CPU's
// copy, or 0 for a missing key or a CPU that does not exist.
func (p *percpuHtab) LookupPercpuElem(key []byte, cpu int) (uint64, error) {
	h := p.htab
	if cpu < 0 || cpu >= h.ncpu {
		return 0, nil
	}
	if e := h.lookup(key); e != nil {
		return e.pptr + h.percpuA.Offset(cpu), nil
	}
	return 0, nil
}
