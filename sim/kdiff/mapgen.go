package kdiff

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Map generation. With GenOptions.Maps.Count > 0 a program gets one to
// Count maps (ARRAY, PERCPU_ARRAY, HASH, PERCPU_HASH with varied key and
// value sizes, max_entries and flags), a body that also looks keys up,
// reads and writes the values it finds, updates with every flag and
// deletes, and user-space operations that run before and after the program
// (Program.Before, Program.After). Both runners create the maps, run the
// operations, test-run the program (Program.Runs) and dump every map at
// the end, so an Outcome holds everything a map can show.
//
// Keys and values a program passes to the helpers live in the stack area
// every function initialises: the key at r10-16 (up to 16 bytes), the value
// to store at r10-48 (up to 32 bytes). A key is written there from
// constants (one of the map's pool of keys, which user space uses too),
// copied from the packet (the generator plants pool keys at the end of the
// packet), built from a scalar register, or left as the previous operation
// wrote it. A lookup is followed by a null check; on a hit the value
// pointer, in r0 or moved to one of r1-r5, serves loads, stores and atomics
// within value_size; the hit path ends by loading a value into r0 and the
// miss path sets r0 to a marker, so r0 is a scalar again after the join.
// Helper return values stay in r0 or are folded into a scalar register;
// r1-r5 are dead after every call, as the verifier wants. Map operations
// are not generated inside loops, for the reason bpf-to-bpf calls are not:
// a call in a loop body kills r1-r5 for the part of the body before it from
// the second iteration on. Value pointers never outlive the next call, so
// programs never read a value after deleting its element (the one place
// where bpfsim, which reuses hash elements only after a grace period,
// deliberately differs from the kernel).
//
// Per-CPU maps: every test run is pinned to a CPU (Program.Runs), the same
// on both sides, so a program's accesses reach the same CPU's copy, and
// user space compares every CPU's copy.

// MapGenOptions choose the maps of generated programs. The zero value
// turns map generation off.
type MapGenOptions struct {
	// Count is the most maps a program gets; it gets 1 to Count.
	Count int
	// UserOps is about how many user-space operations run on the maps
	// before the program (besides an initial fill); a third as many run
	// after it.
	UserOps int
	// Runs is the most test runs of the program (1 to Runs; 0 means 1).
	Runs int
	// CPUs is how many CPUs, 0 to CPUs-1, the runs are spread over; 0 or
	// 1 means every run is on CPU 0.
	CPUs int
}

// DefaultMapGenOptions is DefaultGenOptions with maps: everything the
// interpreter supports plus map operations, on CPU 0 only (set
// Maps.CPUs to spread runs over more CPUs).
var DefaultMapGenOptions = func() GenOptions {
	o := DefaultGenOptions
	o.Maps = MapGenOptions{Count: 3, UserOps: 14, Runs: 2, CPUs: 1}
	return o
}()

// MapOpKind is a user-space map operation (a bpf() command).
type MapOpKind uint8

const (
	MapLookup          MapOpKind = iota // BPF_MAP_LOOKUP_ELEM
	MapUpdate                           // BPF_MAP_UPDATE_ELEM
	MapDelete                           // BPF_MAP_DELETE_ELEM
	MapNextKey                          // BPF_MAP_GET_NEXT_KEY
	MapLookupAndDelete                  // BPF_MAP_LOOKUP_AND_DELETE_ELEM
)

func (k MapOpKind) String() string {
	switch k {
	case MapLookup:
		return "lookup"
	case MapUpdate:
		return "update"
	case MapDelete:
		return "delete"
	case MapNextKey:
		return "next_key"
	case MapLookupAndDelete:
		return "lookup_and_delete"
	}
	return fmt.Sprintf("op%d", uint8(k))
}

// MapOp is one user-space operation on map Map (an index into
// Program.Maps).
type MapOp struct {
	Kind MapOpKind
	Map  int
	// Key is KeySize bytes; nil for MapNextKey asks for the first key.
	Key []byte
	// Value is what MapUpdate stores: ValueSize bytes. A per-CPU map's
	// CPU c gets PercpuValue(Value, c).
	Value []byte
	Flags uint64
}

