package verifier

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// accessKind tells check_mem_access what happens at the address.
type accessKind uint8

const (
	accessRead accessKind = iota
	accessWrite
)

// checkLoad is check_load_mem for LDX (and LDX|MEMSX).
func (e *env) checkLoad(in *insn.Insn) error {
	if err := e.checkRegRead(in.Src); err != nil {
		return err
	}
	if err := e.checkRegWrite(in.Dst); err != nil {
		return err
	}
	return e.checkMemAccess(in.Src, int(in.Off), insn.SizeBytes(in.SizeBits()), accessRead, int(in.Dst), false, in.Mode() == insn.MEMSX)
}

// checkStore is check_store_reg for STX.
func (e *env) checkStore(in *insn.Insn) error {
	if err := e.checkRegRead(in.Src); err != nil {
		return err
	}
	if err := e.checkRegRead(in.Dst); err != nil {
		return err
	}
	return e.checkMemAccess(in.Dst, int(in.Off), insn.SizeBytes(in.SizeBits()), accessWrite, int(in.Src), false, false)
}

// checkStoreImm is the BPF_ST part of do_check: a store of the immediate.
func (e *env) checkStoreImm(in *insn.Insn) error {
	if err := e.checkRegRead(in.Dst); err != nil {
		return err
	}
	return e.checkMemAccess(in.Dst, int(in.Off), insn.SizeBytes(in.SizeBits()), accessWrite, -1, false, false)
}

// checkAtomic is check_atomic: read-modify-write operations on W and DW,
// and (cpu v4, Linux 6.15) load-acquire and store-release.
func (e *env) checkAtomic(in insn.Insn) error {
	switch in.Imm {
	case insn.ADD, insn.ADD | insn.Fetch, insn.AND, insn.AND | insn.Fetch,
		insn.OR, insn.OR | insn.Fetch, insn.XOR, insn.XOR | insn.Fetch,
		insn.Xchg, insn.Cmpxchg:
		return e.checkAtomicRMW(in)
	case insn.LoadAcq:
		if err := e.checkRegRead(in.Src); err != nil {
			return err
		}
		if err := e.checkRegWrite(in.Dst); err != nil {
			return err
		}
		if err := e.atomicPtrOK(in.Src, in); err != nil {
			return err
		}
		return e.checkMemAccess(in.Src, int(in.Off), insn.SizeBytes(in.SizeBits()), accessRead, int(in.Dst), true, false)
	case insn.StoreRel:
		if err := e.checkRegRead(in.Src); err != nil {
			return err
		}
		if err := e.checkRegRead(in.Dst); err != nil {
			return err
		}
		if err := e.atomicPtrOK(in.Dst, in); err != nil {
			return err
		}
		return e.checkMemAccess(in.Dst, int(in.Off), insn.SizeBytes(in.SizeBits()), accessWrite, int(in.Src), true, false)
	}
	return e.errorf(uapi.EINVAL, "BPF_ATOMIC uses invalid atomic opcode %02x", in.Imm)
}

func (e *env) atomicPtrOK(regno uint8, in insn.Insn) error {
	r := &e.regs()[regno]
	if r.typ == ptrToCtx || r.isPkt() {
		return e.errorf(uapi.EACCES, "BPF_ATOMIC stores into R%d %s is not allowed", regno, r.typeName())
	}
	if r.typ == constPtrToMap {
		// The kernel reads the map structure, then refuses the write.
		return e.errorf(uapi.EACCES, "only read from %s is supported", mapStructName(e.mapOf(r)))
	}
	return nil
}

