package verifier

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/insn"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// callMeta is struct bpf_call_arg_meta.
type callMeta struct {
	mapPtr *maps.Map
	// constKey is the constant key of a lookup, -1 if unknown.
	constKey int64
	// rawRegno and rawSize describe memory the helper fills (MEM_UNINIT):
	// it is marked written after the arguments are checked.
	rawRegno uint8
	rawSize  int
	raw      bool
	// memSize is the size of the memory the helper returns
	// (ArgConstAllocSizeOrZero).
	memSize uint32
	// releaseRegno is the argument the helper releases, 0 for none;
	// refObjID is the reference an argument belongs to.
	releaseRegno uint8
	refObjID     uint32
	// subprog is the callback an ArgPtrToFunc names.
	subprog int
	// dynptrID is the dynptr a slice comes from (bpf_dynptr_data).
	dynptrID uint32
	// mapUID is the map argument's map_uid; timerUID that of the map
	// value a timer argument is in.
	mapUID, timerUID uint32
}

// checkHelperCall is check_helper_call.
func (e *env) checkHelperCall(in insn.Insn, idx int) error {
	id := in.Imm
	fn := e.cfg.Helper(id)
	name := uapi.HelperName(id)
	if name == "" {
		name = "unknown"
	}
	if fn == nil {
		if uapi.HelperName(id) == "" {
			return e.errorf(uapi.EINVAL, "invalid func %s#%d", name, id)
		}
		return e.errorf(uapi.EINVAL, "program of this type cannot use helper %s#%d", name, id)
	}
	if fn.GPLOnly && !e.cfg.GPLCompatible {
		return e.errorf(uapi.EINVAL, "cannot call GPL-restricted function from non-GPL compatible program")
	}
	meta := callMeta{constKey: -1}
	changesPkt := fn.ChangesPktData
	for i := range fn.Args {
		if err := e.checkFuncArg(i, &meta, fn, name, id); err != nil {
			return err
		}
	}
	if err := e.recordFuncMap(&meta, id, idx); err != nil {
		return err
	}
	if err := e.recordFuncKey(&meta, id, idx); err != nil {
		return err
	}
	if fn.CheckFormat != nil {
		if err := e.checkFormatCall(fn); err != nil {
			return err
		}
	}
	if meta.raw {
		// The helper writes the buffer: it is initialised afterwards.
		for i := 0; i < meta.rawSize; i++ {
			if err := e.checkMemAccess(meta.rawRegno, i, 1, accessWrite, -1, false, false); err != nil {
				return err
			}
		}
	}
	if meta.releaseRegno != 0 {
		var released bool
		if fn.Args[meta.releaseRegno-insn.R1] == ArgPtrToDynptr {
			released = e.unmarkStackSlotsDynptr(&e.regs()[meta.releaseRegno])
		} else {
			released = meta.refObjID != 0 && e.releaseReference(meta.refObjID)
		}
		if !released {
			return e.errorf(uapi.EINVAL, "func %s#%d reference has not been acquired before", name, id)
		}
	}
	switch id {
	case uapi.FuncTailCall:
		if err := e.checkResourceLeak("tail_call", true); err != nil {
			return err
		}
	case uapi.FuncLoop:
		if err := e.checkLoopCall(idx, meta.subprog); err != nil {
			return err
		}
	case uapi.FuncForEachMapElem:
		if err := e.pushCallbackCall(idx, meta.subprog, setMapElemCallbackState); err != nil {
			return err
		}
	case uapi.FuncUserRingbufDrain:
		if err := e.pushCallbackCall(idx, meta.subprog, setUserRingbufCallbackState); err != nil {
			return err
		}
	case uapi.FuncTimerSetCallback:
		if err := e.pushAsyncCallback(idx, meta.subprog, meta.mapPtr); err != nil {
			return err
		}
	case uapi.FuncDynptrFromMem:
		if r1 := &e.regs()[insn.R1]; r1.typ != ptrToMapValue {
			return e.errorf(uapi.EACCES, "Unsupported reg type %s for bpf_dynptr_from_mem data", r1.typeName())
		}
	case uapi.FuncDynptrData:
		// The slice ends with the dynptr, and with its reference.
		s := e.dynptrReg(&e.regs()[insn.R1])
		if s == nil {
			return e.errorf(uapi.EFAULT, "verifier internal error: failed to obtain dynptr id")
		}
		if meta.refObjID != 0 {
			return e.errorf(uapi.EFAULT, "verifier internal error: meta.ref_obj_id already set")
		}
		meta.dynptrID, meta.refObjID = s.id, s.refObjID
	case uapi.FuncDynptrWrite:
		// A write through an skb dynptr may move the packet: its
		// slices and packet pointers end.
		if s := e.dynptrReg(&e.regs()[insn.R1]); s != nil && s.dynptrType == uapi.DynptrTypeSKB {
			changesPkt = true
		}
	}
	regs := e.regs()
	for r := insn.R0; r <= insn.R5; r++ {
		regs[r].markNotInit()
	}
	r0 := &regs[insn.R0]
	e.scratchReg(insn.R0)
	switch fn.Ret {
	case RetInteger:
		r0.markUnknown()
	case RetVoid:
		r0.markNotInit()
	case RetPtrToMapValueOrNull:
		if meta.mapPtr == nil {
			return e.errorf(uapi.EINVAL, "kernel subsystem misconfigured verifier")
		}
		r0.markPtr(ptrToMapValue)
		r0.mapIdx = e.mapIndex(meta.mapPtr)
		r0.mapUID = meta.mapUID
		// An array lookup at a constant index within bounds cannot fail
		// (Linux 6.14, "eliding map lookup nullness").
		if !(id == uapi.FuncMapLookupElem && elidesNullness(meta.mapPtr) &&
			meta.constKey >= 0 && meta.constKey < int64(meta.mapPtr.MaxEntries)) {
			r0.maybeNull = true
			e.idGen++
			r0.id = e.idGen
		} else if _, lock := meta.mapPtr.SpinLock(); lock {
			// The value's lock is taken and released through
			// pointers with its id (spinlock.go).
			e.idGen++
			r0.id = e.idGen
		}
	case RetPtrToRingbufMemOrNull:
		r0.markPtr(ptrToMem)
		r0.ringbuf, r0.maybeNull, r0.memSize = true, true, meta.memSize
		e.idGen++
		r0.id = e.idGen
	case RetPtrToDynptrMemOrNull:
		r0.markPtr(ptrToMem)
		r0.maybeNull, r0.memSize = true, meta.memSize
		e.idGen++
		r0.id = e.idGen
		r0.dynptrID, r0.refObjID = meta.dynptrID, meta.refObjID
	case RetPtrToBTFIDTrusted:
		if fn.RetStruct == nil {
			return e.errorf(uapi.EINVAL, "kernel subsystem misconfigured verifier")
		}
		r0.markPtr(ptrToBTFID)
		r0.btfIdx, r0.trusted = e.btfIndex(fn.RetStruct), true
	}
	if isAcquireFunction(id) {
		// The new reference's id replaces the null check's: finding
		// the pointer NULL releases it.
		ref := e.acquireReference(idx)
		r0.id, r0.refObjID = ref, ref
	}
	if id == uapi.FuncGetSmpProcessorID && fn.Ret == RetInteger {
		n := uint64(max(e.cfg.NumCPUs, 1) - 1)
		r0.umin, r0.umax, r0.u32min, r0.u32max = 0, n, 0, uint32(n)
		r0.smin, r0.smax, r0.s32min, r0.s32max = 0, int64(n), 0, int32(n)
		r0.sync()
	}
	if changesPkt {
		e.clearAllPktPointers()
	}
	return e.checkMapFuncCompat(meta.mapPtr, id, name)
}