func (op MapOp) String() string {
	s := fmt.Sprintf("%s(m%d", op.Kind, op.Map)
	if op.Key != nil || op.Kind != MapNextKey {
		s += fmt.Sprintf(", key % x", op.Key)
	} else {
		s += ", NULL"
	}
	if op.Kind == MapUpdate {
		s += fmt.Sprintf(", value % x, flags %#x", op.Value, op.Flags)
	}
	return s + ")"
}

// PercpuValue is the value CPU cpu's copy gets when user space updates a
// per-CPU map with v: v with every byte increased by 0x11 per CPU, so the
// copies differ.
func PercpuValue(v []byte, cpu int) []byte {
	out := make([]byte, len(v))
	for i, b := range v {
		out[i] = b + byte(0x11*cpu)
	}
	return out
}

// IsPercpu reports whether the map has one value per CPU.
func IsPercpu(spec *ebpf.MapSpec) bool {
	return spec.Type == ebpf.PerCPUArray || spec.Type == ebpf.PerCPUHash
}

// Ordered reports whether the order of the map's keys is the same on every
// kernel: arrays, and hashes seeded with zero (BPF_F_ZERO_SEED), whose
// buckets bpfsim computes as the kernel does. Other hashes use a random
// seed, so their get_next_key order can only be compared as a set.
func Ordered(spec *ebpf.MapSpec) bool {
	switch spec.Type {
	case ebpf.Array, ebpf.PerCPUArray:
		return true
	}
	return spec.Flags&uapi.BPF_F_ZERO_SEED != 0
}

// The stack areas map operations pass to helpers, inside the 64 bytes every
// function initialises.
const (
	keyArea      = -16 // r10-16 .. r10-1
	valueArea    = -48 // r10-48 .. r10-17
	maxKeySize   = 16
	maxValueSize = 32
)

// Packet offsets where pool keys are planted for programs to copy: past
// everything the epilogue overwrites (it writes bytes 0 to 136).
var pktKeySlots = []int{136, 152, 168}

// mapGen is the state of map generation for one program.
type mapGen struct {
	specs []*ebpf.MapSpec
	// pools hold each map's candidate keys: in range and out of range
	// indices for arrays, max_entries+2 distinct keys for hashes (so maps
	// fill up).
	pools [][][]byte
	// planted is what each packet key slot holds (nil: nothing yet).
	planted [][]byte
}

func (g *gen) newMapGen() *mapGen {
	mg := &mapGen{planted: make([][]byte, len(pktKeySlots))}
	n := 1 + g.intn(g.o.Maps.Count)
	for i := 0; i < n; i++ {
		spec := &ebpf.MapSpec{Name: fmt.Sprintf("m%d", i)}
		spec.Type = []ebpf.MapType{ebpf.Array, ebpf.PerCPUArray, ebpf.Hash, ebpf.PerCPUHash}[g.intn(4)]
		spec.ValueSize = uint32([]int{1, 2, 3, 4, 5, 8, 8, 12, 16, 16, 20, 24, 32}[g.intn(13)])
		spec.MaxEntries = uint32(1 + g.intn(16))
		if g.chance(40) {
			spec.MaxEntries = uint32(1 + g.intn(4))
		}
		var pool [][]byte
		if spec.Type == ebpf.Array || spec.Type == ebpf.PerCPUArray {
			spec.KeySize = 4
			for idx := uint32(0); idx < spec.MaxEntries+2; idx++ {
				pool = append(pool, le32(idx))
			}
			pool = append(pool, le32([]uint32{0xffffffff, 0x80000000, 0x10000, spec.MaxEntries + 7}[g.intn(4)]))
		} else {
			spec.KeySize = uint32([]int{1, 2, 4, 4, 5, 8, 8, 12, 16}[g.intn(9)])
			if g.chance(75) {
				spec.Flags |= uapi.BPF_F_ZERO_SEED
			}
			if g.chance(40) {
				spec.Flags |= uapi.BPF_F_NO_PREALLOC
			}
			seen := map[string]bool{}
			for len(pool) < int(spec.MaxEntries)+2 {
				k := g.randBytes(int(spec.KeySize))
				if len(pool) > 0 && g.chance(30) {
					// A neighbour of another key: one byte differs.
					k = append([]byte(nil), pool[g.intn(len(pool))]...)
					k[g.intn(len(k))] ^= byte(1 + g.intn(255))
				}
				if !seen[string(k)] {
					seen[string(k)] = true
					pool = append(pool, k)
				}
			}
		}
		mg.specs = append(mg.specs, spec)
		mg.pools = append(mg.pools, pool)
	}
	return mg
}

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func (g *gen) randBytes(n int) []byte {
	b := make([]byte, n)
	switch g.intn(4) {
	case 0: // small numbers
		b[0] = byte(g.intn(8))
	case 1: // a repeated byte
		c := byte(g.rnd.Uint32())
		for i := range b {
			b[i] = c
		}
	default:
		for i := range b {
			b[i] = byte(g.rnd.Uint32())
		}
	}
	return b
}