func (e *env) checkAtomicRMW(in insn.Insn) error {
	size := in.SizeBits()
	if size != insn.W && size != insn.DW {
		return e.errorf(uapi.EINVAL, "invalid atomic operand size")
	}
	if err := e.checkRegRead(in.Src); err != nil {
		return err
	}
	if err := e.checkRegRead(in.Dst); err != nil {
		return err
	}
	if in.Imm == insn.Cmpxchg {
		if err := e.checkRegRead(insn.R0); err != nil {
			return err
		}
	}
	if err := e.atomicPtrOK(in.Dst, in); err != nil {
		return err
	}
	load := -1
	if in.Imm&insn.Fetch != 0 {
		load = int(in.Src)
		if in.Imm == insn.Cmpxchg {
			load = insn.R0
		}
		if err := e.checkRegWrite(uint8(load)); err != nil {
			return err
		}
		e.regs()[load].markUnknown()
	}
	n := insn.SizeBytes(size)
	if err := e.checkMemAccess(in.Dst, int(in.Off), n, accessRead, -1, true, false); err != nil {
		return err
	}
	if load >= 0 {
		if err := e.checkMemAccess(in.Dst, int(in.Off), n, accessRead, load, true, false); err != nil {
			return err
		}
	}
	return e.checkMemAccess(in.Dst, int(in.Off), n, accessWrite, -1, true, false)
}

// checkMemAccess is check_mem_access: an access of size bytes at off from
// the pointer in regno; value is the register loaded into or stored from
// (-1 for a store of an immediate or a probe).
func (e *env) checkMemAccess(regno uint8, off, size int, t accessKind, value int, strictAlign, ldsx bool) error {
	regs := e.regs()
	reg := &regs[regno]
	if err := e.checkAlignment(reg, off, size, strictAlign); err != nil {
		return err
	}
	off += int(reg.off)
	var err error
	switch {
	case reg.typ == ptrToMapValue && !reg.maybeNull:
		m := e.mapOf(reg)
		if t == accessWrite && m.Flags&uapi.BPF_F_RDONLY_PROG != 0 {
			return e.errorf(uapi.EACCES, "write into map forbidden, value_size=%d off=%d size=%d", m.ValueSize, off, size)
		}
		if t == accessRead && m.Flags&uapi.BPF_F_WRONLY_PROG != 0 {
			return e.errorf(uapi.EACCES, "read from map forbidden, value_size=%d off=%d size=%d", m.ValueSize, off, size)
		}
		if err := e.checkMemRegion(regno, off, size, int(m.ValueSize), false); err != nil {
			return err
		}
		if err := e.checkMapFields(reg, m, off, size); err != nil {
			return err
		}
		if t == accessRead && value >= 0 {
			v, known, err := rdonlyMapRead(m, reg, off, size, ldsx)
			if err != nil {
				errno := uapi.EINVAL
				errors.As(err, &errno)
				return e.errorf(errno, "%v", err)
			}
			if known {
				regs[value].markKnown(v)
			} else {
				regs[value].markUnknown()
			}
		}
	case reg.typ == ptrToMapKey:
		if t == accessWrite {
			return e.errorf(uapi.EACCES, "write to change key R%d not allowed", regno)
		}
		if err := e.checkMemRegion(regno, off, size, int(e.mapOf(reg).KeySize), false); err != nil {
			return err
		}
		if value >= 0 {
			regs[value].markUnknown()
		}
	case reg.typ == ptrToMem && !reg.maybeNull:
		if t == accessWrite && reg.rdonly {
			return e.errorf(uapi.EACCES, "R%d cannot write into %s", regno, reg.typeName())
		}
		if err := e.checkMemRegion(regno, off, size, int(reg.memSize), false); err != nil {
			return err
		}
		if value >= 0 && (t == accessRead || reg.rdonly) {
			regs[value].markUnknown()
		}
	case reg.typ == ptrToCtx:
		if err := e.checkPtrOffReg(reg, regno, false); err != nil {
			return err
		}
		f, ok := e.cfg.Type.ValidAccess(off, size, t == accessWrite, ldsx)
		if f.Msg != "" {
			e.log.printf("%s", f.Msg)
		}
		if !ok {
			return e.errorf(uapi.EACCES, "invalid bpf_context access off=%d size=%d", off, size)
		}
		if f.Kind == CtxUnsupported {
			return e.errorf(uapi.EINVAL, "context access off=%d size=%d is not simulated by bpfsim yet", off, size)
		}
		a := &e.aux[e.insnIdx]
		a.CtxAccess, a.CtxFieldSize = true, f.FieldSize
		e.maxCtxOffset = max(e.maxCtxOffset, off+size)
		if t == accessRead && value >= 0 {
			switch f.Kind {
			case CtxScalar:
				regs[value].markUnknown()
			case CtxPacket:
				regs[value].markPtr(ptrToPacket)
			case CtxPacketEnd:
				regs[value].markPtr(ptrToPacketEnd)
			case CtxPacketMeta:
				regs[value].markPtr(ptrToPacketMeta)
			case CtxBTFID, CtxBuf:
				e.markCtxArg(&regs[value], f.Arg)
			}
		}
	case reg.typ == ptrToStack:
		if err := e.checkStackBounds(regno, off, size, false, t); err != nil {
			return err
		}
		if t == accessRead {
			err = e.checkStackRead(regno, off, size, value)
		} else {
			err = e.checkStackWrite(regno, off, size, value)
		}
		if err != nil {
			return err
		}
	case reg.isPkt():
		if t == accessWrite && !e.cfg.Type.DirectPacketAccess(true) {
			return e.errorf(uapi.EACCES, "cannot write into packet")
		}
		if t == accessWrite {
			e.seenDirectWrite = true
		}
		if err := e.checkPacketAccess(regno, off, size, false); err != nil {
			return err
		}
		if t == accessRead && value >= 0 {
			regs[value].markUnknown()
		}
	case reg.typ == ptrToBuf && !reg.maybeNull:
		if err := e.checkBufAccess(reg, regno, off, size, t); err != nil {
			return err
		}
		if value >= 0 && (t == accessRead || reg.rdonly) {
			regs[value].markUnknown()
		}
	case reg.typ == ptrToBTFID && !reg.maybeNull:
		if err := e.checkBTFAccess(reg, regno, off, size, t, value); err != nil {
			return err
		}
	case reg.typ == constPtrToMap && !reg.maybeNull:
		// The kernel reads struct bpf_map's fields through its BTF,
		// which bpfsim does not have; writes are refused either way.
		if t == accessWrite {
			return e.errorf(uapi.EACCES, "only read from %s is supported", mapStructName(e.mapOf(reg)))
		}
		return e.errorf(uapi.EACCES, "R%d reading struct %s fields is not supported by bpfsim (no kernel BTF)", regno, mapStructName(e.mapOf(reg)))
	default:
		return e.errorf(uapi.EACCES, "R%d invalid mem access '%s'", regno, reg.typeName())
	}
	if size < regSize && value >= 0 && t == accessRead && regs[value].typ == scalarValue {
		if ldsx {
			regs[value].coerceToSizeSX(size)
		} else {
			regs[value].coerceToSize(size)
		}
	}
	return nil
}