// checkFuncArg is check_func_arg for the argument kinds bpfsim's helpers
// use.
func (e *env) checkFuncArg(arg int, meta *callMeta, fn *FuncProto, name string, id int32) error {
	regno := uint8(insn.R1 + arg)
	t := fn.Args[arg]
	if t == ArgDontCare {
		return nil
	}
	if err := e.checkRegRead(regno); err != nil {
		return err
	}
	reg := &e.regs()[regno]
	if t == ArgAnything {
		return nil
	}
	if (t == ArgPtrToStackOrNull || t == ArgPtrToMemOrNull || t == ArgPtrToUninitMemOrNull || t == ArgPtrToMapValueOrNull || t == ArgPtrToBTFIDOrNull) && reg.typ == scalarValue && reg.isConst() && reg.constant() == 0 {
		return nil // NULL: no type to check (the size after it must be 0)
	}
	if reg.isPkt() && !(fn.PktAccess && e.cfg.Type.DirectPacketAccess(false)) {
		return e.errorf(uapi.EACCES, "helper access to the packet is not allowed")
	}
	// The register's type must be one the argument accepts.
	var ok bool
	var expected string
	switch t {
	case ArgConstMapPtr:
		ok, expected = reg.typ == constPtrToMap && !reg.maybeNull, "map_ptr"
	case ArgPtrToCtx:
		ok, expected = reg.typ == ptrToCtx, "ctx"
	case ArgConstSize, ArgConstSizeOrZero, ArgConstAllocSizeOrZero:
		ok, expected = reg.typ == scalarValue, "scalar"
	case ArgPtrToRingbufMemRelease:
		ok, expected = reg.typ == ptrToMem && reg.ringbuf && !reg.maybeNull, "ringbuf_mem"
	case ArgPtrToFunc:
		ok, expected = reg.typ == ptrToFunc, "func"
	case ArgPtrToStackOrNull:
		ok, expected = reg.typ == ptrToStack, "fp"
	case ArgPtrToSpinLock:
		ok, expected = reg.typ == ptrToMapValue && !reg.maybeNull, "map_value, ptr_"
	case ArgPtrToTimer:
		ok, expected = reg.typ == ptrToMapValue && !reg.maybeNull, "map_value"
	case ArgPtrToDynptr:
		ok, expected = reg.typ == ptrToStack || reg.typ == constPtrToDynptr, "fp, dynptr_ptr"
	case ArgPtrToConstStr:
		ok, expected = reg.typ == ptrToMapValue && !reg.maybeNull, "map_value"
	case ArgPtrToBTFID, ArgPtrToBTFIDOrNull:
		// An argument that may be NULL takes a pointer that may be
		// (check_reg_type drops PTR_MAYBE_NULL for it).
		ok, expected = reg.typ == ptrToBTFID && (!reg.maybeNull || t == ArgPtrToBTFIDOrNull), "ptr_, trusted_ptr_, rcu_ptr_"
	case ArgPtrToMapKey, ArgPtrToMapValue, ArgPtrToMapValueOrNull, ArgPtrToUninitMapValue, ArgPtrToMem, ArgPtrToUninitMem, ArgPtrToMemOrNull, ArgPtrToUninitMemOrNull, ArgPtrToU32InOut, ArgPtrToU64Out:
		switch reg.typ {
		case ptrToStack, ptrToPacket, ptrToPacketMeta, ptrToMapValue, ptrToMapKey, ptrToMem, ptrToBuf:
			ok = !reg.maybeNull || t == ArgPtrToMapValueOrNull
		}
		expected = "fp, pkt, pkt_meta, map_key, map_value, mem, ringbuf_mem, buf, trusted_ptr_"
	}
	if !ok {
		return e.errorf(uapi.EACCES, "R%d type=%s expected=%s", regno, reg.typeName(), expected)
	}
	switch t {
	case ArgPtrToCtx:
		if err := e.checkPtrOffReg(reg, regno, false); err != nil {
			return err
		}
	case ArgPtrToBTFID, ArgPtrToBTFIDOrNull:
		if err := e.checkBTFArg(reg, regno, fn.ArgStruct[arg]); err != nil {
			return err
		}
	case ArgPtrToRingbufMemRelease:
		// check_func_arg_reg_off: what is released is the object
		// itself, not a pointer into it.
		if reg.off != 0 {
			return e.errorf(uapi.EINVAL, "R%d must have zero offset when passed to release func or trusted arg to kfunc", regno)
		}
		if err := e.checkPtrOffReg(reg, regno, false); err != nil {
			return err
		}
		if reg.refObjID == 0 {
			return e.errorf(uapi.EINVAL, "R%d must be referenced when passed to release function", regno)
		}
		meta.releaseRegno = regno
	case ArgPtrToDynptr:
		if fn.Dynptr[arg].Release {
			if err := e.checkDynptrRelease(reg, regno); err != nil {
				return err
			}
			meta.releaseRegno = regno
		}
	}
	if reg.refObjID != 0 {
		if meta.refObjID != 0 {
			return e.errorf(uapi.EFAULT, "verifier internal error: more than one arg with ref_obj_id R%d %d %d", regno, reg.refObjID, meta.refObjID)
		}
		meta.refObjID = reg.refObjID
	}
	switch t {
	case ArgPtrToConstStr:
		return e.checkRegConstStr(reg, regno)
	case ArgPtrToSpinLock:
		return e.processSpinLock(regno, id == uapi.FuncSpinLock)
	case ArgPtrToTimer:
		return e.processTimerFunc(regno, meta)
	case ArgPtrToDynptr:
		return e.processDynptrFunc(regno, e.insnIdx, fn.Dynptr[arg], 0)
	case ArgPtrToFunc:
		meta.subprog = reg.subprog
	case ArgConstAllocSizeOrZero:
		if !reg.isConst() {
			return e.errorf(uapi.EACCES, "R%d is not a known constant'", regno)
		}
		meta.memSize = uint32(reg.constant())
		return e.markPrecise(regno)
	case ArgConstMapPtr:
		if err := e.checkTimerMapArg(reg, meta); err != nil {
			return err
		}
		meta.mapPtr, meta.mapUID = e.mapOf(reg), reg.mapUID
	case ArgPtrToMapKey:
		if meta.mapPtr == nil {
			return e.errorf(uapi.EACCES, "invalid map_ptr to access map->key")
		}
		if err := e.checkHelperMem(regno, int(meta.mapPtr.KeySize), accessRead, false, nil); err != nil {
			return err
		}
		if elidesNullness(meta.mapPtr) {
			meta.constKey = e.constantMapKey(reg, int(meta.mapPtr.KeySize))
		}
	case ArgPtrToMapValue, ArgPtrToMapValueOrNull, ArgPtrToUninitMapValue:
		if meta.mapPtr == nil {
			return e.errorf(uapi.EACCES, "invalid map_ptr to access map->value")
		}
		kind := accessRead
		var m *callMeta
		if t == ArgPtrToUninitMapValue {
			kind, m = accessWrite, meta
			meta.raw = true
		}
		return e.checkHelperMem(regno, int(meta.mapPtr.ValueSize), kind, false, m)
	case ArgPtrToUninitMem, ArgPtrToUninitMemOrNull:
		meta.raw = true
	case ArgPtrToU32InOut:
		if err := e.checkHelperMem(regno, 4, accessWrite, false, nil); err != nil {
			return err
		}
		return e.checkAlignment(reg, 0, 4, true)
	case ArgPtrToU64Out:
		meta.raw = true
		if err := e.checkHelperMem(regno, 8, accessWrite, false, meta); err != nil {
			return err
		}
		return e.checkAlignment(reg, 0, 8, true)
	case ArgConstSize, ArgConstSizeOrZero:
		kind := accessRead
		if prev := fn.Args[arg-1]; prev == ArgPtrToUninitMem || prev == ArgPtrToUninitMemOrNull {
			kind = accessWrite
		}
		return e.checkMemSizeReg(reg, regno, kind, t == ArgConstSizeOrZero, meta)
	}
	return nil
}

