package kdiff

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// The map-in-map corpus. GenerateMim builds one scenario from a seed: an
// outer map (ARRAY_OF_MAPS or HASH_OF_MAPS, of varied sizes and flags)
// with an inner map template (ARRAY with and without BPF_F_INNER_MAP,
// PERCPU_ARRAY, which BPF_F_INNER_MAP is not for, HASH and PERCPU_HASH
// with and without BPF_F_NO_PREALLOC, of varied sizes, some only readable
// or only writable by programs), a few inner maps user space creates
// (mostly compatible with the template, sometimes not), an XDP program, and a
// list of steps: user-space updates of the inner maps, slots of the outer
// map filled, replaced and deleted, and test runs of the program with
// their packets, interleaved.
//
// Keys are 32-bit numbers; a key of another size is the number's
// little-endian bytes, cut or padded with zeros (KeyBytes): the program
// writes the number in the first four bytes of a zeroed stack area. Outer
// hashes have keys of 2 to 12 bytes, inner hashes of 4 or 8.
//
// The program looks the outer map up one to three times, with keys that
// are constants in and out of range, words of the packet, context fields
// (ingress_ifindex, rx_queue_index: known at run time, unknown to the
// verifier) or derived from earlier results. After a null check (or,
// sometimes, without one: the verifiers' verdicts are compared too) it
// works through the inner map pointer: lookups whose values it reads,
// writes and adds to atomically, updates with every flag, deletes,
// bpf_map_lookup_percpu_elem, and bpf-to-bpf calls that get the inner
// map pointer (passed on through a second call, sometimes), the outer
// lookup's result still unchecked, or the outer map itself, as an
// argument. Everything it reads and every helper's return value is
// folded into r9, which it returns.
//
// PlayMim (mimrun.go) plays a scenario on one side, the kernel's or
// bpfsim's, and describes everything observable as lines: the load
// verdict, the errno of every user-space step, every run's return value,
// and after every run every map's contents, outer maps as the inner map
// each slot holds (by its index among the scenario's inner maps, as ids
// differ between the sides).

// Stack layout of the main function; every byte from r10-64 is
// initialised first.
const (
	mimInnerKey = -8  // r10-8 .. r10-1: the inner map's key (4 or 8 bytes)
	mimOuterKey = -24 // r10-24 .. r10-9: the outer map's key (2 to 12 bytes)
	mimValue    = -56 // r10-56 .. r10-25: the value updates store
	mimIfindex  = -64 // ctx->ingress_ifindex, saved
	mimRxQueue  = -60 // ctx->rx_queue_index, saved
	mimPktWords = 8   // the packet's first 32 bytes carry keys and values
	mimMaxValue = 32  // the largest inner value size
)

// MimStepKind is what one step of a scenario does.
type MimStepKind uint8

const (
	MimSetSlot     MimStepKind = iota // outer[Key] = Inners[Inner] (BPF_MAP_UPDATE_ELEM with its fd)
	MimDeleteSlot                     // delete outer[Key]
	MimInnerUpdate                    // Inners[Inner][Key] = Value
	MimInnerDelete                    // delete Inners[Inner][Key]
	MimRun                            // test run with Packet on CPU
)

// MimStep is one step of a scenario.
type MimStep struct {
	Kind  MimStepKind
	Inner int
	Key   uint32
	// Value is an inner update's value: ValueSize bytes; a per-CPU map's
	// CPU c gets PercpuValue(Value, c).
	Value  []byte
	Flags  uint64
	Packet []byte
	CPU    int
}

func (st MimStep) String() string {
	switch st.Kind {
	case MimSetSlot:
		return fmt.Sprintf("outer[%#x] = i%d (flags %d)", st.Key, st.Inner, st.Flags)
	case MimDeleteSlot:
		return fmt.Sprintf("delete outer[%#x]", st.Key)
	case MimInnerUpdate:
		return fmt.Sprintf("i%d[%#x] = % x (flags %d)", st.Inner, st.Key, st.Value, st.Flags)
	case MimInnerDelete:
		return fmt.Sprintf("delete i%d[%#x]", st.Inner, st.Key)
	case MimRun:
		return fmt.Sprintf("run on CPU %d, packet % x", st.CPU, st.Packet)
	}
	return fmt.Sprintf("step %d", st.Kind)
}

