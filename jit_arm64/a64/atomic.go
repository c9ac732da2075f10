package a64

// ---- Load/store exclusive and acquire/release ----

// exclusive encodes the load/store exclusive group:
// size 001000 o2 L o1 Rs o0 Rt2 Rn Rt.
func exclusive(size, o2, l, o1, o0 uint32, rs, rt, rn Reg) uint32 {
	return 0x08000000 | size<<30 | o2<<23 | l<<22 | o1<<21 | rs.Num()<<16 | o0<<15 |
		31<<10 | rn.Num()<<5 | rt.Num()
}

// wordSize is the size field of an exclusive or atomic access of rt's width.
func wordSize(rt Reg) uint32 {
	if rt.Is64() {
		return 3
	}
	return 2
}

// Ldxr encodes LDXR Rt, [Xn] (A64_LDXR): load exclusive, W or X.
func Ldxr(rt, rn Reg) (uint32, error) { return loadEx(0, rt, rn) }

// Ldaxr encodes LDAXR Rt, [Xn]: load-acquire exclusive.
func Ldaxr(rt, rn Reg) (uint32, error) { return loadEx(1, rt, rn) }

func loadEx(o0 uint32, rt, rn Reg) (uint32, error) {
	if err := firstErr(checkZR("rt", rt, rt.Is64()), checkBase(rn)); err != nil {
		return 0, err
	}
	return exclusive(wordSize(rt), 0, 1, 0, o0, XZR, rt, rn), nil
}

// Stxr encodes STXR Ws, Rt, [Xn] (A64_STXR): Ws receives 0 on success, 1 if
// the exclusive monitor was lost. The kernel macro lists Rs last.
func Stxr(rs, rt, rn Reg) (uint32, error) { return storeEx(0, rs, rt, rn) }

// Stlxr encodes STLXR Ws, Rt, [Xn]: store-release exclusive (A64_STLXR).
func Stlxr(rs, rt, rn Reg) (uint32, error) { return storeEx(1, rs, rt, rn) }

func storeEx(o0 uint32, rs, rt, rn Reg) (uint32, error) {
	if err := firstErr(checkZR("rs", rs, false), checkZR("rt", rt, rt.Is64()), checkBase(rn)); err != nil {
		return 0, err
	}
	// CONSTRAINED UNPREDICTABLE: the status register must not overlap
	// the data or (non-SP) base register.
	if rs.Num() == rt.Num() || (rn.Num() != 31 && rs.Num() == rn.Num()) {
		return 0, errInval("store exclusive: status register %v overlaps an operand", rs)
	}
	return exclusive(wordSize(rt), 0, 0, 0, o0, rs, rt, rn), nil
}

// Ldar encodes LDAR{B,H,,} Rt, [Xn]: load-acquire (A64_LDARB..A64_LDAR64).
func Ldar(size Size, rt, rn Reg) (uint32, error) { return acqRel(size, 1, rt, rn) }

// Stlr encodes STLR{B,H,,} Rt, [Xn]: store-release (A64_STLRB..A64_STLR64).
func Stlr(size Size, rt, rn Reg) (uint32, error) { return acqRel(size, 0, rt, rn) }

func acqRel(size Size, l uint32, rt, rn Reg) (uint32, error) {
	if size > Size64 {
		return 0, errInval("bad access size %d", size)
	}
	if err := firstErr(checkZR("rt", rt, size == Size64), checkBase(rn)); err != nil {
		return 0, err
	}
	return exclusive(uint32(size), 1, l, 0, 1, XZR, rt, rn), nil
}

// ---- LSE atomics (ARMv8.1) ----

// Order is the memory ordering of an LSE atomic: the A (acquire) and R
// (release) bits.
type Order uint8

// Orderings; the JIT uses OrderNone for the ST<op> forms and OrderAcqRel
// (the "al" suffix) for every fetching form and for CAS.
const (
	OrderNone    Order = 0
	OrderRelease Order = 1
	OrderAcquire Order = 2
	OrderAcqRel  Order = 3
)