// checkMemSizeReg is check_mem_size_reg: a size argument bounds the memory
// argument before it.
func (e *env) checkMemSizeReg(reg *regState, regno uint8, kind accessKind, zeroOK bool, meta *callMeta) error {
	if !reg.isConst() {
		meta = nil
	}
	if reg.smin < 0 {
		return e.errorf(uapi.EACCES, "R%d min value is negative, either use unsigned or 'var &= const'", regno)
	}
	if reg.umin == 0 && !zeroOK {
		return e.errorf(uapi.EACCES, "R%d invalid zero-sized read: u64=[%d,%d]", regno, int64(reg.umin), int64(reg.umax))
	}
	if reg.umax >= maxVarSize {
		return e.errorf(uapi.EACCES, "R%d unbounded memory access, use 'var &= const' or 'if (var < const)'", regno)
	}
	if meta != nil && !meta.raw {
		meta = nil
	}
	if err := e.checkHelperMem(regno-1, int(reg.umax), kind, zeroOK, meta); err != nil {
		return err
	}
	return e.markPrecise(regno)
}

// checkHelperMem is check_helper_mem_access: size bytes at the pointer in
// regno, read or written by a helper.
func (e *env) checkHelperMem(regno uint8, size int, kind accessKind, zeroOK bool, meta *callMeta) error {
	reg := &e.regs()[regno]
	switch reg.typ {
	case ptrToPacket, ptrToPacketMeta:
		return e.checkPacketAccess(regno, int(reg.off), size, zeroOK)
	case ptrToMapValue:
		m := e.mapOf(reg)
		if kind == accessWrite && m.Flags&uapi.BPF_F_RDONLY_PROG != 0 {
			return e.errorf(uapi.EACCES, "write into map forbidden, value_size=%d off=%d size=%d", m.ValueSize, reg.off, size)
		}
		if kind == accessRead && m.Flags&uapi.BPF_F_WRONLY_PROG != 0 {
			return e.errorf(uapi.EACCES, "read from map forbidden, value_size=%d off=%d size=%d", m.ValueSize, reg.off, size)
		}
		if err := e.checkMemRegion(regno, int(reg.off), size, int(m.ValueSize), zeroOK); err != nil {
			return err
		}
		return e.checkMapFields(reg, m, int(reg.off), size)
	case ptrToMapKey:
		if kind == accessWrite {
			return e.errorf(uapi.EACCES, "R%d cannot write into %s", regno, reg.typeName())
		}
		return e.checkMemRegion(regno, int(reg.off), size, int(e.mapOf(reg).KeySize), zeroOK)
	case ptrToMem:
		if kind == accessWrite && reg.rdonly {
			return e.errorf(uapi.EACCES, "R%d cannot write into %s", regno, reg.typeName())
		}
		return e.checkMemRegion(regno, int(reg.off), size, int(reg.memSize), zeroOK)
	case ptrToBuf:
		return e.checkBufAccess(reg, regno, int(reg.off), size, kind)
	case ptrToStack:
		raw := meta != nil && meta.raw
		if raw {
			meta.rawRegno, meta.rawSize = regno, size
		}
		return e.checkStackRangeInit(regno, int(reg.off), size, zeroOK, true, kind == accessWrite, raw)
	}
	if zeroOK && size == 0 && reg.typ == scalarValue && reg.isConst() && reg.constant() == 0 {
		return nil
	}
	return e.errorf(uapi.EACCES, "R%d type=%s expected=fp", regno, reg.typeName())
}