// checkAlignment is check_ptr_alignment for a kernel that is not built
// with strict alignment: only stack accesses (and atomics) must be
// aligned; packet offsets count NET_IP_ALIGN.
func (e *env) checkAlignment(reg *regState, off, size int, strict bool) error {
	desc := ""
	switch reg.typ {
	case ptrToPacket, ptrToPacketMeta:
		if !strict || size == 1 {
			return nil
		}
		t := reg.varOff.add(tnumConst(uint64(2 + int64(reg.off) + int64(off))))
		if !t.isAligned(uint64(size)) {
			return e.errorf(uapi.EACCES, "misaligned packet access off %d+%s+%d+%d size %d", 2, reg.varOff, reg.off, off, size)
		}
		return nil
	case ptrToMapValue:
		desc = "value "
	case ptrToMapKey:
		desc = "key "
	case ptrToCtx:
		desc = "context "
	case ptrToStack:
		desc = "stack "
		strict = true
	}
	if !strict || size == 1 {
		return nil
	}
	t := reg.varOff.add(tnumConst(uint64(int64(reg.off) + int64(off))))
	if !t.isAligned(uint64(size)) {
		return e.errorf(uapi.EACCES, "misaligned %saccess off %s+%d+%d size %d", desc, reg.varOff, reg.off, off, size)
	}
	return nil
}

