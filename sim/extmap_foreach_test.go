package sim_test

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	pkgerrors "github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// slots is a map type from outside bpfsim that programs may walk: u32
// indexes to values kept in simulated memory, walked from the last slot
// to the first (its own order, which the walk must keep).
type slots struct {
	m      *maps.Map
	values uint64 // the values' address
}

const slotsTypeID = 0x7f02

var slotsType = &maps.Type{
	ID:   slotsTypeID,
	Name: "test_slots",
	AllocCheck: func(attr *maps.Attr) error {
		if attr.KeySize != 4 || attr.ValueSize != 8 || attr.MaxEntries == 0 || attr.MaxEntries > 64 {
			return pkgerrors.Wrap(uapi.EINVAL, "slots have u32 keys, u64 values and at most 64 entries")
		}
		return nil
	},
	Alloc: func(k maps.Kernel, m *maps.Map) (maps.Ops, error) {
		addr, err := k.Memory().Vmalloc(64+uint64(m.MaxEntries)*8, mem.PermRW, "test_slots")
		if err != nil {
			return nil, err
		}
		m.Addr = addr
		return &slots{m: m, values: addr + 64}, nil
	},
}

func (s *slots) index(key []byte) (uint32, bool) {
	i := binary.LittleEndian.Uint32(key)
	return i, i < s.m.MaxEntries
}

func (s *slots) LookupElem(_ int, key []byte) (uint64, error) {
	i, ok := s.index(key)
	if !ok {
		return 0, nil
	}
	return s.values + uint64(i)*8, nil
}

func (s *slots) UpdateElem(_ int, key, value []byte, _ uint64) error {
	i, ok := s.index(key)
	if !ok {
		return pkgerrors.Wrap(uapi.E2BIG, "no such slot")
	}
	return s.m.Kernel.Memory().Write(s.values+uint64(i)*8, value)
}

func (s *slots) DeleteElem(int, []byte) error { return pkgerrors.Wrap(uapi.EINVAL, "slots stay") }
func (s *slots) GetNextKey([]byte, []byte) error {
	return pkgerrors.Wrap(uapi.EINVAL, "not needed here")
}
func (s *slots) Free() { _ = s.m.Kernel.Memory().Free(s.m.Addr) }

// ForEachElem walks the slots from the last to the first, with no stored
// keys: the program gets each index by address.
func (s *slots) ForEachElem(_ int, fn func(key uint64, idx uint32, value uint64) (bool, error)) (uint32, error) {
	var n uint32
	for i := int(s.m.MaxEntries) - 1; i >= 0; i-- {
		n++
		if stop, err := fn(0, uint32(i), s.values+uint64(i)*8); stop || err != nil {
			return n, err
		}
	}
	return n, nil
}

// A program walks a map type a user registered: the verifier accepts the
// walk because the type's Ops can walk (maps.ForEacher), the call goes to
// the type's own walk function, and the callback sees the type's order,
// each index by address and each value.
func TestAMapTypeFromOutsideCanBeWalked(t *testing.T) {
	k := newKernel(t, nil)
	if err := k.RegisterMapType(slotsType); err != nil {
		t.Fatal(err)
	}
	s := newMap(t, k, &ebpf.MapSpec{Name: "s", Type: slotsTypeID, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	for i := uint32(0); i < 4; i++ {
		if err := s.Update(i, uint64(i+1)*10, 0); err != nil {
			t.Fatal(err)
		}
	}
	fn := staticFuncBTF
	// The callback folds each element into *ctx as ctx*100 + index*10 +
	// value/10: the digits spell the order of the walk.
	insns := asm.Instructions{
		btf.WithFuncMetadata(asm.Mov.Imm(asm.R6, 0), fn("main", 1)),
		asm.StoreMem(asm.RFP, -8, asm.R6, asm.DWord),
		asm.LoadMapPtr(asm.R1, s.FD()).WithReference("s"),
		asm.Instruction{OpCode: asm.LoadImmOp(asm.DWord), Src: asm.PseudoFunc, Dst: asm.R2, Constant: -1}.WithReference("cb"),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnForEachMapElem.Call(),
		asm.LoadMem(asm.R1, asm.RFP, -8, asm.DWord),
		asm.Mul.Imm(asm.R0, 100000),
		asm.Add.Reg(asm.R0, asm.R1),
		asm.Return(),
		btf.WithFuncMetadata(asm.LoadMem(asm.R5, asm.R4, 0, asm.DWord), fn("cb", 4)).WithSymbol("cb"),
		asm.Mul.Imm(asm.R5, 100),
		asm.LoadMem(asm.R0, asm.R2, 0, asm.Word),
		asm.Mul.Imm(asm.R0, 10),
		asm.Add.Reg(asm.R5, asm.R0),
		asm.LoadMem(asm.R0, asm.R3, 0, asm.DWord),
		asm.Div.Imm(asm.R0, 10),
		asm.Add.Reg(asm.R5, asm.R0),
		asm.StoreMem(asm.R4, 0, asm.R5, asm.DWord),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}
	p := load(t, k, ebpf.XDP, associate(t, "s", s, insns))
	if x := p.Xlated(); !strings.Contains(x, "call test_slots_map_for_each_callback") {
		t.Errorf("the walk is not a direct call of test_slots_map_for_each_callback:\n%s", x)
	}
	ret, err := p.Run(&sim.RunOptions{Data: make([]byte, 14)})
	if err != nil {
		t.Fatal(err)
	}
	// 4 calls; slots 3, 2, 1, 0 with values 40, 30, 20, 10.
	if want := uint32(4*100000 + 34231201); ret != want {
		t.Errorf("the walk returned %d, want %d", ret, want)
	}
}

// staticFuncBTF is the BTF func info of a static function taking params
// longs and returning int, for asm programs with callbacks.
func staticFuncBTF(name string, params int) *btf.Func {
	long := &btf.Int{Name: "long", Size: 8, Encoding: btf.Signed}
	ps := make([]btf.FuncParam, params)
	for i := range ps {
		ps[i] = btf.FuncParam{Name: string(rune('a' + i)), Type: long}
	}
	return &btf.Func{Name: name, Linkage: btf.StaticFunc,
		Type: &btf.FuncProto{Return: &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}, Params: ps}}
}
