package interp

import (
	"encoding/binary"
	"math"
	"math/bits"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

const pageMask = mem.PageSize - 1

// maxLoops is BPF_MAX_LOOPS, the number of times a may_goto may fall
// through in one frame before it jumps.
const maxLoops = 8 * 1024 * 1024

type frame struct {
	ret     int // index to continue at after the callee exits
	saved   [4]uint64
	fp      uint64
	mayGoto uint64
}

// Run executes p on the machine with r1 and r2 as the first arguments (the
// kernel passes only the context in r1; r2 serves raw-memory harnesses such
// as the conformance suite's, which pass the memory length) and returns r0.
func (m *Machine) Run(p *Program, r1, r2 uint64) (uint64, error) {
	m.TLB.Sync()
	m.prog = p
	defer func() { m.prog = nil }()
	clear(m.frameStack(0))
	r0, err := m.run(p, r1, r2)
	return r0, err
}

func (m *Machine) run(p *Program, arg1, arg2 uint64) (uint64, error) {
	var r [16]uint64
	var frames [insn.MaxCallFrames]frame
	depth := 0
	frames[0].mayGoto = maxLoops

	r[1], r[2] = arg1, arg2
	r[10] = m.stackTop

	budget := m.MaxInsns
	if budget == 0 {
		budget = math.MaxUint64
	}
	tlb := m.TLB
	ops := p.ops
	var steps uint64
	pc := 0

	fault := func(f *mem.Fault) (uint64, error) {
		f.PC = pc - 1
		m.Executed = steps
		return 0, f
	}

	for {
		if steps == budget {
			m.Executed = steps
			return 0, m.budgetError(pc)
		}
		o := &ops[pc]
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
		case opSdiv64K:
			r[o.dst&15] = sdiv64(r[o.dst&15], o.imm)
		case opSdiv64X:
			r[o.dst&15] = sdiv64(r[o.dst&15], r[o.src&15])
		case opMod64K:
			r[o.dst&15] = mod64(r[o.dst&15], o.imm)
		case opMod64X:
			r[o.dst&15] = mod64(r[o.dst&15], r[o.src&15])
		case opSmod64K:
			r[o.dst&15] = smod64(r[o.dst&15], o.imm)
		case opSmod64X:
			r[o.dst&15] = smod64(r[o.dst&15], r[o.src&15])
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
		case opMovsx64B:
			r[o.dst&15] = uint64(int64(int8(r[o.src&15])))
		case opMovsx64H:
			r[o.dst&15] = uint64(int64(int16(r[o.src&15])))
		case opMovsx64W:
			r[o.dst&15] = uint64(int64(int32(r[o.src&15])))
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
		case opSdiv32K:
			r[o.dst&15] = sdiv32(r[o.dst&15], o.imm)
		case opSdiv32X:
			r[o.dst&15] = sdiv32(r[o.dst&15], r[o.src&15])
		case opMod32K:
			r[o.dst&15] = mod32(r[o.dst&15], o.imm)
		case opMod32X:
			r[o.dst&15] = mod32(r[o.dst&15], r[o.src&15])
		case opSmod32K:
			r[o.dst&15] = smod32(r[o.dst&15], o.imm)
		case opSmod32X:
			r[o.dst&15] = smod32(r[o.dst&15], r[o.src&15])
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
		case opMovsx32B:
			r[o.dst&15] = uint64(uint32(int32(int8(r[o.src&15]))))
		case opMovsx32H:
			r[o.dst&15] = uint64(uint32(int32(int16(r[o.src&15]))))
		case opNeg32:
			r[o.dst&15] = uint64(-uint32(r[o.dst&15]))

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

		// Loads: the TLB hit path is written out for the common sizes.
		case opLdxB:
			a := r[o.src&15] + uint64(int64(o.off))
			if pg := tlb.ReadPage(a); pg != nil {
				r[o.dst&15] = uint64(pg[a&pageMask])
			} else if v, f := tlb.Load8(a); f == nil {
				r[o.dst&15] = v
			} else {
				return fault(f)
			}
		case opLdxH:
			a := r[o.src&15] + uint64(int64(o.off))
			if pg := tlb.ReadPage(a); pg != nil && a&pageMask <= pageMask-1 {
				r[o.dst&15] = uint64(binary.LittleEndian.Uint16(pg[a&pageMask:]))
			} else if v, f := tlb.Load16(a); f == nil {
				r[o.dst&15] = v
			} else {
				return fault(f)
			}
		case opLdxW:
			a := r[o.src&15] + uint64(int64(o.off))
			if pg := tlb.ReadPage(a); pg != nil && a&pageMask <= pageMask-3 {
				r[o.dst&15] = uint64(binary.LittleEndian.Uint32(pg[a&pageMask:]))
			} else if v, f := tlb.Load32(a); f == nil {
				r[o.dst&15] = v
			} else {
				return fault(f)
			}
		case opLdxDW:
			a := r[o.src&15] + uint64(int64(o.off))
			if pg := tlb.ReadPage(a); pg != nil && a&pageMask <= pageMask-7 {
				r[o.dst&15] = binary.LittleEndian.Uint64(pg[a&pageMask:])
			} else if v, f := tlb.Load64(a); f == nil {
				r[o.dst&15] = v
			} else {
				return fault(f)
			}
		case opLdxsB, opLdxsH, opLdxsW:
			size := map[opKind]int{opLdxsB: 1, opLdxsH: 2, opLdxsW: 4}[o.kind]
			v, f := tlb.LoadSigned(r[o.src&15]+uint64(int64(o.off)), size)
			if f != nil {
				return fault(f)
			}
			r[o.dst&15] = v

		// Stores.
		case opStB, opStxB:
			a, v := r[o.dst&15]+uint64(int64(o.off)), o.imm
			if o.kind == opStxB {
				v = r[o.src&15]
			}
			if pg := tlb.WritePage(a); pg != nil {
				pg[a&pageMask] = byte(v)
			} else if f := tlb.Store8(a, v); f != nil {
				return fault(f)
			}
		case opStH, opStxH:
			a, v := r[o.dst&15]+uint64(int64(o.off)), o.imm
			if o.kind == opStxH {
				v = r[o.src&15]
			}
			if pg := tlb.WritePage(a); pg != nil && a&pageMask <= pageMask-1 {
				binary.LittleEndian.PutUint16(pg[a&pageMask:], uint16(v))
			} else if f := tlb.Store16(a, v); f != nil {
				return fault(f)
			}
		case opStW, opStxW:
			a, v := r[o.dst&15]+uint64(int64(o.off)), o.imm
			if o.kind == opStxW {
				v = r[o.src&15]
			}
			if pg := tlb.WritePage(a); pg != nil && a&pageMask <= pageMask-3 {
				binary.LittleEndian.PutUint32(pg[a&pageMask:], uint32(v))
			} else if f := tlb.Store32(a, v); f != nil {
				return fault(f)
			}
		case opStDW:
			a := r[o.dst&15] + uint64(int64(o.off))
			if pg := tlb.WritePage(a); pg != nil && a&pageMask <= pageMask-7 {
				binary.LittleEndian.PutUint64(pg[a&pageMask:], o.imm)
			} else if f := tlb.Store64(a, o.imm); f != nil {
				return fault(f)
			}
		case opStxDW:
			a := r[o.dst&15] + uint64(int64(o.off))
			if pg := tlb.WritePage(a); pg != nil && a&pageMask <= pageMask-7 {
				binary.LittleEndian.PutUint64(pg[a&pageMask:], r[o.src&15])
			} else if f := tlb.Store64(a, r[o.src&15]); f != nil {
				return fault(f)
			}

		case opAtomicAdd32, opAtomicAdd64, opAtomicOr32, opAtomicOr64,
			opAtomicAnd32, opAtomicAnd64, opAtomicXor32, opAtomicXor64,
			opAtomicFetchAdd32, opAtomicFetchAdd64, opAtomicFetchOr32, opAtomicFetchOr64,
			opAtomicFetchAnd32, opAtomicFetchAnd64, opAtomicFetchXor32, opAtomicFetchXor64,
			opAtomicXchg32, opAtomicXchg64, opAtomicCmpxchg32, opAtomicCmpxchg64:
			if f := atomicOp(tlb, o, &r); f != nil {
				return fault(f)
			}
		case opLoadAcqB, opLoadAcqH, opLoadAcqW, opLoadAcqDW:
			v, f := loadAcquire(tlb, o.kind, r[o.src&15]+uint64(int64(o.off)))
			if f != nil {
				return fault(f)
			}
			r[o.dst&15] = v
		case opStoreRelB, opStoreRelH, opStoreRelW, opStoreRelDW:
			if f := storeRelease(tlb, o.kind, r[o.dst&15]+uint64(int64(o.off)), r[o.src&15]); f != nil {
				return fault(f)
			}

		// Jumps.
		case opJa:
			pc = int(o.off)
		case opJeq64K:
			if r[o.dst&15] == o.imm {
				pc = int(o.off)
			}
		case opJeq64X:
			if r[o.dst&15] == r[o.src&15] {
				pc = int(o.off)
			}
		case opJne64K:
			if r[o.dst&15] != o.imm {
				pc = int(o.off)
			}
		case opJne64X:
			if r[o.dst&15] != r[o.src&15] {
				pc = int(o.off)
			}
		case opJgt64K:
			if r[o.dst&15] > o.imm {
				pc = int(o.off)
			}
		case opJgt64X:
			if r[o.dst&15] > r[o.src&15] {
				pc = int(o.off)
			}
		case opJge64K:
			if r[o.dst&15] >= o.imm {
				pc = int(o.off)
			}
		case opJge64X:
			if r[o.dst&15] >= r[o.src&15] {
				pc = int(o.off)
			}
		case opJlt64K:
			if r[o.dst&15] < o.imm {
				pc = int(o.off)
			}
		case opJlt64X:
			if r[o.dst&15] < r[o.src&15] {
				pc = int(o.off)
			}
		case opJle64K:
			if r[o.dst&15] <= o.imm {
				pc = int(o.off)
			}
		case opJle64X:
			if r[o.dst&15] <= r[o.src&15] {
				pc = int(o.off)
			}
		case opJset64K:
			if r[o.dst&15]&o.imm != 0 {
				pc = int(o.off)
			}
		case opJset64X:
			if r[o.dst&15]&r[o.src&15] != 0 {
				pc = int(o.off)
			}
		case opJsgt64K:
			if int64(r[o.dst&15]) > int64(o.imm) {
				pc = int(o.off)
			}
		case opJsgt64X:
			if int64(r[o.dst&15]) > int64(r[o.src&15]) {
				pc = int(o.off)
			}
		case opJsge64K:
			if int64(r[o.dst&15]) >= int64(o.imm) {
				pc = int(o.off)
			}
		case opJsge64X:
			if int64(r[o.dst&15]) >= int64(r[o.src&15]) {
				pc = int(o.off)
			}
		case opJslt64K:
			if int64(r[o.dst&15]) < int64(o.imm) {
				pc = int(o.off)
			}
		case opJslt64X:
			if int64(r[o.dst&15]) < int64(r[o.src&15]) {
				pc = int(o.off)
			}
		case opJsle64K:
			if int64(r[o.dst&15]) <= int64(o.imm) {
				pc = int(o.off)
			}
		case opJsle64X:
			if int64(r[o.dst&15]) <= int64(r[o.src&15]) {
				pc = int(o.off)
			}
		case opJeq32K:
			if uint32(r[o.dst&15]) == uint32(o.imm) {
				pc = int(o.off)
			}
		case opJeq32X:
			if uint32(r[o.dst&15]) == uint32(r[o.src&15]) {
				pc = int(o.off)
			}
		case opJne32K:
			if uint32(r[o.dst&15]) != uint32(o.imm) {
				pc = int(o.off)
			}
		case opJne32X:
			if uint32(r[o.dst&15]) != uint32(r[o.src&15]) {
				pc = int(o.off)
			}
		case opJgt32K:
			if uint32(r[o.dst&15]) > uint32(o.imm) {
				pc = int(o.off)
			}
		case opJgt32X:
			if uint32(r[o.dst&15]) > uint32(r[o.src&15]) {
				pc = int(o.off)
			}
		case opJge32K:
			if uint32(r[o.dst&15]) >= uint32(o.imm) {
				pc = int(o.off)
			}
		case opJge32X:
			if uint32(r[o.dst&15]) >= uint32(r[o.src&15]) {
				pc = int(o.off)
			}
		case opJlt32K:
			if uint32(r[o.dst&15]) < uint32(o.imm) {
				pc = int(o.off)
			}
		case opJlt32X:
			if uint32(r[o.dst&15]) < uint32(r[o.src&15]) {
				pc = int(o.off)
			}
		case opJle32K:
			if uint32(r[o.dst&15]) <= uint32(o.imm) {
				pc = int(o.off)
			}
		case opJle32X:
			if uint32(r[o.dst&15]) <= uint32(r[o.src&15]) {
				pc = int(o.off)
			}
		case opJset32K:
			if uint32(r[o.dst&15])&uint32(o.imm) != 0 {
				pc = int(o.off)
			}
		case opJset32X:
			if uint32(r[o.dst&15])&uint32(r[o.src&15]) != 0 {
				pc = int(o.off)
			}
		case opJsgt32K:
			if int32(r[o.dst&15]) > int32(o.imm) {
				pc = int(o.off)
			}
		case opJsgt32X:
			if int32(r[o.dst&15]) > int32(r[o.src&15]) {
				pc = int(o.off)
			}
		case opJsge32K:
			if int32(r[o.dst&15]) >= int32(o.imm) {
				pc = int(o.off)
			}
		case opJsge32X:
			if int32(r[o.dst&15]) >= int32(r[o.src&15]) {
				pc = int(o.off)
			}
		case opJslt32K:
			if int32(r[o.dst&15]) < int32(o.imm) {
				pc = int(o.off)
			}
		case opJslt32X:
			if int32(r[o.dst&15]) < int32(r[o.src&15]) {
				pc = int(o.off)
			}
		case opJsle32K:
			if int32(r[o.dst&15]) <= int32(o.imm) {
				pc = int(o.off)
			}
		case opJsle32X:
			if int32(r[o.dst&15]) <= int32(r[o.src&15]) {
				pc = int(o.off)
			}
		case opMayGoto:
			if frames[depth].mayGoto == 0 {
				pc = int(o.off)
			} else {
				frames[depth].mayGoto--
			}

		case opCallHelper:
			h := p.helpers[o.imm]
			m.pc = pc - 1
			v, err := h.Fn(m, r[1], r[2], r[3], r[4], r[5])
			if err != nil {
				m.Executed = steps
				var u *Unwind
				if errors.As(err, &u) {
					return u.R0, nil
				}
				return 0, m.atPC(err)
			}
			r[0] = v
		case opCallLocal:
			if depth+1 >= insn.MaxCallFrames {
				m.Executed = steps
				return 0, &RuntimeError{PC: pc - 1, Errno: uapi.E2BIG,
					Msg: "the call stack is too deep (more than 8 frames)"}
			}
			fr := &frames[depth]
			fr.ret = pc
			fr.saved = [4]uint64{r[6], r[7], r[8], r[9]}
			fr.fp = r[10]
			depth++
			frames[depth].mayGoto = maxLoops
			clear(m.frameStack(depth))
			r[10] = m.stackTop - uint64(depth)*insn.MaxBPFStack
			pc = int(o.off)
		case opExit:
			if depth == 0 {
				m.Executed = steps
				return r[0], nil
			}
			depth--
			fr := &frames[depth]
			r[6], r[7], r[8], r[9] = fr.saved[0], fr.saved[1], fr.saved[2], fr.saved[3]
			r[10] = fr.fp
			pc = fr.ret
		case opNospec:

		default:
			m.Executed = steps
			return 0, &RuntimeError{PC: pc - 1, Errno: uapi.EINVAL,
				Msg: "reached an instruction slot that cannot execute (the end of the program or the second half of an lddw)"}
		}
	}
}

func (m *Machine) budgetError(pc int) error {
	return &RuntimeError{PC: pc, Errno: uapi.E2BIG,
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
