package interp

// Idioms are instruction sequences that compilers and the verifier's
// fix-ups emit again and again, each recognised by Compile and run by one
// op in the sequence's first slot: every dispatch the loop saves is about
// a nanosecond, and these sequences are a large part of what packet
// programs execute (jhash's rotations, the inlined per-CPU counter
// lookups). The sequence's other slots keep their own ops, so a jump that
// lands inside one runs it from there as written. An idiom that touches
// memory tries the TLB's fast path first; when it misses, the op does
// only the sequence's first instruction and the slots that follow run
// the rest, slow paths and faults included.
//
// Each idiom is matched on the instructions as compiled, before the
// pairs are fused, and it computes exactly what its instructions compute
// under the conditions the matcher checks (mostly: registers that must
// differ, so that no instruction overwrites what a later one reads).

// idiom is an op that replaces the one in slot at.
type idiom struct {
	at int
	op op
}

// matchIdioms returns the idioms found in ops.
func matchIdioms(ops []op) []idiom {
	var found []idiom
	for i := range ops {
		if o, ok := matchIdiom(ops, i); ok {
			found = append(found, idiom{i, o})
		}
	}
	return found
}

// at returns slot i of ops, or an invalid op past the end.
func at(ops []op, i int) op {
	if i < len(ops) {
		return ops[i]
	}
	return op{}
}

// matchIdiom returns the idiom op for the sequence that starts at slot i.
func matchIdiom(ops []op, i int) (op, bool) {
	o := ops[i]
	switch o.kind {
	case opMov32X, opMov64X:
		if r, ok := matchRotate(ops, i); ok {
			return r, true
		}
		if o.kind == opMov32X {
			// w_d = w_x; then a xor-sub or sub-xor on d.
			n1 := at(ops, i+1)
			if x, ok := matchTwoOps(n1, at(ops, i+2), o.dst); ok {
				x.off = int32(o.src)
				if x.src == o.dst {
					x.src = o.src // the first op reads what the move wrote
				}
				x.imm |= 2 << 8 // three instructions
				return x, true
			}
		}
	case opXor32X, opSub32X:
		if x, ok := matchTwoOps(o, at(ops, i+1), o.dst); ok {
			x.off = int32(o.dst)
			x.imm |= 1 << 8 // two instructions
			return x, true
		}
	case opAdd64K:
		return matchArrayLookup(ops, i)
	case opLdxDW:
		st := at(ops, i+2)
		if add := at(ops, i+1); add.kind == opAdd64K && add.dst == o.dst &&
			st.kind == opStxDW && st.dst == o.src && st.src == o.dst && st.off == o.off && o.dst != o.src {
			return op{kind: opIncMem64, dst: o.dst, src: o.src, off: o.off, imm: add.imm}, true
		}
	case opCallHelper:
		// The inlined hash lookups: call __htab_map_lookup_elem; if r0
		// == 0 goto +1; r0 += offset of the value.
		jeq, add := at(ops, i+1), at(ops, i+2)
		if jeq.kind == opJeq64K && jeq.dst == 0 && jeq.imm == 0 && int(jeq.off) == i+3 &&
			add.kind == opAdd64K && add.dst == 0 && int64(add.imm) == int64(int32(add.imm)) {
			r := o
			r.kind = opCallElem
			r.off = int32(add.imm)
			return r, true
		}
	}
	return op{}, false
}

// matchRotate matches a rotation as compilers write one, in either
// order of the shifts:
//
//	a = x; a >>= k1; b = x; b <<= k2; b |= a
//
// with a, b and x three different registers of the same width.
func matchRotate(ops []op, i int) (op, bool) {
	mv1, sh1, mv2, sh2, or := at(ops, i), at(ops, i+1), at(ops, i+2), at(ops, i+3), at(ops, i+4)
	a, b, x := mv1.dst, mv2.dst, mv1.src
	if mv2.kind != mv1.kind || mv2.src != x || sh1.dst != a || sh2.dst != b || or.dst != b || or.src != a ||
		a == b || a == x || b == x {
		return op{}, false
	}
	var kind opKind
	var mask uint64
	if mv1.kind == opMov32X {
		mask = 31
		switch {
		case sh1.kind == opRsh32K && sh2.kind == opLsh32K && or.kind == opOr32X:
			kind = opRotR32
		case sh1.kind == opLsh32K && sh2.kind == opRsh32K && or.kind == opOr32X:
			kind = opRotL32
		}
	} else {
		mask = 63
		switch {
		case sh1.kind == opRsh64K && sh2.kind == opLsh64K && or.kind == opOr64X:
			kind = opRotR64
		case sh1.kind == opLsh64K && sh2.kind == opRsh64K && or.kind == opOr64X:
			kind = opRotL64
		}
	}
	if kind == opInvalid {
		return op{}, false
	}
	return op{kind: kind, dst: b, src: x, off: int32(a), imm: sh1.imm&mask | (sh2.imm&mask)<<8}, true
}

