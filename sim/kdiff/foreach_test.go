package kdiff

import (
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// The bpf_for_each_map_elem programs: each walks one of these maps, by
// the name its instructions refer to, filled by forEachFill. The hashes
// have BPF_F_ZERO_SEED, so that their buckets, and so the order of a
// walk, are the same in both kernels.
var forEachMaps = []*ebpf.MapSpec{
	{Name: "arr", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 6},
	{Name: "parr", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 4},
	{Name: "hash", Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 32, Flags: zeroSeed},
	{Name: "phash", Type: ebpf.PerCPUHash, KeySize: 4, ValueSize: 8, MaxEntries: 32, Flags: zeroSeed},
	{Name: "lru", Type: ebpf.LRUHash, KeySize: 4, ValueSize: 16, MaxEntries: 64, Flags: zeroSeed},
	{Name: "empty", Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 8, Flags: zeroSeed},
	{Name: "progs", Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 2},
}

// forEachFill are the user-space updates that fill the maps before the
// program runs: arrays in part, hashes with keys in an order unlike their
// buckets'.
func forEachFill() []MapOp {
	var ops []MapOp
	u32 := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	u64 := func(v uint64, n int) []byte {
		b := binary.LittleEndian.AppendUint64(nil, v)
		return append(b, make([]byte, n-8)...)
	}
	for i, spec := range forEachMaps {
		var keys []uint32
		switch spec.Type {
		case ebpf.Array, ebpf.PerCPUArray:
			keys = []uint32{0, 2, 3}
		case ebpf.Hash, ebpf.PerCPUHash, ebpf.LRUHash:
			if spec.Name == "empty" {
				continue
			}
			keys = []uint32{17, 3, 250, 9, 1 << 20, 42, 5, 77, 1000, 2}
		default:
			continue
		}
		for _, k := range keys {
			ops = append(ops, MapOp{Kind: MapUpdate, Map: i, Key: u32(k), Value: u64(uint64(k)*0x10001+7, int(spec.ValueSize))})
		}
	}
	return ops
}

// walk calls bpf_for_each_map_elem(mapName, cb, fp-8, flags) and keeps
// the count in R7.
func walk(mapName, cb string, flags asm.Instruction) asm.Instructions {
	return asm.Instructions{
		asm.LoadMapPtr(asm.R1, 0).WithReference(mapName),
		loadFunc(asm.R2, cb),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		flags,
		asm.FnForEachMapElem.Call(),
		asm.Mov.Reg(asm.R7, asm.R0),
	}
}

// walkMain is loopMain for a body that leaves a count in R7 (zeroed
// first): the count times 1000 plus the u64 at fp-8, cut to 32 bits.
func walkMain(body asm.Instructions, funcs ...asm.Instructions) asm.Instructions {
	all := append(asm.Instructions{asm.Mov.Imm(asm.R7, 0)}, body...)
	return loopMain(append(all, asm.Mov.Reg(asm.R0, asm.R7)), funcs...)
}

// foldCallback folds each element into the u64 its ctx points to, in an
// order-sensitive way (ctx = ctx*31 + value + key), runs extra, and
// returns ret, or 1 once the key is stopKey (when stopKey >= 0).
func foldCallback(sym string, stopKey int32, extra asm.Instructions) asm.Instructions {
	out := asm.Instructions{
		withFuncInfo(asm.Mov.Reg(asm.R6, asm.R1), sym, 4).WithSymbol(sym),
		asm.Mov.Reg(asm.R7, asm.R2),
		asm.Mov.Reg(asm.R8, asm.R3),
		asm.Mov.Reg(asm.R9, asm.R4),
		asm.LoadMem(asm.R5, asm.R9, 0, asm.DWord),
		asm.Mul.Imm(asm.R5, 31),
		asm.LoadMem(asm.R0, asm.R8, 0, asm.DWord),
		asm.Add.Reg(asm.R5, asm.R0),
		asm.LoadMem(asm.R0, asm.R7, 0, asm.Word),
		asm.Add.Reg(asm.R5, asm.R0),
		asm.StoreMem(asm.R9, 0, asm.R5, asm.DWord),
	}
	out = append(out, extra...)
	out = append(out, asm.Mov.Imm(asm.R0, 0))
	if stopKey >= 0 {
		out = append(out,
			asm.LoadMem(asm.R1, asm.R7, 0, asm.Word),
			asm.JNE.Imm(asm.R1, stopKey, sym+"_ret"),
			asm.Mov.Imm(asm.R0, 1),
		)
	}
	return append(out, asm.Return().WithSymbol(sym+"_ret"))
}

var (
	// incValue adds 1 to the element's value (R8).
	incValue = asm.Instructions{
		asm.LoadMem(asm.R1, asm.R8, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R8, 0, asm.R1, asm.DWord),
	}
	// deleteElem deletes the element (map R6, key R7) from the walk.
	deleteElem = asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.FnMapDeleteElem.Call(),
	}
	// firstByteFlags puts the low bit of the packet's first byte in R8
	// (0 for an empty packet).
	firstByteFlags = asm.Instructions{
		asm.Mov.Imm(asm.R8, 0),
		asm.LoadMem(asm.R2, asm.R9, 0, asm.Word),
		asm.LoadMem(asm.R3, asm.R9, 4, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 1),
		asm.JGT.Reg(asm.R4, asm.R3, "nobyte"),
		asm.LoadMem(asm.R8, asm.R2, 0, asm.Byte),
		asm.And.Imm(asm.R8, 1),
		asm.Mov.Imm(asm.R5, 0).WithSymbol("nobyte"),
	}
)

