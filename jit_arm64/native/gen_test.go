package native_test

import (
	"encoding/binary"
	"math/rand/v2"

	"github.com/bpfsim/bpfsim/jit_arm64/a64"
	"github.com/bpfsim/bpfsim/jit_arm64/native"
)

// The random functions of the differential test are shaped like JIT
// output: the JIT's prologue and epilogue, its register map (values in
// x0-x4, x7, x9-x12, x20-x22; x19 holds the data pointer as BPF's R6 often
// holds ctx; x25 is the frame pointer), and a body of the instruction forms
// jit_arm64/a64 encodes and jit_arm64/emu decodes.
//
// Forms the emulator does not decode, so not generated: CSEL/CSINC (and
// their CSET/CINC aliases), CCMP, TBZ/TBNZ, the extended-register
// ADD/SUB, and LDPSW (decoded, but jit_arm64/a64 has no encoder for it).
// jit_arm64/a64 has no encoder for any of them either; should the JIT come
// to need one, the emulator must learn it and this generator with it.
// Also not generated, though decoded: single loads and stores with pre- or
// post-index writeback and UXTW/SXTW register offsets (a64 encodes neither),
// MRS (user mode cannot read the kernel's system registers).

const (
	workSize = 256               // the part of Data the body loads and stores
	outOff   = 256               // the epilogue stores every value register from here
	dataSize = outOff + 8*13 + 8 // 13 value registers and the flags
	frame    = 512               // the BPF stack below x25, like MAX_BPF_STACK
)

var valRegs = [13]int{0, 1, 2, 3, 4, 7, 9, 10, 11, 12, 20, 21, 22}

const (
	dataReg  = 19 // the data pointer, never written by the body
	addrTmp  = 13 // a base for unscaled and writeback addressing
	loopReg  = 14 // the bounded loops' counter
	indexReg = 15 // register offsets; the stxr status
)

type gen struct {
	r     *rand.Rand
	words []uint32
	// calls are the BL/ADR sites that reach a subroutine; the
	// subroutines are emitted after the function's RET.
	calls []call
	leaf  bool // a subroutine: no calls (LR is not saved)
}

// call is a site to patch once its subroutine's position is known.
type call struct {
	at   int // index of the BL or ADR word
	adr  bool
	body []uint32
}

func (g *gen) emit(word uint32, err error) {
	if err != nil {
		panic(err) // a generator bug: every operand is chosen to encode
	}
	g.words = append(g.words, word)
}

func (g *gen) emitAll(words []uint32, err error) {
	if err != nil {
		panic(err)
	}
	g.words = append(g.words, words...)
}

func (g *gen) intn(n int) int { return g.r.IntN(n) }

func (g *gen) reg(is64 bool) a64.Reg {
	n := valRegs[g.intn(len(valRegs))]
	if is64 {
		return a64.X(n)
	}
	return a64.W(n)
}

// value returns a random 64-bit value, often a boundary one.
func (g *gen) value() uint64 {
	special := []uint64{0, 1, 2, ^uint64(0), 1 << 63, 1<<63 - 1, 1 << 31, 1<<31 - 1, 0xffff_ffff,
		0x1_0000_0000, 0xffff_ffff_8000_0000, 0x8000, 0xffff, 0xff, 0x80, 63, 64, 32}
	switch g.intn(4) {
	case 0:
		return special[g.intn(len(special))]
	case 1:
		return uint64(g.intn(4096))
	case 2:
		return uint64(int64(int32(g.r.Uint32())))
	}
	return g.r.Uint64()
}

func (g *gen) bitmask(is64 bool) uint64 {
	width := 32
	if is64 {
		width = 64
	}
	sizes := []int{2, 4, 8, 16, 32, 64}
	for {
		e := sizes[g.intn(len(sizes))]
		if e > width {
			continue
		}
		ones := 1 + g.intn(e-1)
		elem := uint64(1)<<uint(ones) - 1
		rot := uint(g.intn(e))
		emask := uint64(1)<<uint(e) - 1
		if e == 64 {
			emask = ^uint64(0)
		}
		elem = (elem<<rot | elem>>(uint(e)-rot)) & emask
		v := elem
		for s := e; s < width; s *= 2 {
			v |= v << uint(s)
		}
		if width == 32 {
			v &= 0xffffffff
		}
		if a64.IsBitmaskImm(v, is64) {
			return v
		}
	}
}