// recordFuncMap is record_func_map: the map each map helper call site
// sees, for do_misc_fixups, and the read-only map rules.
func (e *env) recordFuncMap(meta *callMeta, id int32, idx int) error {
	switch id {
	case uapi.FuncMapLookupElem, uapi.FuncMapUpdateElem, uapi.FuncMapDeleteElem,
		uapi.FuncMapPushElem, uapi.FuncMapPopElem, uapi.FuncMapPeekElem,
		uapi.FuncMapLookupPercpuElem, uapi.FuncTailCall, uapi.FuncForEachMapElem, uapi.FuncRedirectMap:
	default:
		return nil
	}
	m := meta.mapPtr
	if m == nil {
		return e.errorf(uapi.EINVAL, "kernel subsystem misconfigured verifier")
	}
	if m.Flags&uapi.BPF_F_RDONLY_PROG != 0 {
		switch id {
		case uapi.FuncMapDeleteElem, uapi.FuncMapUpdateElem, uapi.FuncMapPushElem, uapi.FuncMapPopElem:
			return e.errorf(uapi.EACCES, "write into map forbidden")
		}
	}
	a := &e.aux[idx]
	switch {
	case a.MapPtr == nil:
		a.MapPtr = m
	case a.MapPtr != m:
		a.MapPoisoned = true
	}
	return nil
}

