package interp

import (
	"slices"
	"sync"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// op is one pre-decoded instruction slot.
type op struct {
	kind opKind
	dst  uint8
	src  uint8
	back bool // a jump or call to an earlier instruction
	// off is the sign-extended memory offset of a load or store, or the
	// absolute index a jump or local call goes to.
	off int32
	// imm is the immediate: sign-extended to 64 bits for ALU64 and jumps,
	// the full value of an lddw, the helper index of a call.
	imm uint64
}

// Program is a program prepared for the interpreter. It is immutable and
// may run on several machines at once.
type Program struct {
	ops     []op
	helpers []*Helper
	insns   []insn.Insn
}

// opsPool recycles the op arrays of released programs: a test suite loads
// and drops thousands of programs, and memory that was just used is
// cheaper to write than fresh memory the collector must also track.
var opsPool = sync.Pool{New: func() any { return new([]op) }}

// newOps returns n cleared ops.
func newOps(n int) []op {
	b := opsPool.Get().(*[]op)
	ops := *b
	*b = nil
	opsPool.Put(b)
	if cap(ops) < n {
		return make([]op, n)
	}
	ops = ops[:n]
	clear(ops)
	return ops
}

// Release hands the program's compiled code back for reuse. The caller
// guarantees that nothing runs the program any more, nor will: the kernel
// releases a program once its last reference is gone and a grace period
// has passed. Running a released program fails as running off the end.
func (p *Program) Release() {
	ops := p.ops
	p.ops = invalidOps[:]
	if cap(ops) == 0 {
		return
	}
	b := opsPool.Get().(*[]op)
	if cap(*b) < cap(ops) {
		*b = ops[:0]
	}
	opsPool.Put(b)
}

// invalidOps is the code of a released program.
var invalidOps = [1]op{{kind: opInvalid}}

// Insns returns the instructions the program was compiled from.
func (p *Program) Insns() []insn.Insn { return p.insns }

// HelperResolver returns the function a call reaches, or an error naming
// it when the simulated kernel does not provide it. Its argument is the
// call's imm: a helper id in a program as written, the function's offset
// from __bpf_call_base in one the verifier has fixed up.
type HelperResolver func(imm int32) (*Helper, error)

var aluKinds = [16][2][2]opKind{ // op>>4 -> [alu64?][reg source?]
	insn.ADD >> 4:  {{opAdd32K, opAdd32X}, {opAdd64K, opAdd64X}},
	insn.SUB >> 4:  {{opSub32K, opSub32X}, {opSub64K, opSub64X}},
	insn.MUL >> 4:  {{opMul32K, opMul32X}, {opMul64K, opMul64X}},
	insn.DIV >> 4:  {{opDiv32K, opDiv32X}, {opDiv64K, opDiv64X}},
	insn.MOD >> 4:  {{opMod32K, opMod32X}, {opMod64K, opMod64X}},
	insn.OR >> 4:   {{opOr32K, opOr32X}, {opOr64K, opOr64X}},
	insn.AND >> 4:  {{opAnd32K, opAnd32X}, {opAnd64K, opAnd64X}},
	insn.LSH >> 4:  {{opLsh32K, opLsh32X}, {opLsh64K, opLsh64X}},
	insn.RSH >> 4:  {{opRsh32K, opRsh32X}, {opRsh64K, opRsh64X}},
	insn.ARSH >> 4: {{opArsh32K, opArsh32X}, {opArsh64K, opArsh64X}},
	insn.XOR >> 4:  {{opXor32K, opXor32X}, {opXor64K, opXor64X}},
	insn.MOV >> 4:  {{opMov32K, opMov32X}, {opMov64K, opMov64X}},
}

var signedDivKinds = [16][2][2]opKind{
	insn.DIV >> 4: {{opSdiv32K, opSdiv32X}, {opSdiv64K, opSdiv64X}},
	insn.MOD >> 4: {{opSmod32K, opSmod32X}, {opSmod64K, opSmod64X}},
}

var jmpKinds = [16][2][2]opKind{ // op>>4 -> [jmp64?][reg source?]
	insn.JEQ >> 4:  {{opJeq32K, opJeq32X}, {opJeq64K, opJeq64X}},
	insn.JGT >> 4:  {{opJgt32K, opJgt32X}, {opJgt64K, opJgt64X}},
	insn.JGE >> 4:  {{opJge32K, opJge32X}, {opJge64K, opJge64X}},
	insn.JSET >> 4: {{opJset32K, opJset32X}, {opJset64K, opJset64X}},
	insn.JNE >> 4:  {{opJne32K, opJne32X}, {opJne64K, opJne64X}},
	insn.JSGT >> 4: {{opJsgt32K, opJsgt32X}, {opJsgt64K, opJsgt64X}},
	insn.JSGE >> 4: {{opJsge32K, opJsge32X}, {opJsge64K, opJsge64X}},
	insn.JLT >> 4:  {{opJlt32K, opJlt32X}, {opJlt64K, opJlt64X}},
	insn.JLE >> 4:  {{opJle32K, opJle32X}, {opJle64K, opJle64X}},
	insn.JSLT >> 4: {{opJslt32K, opJslt32X}, {opJslt64K, opJslt64X}},
	insn.JSLE >> 4: {{opJsle32K, opJsle32X}, {opJsle64K, opJsle64X}},
}

var atomicKinds = map[int32][2]opKind{ // imm -> [32-bit, 64-bit]
	insn.ADD:              {opAtomicAdd32, opAtomicAdd64},
	insn.OR:               {opAtomicOr32, opAtomicOr64},
	insn.AND:              {opAtomicAnd32, opAtomicAnd64},
	insn.XOR:              {opAtomicXor32, opAtomicXor64},
	insn.ADD | insn.Fetch: {opAtomicFetchAdd32, opAtomicFetchAdd64},
	insn.OR | insn.Fetch:  {opAtomicFetchOr32, opAtomicFetchOr64},
	insn.AND | insn.Fetch: {opAtomicFetchAnd32, opAtomicFetchAnd64},
	insn.XOR | insn.Fetch: {opAtomicFetchXor32, opAtomicFetchXor64},
	insn.Xchg:             {opAtomicXchg32, opAtomicXchg64},
	insn.Cmpxchg:          {opAtomicCmpxchg32, opAtomicCmpxchg64},
}

// sizedKinds is indexed by mode|class, then by size (B, H, W, DW); an array
// rather than a map because every memory instruction of every load looks
// it up. Unset entries are opInvalid.
var sizedKinds = [256][4]opKind{
	insn.LDX | insn.MEM:        {opLdxB, opLdxH, opLdxW, opLdxDW},
	insn.LDX | insn.MEMSX:      {opLdxsB, opLdxsH, opLdxsW, opInvalid},
	insn.LDX | insn.ProbeMem:   {opLdxProbeB, opLdxProbeH, opLdxProbeW, opLdxProbeDW},
	insn.LDX | insn.ProbeMemSX: {opLdxsProbeB, opLdxsProbeH, opLdxsProbeW, opInvalid},
	insn.ST | insn.MEM:         {opStB, opStH, opStW, opStDW},
	insn.STX | insn.MEM:        {opStxB, opStxH, opStxW, opStxDW},
}

func sizeIndex(size uint8) int {
	switch size {
	case insn.B:
		return 0
	case insn.H:
		return 1
	case insn.W:
		return 2
	}
	return 3
}

// Compile prepares xlated instructions for the interpreter. Calls of
// kernel functions are resolved through helpers; an instruction the
// interpreter cannot execute (including pseudo lddw sources that the
// loader should have resolved) is an EINVAL error naming it.
func Compile(insns []insn.Insn, helpers HelperResolver) (*Program, error) {
	n := len(insns)
	if n == 0 {
		return nil, errors.Wrap(uapi.EINVAL, "empty program")
	}
	p := &Program{insns: insns}
	// One extra op past the end catches a program that runs off its last
	// instruction, so the dispatch loop never needs a bounds test.
	p.ops = newOps(n + 2)
	p.ops[n+1].kind = opCallbackReturn
	// Helper ids seen so far, in p.helpers order: programs call few
	// helpers, and a linear search beats building a map per load.
	var idBuf [16]int32
	helperIDs := idBuf[:0]
	// Jumps forward are checked once every slot's kind is known: an lddw's
	// second slot is left opInvalid, and every other opInvalid slot has
	// already failed compilation.
	var fwdBuf [64]int32
	forward := fwdBuf[:0]
	for i := 0; i < n; i++ {
		in := insns[i]
		o := op{dst: in.Dst, src: in.Src, off: int32(in.Off), imm: uint64(int64(in.Imm))}
		// Most instructions are plain ALU operations, loads, stores and
		// conditional jumps, whose kind the opcode alone decides.
		if f := fastKinds[in.Code]; useFastKinds && f.kind != opInvalid && in.Dst <= insn.AX && in.Src <= insn.AX &&
			(f.flags&fastNeedsOff0 == 0 || in.Off == 0) {
			o.kind = f.kind
			if f.flags&fastImm32 != 0 {
				o.imm = uint64(uint32(in.Imm))
			}
			if f.flags&fastCondJump != 0 {
				o.off = int32(i) + 1 + int32(in.Off)
				o.back = int(o.off) <= i
				switch {
				case o.off < 0 || int(o.off) >= n || int(o.off) < i && p.ops[o.off].kind == opInvalid:
					return nil, errors.Wrapf(uapi.EINVAL, "jump out of range from insn %d to %d", i, o.off)
				case !o.back:
					forward = append(forward, int32(i))
				}
			}
			p.ops[i] = o
			continue
		}
		// AX is allowed: verifier rewrites use it. User programs are
		// stopped from naming it before they get here.
		if in.Dst > insn.AX || in.Src > insn.AX {
			return nil, errors.Wrapf(uapi.EINVAL, "insn %d: invalid register", i)
		}
		cl := in.Class()
		switch cl {
		case insn.ALU, insn.ALU64:
			k, err := aluKind(in)
			if err != nil {
				return nil, errors.Wrapf(err, "insn %d", i)
			}
			o.kind = k
			if cl == insn.ALU {
				o.imm = uint64(uint32(in.Imm))
			}
		case insn.LD:
			if in.Mode() == insn.ABS || in.Mode() == insn.IND {
				k, err := ldAbsKind(in)
				if err != nil {
					return nil, errors.Wrapf(err, "insn %d", i)
				}
				o.kind = k
				break
			}
			if !in.IsLdImm64() {
				return nil, errors.Wrapf(uapi.EINVAL, "insn %d: unknown opcode %#02x", i, in.Code)
			}
			if i+1 >= n {
				return nil, errors.Wrapf(uapi.EINVAL, "insn %d: lddw is missing its second half", i)
			}
			// A callback's address (BPF_PSEUDO_FUNC) keeps its
			// relative offset as its value: the kernel's interpreter
			// refuses callbacks, and bpfsim's calls them only through
			// the verifier's inlined bpf_loop, which does not use it.
			if in.Src != 0 && in.Src != insn.PseudoFunc {
				return nil, errors.Wrapf(uapi.EINVAL, "insn %d: lddw with pseudo source %d was not resolved by the loader", i, in.Src)
			}
			o.kind = opLdImm64
			o.imm = insn.Imm64(insns, i)
			if in.Src == insn.PseudoFunc {
				o.imm = FuncAddr(i + 1 + int(in.Imm))
			}
			p.ops[i] = o
			i++ // the second slot stays opInvalid: no jump may land there
			continue
		case insn.LDX, insn.ST, insn.STX:
			k, err := memKind(in)
			if err != nil {
				return nil, errors.Wrapf(err, "insn %d", i)
			}
			o.kind = k
		case insn.JMP, insn.JMP32:
			k, err := jumpKind(in)
			if err != nil {
				return nil, errors.Wrapf(err, "insn %d", i)
			}
			o.kind = k
			switch k {
			case opCallHelper:
				idx := slices.Index(helperIDs, in.Imm)
				if idx < 0 {
					h, err := helpers(in.Imm)
					if err != nil {
						return nil, errors.Wrapf(err, "insn %d", i)
					}
					idx = len(p.helpers)
					p.helpers = append(p.helpers, h)
					helperIDs = append(helperIDs, in.Imm)
				}
				o.imm = uint64(idx)
			case opCallLocal:
				o.off = int32(i) + 1 + in.Imm
			case opExit, opNospec, opTailCall:
			default:
				o.off = int32(i) + 1 + int32(in.Off)
				if in.Code == insn.JMP32|insn.JA {
					o.off = int32(i) + 1 + in.Imm
				}
				if cl == insn.JMP32 {
					o.imm = uint64(uint32(in.Imm))
				}
			}
			o.back = int(o.off) <= i
			if k == opCallLocal || (k != opCallHelper && k != opExit && k != opTailCall) {
				switch {
				case k == opCallLocal && int(o.off) == n:
					// A call of a callback whose code was never
					// reached, so removed (an inlined bpf_loop of 0
					// iterations): it lands on the stop at the end,
					// as the kernel's lands on no function.
				case o.off < 0 || int(o.off) >= n || int(o.off) < i && p.ops[o.off].kind == opInvalid:
					return nil, errors.Wrapf(uapi.EINVAL, "jump out of range from insn %d to %d", i, o.off)
				case !o.back:
					forward = append(forward, int32(i))
				}
			}
		default:
			return nil, errors.Wrapf(uapi.EINVAL, "insn %d: unknown opcode %#02x", i, in.Code)
		}
		p.ops[i] = o
	}
	for _, i := range forward {
		if t := p.ops[i].off; p.ops[t].kind == opInvalid {
			return nil, errors.Wrapf(uapi.EINVAL, "jump out of range from insn %d to %d", i, t)
		}
	}
	if useFusion {
		idioms := matchIdioms(p.ops[:n])
		fuseMoves(p.ops[:n])
		for _, d := range idioms {
			p.ops[d.at] = d.op
		}
	}
	return p, nil
}

// useFusion turns on the fusing of instruction pairs; tests compare runs
// with it and without it.
var useFusion = true

// fuseMoves turns each register move that an ALU operation of the same
// width on the moved-to register follows into one three-operand op:
// compilers emit the pair for every "a = b op c" (jhash's rotations are
// made of them), and one dispatch in place of two is the interpreter's
// largest saving. The second op stays in its slot for jumps that land
// there; the fused op runs both and steps over it.
func fuseMoves(ops []op) {
	for i := 0; i+1 < len(ops); i++ {
		mv, next := ops[i], ops[i+1]
		var t opKind
		switch mv.kind {
		case opMov64X:
			t = threeOperand64[next.kind]
		case opMov32X:
			t = threeOperand32[next.kind]
		}
		if t == opInvalid || next.dst != mv.dst {
			continue
		}
		f := next
		f.kind = t
		f.off = int32(mv.src) // the first operand: the moved register
		if f.src == mv.dst {
			// The operation reads the register the move wrote.
			f.src = mv.src
		}
		ops[i] = f
		i++ // the second op is fused; it may start no other pair
	}
}

// threeOperand64 and threeOperand32 give the fused kind of an ALU kind
// that may follow a 64-bit or a 32-bit register move.
var threeOperand64, threeOperand32 = func() (t64, t32 [numOps]opKind) {
	for _, p := range [][2]opKind{
		{opAdd64K, opAdd64KT}, {opAdd64X, opAdd64XT}, {opSub64K, opSub64KT}, {opSub64X, opSub64XT},
		{opMul64K, opMul64KT}, {opMul64X, opMul64XT}, {opOr64K, opOr64KT}, {opOr64X, opOr64XT},
		{opAnd64K, opAnd64KT}, {opAnd64X, opAnd64XT}, {opLsh64K, opLsh64KT}, {opLsh64X, opLsh64XT},
		{opRsh64K, opRsh64KT}, {opRsh64X, opRsh64XT}, {opArsh64K, opArsh64KT}, {opArsh64X, opArsh64XT},
		{opXor64K, opXor64KT}, {opXor64X, opXor64XT},
	} {
		t64[p[0]] = p[1]
	}
	for _, p := range [][2]opKind{
		{opAdd32K, opAdd32KT}, {opAdd32X, opAdd32XT}, {opSub32K, opSub32KT}, {opSub32X, opSub32XT},
		{opMul32K, opMul32KT}, {opMul32X, opMul32XT}, {opOr32K, opOr32KT}, {opOr32X, opOr32XT},
		{opAnd32K, opAnd32KT}, {opAnd32X, opAnd32XT}, {opLsh32K, opLsh32KT}, {opLsh32X, opLsh32XT},
		{opRsh32K, opRsh32KT}, {opRsh32X, opRsh32XT}, {opArsh32K, opArsh32KT}, {opArsh32X, opArsh32XT},
		{opXor32K, opXor32KT}, {opXor32X, opXor32XT},
	} {
		t32[p[0]] = p[1]
	}
	return
}()

func aluKind(in insn.Insn) (opKind, error) {
	is64 := in.Class() == insn.ALU64
	w := 0
	if is64 {
		w = 1
	}
	x := 0
	if in.Source() == insn.X {
		x = 1
	}
	switch op := in.Op(); op {
	case insn.NEG:
		if in.Source() != insn.K {
			return 0, errors.Wrapf(uapi.EINVAL, "invalid neg opcode %#02x", in.Code)
		}
		if is64 {
			return opNeg64, nil
		}
		return opNeg32, nil
	case insn.END:
		switch {
		case is64 && in.Source() == insn.ToBE:
			return 0, errors.Wrapf(uapi.EINVAL, "invalid bswap opcode %#02x", in.Code)
		case in.Imm != 16 && in.Imm != 32 && in.Imm != 64:
			return 0, errors.Wrapf(uapi.EINVAL, "invalid byte swap width %d", in.Imm)
		case !is64 && in.Source() == insn.ToLE:
			return map[int32]opKind{16: opLe16, 32: opLe32, 64: opLe64}[in.Imm], nil
		}
		return map[int32]opKind{16: opBswap16, 32: opBswap32, 64: opBswap64}[in.Imm], nil
	case insn.DIV, insn.MOD:
		switch in.Off {
		case 0:
			return aluKinds[op>>4][w][x], nil
		case 1:
			return signedDivKinds[op>>4][w][x], nil
		}
		return 0, errors.Wrapf(uapi.EINVAL, "invalid offset %d for div/mod", in.Off)
	case insn.MOV:
		if x == 1 && in.Off != 0 {
			switch {
			case in.Off == -1 && is64:
				return opMovPercpu, nil
			case in.Off == 8 && is64:
				return opMovsx64B, nil
			case in.Off == 16 && is64:
				return opMovsx64H, nil
			case in.Off == 32 && is64:
				return opMovsx64W, nil
			case in.Off == 8:
				return opMovsx32B, nil
			case in.Off == 16:
				return opMovsx32H, nil
			}
			return 0, errors.Wrapf(uapi.EINVAL, "invalid movsx offset %d", in.Off)
		}
		return aluKinds[op>>4][w][x], nil
	default:
		k := aluKinds[op>>4]
		if k[0][0] == opInvalid {
			return 0, errors.Wrapf(uapi.EINVAL, "unknown opcode %#02x", in.Code)
		}
		return k[w][x], nil
	}
}

func memKind(in insn.Insn) (opKind, error) {
	size := in.SizeBits()
	if in.Class() == insn.ST && in.Mode() == 0xc0 {
		return opNospec, nil // BPF_NOSPEC, emitted by the verifier only
	}
	if in.Class() == insn.STX && in.Mode() == insn.ATOMIC {
		switch in.Imm {
		case insn.LoadAcq:
			return [4]opKind{opLoadAcqB, opLoadAcqH, opLoadAcqW, opLoadAcqDW}[sizeIndex(size)], nil
		case insn.StoreRel:
			return [4]opKind{opStoreRelB, opStoreRelH, opStoreRelW, opStoreRelDW}[sizeIndex(size)], nil
		}
		k, ok := atomicKinds[in.Imm]
		if !ok || (size != insn.W && size != insn.DW) {
			return 0, errors.Wrapf(uapi.EINVAL, "invalid atomic operation %#x on opcode %#02x", in.Imm, in.Code)
		}
		if size == insn.DW {
			return k[1], nil
		}
		return k[0], nil
	}
	k := sizedKinds[in.Class()|in.Mode()]
	if k[sizeIndex(size)] == opInvalid {
		return 0, errors.Wrapf(uapi.EINVAL, "unknown opcode %#02x", in.Code)
	}
	return k[sizeIndex(size)], nil
}

func jumpKind(in insn.Insn) (opKind, error) {
	is64 := in.Class() == insn.JMP
	switch op := in.Op(); op {
	case insn.JA:
		if in.Source() != insn.K {
			return 0, errors.Wrapf(uapi.EINVAL, "indirect jump (gotox) is not supported")
		}
		return opJa, nil
	case insn.CALL:
		if !is64 || in.Source() != insn.K {
			return 0, errors.Wrapf(uapi.EINVAL, "unknown opcode %#02x", in.Code)
		}
		switch in.Src {
		case 0:
			return opCallHelper, nil
		case insn.PseudoCall:
			return opCallLocal, nil
		case insn.PseudoKfuncCall:
			// After the fix-ups a kfunc call's imm is the function's
			// address relative to __bpf_call_base, like a helper's:
			// the loader's resolver finds it there.
			return opCallHelper, nil
		}
		return 0, errors.Wrapf(uapi.EINVAL, "call with unknown source %d", in.Src)
	case insn.EXIT:
		if !is64 {
			return 0, errors.Wrapf(uapi.EINVAL, "unknown opcode %#02x", in.Code)
		}
		return opExit, nil
	case insn.TailCall:
		// Kernel-internal, made by the verifier's fix-ups.
		if !is64 || in.Source() != insn.K {
			return 0, errors.Wrapf(uapi.EINVAL, "unknown opcode %#02x", in.Code)
		}
		return opTailCall, nil
	case insn.JCOND:
		if !is64 || in.Src != insn.MayGoto {
			return 0, errors.Wrapf(uapi.EINVAL, "unknown opcode %#02x", in.Code)
		}
		return opMayGoto, nil
	default:
		k := jmpKinds[op>>4]
		if k[0][0] == opInvalid {
			return 0, errors.Wrapf(uapi.EINVAL, "unknown opcode %#02x", in.Code)
		}
		w, x := 0, 0
		if is64 {
			w = 1
		}
		if in.Source() == insn.X {
			x = 1
		}
		return k[w][x], nil
	}
}

// useFastKinds turns Compile's fast path on; a test compares it with the
// slow path.
var useFastKinds = true

// fastKind is what Compile's fast path needs of an opcode.
type fastKind struct {
	kind  opKind
	flags uint8
}

const (
	fastImm32     = 1 << iota // a 32-bit operation: imm zero-extended
	fastCondJump              // a conditional jump: off is the target
	fastNeedsOff0             // the kind holds only with off 0 (div, mod, mov)
)

// fastKinds is the kind of every opcode whose kind depends on nothing
// else (with off 0 where fastNeedsOff0 says so), as the slow path finds
// it; opInvalid for the others.
var fastKinds = func() (t [256]fastKind) {
	for c := 0; c < 256; c++ {
		in := insn.Insn{Code: uint8(c)}
		var k opKind
		var err error
		var flags uint8
		switch in.Class() {
		case insn.ALU, insn.ALU64:
			switch in.Op() {
			case insn.END, insn.NEG:
				continue
			case insn.DIV, insn.MOD, insn.MOV:
				flags |= fastNeedsOff0
			}
			if in.Class() == insn.ALU {
				flags |= fastImm32
			}
			k, err = aluKind(in)
		case insn.LDX, insn.ST, insn.STX:
			if in.Mode() != insn.MEM && in.Mode() != insn.MEMSX {
				continue
			}
			k, err = memKind(in)
		case insn.JMP, insn.JMP32:
			switch in.Op() {
			case insn.JA, insn.CALL, insn.EXIT, insn.TailCall, insn.JCOND:
				continue
			}
			flags |= fastCondJump
			if in.Class() == insn.JMP32 {
				flags |= fastImm32
			}
			k, err = jumpKind(in)
		default:
			continue
		}
		if err == nil {
			t[c] = fastKind{k, flags}
		}
	}
	return t
}()