// MimScenario is one generated map-in-map program with its maps and
// steps.
type MimScenario struct {
	Seed uint64
	// Outer is the outer map, named "outer" as the program refers to it;
	// its InnerMap is the template.
	Outer *ebpf.MapSpec
	// Inners are the maps user space creates to put into slots, i0, i1...
	Inners []*ebpf.MapSpec
	Spec   *ebpf.ProgramSpec
	Steps  []MimStep
	// Features name what the program does, for the corpus's statistics
	// and for reading a failure.
	Features []string
}

// String describes the scenario for a failure report.
func (s *MimScenario) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: outer %s\n", s.Seed, mimSpecString(s.Outer))
	fmt.Fprintf(&b, "  template %s\n", mimSpecString(s.Outer.InnerMap))
	for i, in := range s.Inners {
		fmt.Fprintf(&b, "  i%d %s\n", i, mimSpecString(in))
	}
	fmt.Fprintf(&b, "  features: %s\n", strings.Join(s.Features, ", "))
	b.WriteString(Listing(s.Spec))
	for _, st := range s.Steps {
		fmt.Fprintf(&b, "  %s\n", st)
	}
	return b.String()
}

func mimSpecString(m *ebpf.MapSpec) string {
	return fmt.Sprintf("%v key %d value %d max_entries %d flags %#x", m.Type, m.KeySize, m.ValueSize, m.MaxEntries, m.Flags)
}

// Packet word roles: which pool a run's packet draws a word from.
const (
	roleFree = iota
	roleOuterKey
	roleInnerKey
	roleCPU
)

type mimGen struct {
	rnd  *rand.Rand
	s    *MimScenario
	tmpl *ebpf.MapSpec
	// cpus are the CPUs runs may be pinned to.
	cpus int
	// outerKeys and innerKeys are the keys user space and the program
	// use: in and out of range. The first outerLikely and innerLikely are
	// the ones mostly drawn, so that lookups mostly hit.
	outerKeys, innerKeys     []uint32
	outerLikely, innerLikely int
	role                     [mimPktWords]int
	funcs                    []asm.Instructions
	labels                   int
	features                 map[string]bool
}

func (g *mimGen) intn(n int) int          { return g.rnd.IntN(n) }
func (g *mimGen) chance(percent int) bool { return g.rnd.IntN(100) < percent }
func (g *mimGen) label(what string) string {
	g.labels++
	return fmt.Sprintf("%s%d", what, g.labels)
}
func (g *mimGen) feature(f string) { g.features[f] = true }

// MimCorpusOptions choose the corpus's CPUs.
type MimCorpusOptions struct {
	// CPUs is how many CPUs, from 0, runs may be pinned to (at least 1).
	CPUs int
}

// GenerateMim returns the scenario of seed; the same seed and options give
// the same scenario.
func GenerateMim(seed uint64, o MimCorpusOptions) *MimScenario {
	g := &mimGen{
		rnd:      rand.New(rand.NewPCG(seed, 0x6d696d)),
		s:        &MimScenario{Seed: seed},
		cpus:     max(o.CPUs, 1),
		features: map[string]bool{},
	}
	g.maps()
	g.program()
	g.steps()
	for f := range g.features {
		g.s.Features = append(g.s.Features, f)
	}
	sort.Strings(g.s.Features)
	return g.s
}

// innerKind is one kind of inner map template.
type innerKind struct {
	name  string
	typ   ebpf.MapType
	flags uint32
}

var innerKinds = []innerKind{
	{"array", ebpf.Array, 0},
	{"array/BPF_F_INNER_MAP", ebpf.Array, uapi.BPF_F_INNER_MAP},
	{"percpu_array", ebpf.PerCPUArray, 0},
	{"hash", ebpf.Hash, 0},
	{"percpu_hash", ebpf.PerCPUHash, 0},
	{"hash/BPF_F_NO_PREALLOC", ebpf.Hash, uapi.BPF_F_NO_PREALLOC},
	{"percpu_hash/BPF_F_NO_PREALLOC", ebpf.PerCPUHash, uapi.BPF_F_NO_PREALLOC},
}

func isArrayType(t ebpf.MapType) bool { return t == ebpf.Array || t == ebpf.PerCPUArray }