func (g *gen) shift(is64 bool, withRor bool) (a64.Shift, uint) {
	n := 3
	if withRor {
		n = 4
	}
	w := 32
	if is64 {
		w = 64
	}
	return a64.Shift(g.intn(n)), uint(g.intn(w))
}

// alu emits one data-processing instruction or constant load.
func (g *gen) alu() {
	is64 := g.intn(2) == 0
	rd, rn, rm, ra := g.reg(is64), g.reg(is64), g.reg(is64), g.reg(is64)
	width := uint(32)
	if is64 {
		width = 64
	}
	switch g.intn(22) {
	case 0:
		sh, amt := g.shift(is64, false)
		if g.intn(2) == 0 {
			g.emit(a64.AddShifted(rd, rn, rm, sh, amt))
		} else {
			g.emit(a64.SubShifted(rd, rn, rm, sh, amt))
		}
	case 1:
		switch g.intn(5) {
		case 0:
			g.emit(a64.Adds(rd, rn, rm))
		case 1:
			g.emit(a64.Subs(rd, rn, rm))
		case 2:
			g.emit(a64.Neg(rd, rm))
		case 3:
			g.emit(a64.Cmp(rn, rm))
		default:
			g.emit(a64.Cmn(rn, rm))
		}
	case 2, 3:
		sh, amt := g.shift(is64, true)
		g.emit(a64.LogicShifted(a64.LogicOp(g.intn(8)), rd, rn, rm, sh, amt))
	case 4, 5:
		imm := int64(g.intn(4096))
		if g.intn(3) == 0 {
			imm <<= 12
		}
		switch g.intn(6) {
		case 0:
			g.emit(a64.AddImm(rd, rn, imm))
		case 1:
			g.emit(a64.SubImm(rd, rn, imm))
		case 2:
			g.emit(a64.AddsImm(rd, rn, imm))
		case 3:
			g.emit(a64.SubsImm(rd, rn, imm))
		case 4:
			g.emit(a64.CmpImm(rn, imm))
		default:
			g.emit(a64.CmnImm(rn, imm))
		}
	case 6:
		g.emit(a64.LogicImm(a64.LogicOp(g.intn(4)), rd, rn, g.bitmask(is64)))
	case 7:
		hw := uint(16 * g.intn(int(width/16)))
		imm := uint32(g.r.Uint32() & 0xffff)
		switch g.intn(3) {
		case 0:
			g.emit(a64.Movz(rd, imm, hw))
		case 1:
			g.emit(a64.Movn(rd, imm, hw))
		default:
			g.emit(a64.Movk(rd, imm, hw))
		}
	case 8:
		if is64 {
			g.emitAll(a64.MovImm64(rd, g.value()))
		} else {
			g.emitAll(a64.MovImm32(rd, int32(g.value())))
		}
	case 9:
		immr, imms := uint(g.intn(int(width))), uint(g.intn(int(width)))
		switch g.intn(3) {
		case 0:
			g.emit(a64.Ubfm(rd, rn, immr, imms))
		case 1:
			g.emit(a64.Sbfm(rd, rn, immr, imms))
		default:
			g.emit(a64.Bfm(rd, rn, immr, imms))
		}
	case 10:
		s := uint(g.intn(int(width)))
		switch g.intn(3) {
		case 0:
			g.emit(a64.LslImm(rd, rn, s))
		case 1:
			g.emit(a64.LsrImm(rd, rn, s))
		default:
			g.emit(a64.AsrImm(rd, rn, s))
		}
	case 11:
		ext := []func(a, b a64.Reg) (uint32, error){a64.Uxtb, a64.Uxth, a64.Uxtw, a64.Sxtb, a64.Sxth, a64.Sxtw}
		g.emit(ext[g.intn(len(ext))](rd, rn)) // with W registers uxtw/sxtw are lsr/asr #0
	case 12:
		if g.intn(2) == 0 {
			g.emit(a64.Extr(rd, rn, rm, uint(g.intn(int(width)))))
		} else {
			g.emit(a64.RorImm(rd, rn, uint(g.intn(int(width)))))
		}
	case 13, 14:
		ops := []func(a, b, c a64.Reg) (uint32, error){a64.Udiv, a64.Sdiv, a64.Lslv, a64.Lsrv, a64.Asrv, a64.Rorv}
		op := g.intn(len(ops))
		if op < 2 && g.intn(3) == 0 && rn.Num() != rm.Num() {
			// The division edges random values almost never hit: the
			// most negative dividend over -1, and a zero divisor.
			g.emitAll(a64.MovImm64(rn.AsX(), []uint64{1 << 63, 1 << 31, 0xffff_ffff_8000_0000}[g.intn(3)]))
			g.emitAll(a64.MovImm64(rm.AsX(), []uint64{^uint64(0), 0xffff_ffff, 0, 1 << 32}[g.intn(4)]))
		}
		g.emit(ops[op](rd, rn, rm))
	case 15, 16:
		switch g.intn(3) {
		case 0:
			g.emit(a64.Madd(rd, rn, rm, ra))
		case 1:
			g.emit(a64.Msub(rd, rn, rm, ra))
		default:
			g.emit(a64.Mul(rd, rn, rm))
		}
	case 17:
		// The JIT's modulo: udiv/sdiv into a scratch, then msub.
		div := a64.Udiv
		if g.intn(2) == 0 {
			div = a64.Sdiv
		}
		tmp := a64.W11
		if is64 {
			tmp = a64.X11
		}
		g.emit(div(tmp, rn, rm))
		g.emit(a64.Msub(rd, tmp, rm, rn))
	case 18:
		switch g.intn(5) {
		case 0:
			g.emit(a64.Rev16(rd, rn))
		case 1:
			g.emit(a64.Rev32(rd, rn))
		case 2:
			g.emit(a64.Rev64(rd.AsX(), rn.AsX()))
		case 3:
			g.emit(a64.Rbit(rd, rn))
		default:
			g.emit(a64.Clz(rd, rn))
		}
	case 19:
		g.emit(a64.Mvn(rd, rm))
	case 20:
		g.emit(a64.MovReg(rd, rm))
	default:
		if is64 {
			g.emit(a64.Tst(rn, rm))
		} else {
			g.emit(a64.TstImm(rn, g.bitmask(false)))
		}
	}
}

