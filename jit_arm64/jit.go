package jit_arm64

import (
	"fmt"
	"slices"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/jit_arm64/a64"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// The BPF to A64 translation of arch/arm64/net/bpf_jit_comp.c: the
// kernel's register map, prologue, epilogue and stack layout, one A64
// sequence per BPF instruction, and the passes that settle branch offsets
// and call forms before the image is written.

// The register map (bpf2a64[] in the kernel).
var bpf2a64 = [insn.AX + 1]a64.Reg{
	0:       a64.X7, // R0: return value
	1:       a64.X0, // R1-R5: arguments, as AAPCS64 passes them
	2:       a64.X1,
	3:       a64.X2,
	4:       a64.X3,
	5:       a64.X4,
	6:       a64.X19, // R6-R9: callee-saved
	7:       a64.X20,
	8:       a64.X21,
	9:       a64.X22,
	10:      a64.X25, // R10: the BPF frame pointer
	insn.AX: a64.X9,  // AX: the verifier's rewrite scratch
}

// Scratch registers of the JIT itself.
const (
	tmp1   = a64.X10
	tmp2   = a64.X11
	tmp3   = a64.X12
	tccPtr = a64.X26 // points to the tail call counter slot
	fp     = a64.X29
	lr     = a64.X30
)

// PrologueOffset is the number of instructions from a program's entry to
// the point where tail calls land (PROLOGUE_OFFSET without BTI and
// pointer authentication): past "mov x9, lr; nop; stp x29, lr; mov x29,
// sp; stp xzr, x26; mov x26, sp", so that a tail-called program reuses the
// frame record and the counter slot of the program it replaces.
const PrologueOffset = 6

// The helpers the JIT inlines besides bpf_get_smp_processor_id
// (include/uapi/linux/bpf.h ids).
const (
	funcGetCurrentTask    = 35
	funcGetCurrentTaskBTF = 158
)

// ThreadInfoCPU is offsetof(struct thread_info, cpu) on arm64 with
// CONFIG_ARM64_SW_TTBR0_PAN (defconfig) and no shadow call stack: flags,
// ttbr0, preempt_count, then cpu. The inlined bpf_get_smp_processor_id
// reads it through SP_EL0, which holds current.
const ThreadInfoCPU = 24

// Input is what the JIT needs to know of a program besides its
// instructions: how calls reach the kernel.
type Input struct {
	// Insns are the xlated instructions.
	Insns []insn.Insn
	// Funcs are the program's functions in order, the main program
	// first; each function's stack depth sizes its frame. Empty means one
	// function spanning the program with a 512-byte stack.
	Funcs []Func
	// CallTarget returns the kernel address a helper call reaches from
	// its imm (after the verifier's fix-ups the imm is relative to
	// __bpf_call_base; before them it is a helper id: the caller knows
	// which).
	CallTarget func(imm int32) (uint64, error)
	// KfuncTarget does the same for a kfunc call (src_reg
	// BPF_PSEUDO_KFUNC_CALL); nil refuses kfunc calls.
	KfuncTarget func(imm int32) (uint64, error)
	// TailCallSlot is the address of the kernel function that reads a
	// prog array slot for a tail call; 0 refuses tail calls. See
	// emitTailCall for its calling convention.
	TailCallSlot uint64
	// LdAbs is the address of the kernel function that serves legacy
	// packet loads (LD_ABS, LD_IND), the bpf_skb_load_helper_* of the
	// verifier's gen_ld_abs rewrite: it takes the offset in w1 and the
	// size in w2 and returns the big-endian value, or a negative number
	// when the bytes are not in the packet. 0 refuses such programs.
	LdAbs uint64
	// DirectTailCalls are the tail call instructions whose prog array and
	// index the verifier knew (its poke descriptors): they jump to their
	// target directly, through code patched when the slot changes (see
	// tailCallDirect).
	DirectTailCalls []int
}

// Func is one function (subprogram) of a program.
type Func struct {
	Start, End int // its instructions: Insns[Start:End]
	StackDepth int // bytes of BPF stack it uses
}

// ErrNotSupported wraps the errors of programs the JIT cannot translate;
// the kernel then runs them in the interpreter (bpf_prog_select_runtime)
// unless the JIT was demanded.
var ErrNotSupported = uapi.ENOTSUPP

// jitCtx is struct jit_ctx: the state of one pass.
type jitCtx struct {
	in    *Input
	image uint64 // the RX address of the image; 0 in the first pass

	words []uint32
	// offsets is the A64 index of each BPF instruction; offsets[n] =
	// end. int32 halves what a big program allocates; images are far
	// smaller than 2^31 instructions.
	offsets []int32
	// entries and epilogues are each function's first instruction and
	// its epilogue's, from the previous pass (the current one for
	// functions already emitted).
	entries   []int
	epilogues []int
	// prev holds the previous pass's offsets, for forward branches;
	// spare is a buffer for the next pass's.
	prev, spare []int32
	// patch makes a pass without prev record its forward references
	// (branches to later instructions, epilogues and functions) in
	// fixups, to be resolved once the pass is over: then one pass
	// gives what the kernel's extra pass would.
	patch  bool
	fixups []fixup

	fn      int        // the function being emitted
	stack   int        // its frame size, rounded up to 16
	mayGoto bool       // it has may_goto: a counter at the frame's bottom
	pushed  [5]a64.Reg // its callee-saved registers, in push order
	npushed int        // how many
	err     error
	callers []callSite
	// farCalls counts calls emitted in their long form for want of the
	// image address; without them the second pass would change nothing.
	farCalls int
	// direct are the direct tail call sites of this pass.
	direct []directSite
	// extable are the probe loads of this pass (add_exception_handler).
	extable []exEntry
}

// exEntry is an exception table entry: the A64 index of a probe load,
// and the register it loads, which a fault there zeroes before the code
// goes on after it (ex_handler_bpf).
type exEntry struct {
	word int
	reg  a64.Reg
}

// directSite is one direct tail call: the A64 indexes of its bypass
// branch, its target slot, the instruction after it, and its stub.
type directSite struct {
	insn                      int
	bypass, target, out, stub int
}

// fixup is a forward reference of a patching pass: the A64 index of a
// branch emitted with offset 0, and what it goes to.
type fixup struct {
	word int
	kind fixKind
	to   int // a BPF instruction, or a function for epilogues and entries
}

type fixKind uint8

const (
	fixInsn     fixKind = iota // the code of BPF instruction to
	fixEpilogue                // function to's epilogue
	fixEntry                   // function to's entry
	fixFuncAddr                // function to's address, in a mov sequence
)

// forward notes that the word about to be emitted refers to something
// not emitted yet, in a patching pass.
func (c *jitCtx) forward(kind fixKind, to int) {
	if c.patch {
		c.fixups = append(c.fixups, fixup{word: c.idx(), kind: kind, to: to})
	}
}

// applyFixups points a patching pass's forward references at their
// targets, re-encoding each branch from its placeholder with the
// encoder that made it.
func (c *jitCtx) applyFixups() error {
	for _, f := range c.fixups {
		if f.kind == fixFuncAddr {
			var seq [3]uint32
			rd := a64.X(int(c.words[f.word] & 31))
			copy(c.words[f.word:], appendAddrMov(seq[:0], rd, c.image+4*uint64(c.entries[f.to])))
			continue
		}
		var dest int
		switch f.kind {
		case fixInsn:
			dest = int(c.offsets[f.to])
		case fixEpilogue:
			dest = c.epilogues[f.to]
		default:
			dest = c.entries[f.to]
		}
		off := int32(dest - f.word)
		w := c.words[f.word]
		var err error
		switch {
		case w == branchB:
			w, err = a64.B(off)
		case w == branchBL:
			w, err = a64.Bl(off)
		case w&^0xf == branchBCond:
			w, err = a64.BCond(a64.Cond(w&0xf), off)
		case w&^(1<<31|31) == branchCBZ:
			rt := a64.W(int(w & 31))
			if w>>31 != 0 {
				rt = rt.AsX()
			}
			w, err = a64.Cbz(rt, off)
		default:
			err = errors.Wrapf(uapi.EFAULT, "JIT fix-up at %d: %#08x is no placeholder branch", f.word, w)
		}
		if err != nil {
			return err
		}
		c.words[f.word] = w
	}
	return nil
}

// The placeholder branches of forward references: offset 0, and for
// b.cond and cbz the condition and register left in place.
const (
	branchB     = 0x14000000
	branchBL    = 0x94000000
	branchBCond = 0x54000000
	branchCBZ   = 0x34000000
)

// callSite records where a call instruction is, to find the BPF
// instruction a kernel function was called from.
type callSite struct {
	word int // the A64 index just after the call (the return address)
	bpf  int
}

func (c *jitCtx) emit(w uint32, err error) {
	if err != nil {
		if c.err == nil {
			c.err = err
		}
		w = a64.BreakFault
	}
	c.words = append(c.words, w)
}

func (c *jitCtx) emitAll(ws []uint32, err error) {
	if err != nil {
		if c.err == nil {
			c.err = err
		}
		c.words = append(c.words, a64.BreakFault)
		return
	}
	if cap(ws) == cap(c.words) {
		// Appended in place (a grown slice has a larger capacity):
		// only the length changes, which needs no write barrier while
		// the garbage collector marks.
		c.words = c.words[:len(ws)]
		return
	}
	c.words = ws
}

func (c *jitCtx) idx() int { return len(c.words) }

// target returns the A64 index of BPF instruction t as best known: this
// pass's offset for a backward target, the previous pass's for a forward
// one (here, with a fix-up in a patching pass, when there is none).
func (c *jitCtx) target(t int, cur int) int {
	if t <= cur {
		return int(c.offsets[t])
	}
	if c.prev == nil {
		c.forward(fixInsn, t)
		return c.idx()
	}
	return int(c.prev[t])
}

func (c *jitCtx) fail(i int, format string, args ...any) {
	if c.err == nil {
		c.err = errors.Wrapf(ErrNotSupported, "insn %d: "+format, append([]any{i}, args...)...)
	}
}

// reg maps a BPF register, in the width asked for.
func reg(r uint8, is64 bool) a64.Reg {
	x := bpf2a64[r&15]
	if !is64 {
		return x.AsW()
	}
	return x
}

func width(r a64.Reg, is64 bool) a64.Reg {
	if is64 {
		return r.AsX()
	}
	return r.AsW()
}

// regBit is the bit of scanFunc's register set for a register field: the
// kernel's find_used_callee_regs folds fields of 11 and up as by %11.
var regBit = func() (b [16]uint16) {
	for r := range b {
		b[r] = 1 << (r % 11)
	}
	return b
}()

// scanFunc looks at a function once before its code is emitted: whether
// it has a may_goto, and find_used_callee_regs, the callee-saved
// registers it touches (into regs, n of them, pushed in pairs by its
// prologue).
func scanFunc(insns []insn.Insn, regs *[5]a64.Reg) (mayGoto bool, n int) {
	var used uint16 // bit r: BPF register r
	for i := 0; i < len(insns); i++ {
		in := insns[i]
		used |= regBit[in.Dst&15] | regBit[in.Src&15]
		if in.Code == insn.JMP|insn.JCOND && in.Src == insn.MayGoto {
			mayGoto = true
		}
		if in.IsLdImm64() {
			i++
		}
	}
	for r := 6; r <= 10; r++ {
		if used&(1<<r) != 0 {
			regs[n] = bpf2a64[r]
			n++
		}
	}
	return mayGoto, n
}

// prologue is build_prologue for a function; main programs get the tail
// call counter slot.
func (c *jitCtx) prologue(main bool) {
	c.emit(a64.MovReg(a64.X9, lr)) // for fentry trampolines
	c.emit(a64.NOP, nil)           // POKE_OFFSET: patched to call a trampoline
	c.emit(a64.StorePair(fp, lr, a64.SP, -16, a64.PreIndex))
	c.emit(a64.Mov(fp, a64.SP))
	if main {
		c.emit(a64.StorePair(a64.XZR, tccPtr, a64.SP, -16, a64.PreIndex))
		c.emit(a64.Mov(tccPtr, a64.SP))
	} else {
		// A subprogram keeps the main program's counter pointer; the
		// pair keeps the frame's shape the same.
		c.emit(a64.StorePair(tccPtr, tccPtr, a64.SP, -16, a64.PreIndex))
	}
	c.pushCalleeSaved()
	if c.usesFP() {
		c.emit(a64.Mov(bpf2a64[10], a64.SP))
	}
	if c.stack > 0 {
		c.emit(a64.SubImm(a64.SP, a64.SP, int64(c.stack)))
	}
	if c.mayGoto {
		// The may_goto counter, below the BPF stack: BPF_MAX_LOOPS
		// iterations, as the verifier's rewrite initialises it.
		c.emitAll(a64.AppendMovImm64(c.words, tmp1, maxLoops))
		c.emit(a64.StoreImm(a64.Size64, tmp1, a64.SP, 0))
	}
}

// maxLoops is BPF_MAX_LOOPS.
const maxLoops = 8 << 20

// usesFP reports whether the function uses R10, so that the prologue
// saves x25 and sets it.
func (c *jitCtx) usesFP() bool {
	for _, r := range c.pushed[:c.npushed] {
		if r == bpf2a64[10] {
			return true
		}
	}
	return false
}

// pushCalleeSaved stores the function's callee-saved registers in pairs,
// padding an odd count with xzr.
func (c *jitCtx) pushCalleeSaved() {
	for i := 0; i < c.npushed; i += 2 {
		b := a64.XZR
		if i+1 < c.npushed {
			b = c.pushed[i+1]
		}
		c.emit(a64.StorePair(c.pushed[i], b, a64.SP, -16, a64.PreIndex))
	}
}

// popCalleeSaved undoes pushCalleeSaved, in mirror order.
func (c *jitCtx) popCalleeSaved() {
	n := c.npushed
	for i := (n - 1) &^ 1; i >= 0; i -= 2 {
		b := a64.XZR
		if i+1 < n {
			b = c.pushed[i+1]
		}
		c.emit(a64.LoadPair(c.pushed[i], b, a64.SP, 16, a64.PostIndex))
	}
}

// epilogue is build_epilogue.
func (c *jitCtx) epilogue() {
	if c.stack > 0 {
		c.emit(a64.AddImm(a64.SP, a64.SP, int64(c.stack)))
	}
	c.popCalleeSaved()
	c.emit(a64.LoadPair(a64.XZR, tccPtr, a64.SP, 16, a64.PostIndex))
	c.emit(a64.LoadPair(fp, lr, a64.SP, 16, a64.PostIndex))
	c.emit(a64.MovReg(a64.X0, bpf2a64[0]))
	c.emit(a64.Ret(lr))
}

// movImm loads a constant: sign-extended to 64 bits for an X register.
func (c *jitCtx) movImm(rd a64.Reg, imm int32) {
	if rd.Is64() {
		c.emitAll(a64.AppendMovImm64(c.words, rd, uint64(int64(imm))))
	} else {
		c.emitAll(a64.AppendMovImm32(c.words, rd, imm))
	}
}

// compile runs one pass over the program.
func (c *jitCtx) compile() error {
	insns := c.in.Insns
	n := len(insns)
	c.words = c.words[:0]
	c.direct = c.direct[:0]
	// The previous pass's offsets are kept in prev; the one before's
	// buffer is reused.
	if cap(c.spare) >= n+1 {
		c.offsets, c.spare = c.spare[:n+1], nil
	} else {
		c.offsets = make([]int32, n+1)
	}
	funcs := c.in.Funcs
	for f, fn := range funcs {
		c.fn = f
		c.stack = (fn.StackDepth + 15) &^ 15
		c.mayGoto, c.npushed = scanFunc(insns[fn.Start:fn.End], &c.pushed)
		if c.mayGoto {
			c.stack += 16 // the counter's slot, 16-byte aligned
		}
		c.entries[f] = c.idx()
		c.prologue(f == 0)
		for i := fn.Start; i < fn.End; i++ {
			c.offsets[i] = int32(c.idx())
			in := &insns[i]
			if in.IsLdImm64() {
				if i+1 >= fn.End {
					return errors.Wrapf(uapi.EINVAL, "insn %d: lddw is missing its second half", i)
				}
				switch in.Src {
				case 0:
					c.emitAll(a64.AppendMovImm64(c.words, reg(in.Dst, true), insn.Imm64(insns, i)))
				case insn.PseudoFunc:
					c.funcAddr(i, in)
				default:
					c.fail(i, "lddw with pseudo source %d", in.Src)
				}
				i++
				c.offsets[i] = int32(c.idx())
				continue
			}
			// build_insn
			if in.Dst > insn.AX || in.Src > insn.AX {
				return errors.Wrapf(uapi.EINVAL, "insn %d: invalid register", i)
			}
			switch cl := in.Class(); cl {
			case insn.ALU64:
				if in.Code == insn.ALU64|insn.MOV|insn.K {
					// alu's commonest case (movImm of an X register)
					// without its two calls
					c.emitAll(a64.AppendMovImm64(c.words, reg(in.Dst, true), uint64(int64(in.Imm))))
				} else {
					c.alu(i, in, true)
				}
			case insn.ALU:
				c.alu(i, in, false)
			case insn.JMP, insn.JMP32:
				c.jmp(i, in, cl == insn.JMP, i == fn.End-1)
			case insn.LDX, insn.ST, insn.STX:
				c.mem(i, in)
			case insn.LD:
				c.ldAbs(i, in)
			default:
				c.err = errors.Wrapf(uapi.EINVAL, "insn %d: unknown opcode %#02x", i, in.Code)
			}
			if c.err != nil {
				return c.err
			}
		}
		c.epilogues[f] = c.idx()
		c.epilogue()
	}
	c.offsets[n] = int32(c.idx())
	c.stubs()
	return c.err
}

func (c *jitCtx) alu(i int, in *insn.Insn, is64 bool) {
	dst := reg(in.Dst, is64)
	k := in.Source() == insn.K
	imm := in.Imm
	op := in.Op()
	if op == insn.MOV && k {
		// the commonest ALU instruction, ahead of the rest's setup
		c.movImm(dst, imm)
		return
	}
	src := reg(in.Src, is64)
	tmp := width(tmp1, is64)
	// the constant operand as the operation sees it
	kval := uint64(int64(imm))
	if !is64 {
		kval = uint64(uint32(imm))
	}
	// operand puts the immediate in tmp when the operation has no
	// immediate form, and returns the register to use.
	operand := func() a64.Reg {
		if !k {
			return src
		}
		c.movImm(tmp, imm)
		return tmp
	}
	switch op {
	case insn.MOV:
		switch {
		case in.Off == 0:
			c.emit(a64.MovReg(dst, src))
		case in.Off == -1 && is64:
			// BPF_MOV64_PERCPU_REG: add this CPU's per-CPU offset.
			c.emit(a64.Mrs(tmp1, a64.SysRegTPIDR_EL1))
			c.emit(a64.Add(dst, src, tmp1))
		case in.Off == 8:
			c.emit(a64.Sxtb(dst, src))
		case in.Off == 16:
			c.emit(a64.Sxth(dst, src))
		case in.Off == 32 && is64:
			c.emit(a64.Sxtw(dst, src))
		default:
			c.err = errors.Wrapf(uapi.EINVAL, "insn %d: invalid movsx offset %d", i, in.Off)
		}
	case insn.ADD, insn.SUB:
		if !k {
			if op == insn.ADD {
				c.emit(a64.Add(dst, dst, src))
			} else {
				c.emit(a64.Sub(dst, dst, src))
			}
			return
		}
		v := int64(imm)
		if op == insn.SUB {
			v = -v
		}
		switch {
		case a64.IsAddSubImm(v):
			c.emit(a64.AddImm(dst, dst, v))
		case a64.IsAddSubImm(-v):
			c.emit(a64.SubImm(dst, dst, -v))
		default:
			c.movImm(tmp, imm)
			if op == insn.ADD {
				c.emit(a64.Add(dst, dst, tmp))
			} else {
				c.emit(a64.Sub(dst, dst, tmp))
			}
		}
	case insn.MUL:
		c.emit(a64.Mul(dst, dst, operand()))
	case insn.DIV, insn.MOD:
		if in.Off != 0 && in.Off != 1 {
			c.err = errors.Wrapf(uapi.EINVAL, "insn %d: invalid offset %d for div/mod", i, in.Off)
			return
		}
		divisor := operand()
		div := a64.Udiv
		if in.Off == 1 {
			div = a64.Sdiv
		}
		if op == insn.DIV {
			c.emit(div(dst, dst, divisor))
			return
		}
		// dst - (dst / divisor) * divisor; a zero divisor leaves dst,
		// as BPF defines it.
		q := width(tmp2, is64)
		c.emit(div(q, dst, divisor))
		c.emit(a64.Msub(dst, q, divisor, dst))
	case insn.AND, insn.OR, insn.XOR:
		lop := a64.AND
		switch op {
		case insn.OR:
			lop = a64.ORR
		case insn.XOR:
			lop = a64.EOR
		}
		if k && a64.IsBitmaskImm(kval, is64) {
			c.emit(a64.LogicImm(lop, dst, dst, kval))
			return
		}
		c.emit(a64.LogicShifted(lop, dst, dst, operand(), a64.LSL, 0))
	case insn.LSH, insn.RSH, insn.ARSH:
		bits := uint(31)
		if is64 {
			bits = 63
		}
		if k {
			sh := uint(imm) & bits
			switch op {
			case insn.LSH:
				c.emit(a64.LslImm(dst, dst, sh))
			case insn.RSH:
				c.emit(a64.LsrImm(dst, dst, sh))
			default:
				c.emit(a64.AsrImm(dst, dst, sh))
			}
			return
		}
		switch op {
		case insn.LSH:
			c.emit(a64.Lslv(dst, dst, src))
		case insn.RSH:
			c.emit(a64.Lsrv(dst, dst, src))
		default:
			c.emit(a64.Asrv(dst, dst, src))
		}
	case insn.NEG:
		if !k {
			c.err = errors.Wrapf(uapi.EINVAL, "insn %d: invalid neg opcode %#02x", i, in.Code)
			return
		}
		c.emit(a64.Neg(dst, dst))
	case insn.END:
		c.endian(i, in, is64)
	default:
		c.err = errors.Wrapf(uapi.EINVAL, "insn %d: unknown opcode %#02x", i, in.Code)
	}
}

// endian is BPF_END: byte swaps (on a little-endian CPU "to BE" and the
// ALU64 bswap) and the truncations "to LE" amounts to.
func (c *jitCtx) endian(i int, in *insn.Insn, is64 bool) {
	swap := is64 || in.Source() == insn.ToBE
	if is64 && in.Source() == insn.ToBE {
		c.err = errors.Wrapf(uapi.EINVAL, "insn %d: invalid bswap opcode %#02x", i, in.Code)
		return
	}
	x := reg(in.Dst, true)
	w := x.AsW()
	switch {
	case in.Imm == 16 && swap:
		c.emit(a64.Rev16(w, w))
		c.emit(a64.Uxth(w, w))
	case in.Imm == 16:
		c.emit(a64.Uxth(w, w))
	case in.Imm == 32 && swap:
		c.emit(a64.Rev32(w, w))
	case in.Imm == 32:
		c.emit(a64.MovReg(w, w))
	case in.Imm == 64 && swap:
		c.emit(a64.Rev64(x, x))
	case in.Imm == 64:
		// nothing to do on a little-endian CPU
	default:
		c.err = errors.Wrapf(uapi.EINVAL, "insn %d: invalid byte swap width %d", i, in.Imm)
	}
}

// jmpConds maps a conditional jump's op (>>4) to the A64 condition its
// branch tests; ok says the op is a conditional jump.
var jmpConds = [16]struct {
	c  a64.Cond
	ok bool
}{
	insn.JEQ >> 4: {a64.CondEQ, true}, insn.JNE >> 4: {a64.CondNE, true},
	insn.JGT >> 4: {a64.CondHI, true}, insn.JGE >> 4: {a64.CondCS, true},
	insn.JLT >> 4: {a64.CondCC, true}, insn.JLE >> 4: {a64.CondLS, true},
	insn.JSGT >> 4: {a64.CondGT, true}, insn.JSGE >> 4: {a64.CondGE, true},
	insn.JSLT >> 4: {a64.CondLT, true}, insn.JSLE >> 4: {a64.CondLE, true},
	insn.JSET >> 4: {a64.CondNE, true},
}

// branchTo is the offset of a branch from here to instruction t, which
// checkTarget has seen: 0 for a target outside the function, whose error
// is already recorded.
func (c *jitCtx) branchTo(i, t int) int32 {
	fn := c.in.Funcs[c.fn]
	if t < fn.Start || t >= fn.End {
		return 0
	}
	return int32(c.target(t, i) - c.idx())
}

func (c *jitCtx) jmp(i int, in *insn.Insn, is64, last bool) {
	op := in.Op()
	switch op {
	case insn.JA:
		if in.Source() != insn.K {
			c.fail(i, "indirect jump")
			return
		}
		t := i + 1 + int(in.Off)
		if !is64 {
			t = i + 1 + int(in.Imm) // gotol
		}
		c.checkTarget(i, t)
		c.emit(a64.B(c.branchTo(i, t)))
		return
	case insn.CALL:
		if !is64 {
			break
		}
		c.call(i, in)
		return
	case insn.EXIT:
		if !is64 {
			break
		}
		if !last {
			c.emit(a64.B(int32(c.epilogueIdx() - c.idx())))
		}
		return
	case insn.TailCall:
		if slices.Contains(c.in.DirectTailCalls, i) {
			c.tailCallDirect(i)
		} else {
			c.tailCall(i)
		}
		return
	case insn.JCOND:
		if !is64 || in.Src != insn.MayGoto {
			break
		}
		// may_goto, as the verifier's rewrite makes it: jump when the
		// frame's counter is spent, else count down.
		t := i + 1 + int(in.Off)
		c.checkTarget(i, t)
		c.emit(a64.LoadImm(a64.Size64, tmp1, a64.SP, 0))
		c.emit(a64.Cbz(tmp1, c.branchTo(i, t)))
		c.emit(a64.SubImm(tmp1, tmp1, 1))
		c.emit(a64.StoreImm(a64.Size64, tmp1, a64.SP, 0))
		return
	}
	jc := jmpConds[op>>4]
	cond := jc.c
	if !jc.ok {
		c.err = errors.Wrapf(uapi.EINVAL, "insn %d: unknown opcode %#02x", i, in.Code)
		return
	}
	dst := reg(in.Dst, is64)
	t := i + 1 + int(in.Off)
	c.checkTarget(i, t)
	if in.Source() == insn.X {
		src := reg(in.Src, is64)
		if op == insn.JSET {
			c.emit(a64.Tst(dst, src))
		} else {
			c.emit(a64.Cmp(dst, src))
		}
	} else {
		v := int64(in.Imm)
		uv := uint64(v)
		if !is64 {
			uv = uint64(uint32(in.Imm))
		}
		tmp := width(tmp1, is64)
		switch {
		case op == insn.JSET && a64.IsBitmaskImm(uv, is64):
			c.emit(a64.TstImm(dst, uv))
		case op == insn.JSET:
			c.movImm(tmp, in.Imm)
			c.emit(a64.Tst(dst, tmp))
		case a64.IsAddSubImm(v):
			c.emit(a64.CmpImm(dst, v))
		case a64.IsAddSubImm(-v):
			c.emit(a64.CmnImm(dst, -v))
		default:
			c.movImm(tmp, in.Imm)
			c.emit(a64.Cmp(dst, tmp))
		}
	}
	c.emit(a64.BCond(cond, c.branchTo(i, t)))
}

func (c *jitCtx) checkTarget(i, t int) {
	fn := c.in.Funcs[c.fn]
	if t < fn.Start || t >= fn.End {
		c.err = errors.Wrapf(uapi.EINVAL, "insn %d: jump out of range to %d", i, t)
	}
}

// epilogueIdx is where the current function's epilogue starts, as well
// as it is known in this pass.
func (c *jitCtx) epilogueIdx() int {
	if c.prev == nil {
		c.forward(fixEpilogue, c.fn)
		return c.idx()
	}
	return c.epilogues[c.fn]
}

// call emits a helper, kernel function or bpf-to-bpf call (BPF_JMP |
// BPF_CALL) and moves the result into R0.
func (c *jitCtx) call(i int, in *insn.Insn) {
	switch in.Src {
	case insn.PseudoCall:
		t := i + 1 + int(in.Imm)
		f := c.funcAt(t)
		if f < 0 && t == len(c.in.Insns) {
			// A callback removed as never reached (an inlined
			// bpf_loop of 0 iterations): the kernel's JIT, finding no
			// function, calls address 0; so does this.
			c.emitCall(0)
			break
		}
		if f < 0 {
			c.err = errors.Wrapf(uapi.EINVAL, "insn %d: call to %d, which starts no function", i, t)
			return
		}
		entry := c.idx()
		if f <= c.fn || c.prev != nil {
			entry = c.entries[f]
		} else {
			c.forward(fixEntry, f)
		}
		c.emit(a64.Bl(int32(entry - c.idx())))
	case 0:
		switch in.Imm {
		case uapi.FuncGetSmpProcessorID:
			// Inlined (bpf_jit_inlines_helper_call): current's
			// thread_info.cpu.
			c.emit(a64.Mrs(tmp1, a64.SysRegSP_EL0))
			c.emit(a64.LoadImm(a64.Size32, bpf2a64[0].AsW(), tmp1, ThreadInfoCPU))
			return
		case funcGetCurrentTask, funcGetCurrentTaskBTF:
			// Inlined too: current itself, which SP_EL0 holds.
			c.emit(a64.Mrs(bpf2a64[0], a64.SysRegSP_EL0))
			return
		}
		if !c.callKernel(i, c.in.CallTarget, in.Imm) {
			return
		}
	case insn.PseudoKfuncCall:
		// After the fix-ups a kfunc call, like a helper's, holds its
		// function's offset from __bpf_call_base.
		if c.in.KfuncTarget == nil {
			c.fail(i, "kfunc call without a resolver")
			return
		}
		if !c.callKernel(i, c.in.KfuncTarget, in.Imm) {
			return
		}
	default:
		c.err = errors.Wrapf(uapi.EINVAL, "insn %d: call with unknown source %d", i, in.Src)
		return
	}
	c.callers = append(c.callers, callSite{word: c.idx(), bpf: i})
	c.emit(a64.MovReg(bpf2a64[0], a64.X0))
}

// callKernel emits a call of the kernel function resolve finds for imm,
// reporting whether it could.
func (c *jitCtx) callKernel(i int, resolve func(int32) (uint64, error), imm int32) bool {
	addr, err := resolve(imm)
	if err != nil {
		if c.err == nil {
			c.err = errors.Wrapf(err, "insn %d", i)
		}
		return false
	}
	c.emitCall(addr)
	return true
}

// emitCall calls a kernel address: BL when the image is known to be within
// its ±128 MiB, else the fixed-length address load and BLR (emit_call).
func (c *jitCtx) emitCall(addr uint64) {
	if c.image != 0 {
		off := int64(addr-(c.image+4*uint64(c.idx()))) / 4
		if off >= -(1<<25) && off < 1<<25 {
			c.emit(a64.Bl(int32(off)))
			return
		}
	}
	if c.image == 0 {
		c.farCalls++
	}
	c.emitAll(a64.AppendMovAddr(c.words, tmp1, addr))
	c.emit(a64.Blr(tmp1))
}

func (c *jitCtx) funcAt(t int) int {
	for f, fn := range c.in.Funcs {
		if fn.Start == t {
			return f
		}
	}
	return -1
}

// funcAddr loads a callback's address (an lddw of BPF_PSEUDO_FUNC): the
// address of its function's code, with emit_addr_mov_i64's fixed three
// instructions, whose size does not depend on the address.
func (c *jitCtx) funcAddr(i int, in *insn.Insn) {
	f := c.funcAt(i + 1 + int(in.Imm))
	if f < 0 {
		c.err = errors.Wrapf(uapi.EINVAL, "insn %d: callback at %d, which starts no function", i, i+1+int(in.Imm))
		return
	}
	rd := reg(in.Dst, true)
	if c.image != 0 && (f <= c.fn || c.prev != nil) {
		c.words = appendAddrMov(c.words, rd, c.image+4*uint64(c.entries[f]))
		return
	}
	// Not placed yet: a placeholder with the register, patched like a
	// forward branch.
	c.forward(fixFuncAddr, f)
	c.words = appendAddrMov(c.words, rd, 0xffff_0000_0000_0000)
}

// appendAddrMov is emit_addr_mov_i64: movn, then movk of bits 16-31 and
// 32-47, for an address whose top 16 bits are all ones (the kernel's).
func appendAddrMov(dst []uint32, rd a64.Reg, addr uint64) []uint32 {
	w, _ := a64.Movn(rd, uint32(^addr&0xffff), 0)
	dst = append(dst, w)
	for shift := uint(16); shift <= 32; shift += 16 {
		w, _ = a64.Movk(rd, uint32(addr>>shift&0xffff), shift)
		dst = append(dst, w)
	}
	return dst
}

// tailCall is emit_bpf_tail_call with the slot read done by a kernel
// function: bpfsim's prog arrays keep their slots in Go, not in simulated
// memory, so where the kernel loads array->map.max_entries and
// array->ptrs[index] the code calls TailCallSlot, which takes the array
// in x1 and the index in w2, preserves every register but x10, and leaves
// in x10 the address tail calls enter the target at (its bpf_func plus
// PrologueOffset instructions), or 0 for an index out of bounds or an
// empty slot. The counter check, its commit after a successful read, the
// unwinding of the frame and the BR are the kernel's.
func (c *jitCtx) tailCall(i int) {
	if c.in.TailCallSlot == 0 {
		c.fail(i, "tail call without a slot reader")
		return
	}
	c.emit(a64.MovReg(a64.W2, a64.W2)) // the index is 32 bits
	c.emit(a64.LoadImm(a64.Size64, tmp3, tccPtr, 0))
	c.emit(a64.CmpImm(tmp3, maxTailCallCnt))
	toOut1 := c.idx()
	c.emit(a64.NOP, nil) // b.cs out, patched below
	c.emitCall(c.in.TailCallSlot)
	c.callers = append(c.callers, callSite{word: c.idx(), bpf: i})
	toOut2 := c.idx()
	c.emit(a64.NOP, nil) // cbz x10, out
	c.emit(a64.AddImm(tmp3, tmp3, 1))
	c.emit(a64.StoreImm(a64.Size64, tmp3, tccPtr, 0))
	if c.stack > 0 {
		c.emit(a64.AddImm(a64.SP, a64.SP, int64(c.stack)))
	}
	c.popCalleeSaved()
	c.emit(a64.AddImm(tmp1, tmp1, 4*PrologueOffset))
	c.emit(a64.Br(tmp1))
	out := c.idx()
	if w, err := a64.BCond(a64.CondCS, int32(out-toOut1)); err == nil {
		c.words[toOut1] = w
	} else if c.err == nil {
		c.err = err
	}
	if w, err := a64.Cbz(tmp1, int32(out-toOut2)); err == nil {
		c.words[toOut2] = w
	} else if c.err == nil {
		c.err = err
	}
}

// tailCallDirect is a tail call whose target the verifier knew the slot
// of, jumping straight to the target's code: the scheme of the x86-64
// JIT's emit_bpf_tail_call_direct (seed 001), which the arm64 JIT does not
// have. The count is checked as for an indirect tail call; then two
// patched instructions decide:
//
//	bypass: b out        ("skip") or nop
//	        the count is committed and the frame unwound
//	target: nop, or b stub ("tail"); the stub loads the target's tail call
//	        entry from its literal and branches there
//	out:
//
// The image starts in state C (skip, unwind, nop). The kernel side moves
// it as the slot changes (bpf_arch_poke_desc_update): install C → D (skip,
// tail) → B (nop, tail); update B(f) → B(f') by the literal alone; remove
// B → C (skip first, then, after a grace period, nop), so that no CPU
// ever unwinds without a target (state A). The literal is 8 bytes,
// naturally aligned, so a CPU reads the old target or the new one.
func (c *jitCtx) tailCallDirect(i int) {
	site := directSite{insn: i}
	c.emit(a64.LoadImm(a64.Size64, tmp3, tccPtr, 0))
	c.emit(a64.CmpImm(tmp3, maxTailCallCnt))
	toOut := c.idx()
	c.emit(a64.NOP, nil) // b.cs out
	site.bypass = c.idx()
	c.emit(a64.NOP, nil) // b out
	c.emit(a64.AddImm(tmp3, tmp3, 1))
	c.emit(a64.StoreImm(a64.Size64, tmp3, tccPtr, 0))
	if c.stack > 0 {
		c.emit(a64.AddImm(a64.SP, a64.SP, int64(c.stack)))
	}
	c.popCalleeSaved()
	site.target = c.idx()
	c.emit(a64.NOP, nil)
	site.out = c.idx()
	if w, err := a64.BCond(a64.CondCS, int32(site.out-toOut)); err == nil {
		c.words[toOut] = w
	} else if c.err == nil {
		c.err = err
	}
	if w, err := a64.B(int32(site.out - site.bypass)); err == nil {
		c.words[site.bypass] = w
	} else if c.err == nil {
		c.err = err
	}
	c.direct = append(c.direct, site)
}

// stubs emits, after every function, each direct tail call's stub: "ldr
// x10, lit; br x10" and its 8-byte literal, aligned (the image starts
// 8-byte aligned), initially 0.
func (c *jitCtx) stubs() {
	for k := range c.direct {
		if c.idx()%2 != 0 {
			c.emit(a64.NOP, nil)
		}
		c.direct[k].stub = c.idx()
		c.emit(a64.LoadLiteral(tmp1, 2))
		c.emit(a64.Br(tmp1))
		c.words = append(c.words, 0, 0)
	}
}

// ldAbs is BPF_LD|BPF_ABS and BPF_LD|BPF_IND as the verifier's
// gen_ld_abs rewrite makes them, then JITed: the offset (imm, or src +
// imm as a 32-bit int) and the size to the kernel's loader, "mov x7, x0",
// and, for a negative result, "w7 = 0" and the function's exit. R1-R5 are
// clobbered, as by the helper call of the rewrite.
func (c *jitCtx) ldAbs(i int, in *insn.Insn) {
	mode, size := in.Mode(), in.SizeBits()
	if (mode != insn.ABS && mode != insn.IND) || in.Dst != 0 || in.Off != 0 || size == insn.DW || (mode == insn.ABS && in.Src != 0) {
		c.err = errors.Wrapf(uapi.EINVAL, "insn %d: BPF_LD_[ABS|IND] uses reserved fields or an unknown mode %#02x", i, in.Code)
		return
	}
	if c.in.LdAbs == 0 {
		c.fail(i, "legacy packet access (LD_ABS/LD_IND) without a packet loader")
		return
	}
	if mode == insn.ABS {
		c.emitAll(a64.AppendMovImm32(c.words, a64.W1, in.Imm))
	} else {
		// The scratch for an imm no ADD holds is the JIT's, not w1:
		// the source may be R2, which lives in x1 (the rewrite's
		// "r2 = src; r2 += imm" is JITed with the JIT's temporaries).
		c.emitAll(a64.AppendAddImm(c.words, a64.W1, reg(in.Src, false), tmp1.AsW(), in.Imm))
	}
	c.emitAll(a64.AppendMovImm32(c.words, a64.W2, int32(accessSize(size).Bytes())))
	c.emitCall(c.in.LdAbs)
	c.callers = append(c.callers, callSite{word: c.idx(), bpf: i})
	c.emit(a64.MovReg(bpf2a64[0], a64.X0))
	c.emit(a64.CmpImm(bpf2a64[0], 0))
	c.emit(a64.BCond(a64.CondGE, 3))
	c.emit(a64.MovReg(bpf2a64[0].AsW(), a64.WZR))
	c.emit(a64.B(int32(c.epilogueIdx() - c.idx())))
}

// maxTailCallCnt is MAX_TAIL_CALL_CNT.
const maxTailCallCnt = 33

// accessSize is the A64 access size of a BPF size field (B, H, W, DW).
func accessSize(bits uint8) a64.Size {
	switch bits {
	case insn.B:
		return a64.Size8
	case insn.H:
		return a64.Size16
	case insn.DW:
		return a64.Size64
	}
	return a64.Size32
}

// mem translates loads, stores and atomics.
func (c *jitCtx) mem(i int, in *insn.Insn) {
	cl := in.Class()
	size := accessSize(in.SizeBits())
	off := int64(in.Off)
	switch {
	case cl == insn.ST && in.Mode() == 0xc0:
		// BPF_NOSPEC: arm64 bypasses Spectre v4 mitigation in the JIT
		// (bpf_jit_bypass_spec_v4); the barrier for v1 is SB, or
		// DSB NSH; ISB without FEAT_SB. The simulated CPU has no
		// speculation: a plain barrier keeps the shape.
		c.emit(a64.Dsb(a64.BarrierNSH))
		c.emit(a64.ISB, nil)
	case cl == insn.STX && in.Mode() == insn.ATOMIC:
		c.atomic(i, in, size, off)
	case cl == insn.LDX && (in.Mode() == insn.MEM || in.Mode() == insn.MEMSX ||
		in.Mode() == insn.ProbeMem || in.Mode() == insn.ProbeMemSX):
		// A probe load is the same instruction, with an exception
		// table entry: a fault reads zeros.
		signed := in.Mode() == insn.MEMSX || in.Mode() == insn.ProbeMemSX
		if signed && size == a64.Size64 {
			c.err = errors.Wrapf(uapi.EINVAL, "insn %d: unknown opcode %#02x", i, in.Code)
			return
		}
		rt := reg(in.Dst, size == a64.Size64 || signed)
		c.ldst(rt, reg(in.Src, true), off, size, func(rt, rn a64.Reg, off int64) (uint32, error) {
			if signed {
				return a64.LoadSignedImm(size, rt, rn, off)
			}
			return a64.LoadImm(size, rt, rn, off)
		}, func(rt, rn a64.Reg, off int64) (uint32, error) {
			if signed {
				return a64.LoadSignedUnscaled(size, rt, rn, off)
			}
			return a64.LoadUnscaled(size, rt, rn, off)
		}, func(rt, rn, rm a64.Reg) (uint32, error) {
			if signed {
				return a64.LoadSignedReg(size, rt, rn, rm)
			}
			return a64.LoadReg(size, rt, rn, rm)
		})
		if in.Mode() == insn.ProbeMem || in.Mode() == insn.ProbeMemSX {
			// The load is the last instruction emitted.
			c.extable = append(c.extable, exEntry{word: len(c.words) - 1, reg: rt.AsX()})
		}
	case (cl == insn.STX || cl == insn.ST) && in.Mode() == insn.MEM:
		var rt a64.Reg
		if cl == insn.STX {
			rt = reg(in.Src, size == a64.Size64)
		} else {
			rt = width(tmp2, size == a64.Size64)
			c.movImm(rt, in.Imm)
		}
		c.ldst(rt, reg(in.Dst, true), off, size,
			func(rt, rn a64.Reg, off int64) (uint32, error) { return a64.StoreImm(size, rt, rn, off) },
			func(rt, rn a64.Reg, off int64) (uint32, error) { return a64.StoreUnscaled(size, rt, rn, off) },
			func(rt, rn, rm a64.Reg) (uint32, error) { return a64.StoreReg(size, rt, rn, rm) })
	default:
		c.err = errors.Wrapf(uapi.EINVAL, "insn %d: unknown opcode %#02x", i, in.Code)
	}
}

// ldst emits one load or store at rn+off in the shortest form: a scaled
// unsigned offset, an unscaled signed one, or the offset in a register.
func (c *jitCtx) ldst(rt, rn a64.Reg, off int64, size a64.Size,
	scaled, unscaled func(rt, rn a64.Reg, off int64) (uint32, error),
	indexed func(rt, rn, rm a64.Reg) (uint32, error)) {
	switch {
	case a64.IsLSIOffset(off, size):
		c.emit(scaled(rt, rn, off))
	case off >= -256 && off <= 255:
		c.emit(unscaled(rt, rn, off))
	default:
		c.movImm(tmp3, int32(off))
		c.emit(indexed(rt, rn, tmp3))
	}
}

// addr puts base+off in a register for the forms that take no offset.
func (c *jitCtx) addr(base a64.Reg, off int64) a64.Reg {
	if off == 0 {
		return base
	}
	c.emitAll(a64.AppendAddImm(c.words, tmp1, base, tmp1, int32(off)))
	return tmp1
}

// atomic is emit_lse_atomic plus load-acquire and store-release.
func (c *jitCtx) atomic(i int, in *insn.Insn, size a64.Size, off int64) {
	switch in.Imm {
	case insn.LoadAcq:
		a := c.addr(reg(in.Src, true), off)
		c.emit(a64.Ldar(size, reg(in.Dst, size == a64.Size64), a))
		return
	case insn.StoreRel:
		a := c.addr(reg(in.Dst, true), off)
		c.emit(a64.Stlr(size, reg(in.Src, size == a64.Size64), a))
		return
	}
	if size != a64.Size32 && size != a64.Size64 {
		c.err = errors.Wrapf(uapi.EINVAL, "insn %d: invalid atomic operation %#x on opcode %#02x", i, in.Imm, in.Code)
		return
	}
	is64 := size == a64.Size64
	src := reg(in.Src, is64)
	a := c.addr(reg(in.Dst, true), off)
	fetch := in.Imm&insn.Fetch != 0
	op := in.Imm &^ insn.Fetch
	var aop a64.AtomicOp
	switch op {
	case insn.ADD:
		aop = a64.AtomicAdd
	case insn.OR:
		aop = a64.AtomicSet
	case insn.XOR:
		aop = a64.AtomicEor
	case insn.AND:
		// LSE has bit clear, not and: clear the complement.
		aop = a64.AtomicClr
		not := width(tmp2, is64)
		c.emit(a64.Mvn(not, src))
		if fetch {
			c.emit(a64.AtomicLoadOp(aop, a64.OrderAcqRel, not, src, a))
		} else {
			c.emit(a64.AtomicStoreOp(aop, a64.OrderNone, not, a))
		}
		return
	default:
		switch in.Imm {
		case insn.Xchg:
			c.emit(a64.AtomicLoadOp(a64.AtomicSwp, a64.OrderAcqRel, src, src, a))
		case insn.Cmpxchg:
			r0 := reg(0, is64)
			old := width(tmp2, is64)
			c.emit(a64.MovReg(old, r0))
			c.emit(a64.Cas(a64.OrderAcqRel, old, src, a))
			c.emit(a64.MovReg(r0, old))
		default:
			c.err = errors.Wrapf(uapi.EINVAL, "insn %d: invalid atomic operation %#x on opcode %#02x", i, in.Imm, in.Code)
		}
		return
	}
	if fetch {
		c.emit(a64.AtomicLoadOp(aop, a64.OrderAcqRel, src, src, a))
	} else {
		c.emit(a64.AtomicStoreOp(aop, a64.OrderNone, src, a))
	}
}

// translate translates the program. The kernel runs a first pass for
// sizes, then, once the image address is known (place returns it for a
// size in bytes), a second pass that settles offsets and call forms, and
// a last pass whose output is the image; the last two must agree in size.
// Sizes depend only on the form of kernel calls (BL when the image is
// close enough, else an address load), never on branch offsets, so the
// first pass is final when it has no such call, and the second is when it
// has: a pass that records its forward references and patches them at the
// end gives, word for word, what the kernel's last pass would. Images too
// large for every b.cond offset to be in range (where the passes' order
// of errors could matter) and multiPass (for tests) take the kernel's
// passes.
//
// The state goes in c, which callers keep on their stack.
func translate(c *jitCtx, in *Input, place func(size int) (uint64, error), multiPass bool) error {
	if len(in.Insns) == 0 {
		return errors.Wrap(uapi.EINVAL, "empty program")
	}
	if len(in.Funcs) == 0 {
		in.Funcs = []Func{{Start: 0, End: len(in.Insns), StackDepth: insn.MaxBPFStack}}
	}
	if err := checkFuncs(in); err != nil {
		return err
	}
	*c = jitCtx{in: in, entries: make([]int, len(in.Funcs)), epilogues: make([]int, len(in.Funcs)),
		words: make([]uint32, 0, 2*len(in.Insns)+32), patch: !multiPass}
	if err := c.compile(); err != nil {
		return err
	}
	size := c.idx()
	image, err := place(4 * size)
	if err != nil {
		return err
	}
	if multiPass || size >= maxPatchedWords {
		c.patch = false
		if err := c.passes(image); err != nil {
			return err
		}
	} else {
		if c.farCalls > 0 {
			// The kernel's second pass, which the third would
			// repeat: its calls' forms make the same sizes.
			c.image = image
			c.spare = c.offsets
			c.callers = c.callers[:0]
			c.fixups = c.fixups[:0]
			if err := c.compile(); err != nil {
				return err
			}
			if c.idx() > size {
				return errors.Wrapf(uapi.EFAULT, "JIT image grew from %d to %d instructions", size, c.idx())
			}
		}
		c.image = image // for the addresses of functions
		if err := c.applyFixups(); err != nil {
			return err
		}
	}
	for _, w := range c.words {
		if w == a64.BreakFault {
			return errors.Wrap(uapi.EFAULT, "JIT image holds the break fault instruction (validate_code)")
		}
	}
	return nil
}

// maxPatchedWords bounds the images a patching pass translates: below it
// every branch offset fits b.cond's ±2^18 instructions, so no pass of the
// kernel's fails on one.
const maxPatchedWords = 1 << 18

// passes runs the kernel's second and third passes after the first, or
// only the third when the first made every size final.
func (c *jitCtx) passes(image uint64) error {
	first := 2
	if c.farCalls == 0 {
		// Every size is final: only the offsets of forward branches
		// and calls need another pass.
		first = 3
	}
	for pass := first; pass <= 3; pass++ {
		c.spare, c.prev = c.prev, c.offsets
		c.image = image
		size := c.idx()
		c.callers = c.callers[:0]
		if err := c.compile(); err != nil {
			return err
		}
		if pass == 3 && c.idx() != size {
			return errors.Wrapf(uapi.EFAULT, "JIT passes disagree: %d then %d instructions", size, c.idx())
		}
		if c.idx() > size {
			return errors.Wrapf(uapi.EFAULT, "JIT image grew from %d to %d instructions", size, c.idx())
		}
	}
	return nil
}

func checkFuncs(in *Input) error {
	end := 0
	for i, f := range in.Funcs {
		if f.Start != end || f.End <= f.Start || f.End > len(in.Insns) {
			return errors.Wrapf(uapi.EINVAL, "function %d spans insns %d..%d: functions must tile the program", i, f.Start, f.End)
		}
		if f.StackDepth < 0 || f.StackDepth > insn.MaxBPFStack {
			return errors.Wrapf(uapi.EINVAL, "function %d: stack depth %d", i, f.StackDepth)
		}
		end = f.End
	}
	if end != len(in.Insns) {
		return errors.Wrapf(uapi.EINVAL, "functions end at insn %d of %d", end, len(in.Insns))
	}
	return nil
}

// String describes the function for error messages.
func (f Func) String() string {
	return fmt.Sprintf("insns %d..%d, %d bytes of stack", f.Start, f.End, f.StackDepth)
}