// maps chooses the outer map, its template and the inner maps.
func (g *mimGen) maps() {
	k := innerKinds[g.intn(len(innerKinds))]
	tmpl := &ebpf.MapSpec{Name: "tmpl", Type: k.typ, KeySize: 4, Flags: k.flags,
		ValueSize:  uint32([]int{4, 8, 8, 12, 16, 24, 32}[g.intn(7)]),
		MaxEntries: uint32([]int{1, 2, 3, 4, 4, 6, 8}[g.intn(7)])}
	if !isArrayType(k.typ) && g.chance(50) {
		tmpl.Flags |= uapi.BPF_F_ZERO_SEED
	}
	if !isArrayType(k.typ) && g.chance(30) {
		tmpl.KeySize = 8
		g.feature("inner hash key_size 8")
	}
	g.feature("inner " + k.name)
	// Programs may only read (BPF_F_RDONLY_PROG) or only write
	// (BPF_F_WRONLY_PROG) some inner maps: the verifiers know from the
	// template.
	switch n := g.intn(100); {
	case n < 6:
		tmpl.Flags |= uapi.BPF_F_RDONLY_PROG
		g.feature("inner BPF_F_RDONLY_PROG")
	case n < 12:
		tmpl.Flags |= uapi.BPF_F_WRONLY_PROG
		g.feature("inner BPF_F_WRONLY_PROG")
	}
	g.tmpl = tmpl

	outer := &ebpf.MapSpec{Name: "outer", KeySize: 4, ValueSize: 4, InnerMap: tmpl,
		MaxEntries: uint32(1 + g.intn(6))}
	if g.chance(50) {
		outer.Type = ebpf.ArrayOfMaps
		g.feature("outer array_of_maps")
		for i := uint32(0); i < outer.MaxEntries+2; i++ {
			g.outerKeys = append(g.outerKeys, i)
		}
		g.outerKeys = append(g.outerKeys, 0xffffffff, 0x80000000)
	} else {
		outer.Type = ebpf.HashOfMaps
		g.feature("outer hash_of_maps")
		outer.KeySize = uint32([]int{4, 4, 2, 8, 12}[g.intn(5)])
		if outer.KeySize != 4 {
			g.feature(fmt.Sprintf("outer key_size %d", outer.KeySize))
		}
		if g.chance(50) {
			outer.Flags |= uapi.BPF_F_ZERO_SEED
			g.feature("outer BPF_F_ZERO_SEED")
		}
		if g.chance(25) {
			outer.Flags |= uapi.BPF_F_NO_PREALLOC
			g.feature("outer BPF_F_NO_PREALLOC")
		}
		g.outerKeys = []uint32{0, 1, 2, 3, 5, 7, 100, 0xffffffff}
	}
	g.outerLikely = int(outer.MaxEntries)
	g.s.Outer = outer

	// Inner maps: i0 is the template's twin; the others differ in size
	// where map_meta_equal allows it (arrays with BPF_F_INNER_MAP, every
	// hash), and now and then in a way it does not.
	n := 2 + g.intn(3)
	maxEntries := tmpl.MaxEntries
	for i := 0; i < n; i++ {
		in := tmpl.Copy()
		in.Name = fmt.Sprintf("i%d", i)
		if i > 0 {
			if tmpl.Flags&uapi.BPF_F_INNER_MAP != 0 || !isArrayType(tmpl.Type) {
				in.MaxEntries = uint32([]int{1, 2, 3, 5, 8}[g.intn(5)])
			}
			if g.chance(15) {
				g.feature("incompatible inner map")
				switch g.intn(5) {
				case 4:
					in.KeySize = 12 - in.KeySize // 8 or 4; refused by arrays
				case 0:
					in.ValueSize += 4
				case 1:
					in.MaxEntries++ // refused for arrays without BPF_F_INNER_MAP
				case 2:
					in.Flags ^= uapi.BPF_F_INNER_MAP
					if !isArrayType(in.Type) {
						in.Flags ^= uapi.BPF_F_INNER_MAP | uapi.BPF_F_ZERO_SEED
					}
				case 3:
					in.Type = map[ebpf.MapType]ebpf.MapType{ebpf.Array: ebpf.PerCPUArray, ebpf.PerCPUArray: ebpf.Array,
						ebpf.Hash: ebpf.PerCPUHash, ebpf.PerCPUHash: ebpf.Hash}[in.Type]
				}
			}
		}
		if in.Type == ebpf.PerCPUArray && in.MaxEntries < tmpl.MaxEntries {
			// Never smaller than the template: the kernel's inlined
			// lookup, bounded by the template, would read past the
			// array's per-CPU pointers (see arraymap/inner.go).
			in.MaxEntries = tmpl.MaxEntries
		}
		maxEntries = max(maxEntries, in.MaxEntries)
		g.s.Inners = append(g.s.Inners, in)
	}
	if isArrayType(tmpl.Type) {
		for i := uint32(0); i < maxEntries+2; i++ {
			g.innerKeys = append(g.innerKeys, i)
		}
		g.innerKeys = append(g.innerKeys, 0xffffffff, 0x80000000)
	} else {
		g.innerKeys = []uint32{0, 1, 2, 3, 4, 6, 9, 1000, 0xfffffffe}
	}
	g.innerLikely = int(min(tmpl.MaxEntries, 4))
}