// access picks a load or store shape: size, kind and data register.
// kind 0 = store, 1 = zero-extending load, 2 = sign-extending load.
func (g *gen) access() (size a64.Size, kind int, rt a64.Reg) {
	kind = g.intn(3)
	size = a64.Size(g.intn(4))
	if kind == 2 && size == a64.Size64 {
		size = a64.Size(g.intn(3))
	}
	switch {
	case kind == 2 && size == a64.Size32:
		rt = g.reg(true)
	case kind == 2:
		rt = g.reg(g.intn(2) == 0)
	default:
		rt = g.reg(size == a64.Size64)
	}
	return size, kind, rt
}

func (g *gen) ldst(kind int, size a64.Size, rt, rn a64.Reg, off int64, unscaled bool) {
	switch {
	case unscaled && kind == 0:
		g.emit(a64.StoreUnscaled(size, rt, rn, off))
	case unscaled && kind == 1:
		g.emit(a64.LoadUnscaled(size, rt, rn, off))
	case unscaled:
		g.emit(a64.LoadSignedUnscaled(size, rt, rn, off))
	case kind == 0:
		g.emit(a64.StoreImm(size, rt, rn, off))
	case kind == 1:
		g.emit(a64.LoadImm(size, rt, rn, off))
	default:
		g.emit(a64.LoadSignedImm(size, rt, rn, off))
	}
}

func (g *gen) ldstReg(kind int, size a64.Size, rt, rn, rm a64.Reg) {
	switch kind {
	case 0:
		g.emit(a64.StoreReg(size, rt, rn, rm))
	case 1:
		g.emit(a64.LoadReg(size, rt, rn, rm))
	default:
		g.emit(a64.LoadSignedReg(size, rt, rn, rm))
	}
}

// memory emits a load or store into the data buffer's work area.
func (g *gen) memory() {
	size, kind, rt := g.access()
	n := int64(size.Bytes())
	data := a64.X(dataReg)
	switch g.intn(3) {
	case 0: // [x19, #off], scaled
		off := int64(g.intn(int(workSize/n))) * n
		g.ldst(kind, size, rt, data, off, false)
	case 1: // [x13, #simm9] with x13 inside the buffer, any alignment
		k := int64(g.intn(workSize))
		lo, hi := max(-k, -256), min(workSize-n-k, 255)
		off := lo + int64(g.intn(int(hi-lo+1)))
		g.emit(a64.AddImm(a64.X(addrTmp), data, k))
		g.ldst(kind, size, rt, a64.X(addrTmp), off, true)
	default: // [x19, x15]
		g.emitAll(a64.MovImm64(a64.X(indexReg), uint64(g.intn(int(workSize-n+1)))))
		g.ldstReg(kind, size, rt, data, a64.X(indexReg))
	}
}

