// Package queuestack simulates BPF_MAP_TYPE_QUEUE and BPF_MAP_TYPE_STACK
// (kernel/bpf/queue_stack_maps.c): maps without keys, whose values go in
// with bpf_map_push_elem and come out with bpf_map_pop_elem (oldest first
// for a queue, newest first for a stack) or bpf_map_peek_elem. From user
// space, an update pushes, a lookup peeks and a lookup-and-delete pops.
//
// The values are a ring of max_entries+1 slots, as in the kernel, with
// head and tail indexes: a push with BPF_EXIST into a full map overwrites
// the oldest value.
package queuestack

import (
	"sync"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// kmallocMaxSize is KMALLOC_MAX_SIZE: the largest value.
const kmallocMaxSize = 4 << 20

const createFlags = uapi.BPF_F_NUMA_NODE | uapi.BPF_F_ACCESS_MASK

// Queue and Stack are the map types, for a kernel's registry.
var (
	Queue = &maps.Type{ID: uapi.MapTypeQueue, Name: "queue", AllocCheck: allocCheck, Alloc: alloc, MetaEqual: maps.DefaultMetaEqual}
	Stack = &maps.Type{ID: uapi.MapTypeStack, Name: "stack", AllocCheck: allocCheck, Alloc: alloc, MetaEqual: maps.DefaultMetaEqual}
)

// allocCheck is queue_stack_map_alloc_check.
func allocCheck(attr *maps.Attr) error {
	switch {
	case attr.MaxEntries == 0 || attr.KeySize != 0 || attr.ValueSize == 0:
		return errors.Wrapf(uapi.EINVAL, "a queue or stack has no key and needs values and max_entries (got %d, %d, %d)",
			attr.KeySize, attr.ValueSize, attr.MaxEntries)
	case attr.Flags&^createFlags != 0:
		return errors.Wrapf(uapi.EINVAL, "queue/stack map_flags %#x include unsupported flags", attr.Flags)
	case attr.ValueSize > kmallocMaxSize:
		return errors.Wrapf(uapi.E2BIG, "value_size %d", attr.ValueSize)
	}
	return nil
}

// qs is struct bpf_queue_stack.
type qs struct {
	m     *maps.Map
	k     maps.Kernel
	stack bool
	mu    sync.Mutex // the kernel's raw spinlock
	head  uint32
	tail  uint32
	size  uint32 // max_entries + 1
	// elements is the Go view of the values in simulated memory, after
	// the map object.
	elements []byte
}

// elementsOffset is where the values start after the map object.
const elementsOffset = 256

func alloc(k maps.Kernel, m *maps.Map) (maps.Ops, error) {
	q := &qs{m: m, k: k, stack: m.Type.ID == uapi.MapTypeStack, size: m.MaxEntries + 1}
	data := uint64(q.size) * uint64(m.ValueSize)
	addr, err := k.Memory().Vmalloc(elementsOffset+data, mem.PermRW, m.Type.Name)
	if err != nil {
		return nil, err
	}
	m.Addr = addr
	if q.elements, err = k.Memory().Bytes(addr+elementsOffset, data); err != nil {
		k.Memory().Free(addr)
		return nil, err
	}
	return q, nil
}

func (q *qs) empty() bool { return q.head == q.tail }

func (q *qs) full() bool {
	head := q.head + 1
	if head >= q.size {
		head = 0
	}
	return head == q.tail
}

func (q *qs) slot(i uint32) []byte {
	off := uint64(i) * uint64(q.m.ValueSize)
	return q.elements[off : off+uint64(q.m.ValueSize)]
}

// PushElem is queue_stack_map_push_elem: BPF_EXIST lets a push into a
// full map drop the oldest value; a full map is E2BIG otherwise.
func (q *qs) PushElem(_ int, value []byte, flags uint64) error {
	if flags&uapi.BPF_NOEXIST != 0 || flags > uapi.BPF_EXIST {
		return errors.Wrapf(uapi.EINVAL, "push flags %#x", flags)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.full() {
		if flags&uapi.BPF_EXIST == 0 {
			return errors.Wrap(uapi.E2BIG, "the map is full")
		}
		if q.tail++; q.tail >= q.size {
			q.tail = 0
		}
	}
	mem.StoreBytes(q.slot(q.head), value)
	if q.head++; q.head >= q.size {
		q.head = 0
	}
	return nil
}

// PopElem is queue_map_pop_elem or stack_map_pop_elem.
func (q *qs) PopElem(_ int, value []byte) error { return q.take(value, true) }

// PeekElem is queue_map_peek_elem or stack_map_peek_elem.
func (q *qs) PeekElem(_ int, value []byte) error { return q.take(value, false) }

// take copies the next value out (the oldest of a queue, the newest of a
// stack), removing it if del. An empty map zeroes value: ENOENT.
func (q *qs) take(value []byte, del bool) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.empty() {
		clear(value)
		return errors.Wrap(uapi.ENOENT, "the map is empty")
	}
	i := q.tail
	if q.stack {
		if i = q.head - 1; i >= q.size { // wrapped below 0
			i = q.size - 1
		}
	}
	mem.LoadBytes(value, q.slot(i))
	if del {
		if q.stack {
			q.head = i
		} else if q.tail++; q.tail >= q.size {
			q.tail = 0
		}
	}
	return nil
}

// LookupElem is queue_stack_map_lookup_elem: programs cannot look values
// up (the verifier refuses the call before it could), so NULL.
func (q *qs) LookupElem(int, []byte) (uint64, error) { return 0, nil }

// UpdateElem: values are pushed (the syscall path pushes for update).
func (q *qs) UpdateElem(int, []byte, []byte, uint64) error {
	return errors.Wrap(uapi.EINVAL, "queue and stack maps take pushes, not updates")
}

// DeleteElem is queue_stack_map_delete_elem: EINVAL.
func (q *qs) DeleteElem(int, []byte) error {
	return errors.Wrap(uapi.EINVAL, "queue and stack maps have no keys to delete")
}

// GetNextKey is queue_stack_map_get_next_key: EINVAL.
func (q *qs) GetNextKey([]byte, []byte) error {
	return errors.Wrap(uapi.EINVAL, "queue and stack maps have no keys")
}

// Free releases the values.
func (q *qs) Free() { q.k.Memory().Free(q.m.Addr) }