func (g *mimGen) outerKey() uint32 { return pick(g, g.outerKeys, g.outerLikely) }
func (g *mimGen) innerKey() uint32 { return pick(g, g.innerKeys, g.innerLikely) }

// pick draws from the first likely keys three times out of four.
func pick(g *mimGen, keys []uint32, likely int) uint32 {
	if g.chance(75) {
		return keys[g.intn(likely)]
	}
	return keys[g.intn(len(keys))]
}

// randomInner is the index of one of the inner maps.
func (g *mimGen) randomInner() int { return g.intn(len(g.s.Inners)) }

func (g *mimGen) value(size uint32) []byte {
	v := make([]byte, size)
	for i := range v {
		v[i] = byte(g.rnd.Uint32())
	}
	if g.chance(30) {
		for i := range v {
			v[i] = 0
		}
		v[0] = byte(g.intn(16))
	}
	return v
}

// updateFlags are mostly BPF_ANY, then NOEXIST, EXIST, and rarely invalid.
func (g *mimGen) updateFlags() uint64 {
	switch n := g.intn(100); {
	case n < 60:
		return 0
	case n < 78:
		return 1
	case n < 96:
		return 2
	case n < 98:
		return 4 // BPF_F_LOCK without a spin lock
	}
	return 8
}

// steps fills the inner maps, the outer map's slots, and interleaves runs
// with changes.
func (g *mimGen) steps() {
	s := g.s
	for i, in := range s.Inners {
		fills := int(in.MaxEntries) + 1
		if isArrayType(in.Type) {
			for k := uint32(0); k < in.MaxEntries; k++ {
				if g.chance(70) {
					s.Steps = append(s.Steps, MimStep{Kind: MimInnerUpdate, Inner: i, Key: k, Value: g.value(in.ValueSize)})
				}
			}
			fills = 1
		}
		for j := 0; j < fills; j++ {
			if g.chance(75) {
				s.Steps = append(s.Steps, MimStep{Kind: MimInnerUpdate, Inner: i, Key: g.innerKey(), Value: g.value(in.ValueSize), Flags: g.updateFlags()})
			}
		}
	}
	for i, k := range g.outerKeys {
		if i < g.outerLikely && g.chance(80) || g.chance(20) {
			s.Steps = append(s.Steps, g.setSlot(k))
		}
	}
	runs := 1 + g.intn(4)
	for r := 0; r < runs; r++ {
		if r > 0 {
			for c := 1 + g.intn(3); c > 0; c-- {
				s.Steps = append(s.Steps, g.change())
			}
		}
		s.Steps = append(s.Steps, MimStep{Kind: MimRun, Packet: g.packet(), CPU: g.intn(g.cpus)})
	}
}

func (g *mimGen) setSlot(key uint32) MimStep {
	st := MimStep{Kind: MimSetSlot, Key: key, Inner: g.randomInner()}
	if g.chance(8) {
		st.Flags = uint64(1 + g.intn(2))
	}
	return st
}

// change is a user-space change between runs.
func (g *mimGen) change() MimStep {
	switch n := g.intn(100); {
	case n < 45:
		g.feature("slot replaced between runs")
		return g.setSlot(g.outerKey())
	case n < 65:
		g.feature("slot deleted between runs")
		return MimStep{Kind: MimDeleteSlot, Key: g.outerKey()}
	case n < 90:
		i := g.randomInner()
		return MimStep{Kind: MimInnerUpdate, Inner: i, Key: g.innerKey(), Value: g.value(g.s.Inners[i].ValueSize), Flags: g.updateFlags()}
	}
	return MimStep{Kind: MimInnerDelete, Inner: g.randomInner(), Key: g.innerKey()}
}