// stack emits a load or store into the BPF frame [x25-512, x25).
func (g *gen) stack() {
	size, kind, rt := g.access()
	n := int64(size.Bytes())
	switch g.intn(3) {
	case 0: // [x25, #-off], the JIT's frame-pointer form
		off := -1 - int64(g.intn(256))
		off = max(off, -256)
		if off+n > 0 {
			off = -n
		}
		g.ldst(kind, size, rt, a64.X25, off, true)
	case 1: // [sp, #off], scaled
		off := int64(g.intn(int(frame/n))) * n
		g.ldst(kind, size, rt, a64.SP, off, false)
	default: // [x25, x15] with a negative index
		off := int64(g.intn(frame-int(n)+1)) + n
		g.emitAll(a64.MovImm64(a64.X(indexReg), uint64(-off)))
		g.ldstReg(kind, size, rt, a64.X25, a64.X(indexReg))
	}
}

// pair emits an LDP or STP on the data buffer or the stack.
func (g *gen) pair() {
	is64 := g.intn(2) == 0
	n := int64(4)
	if is64 {
		n = 8
	}
	rt, rt2 := g.reg(is64), g.reg(is64)
	load := g.intn(2) == 0
	for load && rt.Num() == rt2.Num() {
		rt2 = g.reg(is64)
	}
	do := func(base a64.Reg, off int64, mode a64.PairMode) {
		if load {
			g.emit(a64.LoadPair(rt, rt2, base, off, mode))
		} else {
			g.emit(a64.StorePair(rt, rt2, base, off, mode))
		}
	}
	tmp := a64.X(addrTmp)
	switch g.intn(4) {
	case 0: // [x19, #off]
		off := int64(g.intn(int(min(workSize-2*n, 63*n)/n)+1)) * n
		do(a64.X(dataReg), off, a64.SignedOffset)
	case 1: // [x13, #off]! then [x13], #off: writeback on a copy of the pointer
		k := int64(g.intn(workSize/2/int(n))) * n
		g.emit(a64.AddImm(tmp, a64.X(dataReg), k))
		hi := min((workSize-2*n-k)/n, 63)
		off := int64(g.intn(int(hi)+1)) * n
		if g.intn(2) == 0 {
			do(tmp, off, a64.PreIndex)
		} else {
			do(tmp, off, a64.PostIndex)
		}
	case 2: // [sp, #off]
		off := int64(g.intn(int(min(frame-2*n, 63*n)/n)+1)) * n
		do(a64.SP, off, a64.SignedOffset)
	default: // [x25, #-off]
		off := -int64(g.intn(62)+2) * n
		do(a64.X25, off, a64.SignedOffset)
	}
}

// atomic emits one of the JIT's BPF_ATOMIC sequences on an aligned word of
// the data buffer.
func (g *gen) atomic() {
	is64 := g.intn(2) == 0
	n := 4
	if is64 {
		n = 8
	}
	tmp := a64.X(addrTmp)
	g.emit(a64.AddImm(tmp, a64.X(dataReg), int64(g.intn(workSize/n)*n)))
	rs, rt := g.reg(is64), g.reg(is64)
	switch g.intn(6) {
	case 0:
		g.emit(a64.AtomicLoadOp([]a64.AtomicOp{a64.AtomicAdd, a64.AtomicClr, a64.AtomicEor, a64.AtomicSet, a64.AtomicSwp}[g.intn(5)],
			a64.Order(g.intn(4)), rs, rt, tmp))
	case 1:
		g.emit(a64.AtomicStoreOp(a64.AtomicOp(g.intn(4)), a64.Order(g.intn(2)), rs, tmp))
	case 2:
		g.emit(a64.Cas(a64.Order(g.intn(4)), rs, rt, tmp))
	case 3: // ldxr; add; stxr; cbnz: the JIT's LL/SC fetch-add
		for rt.Num() == rs.Num() {
			rt = g.reg(is64)
		}
		g.emit(a64.Ldxr(rt, tmp))
		g.emit(a64.Add(rt, rt, rs))
		g.emit(a64.Stxr(a64.W(indexReg), rt, tmp))
		g.emit(a64.Cbnz(a64.W(indexReg), -3))
	case 4:
		size := a64.Size(g.intn(4))
		g.emit(a64.AddImm(tmp, a64.X(dataReg), int64(g.intn(workSize/size.Bytes())*size.Bytes())))
		g.emit(a64.Ldar(size, g.reg(size == a64.Size64), tmp))
	default:
		size := a64.Size(g.intn(4))
		g.emit(a64.AddImm(tmp, a64.X(dataReg), int64(g.intn(workSize/size.Bytes())*size.Bytes())))
		g.emit(a64.Stlr(size, g.reg(size == a64.Size64), tmp))
	}
}