// checkMapFuncCompat is check_map_func_compatibility: some map types only
// work with some helpers, and the other way round. For map types that
// users register, the queue helpers need the type's push/pop/peek
// ability.
func (e *env) checkMapFuncCompat(m *maps.Map, id int32, name string) error {
	if m == nil {
		return nil
	}
	t := m.Attr.Type
	bad := false
	switch t {
	case uapi.MapTypeProgArray:
		bad = id != uapi.FuncTailCall
	case uapi.MapTypePerfEventArray:
		bad = !isPerfEventHelper(id)
	case uapi.MapTypeArrayOfMaps, uapi.MapTypeHashOfMaps:
		bad = id != uapi.FuncMapLookupElem
	case uapi.MapTypeQueue, uapi.MapTypeStack:
		bad = id != uapi.FuncMapPeekElem && id != uapi.FuncMapPopElem && id != uapi.FuncMapPushElem
	case uapi.MapTypeBloomFilter:
		bad = id != uapi.FuncMapPeekElem && id != uapi.FuncMapPushElem
	case uapi.MapTypeUserRingbuf:
		bad = id != uapi.FuncUserRingbufDrain
	case uapi.MapTypeRingbuf:
		bad = id != uapi.FuncRingbufOutput && id != uapi.FuncRingbufReserve && id != uapi.FuncRingbufQuery &&
			id != uapi.FuncRingbufReserveDynptr
	case uapi.MapTypeDevmap, uapi.MapTypeDevmapHash:
		bad = id != uapi.FuncRedirectMap && id != uapi.FuncMapLookupElem
	case uapi.MapTypeCPUMap:
		bad = id != uapi.FuncRedirectMap
	case uapi.MapTypeTaskStorage:
		bad = id != uapi.FuncTaskStorageGet && id != uapi.FuncTaskStorageDelete
	}
	switch id {
	case uapi.FuncTailCall:
		bad = bad || t != uapi.MapTypeProgArray
	case uapi.FuncPerfEventRead, uapi.FuncPerfEventOutput, uapi.FuncPerfEventReadValue,
		uapi.FuncSkbOutput, uapi.FuncXdpOutput:
		bad = bad || t != uapi.MapTypePerfEventArray
	case uapi.FuncMapPopElem, uapi.FuncMapPeekElem, uapi.FuncMapPushElem:
		_, able := m.Ops.(maps.PushPopPeeker)
		// A bloom filter cannot give values back.
		bad = bad || !able || id == uapi.FuncMapPopElem && t == uapi.MapTypeBloomFilter
	case uapi.FuncRingbufOutput, uapi.FuncRingbufReserve, uapi.FuncRingbufQuery, uapi.FuncRingbufReserveDynptr:
		bad = bad || t != uapi.MapTypeRingbuf
	case uapi.FuncUserRingbufDrain:
		bad = bad || t != uapi.MapTypeUserRingbuf
	case uapi.FuncMapLookupPercpuElem:
		bad = bad || (t != uapi.MapTypePercpuArray && t != uapi.MapTypePercpuHash && t != uapi.MapTypeLRUPercpuHash)
	case uapi.FuncRedirectMap:
		_, able := m.Ops.(maps.Redirector)
		bad = bad || !able
	case uapi.FuncTaskStorageGet, uapi.FuncTaskStorageDelete:
		bad = bad || t != uapi.MapTypeTaskStorage
	}
	if bad {
		return e.errorf(uapi.EINVAL, "cannot pass map_type %d into func %s#%d", t, name, id)
	}
	return nil
}

