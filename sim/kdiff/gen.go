// Package kdiff is bpfsim's kernel-differential test support: a
// deterministic generator of BPF programs that the Linux verifier accepts,
// a runner that loads and test-runs them in this machine's kernel through
// cilium/ebpf, a runner that does the same on bpfsim, and a comparison of
// the two outcomes.
//
// Tests of every part of bpfsim use it: the interpreter's (here), and later
// the maps', the verifier's and the JIT's, which extend the generator with
// their own instruction kinds rather than writing generators of their own.
//
// Generated programs are XDP programs. They read data and data_end from
// xdp_md, prove that the packet holds Size bytes, and keep pointers in
// r6 (packet), r7 (packet end) and r10 (stack) only; every other register
// holds a scalar, so results never depend on addresses. They end by storing
// every live scalar register into the packet and folding them into r0, so a
// single wrong bit anywhere shows in the output.
package kdiff

import (
	"fmt"
	"math/rand/v2"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Program is one generated program and its input.
type Program struct {
	Seed   uint64
	Spec   *ebpf.ProgramSpec
	Packet []byte

	// With GenOptions.Maps (mapgen.go): the maps the program uses, by the
	// names its instructions refer to, created by each runner; the
	// user-space operations to run before and after the program; and the
	// CPUs of its test runs, in order. A Program with maps and a nil Spec
	// runs only the user-space operations.
	Maps          []*ebpf.MapSpec
	Before, After []MapOp
	Runs          []int
}

// GenOptions choose what the generator emits. The zero value emits
// nothing but the frame; DefaultGenOptions turns everything on.
type GenOptions struct {
	// Size of the packet; the program proves it may access all of it.
	PacketSize int
	// Length is roughly how many body instructions the main function gets.
	Length  int
	ALU     bool // ALU and ALU64, byte swaps, sign extension
	Jumps   bool // forward conditional branches and if/else diamonds
	Memory  bool // stack and packet loads and stores
	Atomics bool // atomic operations on the stack
	Loops   bool // bounded loops
	Calls   bool // bpf-to-bpf calls
	// CPUv4 allows the instructions of cpu v4: sdiv/smod, movsx, bswap,
	// sign-extending loads, gotol.
	CPUv4 bool
	// Maps gives programs maps and map operations (mapgen.go).
	Maps MapGenOptions
}

// DefaultGenOptions is everything the interpreter supports.
var DefaultGenOptions = GenOptions{
	PacketSize: 192, Length: 60,
	ALU: true, Jumps: true, Memory: true, Atomics: true, Loops: true, Calls: true, CPUv4: true,
}

// Registers with a fixed role. Everything else holds scalars.
const (
	regPkt    = asm.R6 // data
	regPktEnd = asm.R7 // data_end
	regLoop   = asm.R9 // the counter of the loop being generated
)

// stackSlots is the stack each function initialises and uses: r10-64 to
// r10-1.
const stackSlots = 8

// Generate returns the program for seed. The same seed and options always
// give the same program and packet.
func Generate(seed uint64, o GenOptions) *Program {
	g := &gen{rnd: rand.New(rand.NewPCG(seed, 0x6b646966)), o: o}
	if o.Maps.Count > 0 {
		g.maps = g.newMapGen()
	}
	main := g.function(true, 0)
	insns := append(asm.Instructions{}, main...)
	for i, fn := range g.funcs {
		fn[0] = fn[0].WithSymbol(funcName(i))
		insns = append(insns, fn...)
	}
	pkt := make([]byte, o.PacketSize)
	for i := range pkt {
		pkt[i] = byte(g.rnd.Uint32())
	}
	p := &Program{
		Seed:   seed,
		Packet: pkt,
		Spec: &ebpf.ProgramSpec{
			Name:         "kdiff",
			Type:         ebpf.XDP,
			License:      "GPL",
			Instructions: insns,
		},
	}
	if g.maps != nil {
		g.finishMaps(p)
	}
	return p
}

func funcName(i int) string { return fmt.Sprintf("fn%d", i) }

type gen struct {
	rnd   *rand.Rand
	o     GenOptions
	funcs []asm.Instructions
	maps  *mapGen // nil without GenOptions.Maps
	// state of the function being generated
	live   map[asm.Register]bool // scalar registers holding a value
	inMain bool
	inLoop bool
	depth  int // call depth of the function being generated
}

func (g *gen) intn(n int) int          { return g.rnd.IntN(n) }
func (g *gen) chance(percent int) bool { return g.rnd.IntN(100) < percent }

// scalars are the registers the body may use as scalars.
func (g *gen) scalars() []asm.Register {
	regs := []asm.Register{asm.R0, asm.R1, asm.R2, asm.R3, asm.R4, asm.R5}
	if g.inMain {
		regs = append(regs, asm.R8)
		if !g.inLoop {
			regs = append(regs, regLoop)
		}
	}
	return regs
}

// anyReg picks a destination.
func (g *gen) anyReg() asm.Register {
	regs := g.scalars()
	return regs[g.intn(len(regs))]
}

// liveReg picks a register holding a value, or materialises one.
func (g *gen) liveReg(out *asm.Instructions) asm.Register {
	var live []asm.Register
	for _, r := range g.scalars() {
		if g.live[r] {
			live = append(live, r)
		}
	}
	if len(live) > 0 {
		return live[g.intn(len(live))]
	}
	r := g.anyReg()
	*out = append(*out, asm.Mov.Imm(r, g.imm32()))
	g.live[r] = true
	return r
}

// imm32 draws immediates biased towards edge values.
func (g *gen) imm32() int32 {
	switch g.intn(8) {
	case 0:
		return []int32{0, 1, -1, 2, -2, 0x7fffffff, -0x80000000, 0xff, 0xffff, 31, 32, 63, 64}[g.intn(13)]
	case 1:
		return int32(g.intn(64))
	}
	return int32(g.rnd.Uint32())
}

func (g *gen) imm64() int64 {
	switch g.intn(4) {
	case 0:
		return []int64{-1 << 63, 1<<63 - 1, -1, 1 << 32, 0xffffffff, -0x7fffffff80000000}[g.intn(6)]
	}
	return int64(g.rnd.Uint64())
}

// function generates main (withPacket) or a subprogram.
func (g *gen) function(isMain bool, depth int) asm.Instructions {
	saved := struct {
		live           map[asm.Register]bool
		inMain, inLoop bool
		depth          int
	}{g.live, g.inMain, g.inLoop, g.depth}
	defer func() { g.live, g.inMain, g.inLoop, g.depth = saved.live, saved.inMain, saved.inLoop, saved.depth }()
	g.live = map[asm.Register]bool{}
	g.inMain, g.inLoop, g.depth = isMain, false, depth

	var out asm.Instructions
	if isMain {
		// Prove the packet holds PacketSize bytes, else return XDP_ABORTED
		// from a tail placed at the end.
		out = append(out,
			asm.LoadMem(regPkt, asm.R1, 0, asm.Word),
			asm.LoadMem(regPktEnd, asm.R1, 4, asm.Word),
			asm.Mov.Reg(asm.R2, regPkt),
			asm.Add.Imm(asm.R2, int32(g.o.PacketSize)),
		)
		// The jump over the body is patched once the body's size is known.
		out = append(out, asm.JGT.Reg(asm.R2, regPktEnd, ""))
	} else {
		for r := asm.R1; r <= asm.R5; r++ {
			g.live[r] = true // arguments
		}
	}
	// Initialise the stack so every later load reads a known value.
	for i := 1; i <= stackSlots; i++ {
		src := g.initValue(&out)
		out = append(out, asm.StoreMem(asm.RFP, int16(-8*i), src, asm.DWord))
	}
	length := g.o.Length
	if !isMain {
		length = g.o.Length / 3
	}
	body := g.block(length, 0)
	out = append(out, body...)
	out = append(out, g.epilogue()...)
	if isMain {
		// Patch the bounds check to jump to the abort tail.
		out[4].Offset = int16(rawLen(out[5:]))
		out = append(out, asm.Mov.Imm(asm.R0, 0), asm.Return())
	}
	return out
}

// initValue returns a register freshly loaded with a constant or, in main,
// a packet value.
func (g *gen) initValue(out *asm.Instructions) asm.Register {
	r := g.anyReg()
	switch {
	case g.inMain && g.o.Memory && g.chance(40):
		size := []asm.Size{asm.Byte, asm.Half, asm.Word, asm.DWord}[g.intn(4)]
		*out = append(*out, asm.LoadMem(r, regPkt, g.pktOffset(size), size))
	case g.chance(30):
		*out = append(*out, asm.LoadImm(r, g.imm64(), asm.DWord))
	default:
		*out = append(*out, asm.Mov.Imm(r, g.imm32()))
	}
	g.live[r] = true
	return r
}

// block generates about n instructions of body at nesting level nest.
func (g *gen) block(n, nest int) asm.Instructions {
	var out asm.Instructions
	for rawLen(out) < n {
		choices := []func(*asm.Instructions, int){g.aluOp}
		if !g.o.ALU {
			choices = nil
		}
		if g.o.Memory {
			choices = append(choices, g.stackOp)
			if g.inMain {
				choices = append(choices, g.packetOp)
			}
		}
		if g.o.Atomics {
			choices = append(choices, g.atomicOp)
		}
		if g.o.Jumps && nest < 3 {
			choices = append(choices, g.branch, g.branch)
		}
		if g.o.Loops && g.inMain && !g.inLoop && nest < 2 {
			choices = append(choices, g.loop)
		}
		if g.o.Calls && g.depth < 3 && len(g.funcs) < 6 && !g.inLoop {
			choices = append(choices, g.call)
		}
		if g.maps != nil && !g.inLoop {
			choices = append(choices, g.mapOp, g.mapOp)
		}
		if len(choices) == 0 {
			out = append(out, asm.Mov.Imm(g.anyReg(), g.imm32()))
			continue
		}
		choices[g.intn(len(choices))](&out, nest)
	}
	return out
}

var aluOps = []asm.ALUOp{asm.Add, asm.Sub, asm.Mul, asm.Div, asm.Mod, asm.Or, asm.And, asm.LSh, asm.RSh, asm.ArSh, asm.Xor, asm.Mov}

func (g *gen) aluOp(out *asm.Instructions, _ int) {
	src := g.liveReg(out)
	dst := g.anyReg()
	if !g.live[dst] {
		*out = append(*out, asm.Mov.Reg(dst, src))
		g.live[dst] = true
	}
	is32 := g.chance(40)
	width := int32(64)
	if is32 {
		width = 32
	}
	pick := g.intn(100)
	switch {
	case pick < 5:
		op := asm.Neg
		ins := op.Imm(dst, 0)
		if is32 {
			ins = op.Imm32(dst, 0)
		}
		*out = append(*out, ins)
		return
	case pick < 10:
		endian := []asm.Endianness{asm.LE, asm.BE}[g.intn(2)]
		*out = append(*out, asm.HostTo(endian, dst, []asm.Size{asm.Half, asm.Word, asm.DWord}[g.intn(3)]))
		return
	case pick < 14 && g.o.CPUv4:
		size := []asm.Size{asm.Half, asm.Word, asm.DWord}[g.intn(3)]
		*out = append(*out, asm.BSwap(dst, size))
		return
	case pick < 20 && g.o.CPUv4:
		// movsx: 64-bit from 8/16/32 bits, 32-bit from 8/16 bits.
		// (cilium/ebpf spells the offset-encoded forms as their own ops.)
		op := []asm.ALUOp{asm.MovSX8, asm.MovSX16, asm.MovSX32}[g.intn(3)]
		if is32 {
			op = []asm.ALUOp{asm.MovSX8, asm.MovSX16}[g.intn(2)]
		}
		*out = append(*out, alu(op, is32, dst, src))
		return
	case pick < 28 && g.o.CPUv4:
		op := []asm.ALUOp{asm.SDiv, asm.SMod}[g.intn(2)]
		if g.chance(50) {
			*out = append(*out, alu(op, is32, dst, src))
			return
		}
		imm := g.imm32()
		if imm == 0 {
			imm = -1
		}
		if is32 {
			*out = append(*out, op.Imm32(dst, imm))
		} else {
			*out = append(*out, op.Imm(dst, imm))
		}
		return
	}
	op := aluOps[g.intn(len(aluOps))]
	if g.chance(50) {
		*out = append(*out, alu(op, is32, dst, src))
		return
	}
	imm := g.imm32()
	switch op {
	case asm.Div, asm.Mod:
		if imm == 0 {
			imm = 7 // the kernel rejects division by a zero immediate
		}
	case asm.LSh, asm.RSh, asm.ArSh:
		imm = int32(g.intn(int(width))) // and out-of-range shift immediates
	}
	if is32 {
		*out = append(*out, op.Imm32(dst, imm))
	} else {
		*out = append(*out, op.Imm(dst, imm))
	}
}

func alu(op asm.ALUOp, is32 bool, dst, src asm.Register) asm.Instruction {
	if is32 {
		return op.Reg32(dst, src)
	}
	return op.Reg(dst, src)
}

var sizes = []asm.Size{asm.Byte, asm.Half, asm.Word, asm.DWord}

func sizeBytes(s asm.Size) int { return s.Sizeof() }

// stackOffset returns an aligned offset into the function's stack.
func (g *gen) stackOffset(s asm.Size) int16 {
	n := sizeBytes(s)
	slots := 8 * stackSlots / n
	return int16(-n * (1 + g.intn(slots)))
}

func (g *gen) pktOffset(s asm.Size) int16 {
	return int16(g.intn(g.o.PacketSize - sizeBytes(s) + 1))
}

func (g *gen) stackOp(out *asm.Instructions, _ int) {
	s := sizes[g.intn(4)]
	off := g.stackOffset(s)
	switch g.intn(3) {
	case 0:
		dst := g.anyReg()
		ins := asm.LoadMem(dst, asm.RFP, off, s)
		if g.o.CPUv4 && s != asm.DWord && g.chance(30) {
			ins = asm.LoadMemSX(dst, asm.RFP, off, s)
		}
		*out = append(*out, ins)
		g.live[dst] = true
	case 1:
		*out = append(*out, asm.StoreMem(asm.RFP, off, g.liveReg(out), s))
	default:
		if s == asm.DWord {
			// cilium/ebpf cannot encode a 64-bit immediate store.
			*out = append(*out, asm.StoreMem(asm.RFP, off, g.liveReg(out), s))
			return
		}
		*out = append(*out, asm.StoreImm(asm.RFP, off, int64(g.imm32()), s))
	}
}

func (g *gen) packetOp(out *asm.Instructions, _ int) {
	s := sizes[g.intn(4)]
	off := g.pktOffset(s)
	switch g.intn(3) {
	case 0:
		dst := g.anyReg()
		ins := asm.LoadMem(dst, regPkt, off, s)
		if g.o.CPUv4 && s != asm.DWord && g.chance(30) {
			ins = asm.LoadMemSX(dst, regPkt, off, s)
		}
		*out = append(*out, ins)
		g.live[dst] = true
	case 1:
		*out = append(*out, asm.StoreMem(regPkt, off, g.liveReg(out), s))
	default:
		if s == asm.DWord {
			*out = append(*out, asm.StoreMem(regPkt, off, g.liveReg(out), s))
			return
		}
		*out = append(*out, asm.StoreImm(regPkt, off, int64(g.imm32()), s))
	}
}

var atomicOps = []asm.AtomicOp{asm.AddAtomic, asm.OrAtomic, asm.AndAtomic, asm.XorAtomic,
	asm.FetchAdd, asm.FetchOr, asm.FetchAnd, asm.FetchXor, asm.Xchg, asm.CmpXchg}

func (g *gen) atomicOp(out *asm.Instructions, _ int) {
	s := []asm.Size{asm.Word, asm.DWord}[g.intn(2)]
	off := g.stackOffset(s)
	op := atomicOps[g.intn(len(atomicOps))]
	src := g.liveReg(out)
	if op == asm.CmpXchg && !g.live[asm.R0] {
		*out = append(*out, asm.Mov.Imm(asm.R0, g.imm32()))
		g.live[asm.R0] = true
	}
	if op == asm.CmpXchg && src == asm.R0 {
		src = asm.R1
		if !g.live[src] {
			*out = append(*out, asm.Mov.Imm(src, g.imm32()))
			g.live[src] = true
		}
	}
	ins := op.Mem(asm.RFP, src, s, off)
	// cilium/ebpf v0.22 encodes the immediate of an atomic from Constant,
	// which AtomicOp.Mem leaves at 0 (BPF_ADD): every atomic built this way
	// would silently become an add. Set it as the decoder would.
	ins.Constant = int64(op >> 8)
	*out = append(*out, ins)
}

var jumpOps = []asm.JumpOp{asm.JEq, asm.JNE, asm.JGT, asm.JGE, asm.JLT, asm.JLE, asm.JSet, asm.JSGT, asm.JSGE, asm.JSLT, asm.JSLE}

// condJump returns a conditional jump over off instructions.
func (g *gen) condJump(out *asm.Instructions, off int) asm.Instruction {
	op := jumpOps[g.intn(len(jumpOps))]
	dst := g.liveReg(out)
	var ins asm.Instruction
	is32 := g.chance(40)
	switch {
	case g.chance(50) && is32:
		ins = op.Reg32(dst, g.liveReg(out), "")
	case g.chance(50):
		ins = op.Reg(dst, g.liveReg(out), "")
	case is32:
		ins = op.Imm32(dst, g.imm32(), "")
	default:
		ins = op.Imm(dst, g.imm32(), "")
	}
	ins.Offset = int16(off)
	return ins
}

// branch emits "if cond goto +then" or an if/else diamond. After it, a
// register is live only if it is live on every path: one set inside a
// branch is not (the other path skipped it), nor is one a call inside a
// branch clobbered.
func (g *gen) branch(out *asm.Instructions, nest int) {
	// Materialise the condition's operands first, so both paths see them.
	cond := g.condJump(out, 0)
	before := copyLive(g.live)
	then := g.block(2+g.intn(6), nest+1)
	afterThen := g.live
	g.live = copyLive(before)
	if g.chance(60) {
		g.live = intersect(before, afterThen)
		cond.Offset = int16(rawLen(then))
		*out = append(*out, cond)
		*out = append(*out, then...)
		return
	}
	els := g.block(2+g.intn(6), nest+1)
	g.live = intersect(afterThen, g.live)
	cond.Offset = int16(rawLen(then) + 1)
	*out = append(*out, cond)
	*out = append(*out, then...)
	if g.o.CPUv4 && g.chance(30) {
		gotol := asm.LongJump("")
		gotol.Constant = int64(rawLen(els))
		*out = append(*out, gotol)
	} else {
		*out = append(*out, asm.Instruction{OpCode: asm.Ja.Op(asm.ImmSource), Offset: int16(rawLen(els))})
	}
	*out = append(*out, els...)
}

// loop emits a loop of 1 to 4 iterations counted down in r9.
func (g *gen) loop(out *asm.Instructions, nest int) {
	before := copyLive(g.live)
	g.inLoop = true
	body := g.block(2+g.intn(6), nest+1)
	g.inLoop = false
	// The body runs at least once, but a register it sets first in a
	// later part is read by an earlier part only from the second
	// iteration on; keep to what was live before.
	g.live = intersect(before, g.live)
	delete(g.live, regLoop)
	*out = append(*out, asm.Mov.Imm(regLoop, int32(1+g.intn(4))))
	*out = append(*out, body...)
	*out = append(*out, asm.Sub.Imm(regLoop, 1))
	back := asm.JNE.Imm(regLoop, 0, "")
	back.Offset = int16(-(rawLen(body) + 2))
	*out = append(*out, back)
	g.live[regLoop] = true // zero after the loop
}

// call emits a call to a new subprogram; it gets r1-r5 and returns r0.
func (g *gen) call(out *asm.Instructions, _ int) {
	for r := asm.R1; r <= asm.R5; r++ {
		if !g.live[r] {
			*out = append(*out, asm.Mov.Imm(r, g.imm32()))
			g.live[r] = true
		}
	}
	idx := len(g.funcs)
	g.funcs = append(g.funcs, nil) // reserve the slot before nested calls
	g.funcs[idx] = g.function(false, g.depth+1)
	*out = append(*out, asm.Call.Label(funcName(idx)))
	for r := asm.R1; r <= asm.R5; r++ {
		delete(g.live, r) // caller-saved
	}
	g.live[asm.R0] = true
}

// epilogue stores every live scalar into the packet (main) and folds them
// into r0.
func (g *gen) epilogue() asm.Instructions {
	var out asm.Instructions
	if !g.live[asm.R0] {
		out = append(out, asm.Mov.Imm(asm.R0, 0))
	}
	for i, r := range g.scalars() {
		if !g.live[r] || r == asm.R0 {
			continue
		}
		if g.inMain {
			out = append(out, asm.StoreMem(regPkt, int16(8*i), r, asm.DWord))
		}
		out = append(out, asm.Xor.Reg(asm.R0, r))
	}
	if g.inMain {
		out = append(out, asm.StoreMem(regPkt, 0, asm.R0, asm.DWord))
		// The stack too: a wrong store there shows in the packet.
		for i := 1; i <= stackSlots; i++ {
			out = append(out, asm.LoadMem(asm.R1, asm.RFP, int16(-8*i), asm.DWord),
				asm.StoreMem(regPkt, int16(64+8*i), asm.R1, asm.DWord))
		}
	}
	return append(out, asm.Return())
}

func intersect(a, b map[asm.Register]bool) map[asm.Register]bool {
	c := make(map[asm.Register]bool, len(a))
	for k, v := range a {
		if v && b[k] {
			c[k] = true
		}
	}
	return c
}

func copyLive(m map[asm.Register]bool) map[asm.Register]bool {
	c := make(map[asm.Register]bool, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// rawLen counts instruction slots (an lddw takes two).
func rawLen(insns asm.Instructions) int {
	n := 0
	for _, ins := range insns {
		n += int(ins.Size() / asm.InstructionSize)
	}
	return n
}
