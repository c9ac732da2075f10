package verifier

import (
	"fmt"
	"math"
	"strings"

	"github.com/bpfsim/bpfsim/maps"
	"github.com/bpfsim/bpfsim/sim/uapi"
)

// regType is enum bpf_reg_type: what a register holds, as far as the
// verifier knows. The kernel's PTR_MAYBE_NULL flag is regState.maybeNull.
type regType uint8

const (
	notInit         regType = iota // NOT_INIT
	scalarValue                    // SCALAR_VALUE
	ptrToCtx                       // PTR_TO_CTX
	constPtrToMap                  // CONST_PTR_TO_MAP
	ptrToMapValue                  // PTR_TO_MAP_VALUE
	ptrToStack                     // PTR_TO_STACK
	ptrToPacket                    // PTR_TO_PACKET
	ptrToPacketMeta                // PTR_TO_PACKET_META
	ptrToPacketEnd                 // PTR_TO_PACKET_END
	ptrToMem                       // PTR_TO_MEM: memory of a known size (mem_size)
	ptrToFunc                      // PTR_TO_FUNC: a callback's address
	ptrToMapKey                    // PTR_TO_MAP_KEY: a key a map walk passes a callback
	// constPtrToDynptr is CONST_PTR_TO_DYNPTR. Registers never hold it
	// in bpfsim (no helper passes a callback a dynptr yet): it is the
	// type of the two spilled registers that describe a dynptr on the
	// stack (dynptr.go).
	constPtrToDynptr
	// ptrToBTFID is PTR_TO_BTF_ID: a kernel object of the struct
	// regState.btfIdx names (btfptr.go).
	ptrToBTFID
	// ptrToBuf is PTR_TO_BUF: an iterator's key or value buffer.
	ptrToBuf
)

var regTypeNames = [...]string{
	notInit:          "?",
	scalarValue:      "scalar",
	ptrToCtx:         "ctx",
	constPtrToMap:    "map_ptr",
	ptrToMapValue:    "map_value",
	ptrToStack:       "fp",
	ptrToPacket:      "pkt",
	ptrToPacketMeta:  "pkt_meta",
	ptrToPacketEnd:   "pkt_end",
	ptrToMem:         "mem",
	ptrToFunc:        "func",
	ptrToMapKey:      "map_key",
	constPtrToDynptr: "dynptr_ptr",
	ptrToBTFID:       "ptr_",
	ptrToBuf:         "buf",
}

// regState is struct bpf_reg_state, reduced to what bpfsim tracks.
type regState struct {
	typ       regType
	maybeNull bool // PTR_MAYBE_NULL
	rdonly    bool // MEM_RDONLY
	ringbuf   bool // MEM_RINGBUF: a ring buffer record being filled
	// off is the fixed part of a pointer's offset; the variable part is
	// in bounds (var_off and the ranges). A scalar keeps its value in
	// bounds and off = 0.
	off int32
	bounds
	// id ties registers that hold the same pointer (for null checks and
	// packet ranges) or the same scalar (for bounds learned on a copy).
	id uint32
	// refObjID is the reference (refs.go) a pointer to an acquired
	// object belongs to, 0 for none.
	refObjID uint32
	// rng is a packet pointer's proven range: [data, data+off+rng) may be
	// accessed (the kernel's range).
	rng int32
	// mapIdx is the map of CONST_PTR_TO_MAP, PTR_TO_MAP_VALUE and
	// PTR_TO_MAP_KEY: its
	// index in env.maps plus one, 0 for none. An index rather than a
	// pointer keeps states free of pointers, so copying them costs no
	// garbage collector write barriers.
	mapIdx uint16
	// memSize is the size of PTR_TO_MEM.
	memSize uint32
	// frameno is the frame a stack pointer points into.
	frameno uint8
	// subprog is the function a PTR_TO_FUNC points to.
	subprog int
	// precise marks a scalar whose exact range matters for pruning.
	precise bool
	// dynptrType and firstSlot describe the dynptr a stack slot holds
	// (struct bpf_reg_state's dynptr); dynptrID is, for a slice
	// bpf_dynptr_data returned, the id of the dynptr it came from, so
	// that destroying the dynptr invalidates the slice.
	dynptrType uint8
	firstSlot  bool
	dynptrID   uint32
	// iterType, iterState and iterDepth describe the open-coded
	// iterator a stack slot holds (struct bpf_reg_state's iter, iter.go):
	// its type (an index into env.iterTypes plus one), whether it may
	// still yield (active) or is drained, and how many next calls deep
	// the path is in its loop.
	iterType  uint8
	iterState uint8
	iterDepth uint32
	// mapUID tells apart the inner maps of one template that hold
	// timers (map_uid): the id of the outer lookup an inner map pointer
	// came from, passed on to the values looked up in it.
	mapUID uint32
	// btfIdx is the struct a PTR_TO_BTF_ID points to: its index in
	// env.btfs plus one. trusted is PTR_TRUSTED, rcu MEM_RCU and
	// untrusted PTR_UNTRUSTED.
	btfIdx    uint16
	trusted   bool
	rcu       bool
	untrusted bool
}