// checkPtrOffReg is __check_ptr_off_reg: pointers that must be used as
// they were handed out.
func (e *env) checkPtrOffReg(reg *regState, regno uint8, fixedOffOK bool) error {
	if reg.off < 0 {
		return e.errorf(uapi.EACCES, "negative offset %s ptr R%d off=%d disallowed", reg.typeName(), regno, reg.off)
	}
	if !fixedOffOK && reg.off != 0 {
		return e.errorf(uapi.EACCES, "dereference of modified %s ptr R%d off=%d disallowed", reg.typeName(), regno, reg.off)
	}
	if !reg.isConst() || reg.varOff.value != 0 {
		return e.errorf(uapi.EACCES, "variable %s access var_off=%s disallowed", reg.typeName(), reg.varOff)
	}
	return nil
}

// checkMemRegion is check_mem_region_access: both ends of the pointer's
// range must be inside [0, memSize).
func (e *env) checkMemRegion(regno uint8, off, size, memSize int, zeroOK bool) error {
	reg := &e.regs()[regno]
	if reg.smin < 0 && (reg.smin == -1<<63 || int64(off)+reg.smin != int64(int32(int64(off)+reg.smin)) || reg.smin+int64(off) < 0) {
		return e.errorf(uapi.EACCES, "R%d min value is negative, either use unsigned index or do a if (index >=0) check.", regno)
	}
	if err := e.memAccessOKQuiet(regno, reg.smin+int64(off), size, memSize, zeroOK); err != nil {
		e.log.always(err.Error())
		return e.errorf(uapi.EACCES, "R%d min value is outside of the allowed memory range", regno)
	}
	if reg.umax >= maxVarOff {
		return e.errorf(uapi.EACCES, "R%d unbounded memory access, make sure to bounds check any such access", regno)
	}
	if err := e.memAccessOKQuiet(regno, int64(reg.umax)+int64(off), size, memSize, zeroOK); err != nil {
		e.log.always(err.Error())
		return e.errorf(uapi.EACCES, "R%d max value is outside of the allowed memory range", regno)
	}
	return nil
}

// memAccessOKQuiet is memAccessOK without ending the verification, for
// callers that add their own last line.
func (e *env) memAccessOKQuiet(regno uint8, off int64, size, memSize int, zeroOK bool) error {
	sizeOK := size > 0 || (size == 0 && zeroOK)
	if off >= 0 && sizeOK && off+int64(size) <= int64(memSize) {
		return nil
	}
	reg := &e.regs()[regno]
	var msg string
	switch {
	case reg.typ == ptrToMapValue:
		msg = sprintf("invalid access to map value, value_size=%d off=%d size=%d", memSize, off, size)
	case reg.typ == ptrToMapKey:
		msg = sprintf("invalid access to map key, key_size=%d off=%d size=%d", memSize, off, size)
	case reg.isPkt():
		msg = sprintf("invalid access to packet, off=%d size=%d, R%d(id=%d,off=%d,r=%d)", off, size, regno, reg.id, off, memSize)
	default:
		msg = sprintf("invalid access to memory, mem_size=%d off=%d size=%d", memSize, off, size)
	}
	return &Error{Errno: uapi.EACCES, Msg: msg}
}

// checkPacketAccess is check_packet_access: the access must be inside the
// range a comparison with data_end proved.
func (e *env) checkPacketAccess(regno uint8, off, size int, zeroOK bool) error {
	reg := &e.regs()[regno]
	if reg.smin < 0 {
		return e.errorf(uapi.EACCES, "R%d min value is negative, either use unsigned index or do a if (index >=0) check.", regno)
	}
	if reg.rng < 0 {
		return e.errorf(uapi.EINVAL, "R%d offset is outside of the packet", regno)
	}
	if err := e.memAccessOKQuiet(regno, int64(off), size, int(reg.rng), zeroOK); err != nil {
		e.log.always(err.Error())
		return e.errorf(uapi.EACCES, "R%d offset is outside of the packet", regno)
	}
	return nil
}

