package interp

import (
	"fmt"
	"math"
	"math/bits"
	"unsafe"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

const pageMask = mem.PageSize - 1

// maxLoops is BPF_MAX_LOOPS, the number of times a may_goto may fall
// through in one frame before it jumps.
const maxLoops = 8 * 1024 * 1024

// frame is the state a bpf-to-bpf call saves.
type frame struct {
	ret int // index to continue at after the callee exits
	// prog is the program to continue in: a callee that tail calls is
	// replaced by another program, and returns to its caller's code.
	prog    *Program
	saved   [4]uint64
	fp      uint64
	mayGoto uint64
}

// Run executes p on the machine with r1 and r2 as the first arguments (the
// kernel passes only the context in r1; r2 serves raw-memory harnesses such
// as the conformance suite's, which pass the memory length) and returns r0.
func (m *Machine) Run(p *Program, r1, r2 uint64) (uint64, error) {
	return m.runAt(p, 0, r1, r2, 0)
}

// RunFunc runs the function of p that starts at instruction start as a
// program of its own, with R1 to R3 set: what the kernel does with a
// timer's callback, which it calls long after the program that set it
// returned.
func (m *Machine) RunFunc(p *Program, start int, r1, r2, r3 uint64) (uint64, error) {
	if start < 0 || start >= len(p.ops)-2 || p.ops[start].kind == opInvalid {
		return 0, &RuntimeError{PC: -1, Errno: uapi.EFAULT, Msg: fmt.Sprintf("function at %d is no instruction", start)}
	}
	return m.runAt(p, start, r1, r2, r3)
}

func (m *Machine) runAt(p *Program, start int, r1, r2, r3 uint64) (uint64, error) {
	m.TLB.Sync()
	m.prog = p
	defer func() { m.prog = nil }()
	clear(m.frameStack(0))
	m.depth, m.steps = 0, 0
	m.tailCalls = 0
	m.frames[0].mayGoto = maxLoops
	m.pc = start
	return m.run(p, r1, r2, r3, 0)
}

// CallFunc runs the function of the running program that starts at
// instruction start with args in R1 to R4, as a helper calls a callback
// (bpf_loop's, bpf_for_each_map_elem's): in a frame below the helper's
// caller, on the same
// instruction budget, and returns its R0. The caller's state is as it was
// afterwards.
func (m *Machine) CallFunc(start int, arg1, arg2, arg3, arg4 uint64) (uint64, error) {
	p := m.prog
	if p == nil || start < 0 || start >= len(p.ops)-2 || p.ops[start].kind == opInvalid {
		return 0, &RuntimeError{PC: m.pc - 1, Errno: uapi.EFAULT, Msg: fmt.Sprintf("callback at %d is no instruction", start)}
	}
	pc, steps, base, depth := m.pc, m.steps, m.base, m.depth
	defer func() {
		// The callback's instructions count towards the caller's.
		m.prog, m.base, m.pc, m.depth = p, base, pc, depth
		m.steps = steps + m.Executed
	}()
	// The callback's frame returns to the op after the program's end,
	// which ends this loop.
	m.pc = len(p.ops) - 1
	var r [16]uint64 // what enterFrame saves: nothing to restore
	if err := m.enterFrame(&r, start); err != nil {
		return 0, err
	}
	m.Executed = 0
	return m.run(p, arg1, arg2, arg3, arg4) // from m.pc, the callback's start
}

// FuncAddr is the value the interpreter gives a callback's address (an
// lddw of BPF_PSEUDO_FUNC): the function's first instruction, tagged so
// that no address in simulated memory has the same value.
func FuncAddr(start int) uint64 { return funcAddrTag | uint64(uint32(start)) }

// FuncStart is the instruction a FuncAddr value names.
func FuncStart(addr uint64) (int, bool) {
	if addr&^0xffffffff != funcAddrTag {
		return 0, false
	}
	return int(uint32(addr)), true
}

// funcAddrTag is in no canonical address range.
const funcAddrTag = 0x5fcb_0000_0000_0000

// run is the dispatch loop, from instruction m.pc of p, in frame m.depth,
// until the program's exit (or a callback's return, for CallFunc).
func (m *Machine) run(p *Program, arg1, arg2, arg3, arg4 uint64) (uint64, error) {
	var r [16]uint64
	r[1], r[2], r[3], r[4] = arg1, arg2, arg3, arg4
	r[10] = m.stackTop - uint64(m.depth)*insn.MaxBPFStack

	budget := m.MaxInsns
	if budget == 0 {
		budget = math.MaxUint64
	}
	tlb := m.TLB
	var steps uint64
	pc := m.pc

	// The compiler guarantees pc stays within the ops: jump targets are
	// checked and the extra op at the end stops a program that falls off
	// its last instruction. So the loop indexes without a bounds check.
	//
	// The running program is m.prog, its ops at base (also kept in
	// m.base). Every path that calls out of the loop reloads base from m
	// afterwards, like pc and steps: then no value live across a call
	// changes in the loop, and the compiler need not store one on every
	// iteration to have it after the call.
	base := unsafe.Pointer(&p.ops[0])
	m.base = base

	var slowAddr uint64 // the address of an access that missed the TLB
	for {
		o := (*op)(unsafe.Add(base, uintptr(pc)*unsafe.Sizeof(op{})))
		pc++
		steps++
		switch o.kind {
		// ALU64.
		case opAdd64K:
			r[o.dst&15] += o.imm
		case opAdd64X:
			r[o.dst&15] += r[o.src&15]
		case opSub64K:
			r[o.dst&15] -= o.imm
		case opSub64X:
			r[o.dst&15] -= r[o.src&15]
		case opMul64K:
			r[o.dst&15] *= o.imm
		case opMul64X:
			r[o.dst&15] *= r[o.src&15]
		case opDiv64K:
			r[o.dst&15] = div64(r[o.dst&15], o.imm)
		case opDiv64X:
			r[o.dst&15] = div64(r[o.dst&15], r[o.src&15])
		case opMod64K:
			r[o.dst&15] = mod64(r[o.dst&15], o.imm)
		case opMod64X:
			r[o.dst&15] = mod64(r[o.dst&15], r[o.src&15])
		case opOr64K:
			r[o.dst&15] |= o.imm
		case opOr64X:
			r[o.dst&15] |= r[o.src&15]
		case opAnd64K:
			r[o.dst&15] &= o.imm
		case opAnd64X:
			r[o.dst&15] &= r[o.src&15]
		case opLsh64K:
			r[o.dst&15] <<= o.imm & 63
		case opLsh64X:
			r[o.dst&15] <<= r[o.src&15] & 63
		case opRsh64K:
			r[o.dst&15] >>= o.imm & 63
		case opRsh64X:
			r[o.dst&15] >>= r[o.src&15] & 63
		case opArsh64K:
			r[o.dst&15] = uint64(int64(r[o.dst&15]) >> (o.imm & 63))
		case opArsh64X:
			r[o.dst&15] = uint64(int64(r[o.dst&15]) >> (r[o.src&15] & 63))
		case opXor64K:
			r[o.dst&15] ^= o.imm
		case opXor64X:
			r[o.dst&15] ^= r[o.src&15]
		case opMov64K:
			r[o.dst&15] = o.imm
		case opMov64X:
			r[o.dst&15] = r[o.src&15]
		case opNeg64:
			r[o.dst&15] = -r[o.dst&15]

		// ALU (32-bit): operate on the low halves, zero-extend the result.
		case opAdd32K:
			r[o.dst&15] = uint64(uint32(r[o.dst&15]) + uint32(o.imm))
		case opAdd32X:
			r[o.dst&15] = uint64(uint32(r[o.dst&15]) + uint32(r[o.src&15]))
		case opSub32K:
			r[o.dst&15] = uint64(uint32(r[o.dst&15]) - uint32(o.imm))
		case opSub32X:
			r[o.dst&15] = uint64(uint32(r[o.dst&15]) - uint32(r[o.src&15]))
		case opMul32K:
			r[o.dst&15] = uint64(uint32(r[o.dst&15]) * uint32(o.imm))
		case opMul32X:
			r[o.dst&15] = uint64(uint32(r[o.dst&15]) * uint32(r[o.src&15]))
		case opDiv32K:
			r[o.dst&15] = div32(r[o.dst&15], o.imm)
		case opDiv32X:
			r[o.dst&15] = div32(r[o.dst&15], r[o.src&15])
		case opMod32K:
			r[o.dst&15] = mod32(r[o.dst&15], o.imm)
		case opMod32X:
			r[o.dst&15] = mod32(r[o.dst&15], r[o.src&15])
		case opOr32K:
			r[o.dst&15] = uint64(uint32(r[o.dst&15]) | uint32(o.imm))
		case opOr32X:
			r[o.dst&15] = uint64(uint32(r[o.dst&15]) | uint32(r[o.src&15]))
		case opAnd32K:
			r[o.dst&15] = uint64(uint32(r[o.dst&15]) & uint32(o.imm))
		case opAnd32X:
			r[o.dst&15] = uint64(uint32(r[o.dst&15]) & uint32(r[o.src&15]))
		case opLsh32K:
			r[o.dst&15] = uint64(uint32(r[o.dst&15]) << (o.imm & 31))
		case opLsh32X:
			r[o.dst&15] = uint64(uint32(r[o.dst&15]) << (r[o.src&15] & 31))
		case opRsh32K:
			r[o.dst&15] = uint64(uint32(r[o.dst&15]) >> (o.imm & 31))
		case opRsh32X:
			r[o.dst&15] = uint64(uint32(r[o.dst&15]) >> (r[o.src&15] & 31))
		case opArsh32K:
			r[o.dst&15] = uint64(uint32(int32(r[o.dst&15]) >> (o.imm & 31)))
		case opArsh32X:
			r[o.dst&15] = uint64(uint32(int32(r[o.dst&15]) >> (r[o.src&15] & 31)))
		case opXor32K:
			r[o.dst&15] = uint64(uint32(r[o.dst&15]) ^ uint32(o.imm))
		case opXor32X:
			r[o.dst&15] = uint64(uint32(r[o.dst&15]) ^ uint32(r[o.src&15]))
		case opMov32K:
			r[o.dst&15] = uint64(uint32(o.imm))
		case opMov32X:
			r[o.dst&15] = uint64(uint32(r[o.src&15]))
		case opNeg32:
			r[o.dst&15] = uint64(-uint32(r[o.dst&15]))

		// Three-operand ALU (a move and an operation, fused): the first
		// operand is r[off]; the fused pair counts as two instructions.
		case opAdd64KT:
			r[o.dst&15] = r[o.off&15] + o.imm
			pc, steps = pc+1, steps+1
		case opAdd64XT:
			r[o.dst&15] = r[o.off&15] + r[o.src&15]
			pc, steps = pc+1, steps+1
		case opSub64KT:
			r[o.dst&15] = r[o.off&15] - o.imm
			pc, steps = pc+1, steps+1
		case opSub64XT:
			r[o.dst&15] = r[o.off&15] - r[o.src&15]
			pc, steps = pc+1, steps+1
		case opMul64KT:
			r[o.dst&15] = r[o.off&15] * o.imm
			pc, steps = pc+1, steps+1
		case opMul64XT:
			r[o.dst&15] = r[o.off&15] * r[o.src&15]
			pc, steps = pc+1, steps+1
		case opOr64KT:
			r[o.dst&15] = r[o.off&15] | o.imm
			pc, steps = pc+1, steps+1
		case opOr64XT:
			r[o.dst&15] = r[o.off&15] | r[o.src&15]
			pc, steps = pc+1, steps+1
		case opAnd64KT:
			r[o.dst&15] = r[o.off&15] & o.imm
			pc, steps = pc+1, steps+1
		case opAnd64XT:
			r[o.dst&15] = r[o.off&15] & r[o.src&15]
			pc, steps = pc+1, steps+1
		case opLsh64KT:
			r[o.dst&15] = r[o.off&15] << (o.imm & 63)
			pc, steps = pc+1, steps+1
		case opLsh64XT:
			r[o.dst&15] = r[o.off&15] << (r[o.src&15] & 63)
			pc, steps = pc+1, steps+1
		case opRsh64KT:
			r[o.dst&15] = r[o.off&15] >> (o.imm & 63)
			pc, steps = pc+1, steps+1
		case opRsh64XT:
			r[o.dst&15] = r[o.off&15] >> (r[o.src&15] & 63)
			pc, steps = pc+1, steps+1
		case opArsh64KT:
			r[o.dst&15] = uint64(int64(r[o.off&15]) >> (o.imm & 63))
			pc, steps = pc+1, steps+1
		case opArsh64XT:
			r[o.dst&15] = uint64(int64(r[o.off&15]) >> (r[o.src&15] & 63))
			pc, steps = pc+1, steps+1
		case opXor64KT:
			r[o.dst&15] = r[o.off&15] ^ o.imm
			pc, steps = pc+1, steps+1
		case opXor64XT:
			r[o.dst&15] = r[o.off&15] ^ r[o.src&15]
			pc, steps = pc+1, steps+1
		case opAdd32KT:
			r[o.dst&15] = uint64(uint32(r[o.off&15]) + uint32(o.imm))
			pc, steps = pc+1, steps+1
		case opAdd32XT:
			r[o.dst&15] = uint64(uint32(r[o.off&15]) + uint32(r[o.src&15]))
			pc, steps = pc+1, steps+1
		case opSub32KT:
			r[o.dst&15] = uint64(uint32(r[o.off&15]) - uint32(o.imm))
			pc, steps = pc+1, steps+1
		case opSub32XT:
			r[o.dst&15] = uint64(uint32(r[o.off&15]) - uint32(r[o.src&15]))
			pc, steps = pc+1, steps+1
		case opMul32KT:
			r[o.dst&15] = uint64(uint32(r[o.off&15]) * uint32(o.imm))
			pc, steps = pc+1, steps+1
		case opMul32XT:
			r[o.dst&15] = uint64(uint32(r[o.off&15]) * uint32(r[o.src&15]))
			pc, steps = pc+1, steps+1
		case opOr32KT:
			r[o.dst&15] = uint64(uint32(r[o.off&15]) | uint32(o.imm))
			pc, steps = pc+1, steps+1
		case opOr32XT:
			r[o.dst&15] = uint64(uint32(r[o.off&15]) | uint32(r[o.src&15]))
			pc, steps = pc+1, steps+1
		case opAnd32KT:
			r[o.dst&15] = uint64(uint32(r[o.off&15]) & uint32(o.imm))
			pc, steps = pc+1, steps+1
		case opAnd32XT:
			r[o.dst&15] = uint64(uint32(r[o.off&15]) & uint32(r[o.src&15]))
			pc, steps = pc+1, steps+1
		case opLsh32KT:
			r[o.dst&15] = uint64(uint32(r[o.off&15]) << (o.imm & 31))
			pc, steps = pc+1, steps+1
		case opLsh32XT:
			r[o.dst&15] = uint64(uint32(r[o.off&15]) << (r[o.src&15] & 31))
			pc, steps = pc+1, steps+1
		case opRsh32KT:
			r[o.dst&15] = uint64(uint32(r[o.off&15]) >> (o.imm & 31))
			pc, steps = pc+1, steps+1
		case opRsh32XT:
			r[o.dst&15] = uint64(uint32(r[o.off&15]) >> (r[o.src&15] & 31))
			pc, steps = pc+1, steps+1
		case opArsh32KT:
			r[o.dst&15] = uint64(uint32(int32(r[o.off&15]) >> (o.imm & 31)))
			pc, steps = pc+1, steps+1
		case opArsh32XT:
			r[o.dst&15] = uint64(uint32(int32(r[o.off&15]) >> (r[o.src&15] & 31)))
			pc, steps = pc+1, steps+1
		case opXor32KT:
			r[o.dst&15] = uint64(uint32(r[o.off&15]) ^ uint32(o.imm))
			pc, steps = pc+1, steps+1
		case opXor32XT:
			r[o.dst&15] = uint64(uint32(r[o.off&15]) ^ uint32(r[o.src&15]))
			pc, steps = pc+1, steps+1

		case opSdiv64K, opSdiv64X, opSmod64K, opSmod64X,
			opSdiv32K, opSdiv32X, opSmod32K, opSmod32X,
			opMovsx64B, opMovsx64H, opMovsx64W, opMovsx32B, opMovsx32H:
			// Rare operations take the out-of-line path too, to keep the
			// loop under the compiler's big-function limit (see
			// inline_test.go).
			m.pc, m.steps, slowAddr = pc, steps, 0
			goto slow

		// Idioms (idioms.go).
		case opRotR32:
			x := uint32(r[o.src&15])
			a := x >> (o.imm & 31)
			r[o.off&15] = uint64(a)
			r[o.dst&15] = uint64(x<<(o.imm>>8&31) | a)
			pc, steps = pc+4, steps+4
		case opRotL32:
			x := uint32(r[o.src&15])
			a := x << (o.imm & 31)
			r[o.off&15] = uint64(a)
			r[o.dst&15] = uint64(x>>(o.imm>>8&31) | a)
			pc, steps = pc+4, steps+4
		case opRotR64:
			x := r[o.src&15]
			a := x >> (o.imm & 63)
			r[o.off&15] = a
			r[o.dst&15] = x<<(o.imm>>8&63) | a
			pc, steps = pc+4, steps+4
		case opRotL64:
			x := r[o.src&15]
			a := x << (o.imm & 63)
			r[o.off&15] = a
			r[o.dst&15] = x>>(o.imm>>8&63) | a
			pc, steps = pc+4, steps+4
		case opXorSub32:
			r[o.dst&15] = uint64(uint32(r[o.off&15]) ^ uint32(r[o.src&15]) - uint32(r[o.imm&15]))
			pc, steps = pc+int(o.imm>>8), steps+o.imm>>8
		case opSubXor32:
			r[o.dst&15] = uint64((uint32(r[o.off&15]) - uint32(r[o.src&15])) ^ uint32(r[o.imm&15]))
			pc, steps = pc+int(o.imm>>8), steps+o.imm>>8
		case opArrayLookup, opPercpuArrayLookup:
			// r1 += off, then the bounds check on the index r2 points
			// to. The bound is the jump's (the third slot).
			v := r[1] + o.imm
			k := r[2]
			pg := tlb.ReadPage(k)
			if pg == nil || k&pageMask > pageMask-3 {
				r[1] = v // the sequence's first instruction only
				continue
			}
			idx := mem.Load32(pg, k&pageMask)
			bound := (*op)(unsafe.Add(unsafe.Pointer(o), 2*unsafe.Sizeof(op{}))).imm
			if o.kind == opArrayLookup {
				r[1] = v
				if idx >= bound {
					r[0] = 0
					pc, steps = pc+6, steps+3
					continue
				}
				r[0] = idx*uint64(uint32(o.off)) + v
				pc, steps = pc+6, steps+5
				continue
			}
			if idx >= bound {
				r[1], r[0] = v, 0
				pc, steps = pc+8, steps+3
				continue
			}
			a := v + idx<<3
			pg = tlb.ReadPage(a)
			if pg == nil || a&pageMask > pageMask-7 {
				r[1] = v
				continue
			}
			r[1], r[0] = v, mem.Load64(pg, a&pageMask)+m.PercpuOffset
			pc, steps = pc+8, steps+7
		case opIncMem64:
			a := r[o.src&15] + uint64(int64(o.off))
			rp, wp := tlb.ReadPage(a), tlb.WritePage(a)
			if rp != nil && wp != nil && a&pageMask <= pageMask-7 {
				v := mem.Load64(rp, a&pageMask) + o.imm
				mem.Store64(wp, a&pageMask, v)
				r[o.dst&15] = v
				pc, steps = pc+2, steps+2
				continue
			}
			// The load alone, as its own slot would run it.
			m.pc, m.steps, slowAddr = pc, steps, a
			goto slow

		// Byte order.
		case opLe16:
			r[o.dst&15] = uint64(uint16(r[o.dst&15]))
		case opLe32:
			r[o.dst&15] = uint64(uint32(r[o.dst&15]))
		case opLe64:
		case opBswap16:
			r[o.dst&15] = uint64(bits.ReverseBytes16(uint16(r[o.dst&15])))
		case opBswap32:
			r[o.dst&15] = uint64(bits.ReverseBytes32(uint32(r[o.dst&15])))
		case opBswap64:
			r[o.dst&15] = bits.ReverseBytes64(r[o.dst&15])

		case opLdImm64:
			r[o.dst&15] = o.imm
			pc++

		// Loads and stores: the TLB hit path is written out here; misses,
		// page-crossing and device accesses go to slowMem.
		//
		// Every path that calls out of the loop first parks pc and steps in
		// the Machine and reloads them afterwards. That keeps them out of
		// any value live across a call, so the compiler never spills them
		// on the hot path.
		case opLdxB:
			a := r[o.src&15] + uint64(int64(o.off))
			if pg := tlb.ReadPage(a); pg != nil {
				r[o.dst&15] = mem.Load8(pg, a)
				continue
			}
			m.pc, m.steps, slowAddr = pc, steps, a
			goto slow
		case opLdxH:
			a := r[o.src&15] + uint64(int64(o.off))
			if pg := tlb.ReadPage(a); pg != nil && a&pageMask <= pageMask-1 {
				r[o.dst&15] = mem.Load16(pg, a&pageMask)
				continue
			}
			m.pc, m.steps, slowAddr = pc, steps, a
			goto slow
		case opLdxW:
			a := r[o.src&15] + uint64(int64(o.off))
			if pg := tlb.ReadPage(a); pg != nil && a&pageMask <= pageMask-3 {
				r[o.dst&15] = mem.Load32(pg, a&pageMask)
				continue
			}
			m.pc, m.steps, slowAddr = pc, steps, a
			goto slow
		case opLdxDW:
			a := r[o.src&15] + uint64(int64(o.off))
			if pg := tlb.ReadPage(a); pg != nil && a&pageMask <= pageMask-7 {
				r[o.dst&15] = mem.Load64(pg, a&pageMask)
				continue
			}
			m.pc, m.steps, slowAddr = pc, steps, a
			goto slow
		case opStxB:
			a := r[o.dst&15] + uint64(int64(o.off))
			if pg := tlb.WritePage(a); pg != nil {
				mem.Store8(pg, a, r[o.src&15])
				continue
			}
			m.pc, m.steps, slowAddr = pc, steps, a
			goto slow
		case opStxH:
			a := r[o.dst&15] + uint64(int64(o.off))
			if pg := tlb.WritePage(a); pg != nil && a&pageMask <= pageMask-1 {
				mem.Store16(pg, a&pageMask, r[o.src&15])
				continue
			}
			m.pc, m.steps, slowAddr = pc, steps, a
			goto slow
		case opStxW:
			a := r[o.dst&15] + uint64(int64(o.off))
			if pg := tlb.WritePage(a); pg != nil && a&pageMask <= pageMask-3 {
				mem.Store32(pg, a&pageMask, r[o.src&15])
				continue
			}
			m.pc, m.steps, slowAddr = pc, steps, a
			goto slow
		case opStxDW:
			a := r[o.dst&15] + uint64(int64(o.off))
			if pg := tlb.WritePage(a); pg != nil && a&pageMask <= pageMask-7 {
				mem.Store64(pg, a&pageMask, r[o.src&15])
				continue
			}
			m.pc, m.steps, slowAddr = pc, steps, a
			goto slow
		case opStDW:
			a := r[o.dst&15] + uint64(int64(o.off))
			if pg := tlb.WritePage(a); pg != nil && a&pageMask <= pageMask-7 {
				mem.Store64(pg, a&pageMask, o.imm)
				continue
			}
			m.pc, m.steps, slowAddr = pc, steps, a
			goto slow
		case opLdxsB, opLdxsH, opLdxsW, opLdxProbeB, opLdxProbeH, opLdxProbeW, opLdxProbeDW,
			opLdxsProbeB, opLdxsProbeH, opLdxsProbeW:
			m.pc, m.steps = pc, steps
			if f := m.slowMem(&r, r[o.src&15]+uint64(int64(o.off))); f != nil {
				return m.fault(f)
			}
			pc, steps, base = m.pc, m.steps, m.base
		case opStB, opStH, opStW,
			opAtomicAdd32, opAtomicAdd64, opAtomicOr32, opAtomicOr64,
			opAtomicAnd32, opAtomicAnd64, opAtomicXor32, opAtomicXor64,
			opAtomicFetchAdd32, opAtomicFetchAdd64, opAtomicFetchOr32, opAtomicFetchOr64,
			opAtomicFetchAnd32, opAtomicFetchAnd64, opAtomicFetchXor32, opAtomicFetchXor64,
			opAtomicXchg32, opAtomicXchg64, opAtomicCmpxchg32, opAtomicCmpxchg64,
			opLoadAcqB, opLoadAcqH, opLoadAcqW, opLoadAcqDW,
			opStoreRelB, opStoreRelH, opStoreRelW, opStoreRelDW,
			opLdAbsB, opLdAbsH, opLdAbsW, opLdIndB, opLdIndH, opLdIndW:
			// Less common accesses always take the out-of-line path;
			// slowMem hands legacy packet access to ldAbs, which may move
			// the parked pc (a miss returns from a callee) or end the run.
			m.pc, m.steps = pc, steps
			if f := m.slowMem(&r, r[o.dst&15]+uint64(int64(o.off))); f != nil {
				return m.fault(f)
			}
			pc, steps, base = m.pc, m.steps, m.base

		// Jumps.
		case opJa:
			goto taken
		case opJeq64K:
			if r[o.dst&15] == o.imm {
				// The commonest loop closers pay no detour.
				if o.back && steps > budget {
					return m.exhausted(pc, steps)
				}
				pc = int(o.off)
			}
		case opJeq64X:
			if r[o.dst&15] == r[o.src&15] {
				goto taken
			}
		case opJne64K:
			if r[o.dst&15] != o.imm {
				// The commonest loop closers pay no detour.
				if o.back && steps > budget {
					return m.exhausted(pc, steps)
				}
				pc = int(o.off)
			}
		case opJne64X:
			if r[o.dst&15] != r[o.src&15] {
				goto taken
			}
		case opJgt64K:
			if r[o.dst&15] > o.imm {
				goto taken
			}
		case opJgt64X:
			if r[o.dst&15] > r[o.src&15] {
				goto taken
			}
		case opJge64K:
			if r[o.dst&15] >= o.imm {
				goto taken
			}
		case opJge64X:
			if r[o.dst&15] >= r[o.src&15] {
				goto taken
			}
		case opJlt64K:
			if r[o.dst&15] < o.imm {
				goto taken
			}
		case opJlt64X:
			if r[o.dst&15] < r[o.src&15] {
				goto taken
			}
		case opJle64K:
			if r[o.dst&15] <= o.imm {
				goto taken
			}
		case opJle64X:
			if r[o.dst&15] <= r[o.src&15] {
				goto taken
			}
		case opJset64K:
			if r[o.dst&15]&o.imm != 0 {
				goto taken
			}
		case opJset64X:
			if r[o.dst&15]&r[o.src&15] != 0 {
				goto taken
			}
		case opJsgt64K:
			if int64(r[o.dst&15]) > int64(o.imm) {
				goto taken
			}
		case opJsgt64X:
			if int64(r[o.dst&15]) > int64(r[o.src&15]) {
				goto taken
			}
		case opJsge64K:
			if int64(r[o.dst&15]) >= int64(o.imm) {
				goto taken
			}
		case opJsge64X:
			if int64(r[o.dst&15]) >= int64(r[o.src&15]) {
				goto taken
			}
		case opJslt64K:
			if int64(r[o.dst&15]) < int64(o.imm) {
				goto taken
			}
		case opJslt64X:
			if int64(r[o.dst&15]) < int64(r[o.src&15]) {
				goto taken
			}
		case opJsle64K:
			if int64(r[o.dst&15]) <= int64(o.imm) {
				goto taken
			}
		case opJsle64X:
			if int64(r[o.dst&15]) <= int64(r[o.src&15]) {
				goto taken
			}
		case opJeq32K:
			if uint32(r[o.dst&15]) == uint32(o.imm) {
				goto taken
			}
		case opJeq32X:
			if uint32(r[o.dst&15]) == uint32(r[o.src&15]) {
				goto taken
			}
		case opJne32K:
			if uint32(r[o.dst&15]) != uint32(o.imm) {
				goto taken
			}
		case opJne32X:
			if uint32(r[o.dst&15]) != uint32(r[o.src&15]) {
				goto taken
			}
		case opJgt32K:
			if uint32(r[o.dst&15]) > uint32(o.imm) {
				goto taken
			}
		case opJgt32X:
			if uint32(r[o.dst&15]) > uint32(r[o.src&15]) {
				goto taken
			}
		case opJge32K:
			if uint32(r[o.dst&15]) >= uint32(o.imm) {
				goto taken
			}
		case opJge32X:
			if uint32(r[o.dst&15]) >= uint32(r[o.src&15]) {
				goto taken
			}
		case opJlt32K:
			if uint32(r[o.dst&15]) < uint32(o.imm) {
				goto taken
			}
		case opJlt32X:
			if uint32(r[o.dst&15]) < uint32(r[o.src&15]) {
				goto taken
			}
		case opJle32K:
			if uint32(r[o.dst&15]) <= uint32(o.imm) {
				goto taken
			}
		case opJle32X:
			if uint32(r[o.dst&15]) <= uint32(r[o.src&15]) {
				goto taken
			}
		case opJset32K:
			if uint32(r[o.dst&15])&uint32(o.imm) != 0 {
				goto taken
			}
		case opJset32X:
			if uint32(r[o.dst&15])&uint32(r[o.src&15]) != 0 {
				goto taken
			}
		case opJsgt32K:
			if int32(r[o.dst&15]) > int32(o.imm) {
				goto taken
			}
		case opJsgt32X:
			if int32(r[o.dst&15]) > int32(r[o.src&15]) {
				goto taken
			}
		case opJsge32K:
			if int32(r[o.dst&15]) >= int32(o.imm) {
				goto taken
			}
		case opJsge32X:
			if int32(r[o.dst&15]) >= int32(r[o.src&15]) {
				goto taken
			}
		case opJslt32K:
			if int32(r[o.dst&15]) < int32(o.imm) {
				goto taken
			}
		case opJslt32X:
			if int32(r[o.dst&15]) < int32(r[o.src&15]) {
				goto taken
			}
		case opJsle32K:
			if int32(r[o.dst&15]) <= int32(o.imm) {
				goto taken
			}
		case opJsle32X:
			if int32(r[o.dst&15]) <= int32(r[o.src&15]) {
				goto taken
			}
		case opMayGoto:
			if m.frames[m.depth].mayGoto == 0 {
				goto taken
			} else {
				m.frames[m.depth].mayGoto--
			}

		case opCallHelper:
			m.pc, m.steps = pc, steps
			v, err := m.prog.helpers[o.imm].Fn(m, r[1], r[2], r[3], r[4], r[5])
			if err != nil {
				return m.helperError(err)
			}
			r[0] = v
			pc, steps, base = m.pc, m.steps, m.base
		case opCallElem:
			// The call, then "if r0 == 0 goto +1; r0 += off". The
			// offset is read before the call: o must not live across it.
			m.pc, m.steps = pc, steps
			off := uint64(int64(o.off))
			v, err := m.prog.helpers[o.imm].Fn(m, r[1], r[2], r[3], r[4], r[5])
			if err != nil {
				return m.helperError(err)
			}
			pc, steps, base = m.pc+2, m.steps+1, m.base
			if v != 0 {
				v += off
				steps++
			}
			r[0] = v
		case opCallLocal:
			if steps > budget {
				return m.exhausted(pc, steps)
			}
			m.pc, m.steps = pc, steps
			if err := m.enterFrame(&r, int(o.off)); err != nil {
				return 0, err
			}
			pc, steps, base = m.pc, m.steps, m.base
		case opExit:
			if m.depth == 0 {
				m.Executed = steps
				return r[0], nil
			}
			m.depth--
			fr := &m.frames[m.depth]
			r[6], r[7], r[8], r[9] = fr.saved[0], fr.saved[1], fr.saved[2], fr.saved[3]
			r[10] = fr.fp
			pc = fr.ret
			if fr.prog != m.prog {
				m.prog = fr.prog
				base = unsafe.Pointer(&fr.prog.ops[0])
				m.base = base
			}
		case opTailCall:
			m.pc, m.steps = pc, steps
			next, err := m.tailCall(&r)
			if err != nil {
				return m.helperError(err)
			}
			pc, steps, base = m.pc, m.steps, m.base
			if next != nil {
				if steps > budget {
					return m.exhausted(pc, steps)
				}
				// The target runs in place of the caller: same
				// registers, frame and stack, from its first
				// instruction, with a fresh may_goto count as its
				// prologue would set.
				m.prog = next
				base = unsafe.Pointer(&next.ops[0])
				m.base = base
				m.frames[m.depth].mayGoto = maxLoops
				pc = 0
			}
		case opNospec:
		case opMovPercpu:
			r[o.dst&15] = r[o.src&15] + m.PercpuOffset

		case opCallbackReturn:
			// A callback CallFunc ran returned to it.
			m.Executed = steps
			return r[0], nil
		case opInvalid:
			fallthrough
		default:
			return m.invalidSlot(pc, steps)
		}
		continue

		// An access missed the TLB's fast path (or crosses a page, or is
		// to a device): the out-of-line path, one copy for all.
	slow:
		// pc and steps are parked.
		if f := m.slowMem(&r, slowAddr); f != nil {
			return m.fault(f)
		}
		pc, steps, base = m.pc, m.steps, m.base
		continue

		// A jump is taken. One copy of this, rather than one per jump
		// kind, keeps the loop small enough for the compiler to inline
		// the memory accesses' TLB lookups into it.
	taken:
		if o.back && steps > budget {
			return m.exhausted(pc, steps)
		}
		pc = int(o.off)
	}
}

// fault ends a run at a memory fault; pc and steps are parked in m. It also
// ends a run whose legacy packet access missed in the outermost function,
// with r0 = 0: that path stays out of the dispatch loop.
//
//go:noinline
func (m *Machine) fault(f *mem.Fault) (uint64, error) {
	if f == ldAbsMiss {
		m.Executed = m.steps
		return 0, nil
	}
	f.PC = m.pc - 1
	m.Executed = m.steps
	return 0, f
}

// helperError ends a run whose helper returned an error; an *Unwind ends
// it normally with the helper's value.
//
//go:noinline
func (m *Machine) helperError(err error) (uint64, error) {
	m.Executed = m.steps
	var u *Unwind
	if errors.As(err, &u) {
		return u.R0, nil
	}
	return 0, m.atPC(err)
}

// enterFrame performs a bpf-to-bpf call to target: it saves the
// callee-saved registers and the frame pointer, and gives the callee a
// fresh, zeroed 512-byte stack below the caller's.
func (m *Machine) enterFrame(r *[16]uint64, target int) error {
	if m.depth+1 >= maxFrames {
		m.Executed = m.steps
		return &RuntimeError{PC: m.pc - 1, Errno: uapi.E2BIG,
			Msg: fmt.Sprintf("the call stack is too deep (more than %d frames)", maxFrames)}
	}
	fr := &m.frames[m.depth]
	fr.ret = m.pc
	fr.prog = m.prog
	fr.saved = [4]uint64{r[6], r[7], r[8], r[9]}
	fr.fp = r[10]
	m.depth++
	m.frames[m.depth].mayGoto = maxLoops
	clear(m.frameStack(m.depth))
	r[10] = m.stackTop - uint64(m.depth)*insn.MaxBPFStack
	m.pc = target
	return nil
}

// tailCall is JMP_TAIL_CALL: an index past max_entries falls through; so
// does any tail call after MAX_TAIL_CALL_CNT of them; whether one into an
// empty slot counts depends on TailCallCount. It returns the program to
// continue in, or nil to fall through.
func (m *Machine) tailCall(r *[16]uint64) (*Program, error) {
	if m.TailCall == nil {
		return nil, &RuntimeError{PC: m.pc - 1, Errno: uapi.EINVAL, Msg: "the machine cannot tail call"}
	}
	target, inBounds, err := m.TailCall(m, r[2], uint32(r[3]))
	if err != nil || !inBounds {
		return nil, err
	}
	if m.tailCalls >= MaxTailCallCnt {
		return nil, nil
	}
	if target == nil {
		if m.TailCallCount == CountAttempts {
			m.tailCalls++
		}
		return nil, nil
	}
	m.tailCalls++
	return target, nil
}

// slowMem performs any load or store the loop did not finish inline: TLB
// misses, accesses that cross a page, device pages, sign-extending loads,
// immediate stores of small sizes and atomics; and the rare ALU operations
// (rareALU), which have no address.
//
// It finds its instruction through the parked pc rather than taking the op
// as an argument, so the loop need not keep the op pointer across the call.
func (m *Machine) slowMem(r *[16]uint64, addr uint64) *mem.Fault {
	o := &m.prog.ops[m.pc-1]
	tlb := m.TLB
	var v uint64
	var f *mem.Fault
	switch o.kind {
	case opLdxB:
		v, f = tlb.Load8(addr)
	case opLdxH:
		v, f = tlb.Load16(addr)
	case opLdxW:
		v, f = tlb.Load32(addr)
	case opLdxDW, opIncMem64:
		v, f = tlb.Load64(addr)
	case opLdxsB:
		v, f = tlb.LoadSigned(addr, 1)
	case opLdxsH:
		v, f = tlb.LoadSigned(addr, 2)
	case opLdxsW:
		v, f = tlb.LoadSigned(addr, 4)
	case opLdxProbeB, opLdxProbeH, opLdxProbeW, opLdxProbeDW, opLdxsProbeB, opLdxsProbeH, opLdxsProbeW:
		r[o.dst&15] = probeLoad(tlb, o.kind, addr)
		return nil
	case opStxB:
		return tlb.Store8(addr, r[o.src&15])
	case opStxH:
		return tlb.Store16(addr, r[o.src&15])
	case opStxW:
		return tlb.Store32(addr, r[o.src&15])
	case opStxDW:
		return tlb.Store64(addr, r[o.src&15])
	case opStB:
		return tlb.Store8(addr, o.imm)
	case opStH:
		return tlb.Store16(addr, o.imm)
	case opStW:
		return tlb.Store32(addr, o.imm)
	case opStDW:
		return tlb.Store64(addr, o.imm)
	case opLoadAcqB, opLoadAcqH, opLoadAcqW, opLoadAcqDW:
		// load_acquire addresses memory through src, like a load.
		v, f = loadAcquire(tlb, o.kind, r[o.src&15]+uint64(int64(o.off)))
	case opStoreRelB, opStoreRelH, opStoreRelW, opStoreRelDW:
		return storeRelease(tlb, o.kind, addr, r[o.src&15])
	case opLdAbsB, opLdAbsH, opLdAbsW, opLdIndB, opLdIndH, opLdIndW:
		return m.ldAbs(r)
	case opSdiv64K, opSdiv64X, opSmod64K, opSmod64X,
		opSdiv32K, opSdiv32X, opSmod32K, opSmod32X,
		opMovsx64B, opMovsx64H, opMovsx64W, opMovsx32B, opMovsx32H:
		rareALU(o, r)
		return nil
	default:
		return atomicOp(tlb, o, r)
	}
	if f == nil {
		r[o.dst&15] = v
	}
	return f
}

// probeLoad is a BPF_PROBE_MEM load: the value, or zero where the
// address faults.
func probeLoad(tlb *mem.TLB, k opKind, addr uint64) uint64 {
	var v uint64
	var f *mem.Fault
	switch k {
	case opLdxProbeB:
		v, f = tlb.Load8(addr)
	case opLdxProbeH:
		v, f = tlb.Load16(addr)
	case opLdxProbeW:
		v, f = tlb.Load32(addr)
	case opLdxProbeDW:
		v, f = tlb.Load64(addr)
	case opLdxsProbeB:
		v, f = tlb.LoadSigned(addr, 1)
	case opLdxsProbeH:
		v, f = tlb.LoadSigned(addr, 2)
	default:
		v, f = tlb.LoadSigned(addr, 4)
	}
	if f != nil {
		return 0
	}
	return v
}

// exhausted stops a run whose instruction budget ran out. Only backward
// jumps and calls can make a program run long, so only they check.
//
//go:noinline
func (m *Machine) invalidSlot(pc int, steps uint64) (uint64, error) {
	m.Executed = steps
	return 0, &RuntimeError{PC: pc - 1, Errno: uapi.EINVAL,
		Msg: "reached an instruction slot that cannot execute (the end of the program or the second half of an lddw)"}
}

//go:noinline
func (m *Machine) exhausted(pc int, steps uint64) (uint64, error) {
	m.Executed = steps
	return 0, &RuntimeError{PC: pc - 1, Errno: uapi.E2BIG,
		Msg: "instruction budget exhausted (see MaxInsns): the program may not terminate"}
}

func div64(a, b uint64) uint64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func mod64(a, b uint64) uint64 {
	if b == 0 {
		return a
	}
	return a % b
}

func sdiv64(a, b uint64) uint64 {
	switch int64(b) {
	case 0:
		return 0
	case -1:
		return -a // INT64_MIN / -1 stays INT64_MIN, as the kernel's rewrite to neg does
	}
	return uint64(int64(a) / int64(b))
}

func smod64(a, b uint64) uint64 {
	switch int64(b) {
	case 0:
		return a
	case -1:
		return 0
	}
	return uint64(int64(a) % int64(b))
}

func div32(a, b uint64) uint64 {
	if uint32(b) == 0 {
		return 0
	}
	return uint64(uint32(a) / uint32(b))
}

func mod32(a, b uint64) uint64 {
	if uint32(b) == 0 {
		return uint64(uint32(a))
	}
	return uint64(uint32(a) % uint32(b))
}

func sdiv32(a, b uint64) uint64 {
	switch int32(b) {
	case 0:
		return 0
	case -1:
		return uint64(-uint32(a))
	}
	return uint64(uint32(int32(a) / int32(b)))
}

func smod32(a, b uint64) uint64 {
	switch int32(b) {
	case 0:
		return uint64(uint32(a))
	case -1:
		return 0
	}
	return uint64(uint32(int32(a) % int32(b)))
}

// rareALU runs the ALU operations that the dispatch loop leaves out:
// signed division and sign extension, which few programs use.
func rareALU(o *op, r *[16]uint64) {
	switch o.kind {
	case opSdiv64K:
		r[o.dst&15] = sdiv64(r[o.dst&15], o.imm)
	case opSdiv64X:
		r[o.dst&15] = sdiv64(r[o.dst&15], r[o.src&15])
	case opSmod64K:
		r[o.dst&15] = smod64(r[o.dst&15], o.imm)
	case opSmod64X:
		r[o.dst&15] = smod64(r[o.dst&15], r[o.src&15])
	case opSdiv32K:
		r[o.dst&15] = sdiv32(r[o.dst&15], o.imm)
	case opSdiv32X:
		r[o.dst&15] = sdiv32(r[o.dst&15], r[o.src&15])
	case opSmod32K:
		r[o.dst&15] = smod32(r[o.dst&15], o.imm)
	case opSmod32X:
		r[o.dst&15] = smod32(r[o.dst&15], r[o.src&15])
	case opMovsx64B:
		r[o.dst&15] = uint64(int64(int8(r[o.src&15])))
	case opMovsx64H:
		r[o.dst&15] = uint64(int64(int16(r[o.src&15])))
	case opMovsx64W:
		r[o.dst&15] = uint64(int64(int32(r[o.src&15])))
	case opMovsx32B:
		r[o.dst&15] = uint64(uint32(int32(int8(r[o.src&15]))))
	case opMovsx32H:
		r[o.dst&15] = uint64(uint32(int32(int16(r[o.src&15]))))
	}
}