// plainCallback is a callback whose body is insns (R1-R4 as given).
func plainCallback(sym string, insns ...asm.Instruction) asm.Instructions {
	out := append(asm.Instructions(nil), insns...)
	out[0] = withFuncInfo(out[0], sym, 4).WithSymbol(sym)
	return out
}

// forEachCases are programs that call bpf_for_each_map_elem, accepted or
// refused. errno and msg are what this machine's kernel (Linux 6.18)
// answered; TestForEachMapElemMatchesKernel asks it again where it can.
var forEachCases = []struct {
	name  string
	errno uapi.Errno
	msg   string
	insns asm.Instructions
}{
	{"an array, every element", 0, "", walkMain(walk("arr", "cb", flags0), foldCallback("cb", -1, nil))},
	{"an array, stopped at key 3", 0, "", walkMain(walk("arr", "cb", flags0), foldCallback("cb", 3, nil))},
	{"an array, values incremented", 0, "", walkMain(walk("arr", "cb", flags0), foldCallback("cb", -1, incValue))},
	{"a per-CPU array: this CPU's values", 0, "", walkMain(walk("parr", "cb", flags0), foldCallback("cb", -1, incValue))},
	{"a hash, in bucket order", 0, "", walkMain(walk("hash", "cb", flags0), foldCallback("cb", -1, nil))},
	{"a hash, stopped at key 9", 0, "", walkMain(walk("hash", "cb", flags0), foldCallback("cb", 9, nil))},
	{"a hash, every element deleted as it is passed", 0, "", walkMain(walk("hash", "cb", flags0), foldCallback("cb", -1, deleteElem))},
	{"a per-CPU hash: this CPU's values", 0, "", walkMain(walk("phash", "cb", flags0), foldCallback("cb", -1, incValue))},
	{"an LRU hash", 0, "", walkMain(walk("lru", "cb", flags0), foldCallback("cb", 42, incValue))},
	{"an empty hash", 0, "", walkMain(walk("empty", "cb", flags0), foldCallback("cb", -1, nil))},
	{"flags from the packet: -EINVAL when set", 0, "",
		walkMain(append(firstByteFlags, walk("hash", "cb", asm.Mov.Reg(asm.R4, asm.R8))...), foldCallback("cb", -1, nil))},
	{"a map chosen by the packet: the generic helper", 0, "",
		walkMain(append(firstByteFlags,
			asm.LoadMapPtr(asm.R1, 0).WithReference("arr"),
			asm.JEq.Imm(asm.R8, 0, "chosen"),
			asm.LoadMapPtr(asm.R1, 0).WithReference("hash"),
			loadFunc(asm.R2, "cb").WithSymbol("chosen"),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, -8),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnForEachMapElem.Call(),
			asm.Mov.Reg(asm.R7, asm.R0),
		), foldCallback("cb", -1, nil))},
	{"nested walks: a hash inside an array", 0, "",
		walkMain(walk("arr", "outer", flags0),
			foldCallback("outer", -1, asm.Instructions{
				asm.LoadMapPtr(asm.R1, 0).WithReference("hash"),
				loadFunc(asm.R2, "inner"),
				asm.Mov.Reg(asm.R3, asm.R9),
				asm.Mov.Imm(asm.R4, 0),
				asm.FnForEachMapElem.Call(),
			}),
			foldCallback("inner", 250, nil))},
	{"the key passed on to a lookup", 0, "",
		walkMain(walk("hash", "cb", flags0), plainCallback("cb",
			asm.Mov.Reg(asm.R6, asm.R4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "cb_out"),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
			asm.LoadMem(asm.R2, asm.R6, 0, asm.DWord),
			asm.Add.Reg(asm.R2, asm.R1),
			asm.StoreMem(asm.R6, 0, asm.R2, asm.DWord),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("cb_out"),
			asm.Return(),
		))},
	{"a counter the callback bumps: imprecise scalars widened", 0, "",
		walkMain(walk("hash", "cb", flags0), plainCallback("cb",
			asm.LoadMem(asm.R1, asm.R4, 0, asm.DWord),
			asm.Add.Imm(asm.R1, 1),
			asm.StoreMem(asm.R4, 0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return()))},
	{"a NULL context", 0, "",
		walkMain(asm.Instructions{
			asm.LoadMapPtr(asm.R1, 0).WithReference("arr"),
			loadFunc(asm.R2, "cb"),
			asm.Mov.Imm(asm.R3, 0),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnForEachMapElem.Call(),
			asm.Mov.Reg(asm.R7, asm.R0),
		}, plainCallback("cb", asm.Mov.Imm(asm.R0, 0), asm.Return()))},
	{"the key written", uapi.EACCES, "write to change key R2 not allowed",
		walkMain(walk("hash", "cb", flags0), plainCallback("cb", asm.StoreImm(asm.R2, 0, 1, asm.Word), asm.Mov.Imm(asm.R0, 0), asm.Return()))},
	{"a read past the key", uapi.EACCES, "R2 min value is outside of the allowed memory range",
		walkMain(walk("hash", "cb", flags0), plainCallback("cb", asm.LoadMem(asm.R0, asm.R2, 2, asm.Word), asm.Mov.Imm(asm.R0, 0), asm.Return()))},
	{"a read past the value", uapi.EACCES, "R3 min value is outside of the allowed memory range",
		walkMain(walk("arr", "cb", flags0), plainCallback("cb", asm.LoadMem(asm.R0, asm.R3, 4, asm.DWord), asm.Mov.Imm(asm.R0, 0), asm.Return()))},
	{"a value read at an offset within it", 0, "",
		walkMain(walk("lru", "cb", flags0), plainCallback("cb",
			asm.Add.Imm(asm.R3, 8),
			asm.LoadMem(asm.R0, asm.R3, 0, asm.DWord),
			asm.LoadMem(asm.R1, asm.R2, 0, asm.Word),
			asm.StoreMem(asm.R3, 0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return()))},
	{"the callback returns 2", uapi.EINVAL, "At callback return the register R0 has smin=2 smax=2 should have been in [0, 1]",
		walkMain(walk("arr", "cb", flags0), plainCallback("cb", asm.Mov.Imm(asm.R0, 2), asm.Return()))},
	{"the callback returns the key pointer", uapi.EACCES, "R0 not a scalar value",
		walkMain(walk("arr", "cb", flags0), plainCallback("cb", asm.Mov.Reg(asm.R0, asm.R2), asm.Return()))},
	{"a prog array cannot be walked", ENOTSUPP, "callback function not allowed for map",
		walkMain(walk("progs", "cb", flags0), plainCallback("cb", asm.Mov.Imm(asm.R0, 0), asm.Return()))},
	{"R5 is not set", uapi.EACCES, "R5 !read_ok",
		walkMain(walk("arr", "cb", flags0), plainCallback("cb", asm.Mov.Reg(asm.R0, asm.R5), asm.Mov.Imm(asm.R0, 0), asm.Return()))},
}

const zeroSeed = uapi.BPF_F_ZERO_SEED

// ENOTSUPP is the kernel-internal errno a map type without a walk gets.
const ENOTSUPP = uapi.ENOTSUPP

// forEachSpec is a case's program with the maps' fds.
func forEachSpec(t testing.TB, insns asm.Instructions, fds map[string]int) *ebpf.ProgramSpec {
	t.Helper()
	spec := ringbufRefSpec(t, insns, fds)
	spec.Name = "foreach"
	return spec
}

// bpfsim gives each bpf_for_each_map_elem program the kernel's verdict:
// this runs on any machine.
func TestForEachMapElemVerdicts(t *testing.T) {
	k, err := sim.NewKernel(nil)
	if err != nil {
		t.Fatal(err)
	}
	fds := map[string]int{}
	for _, spec := range forEachMaps {
		m, err := k.NewMap(spec)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		fds[spec.Name] = m.FD()
	}
	for _, c := range forEachCases {
		t.Run(c.name, func(t *testing.T) {
			wantVerdict(t, k, forEachSpec(t, c.insns, fds), c.errno, c.msg)
		})
	}
}