// block emits n items; branches nest up to depth 2, loops only at the top.
func (g *gen) block(n, depth int) {
	for i := 0; i < n; i++ {
		switch k := g.intn(20); {
		case k < 9:
			g.alu()
		case k < 11:
			g.memory()
		case k < 13:
			g.stack()
		case k < 14:
			g.pair()
		case k < 15:
			g.atomic()
		case k < 17 && depth < 2:
			g.branch(depth)
		case k < 18 && depth == 0:
			g.loop()
		case k < 19:
			g.misc(depth)
		default:
			g.alu()
		}
	}
}

// branch emits a compare (or not: flags from earlier instructions) and a
// forward conditional branch over a nested block.
func (g *gen) branch(depth int) {
	is64 := g.intn(2) == 0
	switch g.intn(5) {
	case 0:
		g.emit(a64.Cmp(g.reg(is64), g.reg(is64)))
	case 1:
		g.emit(a64.CmpImm(g.reg(is64), int64(g.intn(4096))))
	case 2:
		g.emit(a64.Tst(g.reg(is64), g.reg(is64)))
	}
	rt := g.reg(is64)
	kind := g.intn(4)
	at := len(g.words)
	g.words = append(g.words, 0)
	g.block(1+g.intn(5), depth+1)
	off := int32(len(g.words) - at)
	var w uint32
	var err error
	switch kind {
	case 0:
		w, err = a64.Cbz(rt, off)
	case 1:
		w, err = a64.Cbnz(rt, off)
	default:
		w, err = a64.BCond(a64.Cond(g.intn(16)), off)
	}
	if err != nil {
		panic(err)
	}
	g.words[at] = w
}

// misc emits the rarer control flow and system forms the JIT uses: JA
// (B over a block), an indirect jump (ADR + BR), a call of a subroutine
// (BL, or ADR + BLR as bpf-to-bpf calls go through a register), a literal
// load (the text-poke PLT's LDR literal), barriers and hints. x16 holds
// the addresses: it is never stored, so no address reaches the results.
func (g *gen) misc(depth int) {
	ip0 := a64.X16
	k := g.intn(6)
	if k == 2 && g.leaf {
		k = 0
	}
	switch k {
	case 0: // b over a block
		at := len(g.words)
		g.words = append(g.words, 0)
		g.block(1+g.intn(3), 2)
		g.words[at] = mustWord(a64.B(int32(len(g.words) - at)))
	case 1: // adr x16, over; br x16; <block>; over:
		at := len(g.words)
		g.words = append(g.words, 0)
		g.emit(a64.Br(ip0))
		g.block(1+g.intn(3), 2)
		g.words[at] = mustWord(a64.Adr(ip0, int64(4*(len(g.words)-at))))
	case 2: // a call: the subroutine runs a block and returns
		sub := &gen{r: g.r, leaf: true}
		sub.block(2+g.intn(6), 2)
		sub.emit(a64.Ret(a64.LR))
		c := call{at: len(g.words), adr: g.intn(2) == 0, body: sub.words}
		g.words = append(g.words, 0)
		if c.adr {
			g.emit(a64.Blr(ip0))
		}
		g.calls = append(g.calls, c)
	case 3: // b over an 8-byte literal, then ldr from it (x or w)
		v := g.value()
		g.emit(a64.B(3))
		g.words = append(g.words, uint32(v), uint32(v>>32))
		rt := g.reg(g.intn(2) == 0)
		g.emit(a64.LoadLiteral(rt, -2))
	case 4:
		bars := []uint32{a64.ISB, a64.SB, mustWord(a64.Dmb(a64.BarrierISH)), mustWord(a64.Dsb(a64.BarrierNSH)),
			mustWord(a64.Dmb(a64.BarrierISHST))}
		g.words = append(g.words, bars[g.intn(len(bars))])
	default:
		hints := []uint32{a64.NOP, a64.BTIC, a64.BTIJ, a64.BTIJC}
		g.words = append(g.words, hints[g.intn(len(hints))])
	}
}

