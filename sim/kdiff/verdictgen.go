package kdiff

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim/insn"
)

// Building blocks of the verdict corpus: where a template goes in a
// generated program, and the snippets templates are made of.

func labelled(label string, r asm.Register, v int32) asm.Instruction {
	return asm.Mov.Imm(r, v).WithSymbol(label)
}

// VerdictCorpusSize is the number of programs in the corpus: seeds 0 to
// VerdictCorpusSize-1.
const VerdictCorpusSize = 6000

// Shares of the corpus, in percent: programs straight from Generate, and
// programs built to be rejected. The rest are valid variants of the
// templates, near misses of the invalid ones.
const (
	verdictPlainPercent   = 20
	verdictInvalidPercent = 34
)

// insnLimitEvery places a program that runs the verifier to its limit of
// a million instructions at every insnLimitEvery-th seed, rather than
// drawing them: each costs the kernel seconds.
const insnLimitEvery = 2000

// verdictPacketSize is the packet length the prologue of every template
// program proves, as Generate's prologue does.
const verdictPacketSize = 192

// The stack of a template program: the filler's 64 bytes (r10-64 to
// r10-1, initialised), then the slots templates use. The ctx pointer is
// spilled in the prologue, so that templates anywhere can reload it.
const (
	ctxSlot  = -72
	tKey     = -88  // a template's map key: 16 bytes
	tValue   = -160 // a template's map value: 64 bytes
	tSpill   = -168 // a spilled register
	tScratch = -200 // anything else
)

// site is where in a program a template goes.
type site int

const (
	// siteHead is right after the prologue: only r1 (ctx), r2, r6 and r7
	// hold values, and the stack is uninitialised.
	siteHead site = iota
	// siteMain is between two blocks of generated code in the main
	// program.
	siteMain
	// siteBranch is siteMain under a condition on packet data, so that the
	// verifier checks it on one path only.
	siteBranch
	// siteSubprog is a subprogram of its own, called from main with the
	// ctx, packet and packet end pointers, which it keeps where main
	// keeps them.
	siteSubprog
)

var siteNames = [...]string{"head", "main", "branch", "subprog"}

// variant is one way of building a program of a family, meant to be
// rejected (bad) or accepted.
type variant struct {
	name  string
	bad   bool
	sites []site // nil: main, branch or subprog
	// deep: the template uses the stack below r10-256, so it cannot share
	// the 512 bytes of a call chain: no calls in the generated code around
	// it, and never in a subprogram.
	deep  bool
	build func(v *vgen, s site) asm.Instructions
}

// verdictFamily is a group of variants about one rule of the verifier.
type verdictFamily struct {
	name   string
	weight int
	// safety: the rule protects memory; a program of this family that the
	// kernel rejects must never load on bpfsim.
	safety   bool
	variants []variant
}

// IsSafetyFamily reports whether programs of family break a memory-safety
// rule when they are rejected: a bpfsim that accepts one of those is
// unsafe, not merely lenient. Loops, unreachable code and malformed
// instructions are not in this set: accepting them is a disagreement, but
// none reaches memory the program may not touch.
func IsSafetyFamily(family string) bool {
	for _, f := range verdictFamilies {
		if f.name == family {
			return f.safety
		}
	}
	return false
}

// GenerateVerdict returns the corpus program for seed; the same seed
// always gives the same program.
func GenerateVerdict(seed uint64) *VerdictProgram {
	rnd := rand.New(rand.NewPCG(seed, 0x76657264))
	pick := rnd.IntN(100)
	if seed%insnLimitEvery == insnLimitEvery-1 {
		fam := &verdictFamilies[len(verdictFamilies)-1]
		return buildVerdict(seed, rnd, fam, fam.variants[0])
	}
	if pick < verdictPlainPercent {
		o, class := DefaultGenOptions, "valid/gen"
		if rnd.IntN(2) == 0 {
			o, class = DefaultMapGenOptions, "valid/gen_maps"
		}
		o.Length = 15 + rnd.IntN(46)
		p := Generate(seed, o)
		return &VerdictProgram{Seed: seed, Class: class, Spec: p.Spec, Maps: p.Maps}
	}
	fam, vr := pickVariant(rnd, pick < verdictPlainPercent+verdictInvalidPercent)
	return buildVerdict(seed, rnd, fam, vr)
}