// Stack accesses.

// stackFrame returns the frame a stack pointer points into.
func (e *env) stackFrame(reg *regState) *funcState { return e.cur.frames[reg.frameno] }

// checkStackBounds is check_stack_access_within_bounds.
func (e *env) checkStackBounds(regno uint8, off, size int, helper bool, t accessKind) error {
	reg := &e.regs()[regno]
	// Helpers' accesses are named by what they do since Linux 6.14
	// (before, " indirect access to").
	extra := " write to"
	if t == accessRead {
		extra = " read from"
	}
	var minOff, maxOff int64
	if reg.isConst() {
		minOff = int64(reg.varOff.value) + int64(off)
		maxOff = minOff + int64(size)
	} else {
		if reg.smax >= maxVarOff || reg.smin <= -maxVarOff {
			return e.errorf(uapi.EACCES, "invalid unbounded variable-offset%s stack R%d", extra, regno)
		}
		minOff = reg.smin + int64(off)
		maxOff = reg.smax + int64(off) + int64(size)
	}
	// Privileged: reads of never-written stack are allowed, so any slot
	// within MAX_BPF_STACK is in bounds.
	if minOff < -maxStack || minOff > -1 || maxOff > 0 || size < 0 {
		errno := uapi.EACCES
		if minOff >= -maxStack && minOff <= -1 {
			errno = uapi.EINVAL
		}
		if reg.isConst() {
			return e.errorf(errno, "invalid%s stack R%d off=%d size=%d", extra, regno, off, size)
		}
		return e.errorf(errno, "invalid variable-offset%s stack R%d var_off=%s off=%d size=%d", extra, regno, reg.varOff, off, size)
	}
	f := e.stackFrame(reg)
	f.growStack(int(-minOff))
	e.noteStackDepth(f)
	return nil
}

// noteStackDepth records the deepest stack use of a function.
func (e *env) noteStackDepth(f *funcState) {
	if d := f.allocated(); d > e.subprogs[f.subprog].StackDepth {
		e.subprogs[f.subprog].StackDepth = d
	}
}

func slotOf(off int) (spi, idx int) {
	slot := -off - 1
	return slot / regSize, slot % regSize
}

// checkStackWrite is check_stack_write (fixed and variable offsets).
func (e *env) checkStackWrite(regno uint8, off, size, value int) error {
	reg := &e.regs()[regno]
	f := e.stackFrame(reg)
	in := e.insns[e.insnIdx]
	if !reg.isConst() {
		return e.checkStackWriteVarOff(f, reg, off, size, value, in)
	}
	off += int(int64(reg.varOff.value))
	spi, _ := slotOf(off)
	if err := e.destroyIfDynptrStackSlot(f, spi); err != nil {
		return err
	}
	slot := &f.stack[spi]
	e.scratchSlot(spi)
	if size == regSize {
		e.markStackWritten(int(f.frameno), spi)
	}
	var vreg *regState
	if value >= 0 {
		vreg = &e.regs()[value]
	}
	aligned := off%regSize == 0
	switch {
	case vreg != nil && aligned && vreg.typ == scalarValue:
		fits := regWidth(vreg) <= 8*size
		if fits {
			e.assignScalarID(vreg)
		}
		saveRegister(slot, vreg, size)
		if !fits {
			slot.spilled.id = 0
		}
		e.pushHistory(stackAccessFlags(f.frameno, spi), nil)
	case vreg == nil && aligned && in.Class() == insn.ST:
		var tmp regState
		tmp.markKnown(uint64(int64(in.Imm)))
		saveRegister(slot, &tmp, size)
		e.pushHistory(stackAccessFlags(f.frameno, spi), nil)
	case vreg != nil && vreg.isPointer():
		if size != regSize {
			return e.errorf(uapi.EACCES, "invalid size of register spill")
		}
		if f != e.cur.cur() && vreg.typ == ptrToStack {
			return e.errorf(uapi.EINVAL, "cannot spill pointers to stack into stack frame of the caller")
		}
		saveRegister(slot, vreg, size)
		e.pushHistory(stackAccessFlags(f.frameno, spi), nil)
	default:
		scrubSpecial(slot)
		typ := stackMisc
		if (vreg != nil && vreg.typ == scalarValue && vreg.isConst() && vreg.constant() == 0) ||
			(vreg == nil && in.Class() == insn.ST && in.Imm == 0) {
			typ = stackZero
			// STACK_ZERO relies on the value: it must stay zero.
			if value >= 0 {
				if err := e.markPrecise(uint8(value)); err != nil {
					return err
				}
			}
		}
		for i := 0; i < size; i++ {
			_, idx := slotOf(off + i)
			slot.types[idx] = typ
		}
	}
	return nil
}