// checkFuncCall is check_func_call for a static subprogram: the callee is
// verified in the caller's context, in a new frame that gets R1-R5.
func (e *env) checkFuncCall(in insn.Insn, idx int) (int, error) {
	target := idx + int(in.Imm) + 1
	sub := e.findSubprog(target)
	if sub < 0 {
		return 0, e.errorf(uapi.EFAULT, "verifier bug. No program starts at insn %d", target)
	}
	if e.isGlobal(sub) {
		return e.callGlobal(sub, idx) // globals.go
	}
	// A static function's prototype is checked too; a mismatch only
	// shows in the log.
	if err := e.checkFuncArgs(sub); errors.Is(err, uapi.EFAULT) {
		return 0, err
	}
	st := e.cur
	if st.curframe+1 >= maxCallFrames {
		return 0, e.errorf(uapi.E2BIG, "the call stack of %d frames is too deep", st.curframe+2)
	}
	caller := st.cur()
	callee := &funcState{callsite: idx, frameno: uint8(st.curframe + 1), subprog: sub}
	for i := range callee.regs {
		callee.regs[i].markNotInit()
	}
	for r := insn.R1; r <= insn.R5; r++ {
		callee.regs[r] = caller.regs[r]
	}
	callee.regs[insn.R10].markPtr(ptrToStack)
	callee.regs[insn.R10].frameno = callee.frameno
	st.frames = append(st.frames[:st.curframe+1], callee)
	st.curframe++
	for r := insn.R0; r <= insn.R5; r++ {
		caller.regs[r].markNotInit()
	}
	if e.log.level > 0 {
		e.log.printf("caller:\n%s\ncallee:\n%s", st.frameLine(caller, caller.format(e)), st.frameLine(callee, callee.format(e)))
	}
	e.scratchAll() // init_func_state marks the whole state scratched
	return e.subprogs[sub].Start, nil
}