// matchTwoOps matches a 32-bit xor then sub, or sub then xor, of
// registers into d, the second not reading d (which the first changed).
// The op it returns has s1 in src and s2 in imm; the caller sets the
// first operand and the instruction count.
func matchTwoOps(first, second op, d uint8) (op, bool) {
	if first.dst != d || second.dst != d || second.src == d {
		return op{}, false
	}
	var kind opKind
	switch {
	case first.kind == opXor32X && second.kind == opSub32X:
		kind = opXorSub32
	case first.kind == opSub32X && second.kind == opXor32X:
		kind = opSubXor32
	default:
		return op{}, false
	}
	return op{kind: kind, dst: d, src: first.src, imm: uint64(second.src)}, true
}

// matchArrayLookup matches the inlined lookup of an array or per-CPU
// array (array_map_gen_lookup, percpu_array_map_gen_lookup, as
// arraymap.GenLookup emits them):
//
//	r1 += off                 r1 += off
//	r0 = *(u32 *)(r2 +0)      r0 = *(u32 *)(r2 +0)
//	if r0 >= n goto +3        if r0 >= n goto +5
//	r0 <<= s  (or r0 *= m)    r0 <<= 3
//	r0 += r1                  r0 += r1
//	goto +1                   r0 = *(u64 *)(r0 +0)
//	r0 = 0                    r0 = &(void __percpu *)(r0)
//	                          goto +1
//	                          r0 = 0
//
// The op keeps off in imm and the element size in off; the bound stays
// in the jump's slot.
func matchArrayLookup(ops []op, i int) (op, bool) {
	add, ld, jge, scale, add2 := at(ops, i), at(ops, i+1), at(ops, i+2), at(ops, i+3), at(ops, i+4)
	if add.dst != 1 || ld.kind != opLdxW || ld.dst != 0 || ld.src != 2 || ld.off != 0 ||
		jge.kind != opJge64K || jge.dst != 0 || add2.kind != opAdd64X || add2.dst != 0 || add2.src != 1 {
		return op{}, false
	}
	isZero := func(o op) bool { return o.kind == opMov64K && o.dst == 0 && o.imm == 0 }
	r := add
	if scale.kind == opLsh64K && scale.dst == 0 && scale.imm == 3 {
		deref, pcpu, ja, zero := at(ops, i+5), at(ops, i+6), at(ops, i+7), at(ops, i+8)
		if deref.kind == opLdxDW && deref.dst == 0 && deref.src == 0 && deref.off == 0 &&
			pcpu.kind == opMovPercpu && pcpu.dst == 0 && pcpu.src == 0 &&
			ja.kind == opJa && int(ja.off) == i+9 && isZero(zero) && int(jge.off) == i+8 {
			r.kind = opPercpuArrayLookup
			return r, true
		}
	}
	ja, zero := at(ops, i+5), at(ops, i+6)
	if ja.kind != opJa || int(ja.off) != i+7 || !isZero(zero) || int(jge.off) != i+6 || scale.dst != 0 {
		return op{}, false
	}
	switch {
	case scale.kind == opLsh64K && scale.imm < 31:
		r.off = 1 << scale.imm
	case scale.kind == opMul64K && scale.imm > 0 && scale.imm < 1<<31:
		r.off = int32(scale.imm)
	default:
		return op{}, false
	}
	r.kind = opArrayLookup
	return r, true
}