// regWidth is get_reg_width: how many low bits a scalar may use.
func regWidth(r *regState) int {
	if r.umax == 0 {
		return 0
	}
	n := 0
	for v := r.umax; v != 0; v >>= 1 {
		n++
	}
	return n
}

// saveRegister is save_register_state: a spill of size bytes at the top
// of the slot.
func saveRegister(slot *stackSlot, r *regState, size int) {
	slot.spilled = *r
	i := regSize
	for ; i > regSize-size; i-- {
		slot.types[i-1] = stackSpill
	}
	for ; i > 0; i-- {
		if t := slot.types[i-1]; t != stackZero && t != stackInvalid {
			slot.types[i-1] = stackMisc
		}
	}
}

// scrubSpecial is scrub_special_slot: a plain write destroys a spill, or
// the part of an iterator the slot held (its reference stays held, and
// leaks).
func scrubSpecial(slot *stackSlot) {
	slot.spilled.typ = notInit
	if slot.isSpilled() || slot.isIter() {
		for i := range slot.types {
			if slot.types[i] != stackInvalid {
				slot.types[i] = stackMisc
			}
		}
	}
}

func (e *env) checkStackWriteVarOff(f *funcState, ptr *regState, off, size, value int, in insn.Insn) error {
	minOff := int(ptr.smin) + off
	maxOff := int(ptr.smax) + off + size
	writingZero := false
	if value >= 0 {
		v := &e.regs()[value]
		writingZero = v.typ == scalarValue && v.isConst() && v.constant() == 0
	} else if in.Class() == insn.ST && in.Imm == 0 {
		writingZero = true
	}
	for i := minOff; i < maxOff; i++ {
		spi, _ := slotOf(i)
		if err := e.destroyIfDynptrStackSlot(f, spi); err != nil {
			return err
		}
	}
	zeroUsed := false
	for i := minOff; i < maxOff; i++ {
		spi, idx := slotOf(i)
		e.scratchSlot(spi)
		slot := &f.stack[spi]
		t := &slot.types[idx]
		if writingZero && *t == stackSpill && slot.isSpilledScalar() && slot.spilled.isConst() && slot.spilled.constant() == 0 {
			zeroUsed = true
			continue
		}
		scrubSpecial(slot)
		nt := stackMisc
		if writingZero && *t == stackZero {
			nt = stackZero
			zeroUsed = true
		}
		*t = nt
	}
	if zeroUsed && value >= 0 {
		return e.markPrecise(uint8(value))
	}
	return nil
}