// Suffix is the mnemonic suffix of the ordering: "", "l", "a" or "al".
func (o Order) Suffix() string { return [...]string{"", "l", "a", "al"}[o&3] }

// AtomicOp is an LSE atomic memory operation.
type AtomicOp uint8

// LSE operations; the value is the opc field, SWP its own (o3=1).
const (
	AtomicAdd AtomicOp = 0 // LDADD: [Xn] += Rs
	AtomicClr AtomicOp = 1 // LDCLR: [Xn] &^= Rs (the JIT's AND is CLR of ~src)
	AtomicEor AtomicOp = 2 // LDEOR: [Xn] ^= Rs
	AtomicSet AtomicOp = 3 // LDSET: [Xn] |= Rs
	AtomicSwp AtomicOp = 8 // SWP: [Xn] = Rs
)

func (op AtomicOp) String() string {
	switch op {
	case AtomicAdd:
		return "ldadd"
	case AtomicClr:
		return "ldclr"
	case AtomicEor:
		return "ldeor"
	case AtomicSet:
		return "ldset"
	case AtomicSwp:
		return "swp"
	}
	return "atomic?"
}

// AtomicLoadOp encodes LD<op>{,A,L,AL} Rs, Rt, [Xn] or SWP{,A,L,AL}: Rt
// receives the old value of [Xn], which becomes [Xn] <op> Rs (the kernel's
// aarch64_insn_gen_atomic_ld_op; A64_LDADDAL etc. and A64_SWPAL). Rs and Rt
// have the same width (32 or 64 bits).
func AtomicLoadOp(op AtomicOp, order Order, rs, rt, rn Reg) (uint32, error) {
	is64 := rs.Is64()
	if err := firstErr(checkZR("rs", rs, is64), checkZR("rt", rt, is64), checkBase(rn)); err != nil {
		return 0, err
	}
	if order > OrderAcqRel {
		return 0, errInval("bad memory order %d", order)
	}
	var o3, opc uint32
	switch op {
	case AtomicAdd, AtomicClr, AtomicEor, AtomicSet:
		opc = uint32(op)
	case AtomicSwp:
		o3 = 1
	default:
		return 0, errInval("bad atomic operation %d", op)
	}
	return 0x38200000 | wordSize(rs)<<30 | uint32(order)<<22 | rs.Num()<<16 | o3<<15 | opc<<12 |
		rn.Num()<<5 | rt.Num(), nil
}

// AtomicStoreOp encodes ST<op>{,L} Rs, [Xn] = LD<op> Rs, ZR, [Xn] (A64_STADD,
// A64_STCLR, A64_STEOR, A64_STSET): the result is discarded, so only
// OrderNone and OrderRelease exist.
func AtomicStoreOp(op AtomicOp, order Order, rs, rn Reg) (uint32, error) {
	if op == AtomicSwp || (order != OrderNone && order != OrderRelease) {
		return 0, errInval("st%v with order %d has no store form", op, order)
	}
	return AtomicLoadOp(op, order, rs, zrOf(rs), rn)
}

// Cas encodes CAS{,A,L,AL} Rs, Rt, [Xn]: if [Xn] == Rs then [Xn] = Rt; Rs
// receives the old value (aarch64_insn_gen_cas; A64_CASAL, with which the
// JIT's BPF_CMPXCHG compares against R0 = x7).
func Cas(order Order, rs, rt, rn Reg) (uint32, error) {
	is64 := rs.Is64()
	if err := firstErr(checkZR("rs", rs, is64), checkZR("rt", rt, is64), checkBase(rn)); err != nil {
		return 0, err
	}
	if order > OrderAcqRel {
		return 0, errInval("bad memory order %d", order)
	}
	l, o0 := uint32(order>>1), uint32(order&1)
	return exclusive(wordSize(rs), 1, l, 1, o0, rs, rt, rn), nil
}