func mustWord(w uint32, err error) uint32 {
	if err != nil {
		panic(err)
	}
	return w
}

// loop emits a counted loop: 1..8 iterations of a nested block.
func (g *gen) loop() {
	g.emit(a64.Movz(a64.W(loopReg), uint32(1+g.intn(8)), 0))
	top := len(g.words)
	g.block(2+g.intn(5), 1)
	g.emit(a64.SubsImm(a64.W(loopReg), a64.W(loopReg), 1))
	g.emit(a64.BCond(a64.CondNE, int32(top-len(g.words))))
}

// randomCase builds one function and its input.
func randomCase(r *rand.Rand) native.Case {
	g := &gen{r: r}
	// Prologue, as the JIT's build_prologue (without BTI/PAC and the
	// tail-call counter).
	g.words = append(g.words, a64.BTIC, a64.PACIASP)
	g.emit(a64.StorePair(a64.FP, a64.LR, a64.SP, -16, a64.PreIndex))
	g.emit(a64.Mov(a64.FP, a64.SP))
	g.emit(a64.StorePair(a64.X19, a64.X20, a64.SP, -16, a64.PreIndex))
	g.emit(a64.StorePair(a64.X21, a64.X22, a64.SP, -16, a64.PreIndex))
	g.emit(a64.StorePair(a64.X25, a64.X26, a64.SP, -16, a64.PreIndex))
	g.emit(a64.Mov(a64.X25, a64.SP))
	g.emit(a64.SubImm(a64.SP, a64.SP, frame))
	g.emit(a64.MovReg(a64.X(dataReg), a64.X0))
	// Every value register starts defined and free of addresses.
	for _, n := range valRegs {
		if g.intn(3) == 0 {
			g.emit(a64.LoadImm(a64.Size64, a64.X(n), a64.X(dataReg), int64(8*g.intn(workSize/8))))
		} else {
			g.emitAll(a64.MovImm64(a64.X(n), g.value()))
		}
	}
	g.block(10+g.intn(40), 0)
	// Epilogue: every value register and the flags go to the output area.
	for i, n := range valRegs {
		g.emit(a64.StoreImm(a64.Size64, a64.X(n), a64.X(dataReg), int64(outOff+8*i)))
	}
	g.emit(a64.Movz(a64.X(addrTmp), 0, 0))
	for bit, c := range []a64.Cond{a64.CondEQ, a64.CondCS, a64.CondMI, a64.CondVS} {
		g.emit(a64.BCond(c.Invert(), 2))
		g.emit(a64.OrrImm(a64.X(addrTmp), a64.X(addrTmp), 1<<uint(bit)))
	}
	g.emit(a64.StoreImm(a64.Size64, a64.X(addrTmp), a64.X(dataReg), int64(outOff+8*len(valRegs))))
	g.emit(a64.MovReg(a64.X0, a64.X7))
	g.emit(a64.Mov(a64.SP, a64.X25))
	g.emit(a64.LoadPair(a64.X25, a64.X26, a64.SP, 16, a64.PostIndex))
	g.emit(a64.LoadPair(a64.X21, a64.X22, a64.SP, 16, a64.PostIndex))
	g.emit(a64.LoadPair(a64.X19, a64.X20, a64.SP, 16, a64.PostIndex))
	g.emit(a64.LoadPair(a64.FP, a64.LR, a64.SP, 16, a64.PostIndex))
	g.words = append(g.words, a64.AUTIASP)
	g.emit(a64.Ret(a64.LR))
	// The subroutines, each after its own BTI landing pad.
	for _, c := range g.calls {
		target := len(g.words)
		g.words = append(g.words, a64.BTIC)
		g.words = append(g.words, c.body...)
		if c.adr {
			g.words[c.at] = mustWord(a64.Adr(a64.X16, int64(4*(target-c.at))))
		} else {
			g.words[c.at] = mustWord(a64.Bl(int32(target - c.at)))
		}
	}

	c := native.Case{Code: make([]byte, 0, 4*len(g.words)), Data: make([]byte, dataSize)}
	for _, w := range g.words {
		c.Code = binary.LittleEndian.AppendUint32(c.Code, w)
	}
	for i := range c.Data {
		c.Data[i] = byte(r.Uint32())
	}
	return c
}