// checkStackRead is check_stack_read (fixed and variable offsets).
func (e *env) checkStackRead(regno uint8, off, size, dst int) error {
	reg := &e.regs()[regno]
	f := e.stackFrame(reg)
	if !reg.isConst() {
		if dst < 0 {
			return e.errorf(uapi.EACCES, "variable offset stack pointer cannot be passed into helper function; var_off=%s off=%d size=%d", reg.varOff, off, size)
		}
		if err := e.checkStackRangeInit(regno, off, size, false, false, false, false); err != nil {
			return err
		}
		e.markRegStackRead(f, int(reg.smin)+off, int(reg.smax)+off+size, dst)
		return nil
	}
	off += int(int64(reg.varOff.value))
	spi, _ := slotOf(off)
	slot := &f.stack[spi]
	e.scratchSlot(spi)
	e.markStackRead(int(f.frameno), 1<<uint(spi))
	regs := e.regs()
	if slot.isSpilled() {
		spillSize := 1
		for i := regSize - 1; i > 0 && slot.types[i-1] == stackSpill; i-- {
			spillSize++
		}
		if size != regSize || spillSize != regSize {
			if slot.spilled.typ != scalarValue {
				return e.errorf(uapi.EACCES, "invalid size of register fill")
			}
			if dst < 0 {
				return nil
			}
			if size <= spillSize && narrowStackOK(off, size, spillSize) {
				regs[dst] = slot.spilled
				if regWidth(&slot.spilled) > size*8 {
					regs[dst].id = 0
				}
				e.pushHistory(stackAccessFlags(f.frameno, spi), nil)
				return nil
			}
			e.noteUninitRead(f, off, off+size)
			spills, zeros := 0, 0
			for i := 0; i < size; i++ {
				_, idx := slotOf(off + i)
				switch slot.types[idx] {
				case stackSpill:
					spills++
				case stackZero:
					zeros++
				}
			}
			switch {
			case spills == size && slot.spilled.isConst() && slot.spilled.constant() == 0:
				regs[dst].markKnown(0)
				e.pushHistory(stackAccessFlags(f.frameno, spi), nil)
			case zeros == size:
				regs[dst].markKnown(0)
			default:
				regs[dst].markUnknown()
			}
			return nil
		}
		if dst >= 0 {
			regs[dst] = slot.spilled
		}
		e.pushHistory(stackAccessFlags(f.frameno, spi), nil)
		return nil
	}
	for i := 0; i < size; i++ {
		if _, idx := slotOf(off + i); isStackObj(slot.types[idx]) {
			return e.errorf(uapi.EACCES, "invalid read from stack off %d+%d size %d", off, i, size)
		}
	}
	if dst >= 0 {
		e.markRegStackRead(f, off, off+size, dst)
	} else {
		e.noteUninitRead(f, off, off+size)
	}
	return nil
}

// narrowStackOK is bpf_stack_narrow_access_ok: a fill of the low part of a
// spilled scalar (little-endian: the lowest address).
func narrowStackOK(off, size, spillSize int) bool {
	return off%regSize == 0 && size <= spillSize
}

// markRegStackRead is mark_reg_stack_read: zeros read as zero, anything
// else as an unknown number.
func (e *env) markRegStackRead(f *funcState, minOff, maxOff, dst int) {
	e.noteUninitRead(f, minOff, maxOff)
	zeros := 0
	for i := minOff; i < maxOff; i++ {
		spi, idx := slotOf(i)
		// The log shows the slots up to the first byte not zero.
		e.scratchSlot(spi)
		if f.stack[spi].types[idx] != stackZero {
			break
		}
		zeros++
	}
	if zeros == maxOff-minOff {
		e.regs()[dst].markKnown(0)
	} else {
		e.regs()[dst].markUnknown()
	}
}

// noteUninitRead records a read of stack bytes never written.
func (e *env) noteUninitRead(f *funcState, minOff, maxOff int) {
	for i := minOff; i < maxOff && !e.readsUninit; i++ {
		spi, idx := slotOf(i)
		if spi >= len(f.stack) || spi >= 0 && f.stack[spi].types[idx] == stackInvalid {
			e.readsUninit = true
		}
	}
}