// prepareFuncExit is prepare_func_exit: the callee's R0 goes to the
// caller, which resumes after the call.
func (e *env) prepareFuncExit() (int, error) {
	st := e.cur
	callee := st.cur()
	r0 := callee.regs[insn.R0]
	if r0.typ == ptrToStack {
		return 0, e.errorf(uapi.EINVAL, "cannot return stack pointer to the caller")
	}
	if callee.inCallbackFn {
		return e.callbackExit()
	}
	caller := st.frames[st.curframe-1]
	caller.regs[insn.R0] = r0
	if e.log.level > 0 {
		e.log.printf("returning from callee:\n%s\nto caller at %d:\n%s", st.frameLine(callee, callee.format(e)), callee.callsite+1, st.frameLine(caller, caller.format(e)))
	}
	st.frames[st.curframe] = nil
	st.frames = st.frames[:st.curframe]
	st.curframe--
	return callee.callsite + 1, nil
}

// checkReturnCode is check_return_code: R0 must be set, and for the
// program types that restrict it (ReturnRanger), be a scalar within the
// type's range, which makes it precise.
func (e *env) checkReturnCode() error {
	if v, ok := e.cfg.Type.(VoidReturner); ok && v.ReturnsVoid() {
		return nil // R0 is not looked at
	}
	if err := e.checkRegRead(insn.R0); err != nil {
		return err
	}
	rr, ok := e.cfg.Type.(ReturnRanger)
	if !ok {
		return nil
	}
	lo, hi, ok := rr.ReturnRange()
	if !ok {
		return nil
	}
	const exitCtx = "At program exit"
	if r0 := &e.regs()[insn.R0]; r0.typ != scalarValue {
		return e.errorf(uapi.EINVAL, "%s the register R0 is not a known value (%s)", exitCtx, r0.typeName())
	}
	if err := e.markPrecise(insn.R0); err != nil {
		return err
	}
	return e.checkScalarRange(exitCtx, &e.regs()[insn.R0], lo, hi)
}

// checkScalarRange is retval_range_within with verbose_invalid_scalar's
// message: a scalar that may be outside [lo, hi] is EINVAL.
func (e *env) checkScalarRange(ctx string, r *regState, lo, hi int64) error {
	if r.smin >= lo && r.smax <= hi {
		return nil
	}
	msg := ctx + " the register R0 has"
	unknown := true
	if r.smin > -1<<63 {
		msg += fmt.Sprintf(" smin=%d", r.smin)
		unknown = false
	}
	if r.smax < 1<<63-1 {
		msg += fmt.Sprintf(" smax=%d", r.smax)
		unknown = false
	}
	if unknown {
		msg += " unknown scalar value"
	}
	return e.errorf(uapi.EINVAL, "%s should have been in [%d, %d]", msg, lo, hi)
}

// elidesNullness is can_elide_value_nullness: array lookups only fail out
// of bounds. Not for arrays made with BPF_F_INNER_MAP, as the kernel
// (6.18, checked) does not: as inner maps their max_entries may be another
// than the template's the verifier sees.
func elidesNullness(m *maps.Map) bool {
	return (m.Attr.Type == uapi.MapTypeArray || m.Attr.Type == uapi.MapTypePercpuArray) &&
		m.Attr.Flags&uapi.BPF_F_INNER_MAP == 0
}