// poolKey picks a key of map m: mostly from its pool, sometimes random.
// The pool's first half is what the initial fill inserts first; keys
// drawn with likely are mostly from there, so they tend to be present.
func (g *gen) poolKey(m int) []byte { return g.poolKeyBiased(m, false) }

func (g *gen) poolKeyBiased(m int, likely bool) []byte {
	pool := g.maps.pools[m]
	if g.chance(5) {
		return g.randBytes(int(g.maps.specs[m].KeySize))
	}
	if likely && g.chance(60) {
		return append([]byte(nil), pool[g.intn(max(1, len(pool)/2))]...)
	}
	return append([]byte(nil), pool[g.intn(len(pool))]...)
}

// finishMaps completes p once the instructions and packet exist: it
// plants keys into the packet and generates the user-space operations and
// the test runs.
func (g *gen) finishMaps(p *Program) {
	mg := g.maps
	for i, k := range mg.planted {
		if k != nil {
			copy(p.Packet[pktKeySlots[i]:], k)
		}
	}
	p.Maps = mg.specs
	// Fill every map, then mix operations.
	for m, spec := range mg.specs {
		n := int(spec.MaxEntries) * (3 + g.intn(10)) / 8
		for i := 0; i < n; i++ {
			op := g.userUpdate(m, 70)
			if g.chance(60) {
				op.Key = append([]byte(nil), mg.pools[m][i%len(mg.pools[m])]...)
			}
			p.Before = append(p.Before, op)
		}
	}
	for i := 0; i < g.o.Maps.UserOps; i++ {
		p.Before = append(p.Before, g.userOp())
	}
	for i := 0; i < (g.o.Maps.UserOps+2)/3; i++ {
		p.After = append(p.After, g.userOp())
	}
	runs := 1
	if g.o.Maps.Runs > 1 {
		runs += g.intn(g.o.Maps.Runs)
	}
	for i := 0; i < runs; i++ {
		cpu := 0
		if g.o.Maps.CPUs > 1 {
			cpu = g.intn(g.o.Maps.CPUs)
		}
		p.Runs = append(p.Runs, cpu)
	}
}

// userUpdate is an update with BPF_ANY anyPercent of the time, else
// another flag or an invalid one.
func (g *gen) userUpdate(m, anyPercent int) MapOp {
	op := MapOp{Kind: MapUpdate, Map: m, Key: g.poolKey(m), Value: g.randBytes(int(g.maps.specs[m].ValueSize))}
	if !g.chance(anyPercent) {
		op.Flags = g.updateFlags()
	}
	return op
}

// updateFlags draws BPF_ANY, BPF_NOEXIST, BPF_EXIST or an invalid value
// (BPF_F_LOCK without a spin lock among them).
func (g *gen) updateFlags() uint64 {
	switch n := g.intn(100); {
	case n < 30:
		return uapi.BPF_ANY
	case n < 55:
		return uapi.BPF_NOEXIST
	case n < 80:
		return uapi.BPF_EXIST
	}
	return []uint64{3, 4, 5, 6, 7, 8, 0x10, 0x100}[g.intn(8)]
}