// isTrustedReg is is_trusted_reg for kernel objects: a reference, or a
// pointer the kernel vouches for.
func (r *regState) isTrustedReg() bool {
	return r.typ == ptrToBTFID && (r.refObjID != 0 || r.trusted)
}

func (r *regState) isPointer() bool { return r.typ != notInit && r.typ != scalarValue }

func (r *regState) isPkt() bool { return r.typ == ptrToPacket || r.typ == ptrToPacketMeta }

// isPktSlice is reg_is_dynptr_slice_pkt: a slice of an skb or xdp dynptr
// points into the packet, and ends when the packet may move.
func (r *regState) isPktSlice() bool {
	return r.typ == ptrToMem && (r.dynptrType == uapi.DynptrTypeSKB || r.dynptrType == uapi.DynptrTypeXDP)
}

// markUnknown is __mark_reg_unknown: a scalar about which nothing is known.
func (r *regState) markUnknown() {
	*r = regState{typ: scalarValue, bounds: unknownBounds()}
}

// markKnown is __mark_reg_known for a scalar constant.
func (r *regState) markKnown(v uint64) {
	// Cleared in place, then set field by field: a composite literal is
	// built on the stack and copied, and the copy's wide loads of the
	// literal's narrow stores stall (store forwarding fails). This runs
	// for every constant a program moves into a register.
	*r = regState{}
	r.typ = scalarValue
	r.varOff.value = v
	r.smin, r.smax = int64(v), int64(v)
	r.umin, r.umax = v, v
	r.s32min, r.s32max = int32(v), int32(v)
	r.u32min, r.u32max = uint32(v), uint32(v)
}

// markNotInit is __mark_reg_not_init.
func (r *regState) markNotInit() { *r = regState{typ: notInit} }

// markPtr makes r a pointer of type t with a fixed offset 0.
func (r *regState) markPtr(t regType) {
	*r = regState{} // see markKnown
	r.typ = t
}

// varOffConst reports whether a pointer's variable offset is known.
func (r *regState) varOffConst() bool { return r.varOff.isConst() }

// typeName is reg_type_str.
func (r *regState) typeName() string {
	s := regTypeNames[r.typ]
	switch {
	case r.ringbuf:
		s = "ringbuf_" + s
	case r.rdonly:
		s = "rdonly_" + s
	case r.rcu:
		s = "rcu_" + s
	case r.untrusted:
		s = "untrusted_" + s
	case r.trusted:
		s = "trusted_" + s
	}
	if r.maybeNull {
		if r.typ == ptrToBTFID {
			return s + "or_null_" // the struct's name follows
		}
		s += "_or_null"
	}
	return s
}

// String is print_reg_state: "1", "scalar(umax=255,var_off=(0x0; 0xff))",
// "fp-8", "map_value(map=m,ks=4,vs=8)".
func (r *regState) String() string { return r.format(nil, 0) }

