package sim

import (
	"bytes"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf/btf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// BTF objects, kernel/bpf/btf.c's btf_idr: every BTF the kernel holds has
// an id, as `bpftool btf list` shows them. The kernel's own (vmlinux, id
// 1, parsed at boot), each loaded module's, and BTF loaded from user
// space (BPF_BTF_LOAD, checked as the kernel checks it). A handle
// (cilium/ebpf's btf.Handle) holds its object; an object's id goes when
// its last holder does.

// BTFInfo is what BPF_OBJ_GET_INFO_BY_FD tells of a BTF object, as
// cilium/ebpf's btf.HandleInfo.
type BTFInfo struct {
	ID btf.ID
	// Name is "vmlinux", a module's name, or "" for BTF from user space.
	Name string
	// IsKernel is true for the kernel's and its modules' BTF.
	IsKernel bool
	// Size is the raw BTF's size in bytes.
	Size uint32
}

// IsVmlinux reports whether the BTF is the kernel's own.
func (i *BTFInfo) IsVmlinux() bool { return i.IsKernel && i.Name == "vmlinux" }

// IsModule reports whether the BTF is a module's.
func (i *BTFInfo) IsModule() bool { return i.IsKernel && i.Name != "vmlinux" }

// vmlinuxBTFID is the id the kernel's own BTF gets at boot, the first.
const vmlinuxBTFID btf.ID = 1

// btfObject is one BTF object.
type btfObject struct {
	id     btf.ID
	name   string
	kernel bool
	// raw is the BTF; for vmlinux, made when first asked for (the
	// simulated kernel's BTF is built on first use).
	raw func() ([]byte, error)
	// module is the module whose BTF it is, split on vmlinux's.
	module *Module
	refs   int // under btfTable.mu
}

// btfTable is the kernel's BTF objects by id.
type btfTable struct {
	mu   sync.Mutex
	byID map[btf.ID]*btfObject
	// next is the next id to try: ids are handed out cyclically, as
	// idr_alloc_cyclic does, so an id freed is not reused soon.
	next btf.ID
}

// ensure adds vmlinux's object, which exists from boot. t.mu is held.
func (t *btfTable) ensure(k *Kernel) {
	if t.byID != nil {
		return
	}
	t.byID = map[btf.ID]*btfObject{vmlinuxBTFID: {id: vmlinuxBTFID, name: "vmlinux", kernel: true, refs: 1,
		raw: func() ([]byte, error) { return k.RawKernelBTF() }}}
	t.next = vmlinuxBTFID + 1
}

// add gives o an id and a first reference. t.mu is held.
func (t *btfTable) add(k *Kernel, o *btfObject) error {
	t.ensure(k)
	for tries := 0; ; tries++ {
		if tries > 1<<20 {
			return errors.Wrap(uapi.ENOSPC, "no BTF id left")
		}
		id := t.next
		t.next++
		if t.next > 1<<31-1 {
			t.next = vmlinuxBTFID + 1
		}
		if _, used := t.byID[id]; !used {
			o.id, o.refs = id, 1
			t.byID[id] = o
			return nil
		}
	}
}

// put drops a reference; the last one frees the id. t.mu is held.
func (t *btfTable) put(o *btfObject) {
	if o.refs--; o.refs == 0 {
		delete(t.byID, o.id)
	}
}

// BTFHandle is a reference to a BTF object, as cilium/ebpf's btf.Handle
// is a file descriptor of one.
type BTFHandle struct {
	k      *Kernel
	obj    *btfObject
	closed atomic.Bool
}

// NewBTFHandle loads raw BTF as BPF_BTF_LOAD does: it is checked as the
// kernel checks BTF (splitbtf.Check; the kernel's errnos and messages)
// and gets an id. As cilium/ebpf's btf.NewHandleFromRawBTF.
func (k *Kernel) NewBTFHandle(raw []byte) (*BTFHandle, error) {
	if _, err := parseChecked(raw, nil); err != nil { // module.go
		return nil, err
	}
	kept := bytes.Clone(raw)
	o := &btfObject{raw: func() ([]byte, error) { return kept, nil }}
	t := &k.btfs
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.add(k, o); err != nil {
		return nil, err
	}
	return &BTFHandle{k: k, obj: o}, nil
}

// NewBTFHandleFromID opens the BTF object with id, as
// BPF_BTF_GET_FD_BY_ID (cilium/ebpf's btf.NewHandleFromID): ENOENT for
// an id no object has.
func (k *Kernel) NewBTFHandleFromID(id btf.ID) (*BTFHandle, error) {
	t := &k.btfs
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ensure(k)
	o, ok := t.byID[id]
	if !ok {
		return nil, errors.Wrapf(uapi.ENOENT, "no BTF object has id %d", id)
	}
	o.refs++
	return &BTFHandle{k: k, obj: o}, nil
}

// BTFIDs returns the ids of the kernel's BTF objects in the order
// BPF_BTF_GET_NEXT_ID walks them.
func (k *Kernel) BTFIDs() []btf.ID {
	t := &k.btfs
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ensure(k)
	ids := make([]btf.ID, 0, len(t.byID))
	for id := range t.byID {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// ID is the object's id.
func (h *BTFHandle) ID() btf.ID { return h.obj.id }

// Info describes the object.
func (h *BTFHandle) Info() (*BTFInfo, error) {
	raw, err := h.obj.raw()
	if err != nil {
		return nil, err
	}
	return &BTFInfo{ID: h.obj.id, Name: h.obj.name, IsKernel: h.obj.kernel, Size: uint32(len(raw))}, nil
}

// Spec reads the object's types, split on base when the object is a
// module's (cilium/ebpf's Handle.Spec; nil base: the kernel's BTF).
func (h *BTFHandle) Spec(base *btf.Spec) (*btf.Spec, error) {
	if h.obj.module != nil && base == nil {
		return h.obj.module.BTF(), nil
	}
	raw, err := h.obj.raw()
	if err != nil {
		return nil, err
	}
	if base != nil {
		return btf.LoadSplitSpecFromReader(bytes.NewReader(raw), base)
	}
	return btf.LoadSpecFromReader(bytes.NewReader(raw))
}

// Close drops the handle's reference: an object from user space goes
// with its last handle.
func (h *BTFHandle) Close() error {
	if h.closed.Swap(true) {
		return nil
	}
	t := &h.k.btfs
	t.mu.Lock()
	defer t.mu.Unlock()
	t.put(h.obj)
	return nil
}