// packet is a run's input: words with a role take a key of their pool,
// mostly; the rest is random, and the length varies.
func (g *mimGen) packet() []byte {
	p := make([]byte, 4*mimPktWords+g.intn(9))
	for i := range p {
		p[i] = byte(g.rnd.Uint32())
	}
	for w, role := range g.role {
		var v uint32
		switch {
		case role == roleOuterKey && g.chance(90):
			v = g.outerKey()
		case role == roleInnerKey && g.chance(90):
			v = g.innerKey()
		case role == roleCPU:
			v = uint32(g.intn(4))
		default:
			continue
		}
		binary.LittleEndian.PutUint32(p[4*w:], v)
	}
	return p
}

// pktWord picks a packet word for role: a fresh one if any is left.
func (g *mimGen) pktWord(role int) int {
	var free []int
	for w, r := range g.role {
		if r == roleFree {
			free = append(free, w)
		}
	}
	if len(free) == 0 {
		return g.intn(mimPktWords)
	}
	w := free[g.intn(len(free))]
	g.role[w] = role
	return w
}

// program builds the main function and its subprograms.
func (g *mimGen) program() {
	// cilium/ebpf's asm has no 8-byte store of an immediate.
	out := asm.Instructions{asm.Mov.Imm(asm.R2, 0)}
	for off := int16(-8); off >= -64; off -= 8 { // the keys' padding stays zero
		out = append(out, asm.StoreMem(asm.RFP, off, asm.R2, asm.DWord))
	}
	out = append(out,
		asm.LoadMem(asm.R2, asm.R1, 12, asm.Word), // ingress_ifindex
		asm.StoreMem(asm.RFP, mimIfindex, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.R1, 16, asm.Word), // rx_queue_index
		asm.StoreMem(asm.RFP, mimRxQueue, asm.R2, asm.Word),
		asm.LoadMem(asm.R6, asm.R1, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R2, asm.R6),
		asm.Add.Imm(asm.R2, 4*mimPktWords),
		asm.JGT.Reg(asm.R2, asm.R3, "short"),
		asm.Mov.Imm(asm.R9, 0),
	)
	n := 1 + g.intn(3)
	if n > 1 {
		g.feature("several outer lookups")
	}
	for i := 0; i < n; i++ {
		g.outerLookup(&out, i)
	}
	out = append(out,
		asm.Mov.Reg(asm.R0, asm.R9),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("short"),
		asm.Return(),
	)
	for i, fn := range g.funcs {
		fn[0] = fn[0].WithSymbol(fmt.Sprintf("fn%d", i))
		out = append(out, fn...)
	}
	g.s.Spec = &ebpf.ProgramSpec{Name: "mim", Type: ebpf.XDP, License: "GPL", Instructions: out}
}

// fold mixes r into the result: r9 = r9*31 + r.
func fold(out *asm.Instructions, r asm.Register) {
	*out = append(*out, asm.Mul.Imm(asm.R9, 31), asm.Add.Reg(asm.R9, r))
}

// keyScalar loads a key into dst (r1-r5), in the main function: a
// constant of pool, a packet word, a masked packet byte, a saved context
// field, or bits of the result so far.
func (g *mimGen) keyScalar(out *asm.Instructions, dst asm.Register, pool func() uint32, role int) {
	switch n := g.intn(100); {
	case n < 40:
		*out = append(*out, asm.Mov.Imm32(dst, int32(pool())))
		g.feature("constant key")
	case n < 70:
		w := g.pktWord(role)
		*out = append(*out, asm.LoadMem(dst, asm.R6, int16(4*w), asm.Word))
		g.feature("packet key")
	case n < 78:
		w := g.pktWord(role)
		*out = append(*out, asm.LoadMem(dst, asm.R6, int16(4*w), asm.Byte), asm.And.Imm(dst, 7))
		g.feature("masked packet key")
	case n < 90:
		off := int16(mimIfindex)
		if g.chance(50) {
			off = mimRxQueue
		}
		*out = append(*out, asm.LoadMem(dst, asm.RFP, off, asm.Word))
		g.feature("context key")
	default:
		*out = append(*out, asm.Mov.Reg(dst, asm.R9), asm.And.Imm(dst, 3))
		g.feature("key from earlier results")
	}
}