// buildVerdict builds variant vr of family fam at a site drawn among
// those it allows.
func buildVerdict(seed uint64, rnd *rand.Rand, fam *verdictFamily, vr variant) *VerdictProgram {
	sites := vr.sites
	if sites == nil {
		sites = []site{siteMain, siteBranch, siteSubprog}
	}
	if vr.deep {
		var shallow []site
		for _, s := range sites {
			if s != siteSubprog {
				shallow = append(shallow, s)
			}
		}
		sites = shallow
	}
	s := sites[rnd.IntN(len(sites))]
	class := fam.name + "/" + vr.name
	if !vr.bad {
		class = "valid/" + fam.name + "." + vr.name
	}
	v := newVgen(rnd, vr.deep)
	vp := &VerdictProgram{Seed: seed, Class: class + "@" + siteNames[s]}
	vp.Spec = &ebpf.ProgramSpec{Name: "kdiff_verdict", Type: ebpf.XDP, License: "GPL", Instructions: v.assemble(vr, s)}
	vp.Maps = v.mapSpecs()
	vp.Patch = v.patch
	return vp
}

// pickVariant draws a family by weight among those with variants of the
// wanted kind, then one of its variants. For valid programs, a family
// with fewer than fullShare valid variants weighs proportionally less, so
// that no single near miss floods the corpus.
func pickVariant(rnd *rand.Rand, bad bool) (*verdictFamily, variant) {
	const fullShare = 4
	type choice struct {
		f      *verdictFamily
		vs     []variant
		weight int
	}
	var choices []choice
	total := 0
	for i := range verdictFamilies {
		f := &verdictFamilies[i]
		var vs []variant
		for _, v := range f.variants {
			if v.bad == bad {
				vs = append(vs, v)
			}
		}
		w := f.weight
		if !bad {
			w = w * min(len(vs), fullShare) / fullShare
		}
		if w > 0 && len(vs) > 0 {
			choices = append(choices, choice{f, vs, w})
			total += w
		}
	}
	n := rnd.IntN(total)
	for _, c := range choices {
		if n < c.weight {
			return c.f, c.vs[rnd.IntN(len(c.vs))]
		}
		n -= c.weight
	}
	panic("unreachable")
}

// vgen builds one template program: generated code from gen around the
// template.
type vgen struct {
	g      *gen
	tmaps  []*ebpf.MapSpec // the template's maps
	subs   []asm.Instructions
	tail   asm.Instructions // instructions after the last function
	labels int
	patch  func([]insn.Insn) []insn.Insn
	high   bool // the template wrote r8 or r9
}

func newVgen(rnd *rand.Rand, deep bool) *vgen {
	o := DefaultGenOptions
	o.PacketSize = verdictPacketSize
	o.Length = 6 + rnd.IntN(24)
	if rnd.IntN(100) < 30 {
		o.Maps = MapGenOptions{Count: 1 + rnd.IntN(2)}
	}
	if deep {
		o.Calls = false
	}
	g := &gen{rnd: rnd, o: o}
	if o.Maps.Count > 0 {
		g.maps = g.newMapGen()
	}
	return &vgen{g: g}
}

func (v *vgen) intn(n int) int          { return v.g.intn(n) }
func (v *vgen) chance(percent int) bool { return v.g.chance(percent) }

// label returns a fresh symbol for a jump target.
func (v *vgen) label(what string) string {
	v.labels++
	return fmt.Sprintf("%s_%d", what, v.labels)
}

// mapSpecs are every map of the program: the generated code's, then the
// template's.
func (v *vgen) mapSpecs() []*ebpf.MapSpec {
	var specs []*ebpf.MapSpec
	if v.g.maps != nil {
		specs = append(specs, v.g.maps.specs...)
	}
	return append(specs, v.tmaps...)
}

// sub adds a subprogram and returns its name.
func (v *vgen) sub(body asm.Instructions) string {
	name := fmt.Sprintf("tf%d", len(v.subs))
	body[0] = body[0].WithSymbol(name)
	v.subs = append(v.subs, body)
	return name
}

