package a64

// ---- Hints, barriers, exceptions, system registers ----

// Hint encodes HINT #imm (0..127): NOP, the pointer-authentication and BTI
// landing pads are hints, so cores without the feature execute them as NOPs.
func Hint(imm uint32) (uint32, error) {
	if imm > 127 {
		return 0, errInval("hint #%d out of range", imm)
	}
	return 0xd503201f | imm<<5, nil
}

// Hint numbers the JIT emits.
const (
	HintNOP     = 0
	HintPACIASP = 25 // sign LR with key A and SP (prologue, CONFIG_ARM64_PTR_AUTH_KERNEL)
	HintAUTIASP = 29 // authenticate LR (epilogue)
	HintBTIC    = 34 // BTI c: landing pad for BLR
	HintBTIJ    = 36 // BTI j: landing pad for BR (tail calls)
	HintBTIJC   = 38 // BTI jc: both (program entry)
)

// The fixed instruction words. Each is what the corresponding encoder
// returns; they are constants so that an image can be compared or filled
// without calling anything.
const (
	NOP     uint32 = 0xd503201f         // A64_NOP
	PACIASP uint32 = 0xd503201f | 25<<5 // A64_PACIASP
	AUTIASP uint32 = 0xd503201f | 29<<5 // A64_AUTIASP
	BTIC    uint32 = 0xd503201f | 34<<5 // A64_BTI_C
	BTIJ    uint32 = 0xd503201f | 36<<5 // A64_BTI_J
	BTIJC   uint32 = 0xd503201f | 38<<5 // A64_BTI_JC
	// ISB is ISB SY (A64_ISB).
	ISB uint32 = 0xd5033fdf
	// SB is the speculation barrier (ARMv8.5 FEAT_SB; A64_SB), the JIT's
	// BPF_NOSPEC when the CPU has it.
	SB uint32 = 0xd50330ff
	// BreakFault is BRK #0x100 (AARCH64_BREAK_FAULT: FAULT_BRK_IMM), the
	// word jit_fill_hole writes into unused image space and that
	// validate_code refuses to find in a finished program.
	BreakFault uint32 = 0xd4200000 | 0x100<<5
)

// Brk encodes BRK #imm16.
func Brk(imm16 uint32) (uint32, error) {
	if imm16 > 0xffff {
		return 0, errInval("brk #%#x wider than 16 bits", imm16)
	}
	return 0xd4200000 | imm16<<5, nil
}

// BarrierOption is the CRm field of DMB/DSB: domain and access types.
type BarrierOption uint8

// Barrier options.
const (
	BarrierOSHLD BarrierOption = 1
	BarrierOSHST BarrierOption = 2
	BarrierOSH   BarrierOption = 3
	BarrierNSHLD BarrierOption = 5
	BarrierNSHST BarrierOption = 6
	BarrierNSH   BarrierOption = 7 // A64_DSB_NSH (BPF_NOSPEC without SB: dsb nsh; isb)
	BarrierISHLD BarrierOption = 9
	BarrierISHST BarrierOption = 10
	BarrierISH   BarrierOption = 11 // A64_DMB_ISH (the LL/SC fetch atomics' trailing barrier)
	BarrierLD    BarrierOption = 13
	BarrierST    BarrierOption = 14
	BarrierSY    BarrierOption = 15
)

func (o BarrierOption) String() string {
	names := [...]string{1: "oshld", 2: "oshst", 3: "osh", 5: "nshld", 6: "nshst", 7: "nsh",
		9: "ishld", 10: "ishst", 11: "ish", 13: "ld", 14: "st", 15: "sy"}
	if int(o) < len(names) && names[o] != "" {
		return names[o]
	}
	return "#?"
}

func barrier(op uint32, o BarrierOption) (uint32, error) {
	// Options 0, 4, 8 and 12 are not barriers (0 and 4 are SSBB/PSSBB
	// in the DSB space, the rest reserved).
	if o > 15 || o&3 == 0 {
		return 0, errInval("barrier option %d not supported", o)
	}
	return op | uint32(o)<<8, nil
}

// Dmb encodes DMB <option> (A64_DMB_ISH is Dmb(BarrierISH)).
func Dmb(o BarrierOption) (uint32, error) { return barrier(0xd50330bf, o) }

// Dsb encodes DSB <option> (A64_DSB_NSH is Dsb(BarrierNSH)).
func Dsb(o BarrierOption) (uint32, error) { return barrier(0xd503309f, o) }

// SysReg is a system register as its MRS operand fields
// op0:op1:CRn:CRm:op2, packed as bits 19..5 of the instruction
// (o0 = op0-2 at bit 19).
type SysReg uint32

// System registers the JIT reads, as sysreg(op0, op1, CRn, CRm, op2).
const (
	// SysRegSP_EL0 (3,0,4,1,0) holds current (the task_struct pointer) in
	// the kernel: the inlined bpf_get_current_task and
	// bpf_get_smp_processor_id.
	SysRegSP_EL0 SysReg = (3-2)<<19 | 0<<16 | 4<<12 | 1<<8 | 0<<5
	// SysRegTPIDR_EL1 (3,0,13,0,4) is the per-CPU offset
	// (BPF_MOV64_PERCPU_REG without VHE).
	SysRegTPIDR_EL1 SysReg = (3-2)<<19 | 0<<16 | 13<<12 | 0<<8 | 4<<5
	// SysRegTPIDR_EL2 (3,4,13,0,2) is the per-CPU offset under VHE.
	SysRegTPIDR_EL2 SysReg = (3-2)<<19 | 4<<16 | 13<<12 | 0<<8 | 2<<5
)

// Mrs encodes MRS Xt, <sysreg> (A64_MRS_*).
func Mrs(rt Reg, sr SysReg) (uint32, error) {
	if err := checkZR("rt", rt, true); err != nil {
		return 0, err
	}
	if uint32(sr)&^0xfffe0 != 0 {
		return 0, errInval("bad system register %#x", uint32(sr))
	}
	return 0xd5300000 | uint32(sr) | rt.Num(), nil
}