// key writes a key to the main function's stack at off, or leaves the
// previous one there.
func (g *mimGen) key(out *asm.Instructions, off int16, pool func() uint32, role int) {
	if g.chance(10) {
		g.feature("key reused")
		return
	}
	g.keyScalar(out, asm.R1, pool, role)
	*out = append(*out, asm.StoreMem(asm.RFP, off, asm.R1, asm.Word))
}

// outerLookup emits outer[key], a null check or not, and the inner
// operations through the inner map pointer, kept in r8.
func (g *mimGen) outerLookup(out *asm.Instructions, i int) {
	if g.chance(8) {
		// Both lookups in a subprogram that gets the outer map.
		g.feature("bpf-to-bpf call")
		g.feature("call with the outer map pointer")
		g.keyScalar(out, asm.R3, g.innerKey, roleInnerKey)
		g.keyScalar(out, asm.R2, g.outerKey, roleOuterKey)
		*out = append(*out,
			asm.LoadMapPtr(asm.R1, 0).WithReference("outer"),
			asm.Call.Label(g.outerSubprog()),
		)
		fold(out, asm.R0)
		return
	}
	g.key(out, mimOuterKey, g.outerKey, roleOuterKey)
	*out = append(*out,
		asm.LoadMapPtr(asm.R1, 0).WithReference("outer"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, mimOuterKey),
		asm.FnMapLookupElem.Call(),
	)
	switch n := g.intn(100); {
	case n < 5:
		// The callee checks the outer lookup's result itself.
		g.feature("call with the unchecked inner map pointer")
		g.feature("bpf-to-bpf call")
		*out = append(*out, asm.Mov.Reg(asm.R1, asm.R0))
		g.keyScalar(out, asm.R2, g.innerKey, roleInnerKey)
		*out = append(*out, asm.Call.Label(g.subprog(g.chance(80))))
		fold(out, asm.R0)
		return
	case n < 10:
		g.feature("outer null check missing")
		*out = append(*out, asm.Mov.Reg(asm.R8, asm.R0))
		g.innerOps(out)
		return
	}
	miss, done := g.label("outer_miss"), g.label("outer_done")
	*out = append(*out,
		asm.JEq.Imm(asm.R0, 0, miss),
		asm.Mov.Reg(asm.R8, asm.R0),
	)
	g.innerOps(out)
	*out = append(*out,
		asm.Ja.Label(done),
		asm.Mov.Imm(asm.R1, int32(0x100+i)).WithSymbol(miss),
	)
	fold(out, asm.R1)
	*out = append(*out, asm.Mov.Imm(asm.R1, 0).WithSymbol(done))
}

// innerOps emits one to three operations on the inner map in r8.
func (g *mimGen) innerOps(out *asm.Instructions) {
	for n := 1 + g.intn(3); n > 0; n-- {
		k := g.intn(100)
		if g.tmpl.Flags&uapi.BPF_F_RDONLY_PROG != 0 && k >= 40 && k < 70 && g.chance(90) {
			k = 0 // mostly no updates and deletes in maps programs may only read
		}
		switch {
		case k < 40:
			g.innerLookup(out, false)
		case k < 60:
			g.innerUpdate(out)
		case k < 70:
			g.innerDelete(out)
		case k < 82 && IsPercpu(g.tmpl), k < 72:
			// bpf_map_lookup_percpu_elem is for per-CPU maps; now and
			// then it is tried on others, which the verifiers refuse.
			g.innerLookup(out, true)
		default:
			g.feature("bpf-to-bpf call")
			g.feature("call with the inner map pointer")
			*out = append(*out, asm.Mov.Reg(asm.R1, asm.R8))
			g.keyScalar(out, asm.R2, g.innerKey, roleInnerKey)
			callee := g.subprog(true)
			if g.chance(25) {
				g.feature("inner map pointer passed down two calls")
				callee = g.forwarder(callee)
			}
			*out = append(*out, asm.Call.Label(callee))
			fold(out, asm.R0)
		}
	}
}

// forwarder adds a function that passes its r1 and r2 on to callee and
// returns what it returns, plus one.
func (g *mimGen) forwarder(callee string) string {
	name := fmt.Sprintf("fn%d", len(g.funcs))
	g.funcs = append(g.funcs, asm.Instructions{
		asm.Call.Label(callee),
		asm.Add.Imm(asm.R0, 1),
		asm.Return(),
	})
	return name
}