// assemble lays the program out: prologue, the template at its site
// between two blocks of generated code, the epilogue, the abort tail, the
// subprograms.
func (v *vgen) assemble(vr variant, s site) asm.Instructions {
	g := v.g
	g.live = map[asm.Register]bool{}
	g.inMain, g.inLoop, g.depth = true, false, 0
	out := asm.Instructions{
		asm.LoadMem(regPkt, asm.R1, 0, asm.Word),
		asm.LoadMem(regPktEnd, asm.R1, 4, asm.Word),
		asm.StoreMem(asm.RFP, ctxSlot, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R2, regPkt),
		asm.Add.Imm(asm.R2, verdictPacketSize),
		asm.JGT.Reg(asm.R2, regPktEnd, "abort"),
	}
	if s == siteHead {
		out = append(out, vr.build(v, s)...)
		v.afterTemplate()
	}
	for i := 1; i <= stackSlots; i++ {
		src := g.initValue(&out)
		out = append(out, asm.StoreMem(asm.RFP, int16(-8*i), src, asm.DWord))
	}
	first := g.intn(g.o.Length + 1)
	out = append(out, g.block(first, 0)...)
	switch s {
	case siteMain:
		out = append(out, vr.build(v, s)...)
		v.afterTemplate()
	case siteBranch:
		// Test a packet byte the verifier knows nothing about, so that it
		// walks both paths.
		out = append(out, asm.LoadMem(asm.R0, regPkt, int16(v.intn(verdictPacketSize)), asm.Byte))
		op := []asm.JumpOp{asm.JGT, asm.JEq, asm.JSet, asm.JLT}[v.intn(4)]
		cond := op.Imm(asm.R0, int32(1+v.intn(200)), "")
		body := vr.build(v, s)
		cond.Offset = int16(rawLen(body))
		out = append(out, cond)
		out = append(out, body...)
		v.afterTemplate()
	case siteSubprog:
		body := asm.Instructions{
			asm.StoreMem(asm.RFP, ctxSlot, asm.R1, asm.DWord),
			asm.Mov.Reg(regPkt, asm.R2),
			asm.Mov.Reg(regPktEnd, asm.R3),
		}
		body = append(body, vr.build(v, s)...)
		body = append(body, asm.Mov.Imm(asm.R0, int32(v.intn(4))), asm.Return())
		name := v.sub(body)
		out = append(out,
			asm.LoadMem(asm.R1, asm.RFP, ctxSlot, asm.DWord),
			asm.Mov.Reg(asm.R2, regPkt),
			asm.Mov.Reg(asm.R3, regPktEnd),
			asm.Call.Label(name))
		v.afterTemplate()
		g.live[asm.R0] = true
	}
	out = append(out, g.block(g.o.Length-first, 0)...)
	out = append(out, g.epilogue()...)
	out = append(out, labelled("abort", asm.R0, 0), asm.Return())
	for i, fn := range g.funcs {
		fn[0] = fn[0].WithSymbol(funcName(i))
		out = append(out, fn...)
	}
	for _, fn := range v.subs {
		out = append(out, fn...)
	}
	return append(out, v.tail...)
}

// afterTemplate forgets what the generated code knew about the registers
// a template may write: r0 to r5, and r8 and r9 when it used them.
func (v *vgen) afterTemplate() {
	for r := asm.R0; r <= asm.R5; r++ {
		delete(v.g.live, r)
	}
	if v.high {
		delete(v.g.live, asm.R8)
		delete(v.g.live, asm.R9)
	}
}

// Building blocks of templates. Templates write r0 to r5 only (r8 and r9
// when they say so in vgen.high), keep r6 (packet), r7 (packet end) and
// the stack above tKey as the generated code left them, and jump only to
// their own labels.

var scratchRegs = []asm.Register{asm.R0, asm.R1, asm.R2, asm.R3, asm.R4, asm.R5}

// scratchExcept picks a scratch register not in not.
func (v *vgen) scratchExcept(not ...asm.Register) asm.Register {
	for {
		r := scratchRegs[v.intn(len(scratchRegs))]
		if !slices.Contains(not, r) {
			return r
		}
	}
}

// unknown loads a packet value of size into r: a scalar the verifier
// knows only the range of.
func (v *vgen) unknown(r asm.Register, size asm.Size) asm.Instruction {
	return asm.LoadMem(r, regPkt, int16(v.intn(verdictPacketSize-size.Sizeof()+1)), size)
}