// format prints r as the kernel log does; e (which may be nil) names its
// map or struct.
func (r *regState) format(e *env, curFrame uint8) string {
	var tab []*maps.Map
	if e != nil {
		tab = e.maps
	}
	var b strings.Builder
	if r.typ == scalarValue && r.precise {
		b.WriteByte('P')
	}
	if r.typ == scalarValue && r.isConst() {
		b.WriteString(snum(int64(r.constant())))
		return b.String()
	}
	b.WriteString(r.typeName())
	if st := e.btfOf(r); r.typ == ptrToBTFID && st != nil {
		b.WriteString(st.Name)
	}
	if r.typ == ptrToStack {
		if r.frameno != curFrame {
			fmt.Fprintf(&b, "[%d]", r.frameno)
		}
		if r.isConst() {
			b.WriteString(snum(int64(r.constant()) + int64(r.off)))
			return b.String()
		}
	}
	b.WriteByte('(')
	sep := ""
	add := func(f string, a ...any) {
		b.WriteString(sep)
		fmt.Fprintf(&b, f, a...)
		sep = ","
	}
	if r.id != 0 {
		add("id=%d", r.id&^addConstFlag)
		if r.id&addConstFlag != 0 {
			// The constant added to the linked scalar: "id=3+0".
			b.WriteString(fmt.Sprintf("%+d", r.off))
		}
	}
	if r.refObjID != 0 {
		add("ref_obj_id=%d", r.refObjID)
	}
	if m := mapAt(tab, r.mapIdx); (r.typ == constPtrToMap || r.typ == ptrToMapValue || r.typ == ptrToMapKey) && m != nil {
		if m.Name != "" {
			add("map=%s", m.Name)
		}
		add("ks=%d,vs=%d", m.KeySize, m.ValueSize)
	}
	if r.typ != scalarValue && r.off != 0 {
		add("off=%s", snum(int64(r.off)))
	}
	if r.isPkt() {
		add("r=%s", unum(uint64(r.rng)))
	}
	if r.typ == ptrToMem {
		add("sz=%s", unum(uint64(r.memSize)))
	}
	if r.typ == constPtrToDynptr {
		add("type=%s", uapi.DynptrTypeName(r.dynptrType))
	}
	if r.isConst() {
		if v := r.constant(); v != 0 {
			add("imm=%s", snum(int64(v)))
		}
	} else {
		if s := r.bounds.ranges(); s != "" {
			add("%s", s)
		}
		if !r.varOff.isUnknown() {
			add("var_off=%s", r.varOff)
		}
	}
	b.WriteByte(')')
	return b.String()
}

// snum and unum print numbers as the kernel's log does: decimal when
// small, hex otherwise.
func snum(v int64) string {
	if v >= math.MinInt16 && v <= math.MaxInt16 {
		return fmt.Sprintf("%d", v)
	}
	return fmt.Sprintf("%#x", uint64(v))
}

func unum(v uint64) string {
	if v <= math.MaxUint16 {
		return fmt.Sprintf("%d", v)
	}
	return fmt.Sprintf("%#x", v)
}

// mapAt returns the map of index idx (regState.mapIdx) in tab.
func mapAt(tab []*maps.Map, idx uint16) *maps.Map {
	if idx == 0 || int(idx) > len(tab) {
		return nil
	}
	return tab[idx-1]
}

// mapOf returns the map r points to or into, nil for none.
func (e *env) mapOf(r *regState) *maps.Map { return mapAt(e.maps, r.mapIdx) }

// mapIndex returns m's index for regState.mapIdx, adding it to the
// table: a program refers to few maps.
func (e *env) mapIndex(m *maps.Map) uint16 {
	if m == nil {
		return 0
	}
	for i, t := range e.maps {
		if t == m {
			return uint16(i + 1)
		}
	}
	e.maps = append(e.maps, m)
	return uint16(len(e.maps))
}
