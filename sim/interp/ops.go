package interp

// opKind is the interpreter's dense opcode: one value per distinct
// behaviour, so the dispatch switch compiles to a jump table and no case
// re-examines the instruction's fields.
type opKind uint8

const (
	opInvalid opKind = iota

	// ALU64, immediate and register forms.
	opAdd64K
	opAdd64X
	opSub64K
	opSub64X
	opMul64K
	opMul64X
	opDiv64K
	opDiv64X
	opSdiv64K
	opSdiv64X
	opMod64K
	opMod64X
	opSmod64K
	opSmod64X
	opOr64K
	opOr64X
	opAnd64K
	opAnd64X
	opLsh64K
	opLsh64X
	opRsh64K
	opRsh64X
	opArsh64K
	opArsh64X
	opXor64K
	opXor64X
	opMov64K
	opMov64X
	opMovsx64B // movsx from 8, 16, 32 bits
	opMovsx64H
	opMovsx64W
	opNeg64

	// ALU (32-bit), immediate and register forms.
	opAdd32K
	opAdd32X
	opSub32K
	opSub32X
	opMul32K
	opMul32X
	opDiv32K
	opDiv32X
	opSdiv32K
	opSdiv32X
	opMod32K
	opMod32X
	opSmod32K
	opSmod32X
	opOr32K
	opOr32X
	opAnd32K
	opAnd32X
	opLsh32K
	opLsh32X
	opRsh32K
	opRsh32X
	opArsh32K
	opArsh32X
	opXor32K
	opXor32X
	opMov32K
	opMov32X
	opMovsx32B
	opMovsx32H
	opNeg32

	// Byte order. On the little-endian simulated kernel "to LE" only
	// truncates; "to BE" and the unconditional bswap swap.
	opLe16
	opLe32
	opLe64
	opBswap16
	opBswap32
	opBswap64

	// 64-bit immediate load (the second slot is never executed).
	opLdImm64

	// Loads and stores.
	opLdxB
	opLdxH
	opLdxW
	opLdxDW
	opLdxsB
	opLdxsH
	opLdxsW
	opStB
	opStH
	opStW
	opStDW
	opStxB
	opStxH
	opStxW
	opStxDW

	// Atomics (STX|ATOMIC). Imm selects the operation.
	opAtomicAdd32
	opAtomicAdd64
	opAtomicOr32
	opAtomicOr64
	opAtomicAnd32
	opAtomicAnd64
	opAtomicXor32
	opAtomicXor64
	opAtomicFetchAdd32
	opAtomicFetchAdd64
	opAtomicFetchOr32
	opAtomicFetchOr64
	opAtomicFetchAnd32
	opAtomicFetchAnd64
	opAtomicFetchXor32
	opAtomicFetchXor64
	opAtomicXchg32
	opAtomicXchg64
	opAtomicCmpxchg32
	opAtomicCmpxchg64
	opLoadAcqB
	opLoadAcqH
	opLoadAcqW
	opLoadAcqDW
	opStoreRelB
	opStoreRelH
	opStoreRelW
	opStoreRelDW

	// Jumps. target holds the absolute destination index.
	opJa
	opJeq64K
	opJeq64X
	opJgt64K
	opJgt64X
	opJge64K
	opJge64X
	opJset64K
	opJset64X
	opJne64K
	opJne64X
	opJsgt64K
	opJsgt64X
	opJsge64K
	opJsge64X
	opJlt64K
	opJlt64X
	opJle64K
	opJle64X
	opJslt64K
	opJslt64X
	opJsle64K
	opJsle64X
	opJeq32K
	opJeq32X
	opJgt32K
	opJgt32X
	opJge32K
	opJge32X
	opJset32K
	opJset32X
	opJne32K
	opJne32X
	opJsgt32K
	opJsgt32X
	opJsge32K
	opJsge32X
	opJlt32K
	opJlt32X
	opJle32K
	opJle32X
	opJslt32K
	opJslt32X
	opJsle32K
	opJsle32X
	opMayGoto

	opCallHelper // imm holds the index into Program.helpers
	opCallLocal  // target holds the callee's first instruction
	opExit
	// opCallbackReturn follows the program's end: a callback that a
	// helper runs (Machine.CallFunc) returns there.
	opCallbackReturn
	opTailCall // BPF_JMP|BPF_TAIL_CALL: r2 a prog array, r3 the index
	opNospec   // speculation barrier: nothing to do in a simulator

	// Legacy packet access (LD|ABS, LD|IND): r0 = the big-endian value in
	// the machine's Packet; see ldabs.go.
	opLdAbsB
	opLdAbsH
	opLdAbsW
	opLdIndB
	opLdIndH
	opLdIndW

	// Probe loads (LDX|BPF_PROBE_MEM, LDX|BPF_PROBE_MEMSX), which the
	// verifier makes of loads from kernel objects: a fault reads zeros,
	// as the kernel's exception table makes it.
	opLdxProbeB
	opLdxProbeH
	opLdxProbeW
	opLdxProbeDW
	opLdxsProbeB
	opLdxsProbeH
	opLdxsProbeW

	// r = &(void __percpu *)(r): the address of this CPU's copy of a
	// per-CPU variable (BPF_MOV64_PERCPU_REG, ALU64|MOV|X with off -1). Only
	// verifier rewrites emit it, such as inlined per-CPU map lookups.
	opMovPercpu

	// Three-operand ALU: a register move followed by an operation of the
	// same width on the moved-to register (w1 = w3; w1 &= 15), fused by
	// Compile into dst = a op src|imm, a held in off. The pair's second
	// slot keeps its own op, so a jump may still land there.
	opAdd64KT
	opAdd64XT
	opSub64KT
	opSub64XT
	opMul64KT
	opMul64XT
	opOr64KT
	opOr64XT
	opAnd64KT
	opAnd64XT
	opLsh64KT
	opLsh64XT
	opRsh64KT
	opRsh64XT
	opArsh64KT
	opArsh64XT
	opXor64KT
	opXor64XT
	opAdd32KT
	opAdd32XT
	opSub32KT
	opSub32XT
	opMul32KT
	opMul32XT
	opOr32KT
	opOr32XT
	opAnd32KT
	opAnd32XT
	opLsh32KT
	opLsh32XT
	opRsh32KT
	opRsh32XT
	opArsh32KT
	opArsh32XT
	opXor32KT
	opXor32XT

	// Idioms: instruction sequences compilers and the verifier's fix-ups
	// emit often, each run by one op in the sequence's first slot (see
	// idioms.go). The other slots keep their own ops, for jumps that land
	// there.
	opRotR32      // a = x >> k1; b = x << k2 | a  (32-bit; a in off, k1|k2<<8 in imm)
	opRotL32      // a = x << k1; b = x >> k2 | a
	opRotR64      // the same, 64-bit
	opRotL64      //
	opXorSub32    // d = (x ^ s1) - s2  (x in off, s2 in imm)
	opSubXor32    // d = (x - s1) ^ s2
	opArrayLookup // array_map_gen_lookup: r1 += off; r0 = &value[*(u32 *)r2] or 0
	opPercpuArrayLookup
	opIncMem64 // d = *(u64 *)(s + off); d += imm; *(u64 *)(s + off) = d
	opCallElem // call; if r0 == 0 goto +1; r0 += imm of the third slot

	numOps
)