// scalar sets r to a constant or an unknown value.
func (v *vgen) scalar(r asm.Register) asm.Instruction {
	if v.chance(50) {
		return v.unknown(r, sizes[v.intn(4)])
	}
	return asm.Mov.Imm(r, v.g.imm32())
}

// ctxInto reloads the ctx pointer the prologue spilled.
func ctxInto(r asm.Register) asm.Instruction { return asm.LoadMem(r, asm.RFP, ctxSlot, asm.DWord) }

// land is a jump target writing a scratch register.
func (v *vgen) land(label string) asm.Instruction {
	return labelled(label, asm.R5, int32(v.intn(100)))
}

// use reads r the way programs read registers: as an ALU or jump operand,
// a value to store or, with asPointer, a base address.
func (v *vgen) use(r asm.Register, asPointer bool) asm.Instructions {
	other := v.scratchExcept(r)
	n := 5
	if asPointer {
		n = 6
	}
	switch v.intn(n) {
	case 0:
		return asm.Instructions{asm.Mov.Reg(other, r)}
	case 1:
		op := []asm.ALUOp{asm.Add, asm.Xor, asm.Sub, asm.Or, asm.Mul}[v.intn(5)]
		return asm.Instructions{asm.Mov.Imm(other, v.g.imm32()), op.Reg(other, r)}
	case 2:
		return asm.Instructions{asm.StoreMem(asm.RFP, tScratch, r, asm.DWord)}
	case 3:
		l := v.label("use")
		return asm.Instructions{asm.JGT.Imm(r, int32(v.intn(1000)), l), asm.Mov.Imm(other, 1), v.land(l)}
	case 4:
		l := v.label("use")
		return asm.Instructions{asm.Mov.Imm(other, int32(v.intn(1000))), asm.JSGE.Reg(other, r, l), asm.Mov.Imm(other, 1), v.land(l)}
	}
	return asm.Instructions{asm.LoadMem(other, r, 0, asm.Word)}
}

// sizeFits picks an access size of at most n bytes.
func (v *vgen) sizeFits(n int) asm.Size {
	for {
		if s := sizes[v.intn(4)]; s.Sizeof() <= n {
			return s
		}
	}
}

// memOp accesses size bytes at ptr+off: a load, a store of a register or
// an immediate, or an atomic add where one fits (a word or double word at
// an aligned constant offset: atomics must be aligned everywhere).
func (v *vgen) memOp(ptr asm.Register, off int16, size asm.Size) asm.Instructions {
	return v.access(ptr, off, size, (size == asm.Word || size == asm.DWord) && int(off)%size.Sizeof() == 0, true)
}

// memOpPlain is memOp without atomics: for packets, which allow none, and
// pointers with a variable offset, whose alignment is unknown.
func (v *vgen) memOpPlain(ptr asm.Register, off int16, size asm.Size) asm.Instructions {
	return v.access(ptr, off, size, false, true)
}

// store writes size bytes at ptr+off (an atomic counts as a write).
func (v *vgen) store(ptr asm.Register, off int16, size asm.Size) asm.Instructions {
	return v.access(ptr, off, size, size == asm.Word || size == asm.DWord, false)
}

func (v *vgen) access(ptr asm.Register, off int16, size asm.Size, atomic, load bool) asm.Instructions {
	other := v.scratchExcept(ptr)
	first, n := 0, 3
	if !load {
		first = 1
	}
	if atomic {
		n = 4
	}
	switch first + v.intn(n-first) {
	case 0:
		return asm.Instructions{asm.LoadMem(other, ptr, off, size)}
	case 1:
		return asm.Instructions{asm.Mov.Imm(other, v.g.imm32()), asm.StoreMem(ptr, off, other, size)}
	case 2:
		if size == asm.DWord {
			return asm.Instructions{asm.Mov.Imm(other, v.g.imm32()), asm.StoreMem(ptr, off, other, size)}
		}
		return asm.Instructions{asm.StoreImm(ptr, off, int64(v.g.imm32()), size)}
	}
	ins := asm.AddAtomic.Mem(ptr, other, size, off)
	ins.Constant = int64(asm.AddAtomic >> 8) // see atomicOp in gen.go
	return asm.Instructions{asm.Mov.Imm(other, int32(v.intn(16))), ins}
}