func (g *gen) userOp() MapOp {
	m := g.intn(len(g.maps.specs))
	switch n := g.intn(100); {
	case n < 25:
		return MapOp{Kind: MapLookup, Map: m, Key: g.poolKey(m)}
	case n < 55:
		return g.userUpdate(m, 40)
	case n < 70:
		return MapOp{Kind: MapDelete, Map: m, Key: g.poolKey(m)}
	case n < 90:
		// Without a stable order, only "the first key" has an answer
		// both kernels agree on (whether the map is empty).
		if !Ordered(g.maps.specs[m]) || g.chance(20) {
			return MapOp{Kind: MapNextKey, Map: m}
		}
		return MapOp{Kind: MapNextKey, Map: m, Key: g.poolKey(m)}
	}
	return MapOp{Kind: MapLookupAndDelete, Map: m, Key: g.poolKey(m)}
}

// mapOp emits a map operation in a program: a lookup with accesses to the
// value, an update or a delete.
func (g *gen) mapOp(out *asm.Instructions, _ int) {
	m := g.intn(len(g.maps.specs))
	spec := g.maps.specs[m]
	n := g.intn(100)
	if spec.Type == ebpf.Array || spec.Type == ebpf.PerCPUArray {
		n = n * 90 / 100 // fewer deletes: they always fail
	}
	switch {
	case n < 50:
		g.mapLookup(out, m)
	case n < 82:
		g.mapUpdate(out, m)
	default:
		g.mapDelete(out, m)
	}
}

// mapCall emits the call of a map helper whose arguments are in place
// except r1 and r2 (map and key), then marks r1-r5 dead and r0 live.
func (g *gen) mapCall(out *asm.Instructions, m int, fn asm.BuiltinFunc) {
	*out = append(*out,
		asm.LoadMapPtr(asm.R1, 0).WithReference(g.maps.specs[m].Name),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, keyArea),
		fn.Call(),
	)
	for r := asm.R1; r <= asm.R5; r++ {
		delete(g.live, r)
	}
	g.live[asm.R0] = true
}

// buildKey writes a key for map m at r10-16.
func (g *gen) buildKey(out *asm.Instructions, m int) {
	spec := g.maps.specs[m]
	ks := int(spec.KeySize)
	isArray := spec.Type == ebpf.Array || spec.Type == ebpf.PerCPUArray
	// Scalars make array indices in and out of range, but hash keys that
	// are rarely present: fewer of those.
	scalar := 55
	if !isArray {
		scalar = 44
	}
	switch n := g.intn(100); {
	case n < 20:
		// Whatever the previous operation left there.
	case n < 40 && g.inMain && g.o.PacketSize >= pktKeySlots[len(pktKeySlots)-1]+maxKeySize:
		slot := g.intn(len(pktKeySlots))
		if g.maps.planted[slot] == nil {
			k := make([]byte, maxKeySize)
			copy(k, g.poolKeyBiased(m, true))
			g.maps.planted[slot] = k
		}
		// Copy the key from the packet through r1 (dead after the call
		// anyway).
		for j := 0; j < ks; {
			size := asm.Word
			switch {
			case ks-j >= 8 && j%8 == 0 && g.chance(50):
				size = asm.DWord
			case ks-j < 4:
				size = asm.Byte
			}
			*out = append(*out,
				asm.LoadMem(asm.R1, regPkt, int16(pktKeySlots[slot]+j), size),
				asm.StoreMem(asm.RFP, int16(keyArea+j), asm.R1, size))
			j += size.Sizeof()
		}
	case n < scalar:
		// From a scalar: an array index masked to a small range, or
		// the low bytes of a register for a hash key.
		src := g.liveReg(out)
		*out = append(*out, asm.Mov.Reg(asm.R1, src))
		size := asm.DWord
		if isArray {
			*out = append(*out, asm.And.Imm32(asm.R1, []int32{3, 7, 15, 31, -1}[g.intn(5)]))
			size = asm.Word
		} else if ks < 8 {
			size = []asm.Size{asm.Byte, asm.Half, asm.Word}[g.intn(3)]
		}
		*out = append(*out, asm.StoreMem(asm.RFP, keyArea, asm.R1, size))
	default:
		storeConst(out, keyArea, g.poolKeyBiased(m, true))
	}
}