// checkStackRangeInit is check_stack_range_initialized: memory a helper
// reads (or, with raw, writes) on the stack. A privileged program may
// pass never-written stack.
// clobber marks what the helper may have written as unknown.
func (e *env) checkStackRangeInit(regno uint8, off, size int, zeroOK, helper, clobber, raw bool) error {
	reg := &e.regs()[regno]
	f := e.stackFrame(reg)
	if size == 0 && !zeroOK {
		return e.errorf(uapi.EACCES, "invalid zero-sized read")
	}
	t := accessRead
	if clobber {
		t = accessWrite
	}
	if err := e.checkStackBounds(regno, off, size, helper, t); err != nil {
		return err
	}
	var minOff, maxOff int
	if reg.isConst() {
		minOff = int(int64(reg.varOff.value)) + off
		maxOff = minOff
	} else {
		raw = false
		minOff = int(reg.smin) + off
		maxOff = int(reg.smax) + off
	}
	if raw {
		// A helper writing this memory must not write over a dynptr
		// (it might also be passed one).
		for i := minOff; i < maxOff+size; i++ {
			spi, idx := slotOf(i)
			if spi < len(f.stack) && f.stack[spi].types[idx] == stackDynptr {
				return e.errorf(uapi.EACCES, "potential write to dynptr at off=%d disallowed", i)
			}
		}
		return nil
	}
	var read uint64
	for i := minOff; i < maxOff+size; i++ {
		spi, _ := slotOf(i)
		read |= 1 << uint(spi)
	}
	e.markStackRead(int(f.frameno), read)
	if !clobber {
		e.noteUninitRead(f, minOff, maxOff+size)
	}
	for i := minOff; i < maxOff+size; i++ {
		spi, idx := slotOf(i)
		slot := &f.stack[spi]
		switch slot.types[idx] {
		case stackMisc:
			continue
		case stackZero, stackInvalid:
			if clobber {
				slot.types[idx] = stackMisc // the helper may write anything
			}
			continue
		}
		if isStackObj(slot.types[idx]) {
			if reg.isConst() {
				return e.errorf(uapi.EACCES, "invalid read from stack R%d off %d+%d size %d", regno, minOff, i-minOff, size)
			}
			return e.errorf(uapi.EACCES, "invalid read from stack R%d var_off %s+%d size %d", regno, reg.varOff, i-minOff, size)
		}
		if slot.isSpilled() {
			if clobber {
				slot.spilled.markUnknown()
				for j := range slot.types {
					if slot.types[j] != stackInvalid {
						slot.types[j] = stackMisc
					}
				}
			}
			continue
		}
	}
	return nil
}

var sprintf = fmt.Sprintf

// mapStructName is the kernel structure behind a map type (map_btf_id).
func mapStructName(m *maps.Map) string {
	switch m.Attr.Type {
	case uapi.MapTypeArray, uapi.MapTypePercpuArray, uapi.MapTypeProgArray, uapi.MapTypePerfEventArray, uapi.MapTypeArrayOfMaps:
		return "bpf_array"
	case uapi.MapTypeHash, uapi.MapTypePercpuHash, uapi.MapTypeLRUHash, uapi.MapTypeLRUPercpuHash, uapi.MapTypeHashOfMaps:
		return "bpf_htab"
	}
	return "bpf_map"
}

// rdonlyMapRead is the read-only map case of check_mem_access: a load at
// a constant offset from a map that programs cannot write
// (BPF_F_RDONLY_PROG) and user space no longer can (frozen), such as
// .rodata, yields the value there as a known scalar
// (bpf_map_direct_read). known is false for other maps and offsets. As in
// the kernel, a map whose type can address its value directly but not
// this map's (an array of more than one element) fails the load.
func rdonlyMapRead(m *maps.Map, reg *regState, off, size int, ldsx bool) (v uint64, known bool, err error) {
	if !reg.isConst() || m.Flags&uapi.BPF_F_RDONLY_PROG == 0 || !m.Frozen() {
		return 0, false, nil
	}
	dv, ok := m.Ops.(maps.DirectValuer)
	if !ok {
		return 0, false, nil
	}
	addr, err := dv.DirectValueAddr(uint32(int64(off) + int64(reg.constant())))
	if errors.Is(err, maps.ErrNoDirectValue) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	var b [8]byte
	if err := m.Kernel.Memory().Read(addr, b[:size]); err != nil {
		return 0, false, err
	}
	v = binary.LittleEndian.Uint64(b[:])
	if ldsx {
		shift := 64 - 8*uint(size)
		v = uint64(int64(v<<shift) >> shift)
	}
	return v, true, nil
}