// Maps of templates.

var valueSizes = []uint32{4, 8, 12, 16, 20, 24, 32, 40, 48, 64}

// newMap adds a map of one of types and returns it.
func (v *vgen) newMap(types []ebpf.MapType, vs uint32) *ebpf.MapSpec {
	t := types[v.intn(len(types))]
	spec := &ebpf.MapSpec{Name: fmt.Sprintf("t%d", len(v.tmaps)), Type: t, ValueSize: vs, MaxEntries: uint32(1 + v.intn(16))}
	switch t {
	case ebpf.Array, ebpf.PerCPUArray:
		spec.KeySize = 4
	default:
		spec.KeySize = []uint32{4, 8, 16}[v.intn(3)]
	}
	v.tmaps = append(v.tmaps, spec)
	return spec
}

var anyMapTypes = []ebpf.MapType{ebpf.Array, ebpf.Hash, ebpf.PerCPUArray, ebpf.PerCPUHash}

func isArray(m *ebpf.MapSpec) bool { return m.Type == ebpf.Array || m.Type == ebpf.PerCPUArray }

// writeKey writes a key of m at r10+at: constants (for arrays an index in
// range) or, unless known, some packet data.
func (v *vgen) writeKey(m *ebpf.MapSpec, at int16, known bool) asm.Instructions {
	return v.writeKeyMode(m, at, known, false)
}

// writeKeyMode is writeKey that, with unknown, always starts the key with
// packet data: an array index the verifier cannot bound, so that the
// lookup may return NULL.
func (v *vgen) writeKeyMode(m *ebpf.MapSpec, at int16, known, unknown bool) asm.Instructions {
	var out asm.Instructions
	for j := 0; j < int(m.KeySize); j += 4 {
		if unknown && j == 0 || !known && v.chance(60) {
			out = append(out, v.unknown(asm.R1, asm.Word), asm.StoreMem(asm.RFP, at+int16(j), asm.R1, asm.Word))
			continue
		}
		k := int64(v.g.imm32())
		if isArray(m) {
			k = int64(v.intn(int(m.MaxEntries)))
		}
		out = append(out, asm.StoreImm(asm.RFP, at+int16(j), k, asm.Word))
	}
	return out
}

func mapPtr(r asm.Register, m *ebpf.MapSpec) asm.Instruction {
	return asm.LoadMapPtr(r, 0).WithReference(m.Name)
}

// lookup writes a key and looks it up: r0 is the value or NULL.
func (v *vgen) lookup(m *ebpf.MapSpec, known bool) asm.Instructions {
	out := v.writeKey(m, tKey, known)
	return append(out, mapPtr(asm.R1, m), asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, tKey), asm.FnMapLookupElem.Call())
}

// checkedLookup is a lookup followed by the null check; r0 points to the
// value until the returned label.
func (v *vgen) checkedLookup(m *ebpf.MapSpec) (asm.Instructions, string) {
	l := v.label("miss")
	return append(v.lookup(m, v.chance(50)), asm.JEq.Imm(asm.R0, 0, l)), l
}

// simpleHelper calls a helper without arguments.
func (v *vgen) simpleHelper() asm.Instruction {
	return []asm.BuiltinFunc{asm.FnKtimeGetNs, asm.FnGetPrandomU32, asm.FnGetSmpProcessorId}[v.intn(3)].Call()
}

// pointer sets r to a pointer of one of the kinds every template can
// reach: into the packet or the stack, the ctx, the packet end.
func (v *vgen) pointer(r asm.Register) asm.Instructions {
	switch v.intn(4) {
	case 0:
		return asm.Instructions{asm.Mov.Reg(r, regPkt)}
	case 1:
		return asm.Instructions{asm.Mov.Reg(r, asm.RFP), asm.Add.Imm(r, int32(-8*(1+v.intn(8))))}
	case 2:
		return asm.Instructions{ctxInto(r)}
	}
	return asm.Instructions{asm.Mov.Reg(r, regPktEnd)}
}

// cat concatenates instruction sequences.
func cat(parts ...asm.Instructions) asm.Instructions {
	var out asm.Instructions
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// verdictFamilies are the rules the corpus breaks, each with ways of
// breaking it and of coming close without breaking it. Messages quoted
// are Linux 6.18's.