// constantMapKey is get_constant_map_key: the key a stack pointer points
// to, if the verifier knows it (zero bytes, or a spilled constant of the
// key's size); -1 otherwise.
func (e *env) constantMapKey(key *regState, size int) int64 {
	if key.typ != ptrToStack || !key.isConst() {
		return -1
	}
	f := e.stackFrame(key)
	spi, off := slotOf(int(key.off) + int(int64(key.varOff.value)))
	if spi >= len(f.stack) {
		return -1
	}
	slot := &f.stack[spi]
	zeros := 0
	for i := off; i >= 0 && slot.types[i] == stackZero; i-- {
		zeros++
	}
	if zeros >= size {
		return 0
	}
	if !slot.isSpilledScalar() {
		return -1
	}
	spill := 0
	for i := off; i >= 0 && slot.types[i] == stackSpill; i-- {
		spill++
	}
	if spill != size || !slot.spilled.isConst() {
		return -1
	}
	// Verification now relies on the key: it must be precise.
	if err := e.markSlotPrecise(int(key.frameno), spi); err != nil {
		return -1
	}
	return int64(slot.spilled.constant())
}

// isPerfEventHelper reports whether a perf event array may be passed to
// helper id.
func isPerfEventHelper(id int32) bool {
	switch id {
	case uapi.FuncPerfEventRead, uapi.FuncPerfEventOutput, uapi.FuncPerfEventReadValue,
		uapi.FuncSkbOutput, uapi.FuncXdpOutput:
		return true
	}
	return false
}

// checkRegConstStr is check_reg_const_str: the string must lie in the
// value of a map programs cannot write and user space no longer can
// (bpf_map_is_rdonly), at a constant offset the verifier reads the string
// at, NUL included. (The messages' stray quotes are the kernel's.)
func (e *env) checkRegConstStr(reg *regState, regno uint8) error {
	_, err := e.constStr(reg, regno)
	return err
}

// checkFormatCall is check_bpf_snprintf_call: the format in R3 (a
// constant string, checked already) must suit the arguments R5 counts in
// bytes.
func (e *env) checkFormatCall(fn *FuncProto) error {
	regs := e.regs()
	n := regs[insn.R5].varOff.value
	if n%8 != 0 {
		return e.errorf(uapi.EINVAL, "R5 is not a multiple of 8")
	}
	str, err := e.constStr(&regs[insn.R3], insn.R3)
	if err != nil {
		return err
	}
	if err := fn.CheckFormat(str, int(n/8)); err != nil {
		return e.errorf(uapi.EINVAL, "Invalid format string")
	}
	return nil
}

// constStr returns the constant string the register points to, as
// check_reg_const_str finds it.
func (e *env) constStr(reg *regState, regno uint8) (string, error) {
	m := e.mapOf(reg)
	if m.Flags&uapi.BPF_F_RDONLY_PROG == 0 || !m.Frozen() {
		return "", e.errorf(uapi.EACCES, "R%d does not point to a readonly map'", regno)
	}
	if !reg.varOff.isConst() {
		return "", e.errorf(uapi.EACCES, "R%d is not a constant address'", regno)
	}
	dv, ok := m.Ops.(maps.DirectValuer)
	if !ok {
		return "", e.errorf(uapi.EACCES, "no direct value access support for this map type")
	}
	if err := e.checkMemRegion(regno, int(reg.off), int(m.ValueSize)-int(reg.off), int(m.ValueSize), false); err != nil {
		return "", err
	}
	off := uint64(int64(reg.off) + int64(reg.varOff.value))
	addr, err := dv.DirectValueAddr(uint32(off))
	if err != nil {
		return "", e.errorf(uapi.EACCES, "direct value access on string failed")
	}
	str := make([]byte, uint64(m.ValueSize)-off)
	nul := -1
	if err := m.Kernel.Memory().Read(addr, str); err == nil {
		nul = bytes.IndexByte(str, 0)
	}
	if nul < 0 {
		return "", e.errorf(uapi.EINVAL, "string is not zero-terminated")
	}
	return string(str[:nul]), nil
}