// storeConst writes b at r10+off with immediate stores.
func storeConst(out *asm.Instructions, off int, b []byte) {
	for j := 0; j < len(b); {
		switch {
		case len(b)-j >= 4:
			*out = append(*out, asm.StoreImm(asm.RFP, int16(off+j), int64(int32(binary.LittleEndian.Uint32(b[j:]))), asm.Word))
			j += 4
		case len(b)-j >= 2:
			*out = append(*out, asm.StoreImm(asm.RFP, int16(off+j), int64(binary.LittleEndian.Uint16(b[j:])), asm.Half))
			j += 2
		default:
			*out = append(*out, asm.StoreImm(asm.RFP, int16(off+j), int64(b[j]), asm.Byte))
			j++
		}
	}
}

// buildValue writes some of the value to store at r10-48; the rest keeps
// what the stack held.
func (g *gen) buildValue(out *asm.Instructions, m int) {
	vs := int(g.maps.specs[m].ValueSize)
	for i := g.intn(4); i > 0; i-- {
		s := sizes[g.intn(4)]
		off := valueArea + s.Sizeof()*g.intn(maxValueSize/s.Sizeof()) // the stack wants aligned accesses
		if g.chance(50) || s == asm.DWord {
			*out = append(*out, asm.StoreMem(asm.RFP, int16(off), g.liveReg(out), s))
		} else {
			*out = append(*out, asm.StoreImm(asm.RFP, int16(off), int64(g.imm32()), s))
		}
	}
	if g.chance(30) {
		storeConst(out, valueArea, g.randBytes(vs))
	}
}

// fold keeps a helper's return value: in r0, or also in a scalar that
// later code does not clobber as readily.
func (g *gen) fold(out *asm.Instructions) {
	regs := []asm.Register{}
	for _, r := range g.scalars() {
		if r > asm.R5 && g.live[r] {
			regs = append(regs, r)
		}
	}
	if len(regs) == 0 || g.chance(30) {
		return
	}
	dst := regs[g.intn(len(regs))]
	op := []asm.ALUOp{asm.Xor, asm.Add, asm.Mov, asm.Sub}[g.intn(4)]
	*out = append(*out, op.Reg(dst, asm.R0))
}

func (g *gen) mapUpdate(out *asm.Instructions, m int) {
	g.buildKey(out, m)
	g.buildValue(out, m)
	flags := int32(g.updateFlags())
	if g.chance(3) {
		flags = -1
	}
	*out = append(*out,
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, valueArea),
		asm.Mov.Imm(asm.R4, flags))
	g.mapCall(out, m, asm.FnMapUpdateElem)
	g.fold(out)
}

func (g *gen) mapDelete(out *asm.Instructions, m int) {
	g.buildKey(out, m)
	g.mapCall(out, m, asm.FnMapDeleteElem)
	g.fold(out)
}

// mapLookup emits a lookup, a null check and, on a hit, accesses to the
// value; r0 holds a scalar afterwards on both paths.
func (g *gen) mapLookup(out *asm.Instructions, m int) {
	g.buildKey(out, m)
	g.mapCall(out, m, asm.FnMapLookupElem)
	after := copyLive(g.live)
	delete(g.live, asm.R0) // a pointer, not a scalar, until overwritten
	vs := int(g.maps.specs[m].ValueSize)

	var hit asm.Instructions
	ptr := asm.R0
	if g.chance(40) {
		ptr = asm.R1 + asm.Register(g.intn(5))
		hit = append(hit, asm.Mov.Reg(ptr, asm.R0), asm.Mov.Imm(asm.R0, g.imm32()))
		g.live[asm.R0] = true
	}
	for i := g.intn(5); i > 0; i-- {
		g.valueAccess(&hit, ptr, vs)
	}
	s := g.valueSize(vs)
	hit = append(hit, asm.LoadMem(asm.R0, ptr, int16(g.valueOffset(vs, s, true)), s))

	*out = append(*out, asm.JEq.Imm(asm.R0, 0, ""))
	(*out)[len(*out)-1].Offset = int16(rawLen(hit) + 1)
	*out = append(*out, hit...)
	*out = append(*out,
		asm.Instruction{OpCode: asm.Ja.Op(asm.ImmSource), Offset: 1},
		asm.Mov.Imm(asm.R0, []int32{0, -1, 0x5a5a, int32(g.rnd.Uint32())}[g.intn(4)]))
	// A register the hit path set is not live on the miss path.
	g.live = after
	g.fold(out)
}