// outerSubprog adds a function that gets the outer map in r1, an outer
// key in r2 and an inner key in r3 (32-bit numbers), looks both up and
// returns a word of the inner value, or a marker for a miss.
func (g *mimGen) outerSubprog() string {
	name := fmt.Sprintf("fn%d", len(g.funcs))
	miss := g.label("fn_miss")
	vs := int(g.tmpl.ValueSize)
	g.funcs = append(g.funcs, asm.Instructions{
		asm.StoreMem(asm.RFP, -8, asm.R3, asm.DWord),  // inner key, zero-padded
		asm.StoreMem(asm.RFP, -24, asm.R2, asm.DWord), // outer key, zero-padded
		asm.Mov.Imm(asm.R2, 0),
		asm.StoreMem(asm.RFP, -16, asm.R2, asm.DWord),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -24),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, miss),
		asm.Mov.Reg(asm.R1, asm.R0),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, miss),
		asm.LoadMem(asm.R0, asm.R0, int16(4*g.intn(vs/4)), asm.Word),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0x66).WithSymbol(miss),
		asm.Return(),
	})
	return name
}

// innerLookup emits a lookup (or bpf_map_lookup_percpu_elem) in the inner
// map, a null check or not, and accesses to the value.
func (g *mimGen) innerLookup(out *asm.Instructions, percpu bool) {
	g.key(out, mimInnerKey, g.innerKey, roleInnerKey)
	*out = append(*out,
		asm.Mov.Reg(asm.R1, asm.R8),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, mimInnerKey),
	)
	fn := asm.FnMapLookupElem
	if percpu {
		fn = asm.FnMapLookupPercpuElem
		g.feature("lookup_percpu_elem")
		if g.chance(70) {
			*out = append(*out, asm.Mov.Imm(asm.R3, int32(g.intn(3))))
		} else {
			w := g.pktWord(roleCPU)
			*out = append(*out, asm.LoadMem(asm.R3, asm.R6, int16(4*w), asm.Word))
		}
	}
	*out = append(*out, fn.Call())
	if g.chance(8) {
		g.feature("inner null check missing")
		g.valueAccess(out, asm.R0)
		return
	}
	miss, done := g.label("miss"), g.label("done")
	*out = append(*out, asm.JEq.Imm(asm.R0, 0, miss))
	for n := 1 + g.intn(3); n > 0; n-- {
		g.valueAccess(out, asm.R0)
	}
	*out = append(*out,
		asm.Ja.Label(done),
		asm.Mov.Imm(asm.R1, 0x77).WithSymbol(miss),
	)
	fold(out, asm.R1)
	*out = append(*out, asm.Mov.Imm(asm.R1, 0).WithSymbol(done))
}

// valueAccess reads, writes or atomically changes the value at ptr.
func (g *mimGen) valueAccess(out *asm.Instructions, ptr asm.Register) {
	vs := int(g.tmpl.ValueSize)
	size := []asm.Size{asm.Byte, asm.Half, asm.Word, asm.DWord}[g.intn(4)]
	if size.Sizeof() > vs {
		size = asm.Word
	}
	off := g.intn(vs/size.Sizeof()) * size.Sizeof()
	if g.chance(2) {
		g.feature("value access past its end")
		off = vs - size.Sizeof() + 1 + g.intn(size.Sizeof())
	}
	n := g.intn(100)
	switch {
	case g.tmpl.Flags&uapi.BPF_F_RDONLY_PROG != 0 && g.chance(90):
		n = 0 // mostly reads where programs may only read
	case g.tmpl.Flags&uapi.BPF_F_WRONLY_PROG != 0 && n < 50 && g.chance(90):
		n = 50 + g.intn(50) // and writes where they may only write
	}
	switch {
	case n < 50:
		g.feature("value read")
		*out = append(*out, asm.LoadMem(asm.R1, ptr, int16(off), size))
		fold(out, asm.R1)
	case n < 70:
		g.feature("value written")
		*out = append(*out, asm.StoreMem(ptr, int16(off), asm.R9, size))
	case n < 80:
		g.feature("value written")
		imm := int64(int32(g.rnd.Uint32()))
		if size == asm.DWord {
			size = asm.Word
		}
		*out = append(*out, asm.StoreImm(ptr, int16(off), imm, size))
	default:
		g.feature("atomic add to the value")
		if size != asm.DWord || off%8 != 0 {
			size = asm.Word
			off &^= 3
		}
		*out = append(*out, asm.Mov.Imm(asm.R1, int32(1+g.intn(1000))))
		op := asm.AddAtomic
		if g.chance(50) {
			op = asm.FetchAdd
		}
		ins := op.Mem(ptr, asm.R1, size, int16(off))
		ins.Constant = int64(op >> 8) // see atomicOp in gen.go
		*out = append(*out, ins)
		if op == asm.FetchAdd {
			fold(out, asm.R1)
		}
	}
}

