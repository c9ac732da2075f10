package sim_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	pkgerrors "github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// fifo is a map type defined outside bpfsim, the way a user would add one:
// a FIFO queue in the spirit of BPF_MAP_TYPE_QUEUE, registered under a
// type number the kernel does not use. It uses only the maps contract and
// the simulated memory.
type fifo struct {
	m     *maps.Map
	mu    sync.Mutex
	items [][]byte
}

// fifoTypeID is a map type number no kernel has.
const fifoTypeID = 0x7f01

var fifoType = &maps.Type{
	ID:   fifoTypeID,
	Name: "test_fifo",
	AllocCheck: func(attr *maps.Attr) error {
		if attr.KeySize != 0 || attr.ValueSize == 0 || attr.MaxEntries == 0 {
			return pkgerrors.Wrap(uapi.EINVAL, "a queue has no key, and needs a value and a size")
		}
		return nil
	},
	Alloc: func(k maps.Kernel, m *maps.Map) (maps.Ops, error) {
		// The map object needs an address programs can hold.
		addr, err := k.Memory().Vmalloc(64, mem.PermRW, "test_fifo")
		if err != nil {
			return nil, err
		}
		m.Addr = addr
		return &fifo{m: m}, nil
	},
}

func (q *fifo) LookupElem(int, []byte) (uint64, error) {
	return 0, pkgerrors.Wrap(uapi.EOPNOTSUPP, "queues are not looked up")
}
func (q *fifo) UpdateElem(int, []byte, []byte, uint64) error {
	return pkgerrors.Wrap(uapi.EINVAL, "use push")
}
func (q *fifo) DeleteElem(int, []byte) error {
	return pkgerrors.Wrap(uapi.EINVAL, "use pop")
}
func (q *fifo) GetNextKey([]byte, []byte) error {
	return pkgerrors.Wrap(uapi.EINVAL, "queues have no keys")
}
func (q *fifo) Free() { _ = q.m.Kernel.Memory().Free(q.m.Addr) }

func (q *fifo) PushElem(_ int, value []byte, flags uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == int(q.m.MaxEntries) {
		return pkgerrors.Wrap(uapi.E2BIG, "queue full")
	}
	q.items = append(q.items, append([]byte(nil), value...))
	return nil
}

func (q *fifo) PopElem(cpu int, value []byte) error {
	if err := q.PeekElem(cpu, value); err != nil {
		return err
	}
	q.mu.Lock()
	q.items = q.items[1:]
	q.mu.Unlock()
	return nil
}

func (q *fifo) PeekElem(_ int, value []byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return pkgerrors.Wrap(uapi.ENOENT, "queue empty")
	}
	copy(value, q.items[0])
	return nil
}

func TestAMapTypeFromOutsideWorksThroughTheHelpers(t *testing.T) {
	k := newKernel(t, nil)
	if _, err := k.NewMap(&ebpf.MapSpec{Type: fifoTypeID, ValueSize: 4, MaxEntries: 2}); !errors.Is(err, uapi.EINVAL) {
		t.Fatalf("queue before registration: %v", err)
	}
	if err := k.RegisterMapType(fifoType); err != nil {
		t.Fatal(err)
	}
	if err := k.RegisterMapType(fifoType); !errors.Is(err, uapi.EEXIST) {
		t.Errorf("registering twice: %v", err)
	}
	q := newMap(t, k, &ebpf.MapSpec{Name: "q", Type: fifoTypeID, ValueSize: 4, MaxEntries: 2})

	// push(q, &ctx[0], 0); push(q, &ctx[1], 0); r0 = push again (E2BIG);
	// pop(q, &ctx[2]); return r0. Helpers take stack memory, not the
	// context: values go through fp-8.
	push := func(off int16) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R2, asm.R6, off, asm.Word),
			asm.StoreMem(asm.RFP, -8, asm.R2, asm.Word),
			asm.LoadMapPtr(asm.R1, q.FD()).WithReference("q"),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -8),
			asm.Mov.Imm(asm.R3, 0),
			asm.FnMapPushElem.Call(),
		}
	}
	insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	insns = append(insns, push(0)...)
	insns = append(insns, push(4)...)
	insns = append(insns, push(0)...)
	insns = append(insns,
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.LoadMapPtr(asm.R1, q.FD()).WithReference("q"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapPopElem.Call(),
		asm.LoadMem(asm.R1, asm.RFP, -8, asm.Word),
		asm.StoreMem(asm.R6, 8, asm.R1, asm.Word),
		asm.Mov.Reg(asm.R0, asm.R7),
		asm.Return(),
	)
	p := load(t, k, ebpf.Syscall, associate(t, "q", q, insns))
	ctx := []uint32{111, 222, 0}
	var out [3]uint32
	ret, err := p.Run(&sim.RunOptions{Context: ctx, ContextOut: &out})
	if err != nil {
		t.Fatal(err)
	}
	if int32(ret) != -int32(uapi.E2BIG) {
		t.Errorf("third push returned %d, want -E2BIG", int32(ret))
	}
	if out[2] != 111 {
		t.Errorf("pop gave %d, want the first value pushed, 111", out[2])
	}
}

// associate points every reference to name in insns at m.
func associate(t testing.TB, name string, m *sim.Map, insns asm.Instructions) asm.Instructions {
	t.Helper()
	if err := insns.AssociateMap(name, m); err != nil {
		t.Fatal(err)
	}
	return insns
}