// valueSize picks an access size that fits a value of vs bytes.
func (g *gen) valueSize(vs int) asm.Size {
	for {
		if s := sizes[g.intn(4)]; s.Sizeof() <= vs {
			return s
		}
	}
}

// valueOffset picks where an access of size s goes in a value of vs
// bytes: aligned, or anywhere when unaligned accesses are allowed.
func (g *gen) valueOffset(vs int, s asm.Size, unaligned bool) int {
	n := s.Sizeof()
	if unaligned && g.chance(15) {
		return g.intn(vs - n + 1)
	}
	return n * g.intn(vs/n)
}

// scalarExcept returns a live scalar register other than those in not,
// setting one if there is none.
func (g *gen) scalarExcept(out *asm.Instructions, not ...asm.Register) asm.Register {
	var live, all []asm.Register
	for _, r := range g.scalars() {
		if slices.Contains(not, r) {
			continue
		}
		all = append(all, r)
		if g.live[r] {
			live = append(live, r)
		}
	}
	if len(live) > 0 {
		return live[g.intn(len(live))]
	}
	r := all[g.intn(len(all))]
	*out = append(*out, asm.Mov.Imm(r, g.imm32()))
	g.live[r] = true
	return r
}

// valueAccess emits one load, store or atomic on the value ptr points to.
func (g *gen) valueAccess(out *asm.Instructions, ptr asm.Register, vs int) {
	switch n := g.intn(100); {
	case n < 35:
		s := g.valueSize(vs)
		off := int16(g.valueOffset(vs, s, true))
		var regs []asm.Register
		for _, r := range g.scalars() {
			if r != ptr {
				regs = append(regs, r)
			}
		}
		dst := regs[g.intn(len(regs))]
		ins := asm.LoadMem(dst, ptr, off, s)
		if g.o.CPUv4 && s != asm.DWord && g.chance(30) {
			ins = asm.LoadMemSX(dst, ptr, off, s)
		}
		*out = append(*out, ins)
		g.live[dst] = true
	case n < 60:
		s := g.valueSize(vs)
		off := int16(g.valueOffset(vs, s, true))
		*out = append(*out, asm.StoreMem(ptr, off, g.scalarExcept(out, ptr), s))
	case n < 75:
		s := g.valueSize(vs)
		if s == asm.DWord {
			s = asm.Word
		}
		off := int16(g.valueOffset(vs, s, true))
		*out = append(*out, asm.StoreImm(ptr, off, int64(g.imm32()), s))
	default:
		if vs < 4 {
			return
		}
		s := asm.Word
		if vs >= 8 && g.chance(50) {
			s = asm.DWord
		}
		off := int16(g.valueOffset(vs, s, false))
		op := atomicOps[g.intn(len(atomicOps))]
		if op == asm.CmpXchg && ptr == asm.R0 {
			op = asm.FetchAdd // r0 is the comparand: it must be a scalar
		}
		src := g.scalarExcept(out, ptr)
		if op == asm.CmpXchg {
			if !g.live[asm.R0] {
				*out = append(*out, asm.Mov.Imm(asm.R0, g.imm32()))
				g.live[asm.R0] = true
			}
			src = g.scalarExcept(out, ptr, asm.R0)
		}
		ins := op.Mem(ptr, src, s, off)
		ins.Constant = int64(op >> 8) // see atomicOp in gen.go
		*out = append(*out, ins)
	}
}