// fillValue writes the value an update stores, ValueSize bytes at
// mimValue: constants, the result so far, packet words.
func (g *mimGen) fillValue(out *asm.Instructions) {
	for off := 0; off < int(g.tmpl.ValueSize); off += 4 {
		at := int16(mimValue + off)
		switch g.intn(3) {
		case 0:
			*out = append(*out, asm.StoreImm(asm.RFP, at, int64(int32(g.rnd.Uint32())), asm.Word))
		case 1:
			*out = append(*out, asm.StoreMem(asm.RFP, at, asm.R9, asm.Word))
		default:
			*out = append(*out, asm.LoadMem(asm.R1, asm.R6, int16(4*g.intn(mimPktWords)), asm.Word),
				asm.StoreMem(asm.RFP, at, asm.R1, asm.Word))
		}
	}
}

func (g *mimGen) innerUpdate(out *asm.Instructions) {
	g.feature("inner update from the program")
	g.key(out, mimInnerKey, g.innerKey, roleInnerKey)
	g.fillValue(out)
	*out = append(*out,
		asm.Mov.Reg(asm.R1, asm.R8),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, mimInnerKey),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, mimValue),
		asm.Mov.Imm(asm.R4, int32(g.updateFlags())),
		asm.FnMapUpdateElem.Call(),
	)
	fold(out, asm.R0)
}

func (g *mimGen) innerDelete(out *asm.Instructions) {
	g.feature("inner delete from the program")
	g.key(out, mimInnerKey, g.innerKey, roleInnerKey)
	*out = append(*out,
		asm.Mov.Reg(asm.R1, asm.R8),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, mimInnerKey),
		asm.FnMapDeleteElem.Call(),
	)
	fold(out, asm.R0)
}

// subprog adds a function that gets an inner map pointer in r1 (checked
// for NULL first when check: the caller may pass the outer lookup's
// result as it is) and a key in r2, and looks the key up or updates it.
// Its first instruction gets the function's symbol.
func (g *mimGen) subprog(check bool) string {
	name := fmt.Sprintf("fn%d", len(g.funcs))
	var f asm.Instructions
	f = append(f, asm.StoreMem(asm.RFP, -8, asm.R2, asm.DWord))
	miss := g.label("fn_miss")
	if check {
		f = append(f, asm.JEq.Imm(asm.R1, 0, miss))
	}
	f = append(f, asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, -8))
	vs := int(g.tmpl.ValueSize)
	missUsed := check
	if g.chance(30) {
		g.feature("update in a subprogram")
		for off := 0; off < vs; off += 4 {
			f = append(f, asm.StoreImm(asm.RFP, int16(-48+off), int64(int32(g.rnd.Uint32())), asm.Word))
		}
		f = append(f,
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, -48),
			asm.Mov.Imm(asm.R4, int32(g.updateFlags())),
			asm.FnMapUpdateElem.Call(),
			asm.Return(),
		)
	} else {
		g.feature("lookup in a subprogram")
		f = append(f,
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, miss),
			asm.LoadMem(asm.R0, asm.R0, int16(4*g.intn(vs/4)), asm.Word),
			asm.Return(),
		)
		missUsed = true
	}
	if missUsed {
		// Only when something jumps there: the verifier refuses
		// unreachable instructions.
		f = append(f, asm.Mov.Imm(asm.R0, 0x55).WithSymbol(miss), asm.Return())
	}
	g.funcs = append(g.funcs, f)
	return name
}

// KeyBytes is key k of a map with keys of size bytes: its little-endian
// bytes, cut or padded with zeros.
func KeyBytes(k, size uint32) []byte {
	b := make([]byte, max(size, 4))
	binary.LittleEndian.PutUint32(b, k)
	return b[:size]
}
