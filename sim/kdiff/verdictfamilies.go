package kdiff

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/bpfsim/bpfsim/sim/insn"
)

// The verdict corpus's families: the ways a program can be valid or
// broken, each with its variants.

var verdictFamilies = []verdictFamily{
	{name: "uninit_reg", weight: 100, safety: true, variants: []variant{
		// "R0 !read_ok": main exits before setting r0.
		{name: "r0_at_exit", bad: true, sites: []site{siteHead}, build: func(v *vgen, s site) asm.Instructions {
			return v.earlyExit(false)
		}},
		{name: "r0_at_exit", sites: []site{siteHead, siteMain, siteBranch}, build: func(v *vgen, s site) asm.Instructions {
			return v.earlyExit(true)
		}},
		// A subprogram returns without setting r0.
		{name: "subprog_r0", bad: true, build: func(v *vgen, s site) asm.Instructions { return v.subprogR0(false) }},
		{name: "subprog_r0", build: func(v *vgen, s site) asm.Instructions { return v.subprogR0(true) }},
		// Registers main never wrote.
		{name: "never_written", bad: true, sites: []site{siteHead}, build: func(v *vgen, s site) asm.Instructions {
			r := []asm.Register{asm.R0, asm.R3, asm.R4, asm.R5, asm.R8, asm.R9}[v.intn(6)]
			v.high = true
			return v.use(r, true)
		}},
		{name: "never_written", sites: []site{siteHead}, build: func(v *vgen, s site) asm.Instructions {
			r := []asm.Register{asm.R0, asm.R3, asm.R4, asm.R5, asm.R8, asm.R9}[v.intn(6)]
			v.high = true
			return append(asm.Instructions{v.scalar(r)}, v.use(r, false)...)
		}},
		// r1-r5 after a helper call: the call clobbered them.
		{name: "after_helper", bad: true, build: func(v *vgen, s site) asm.Instructions {
			r := asm.R1 + asm.Register(v.intn(5))
			return cat(asm.Instructions{v.scalar(r), v.simpleHelper()}, v.use(r, false))
		}},
		{name: "after_helper", build: func(v *vgen, s site) asm.Instructions {
			r := asm.R1 + asm.Register(v.intn(5))
			if v.chance(30) {
				return cat(asm.Instructions{v.simpleHelper()}, v.use(asm.R0, false))
			}
			return cat(asm.Instructions{v.simpleHelper(), v.scalar(r)}, v.use(r, false))
		}},
		// The same after a bpf-to-bpf call; r6 survives it.
		{name: "after_call", bad: true, build: func(v *vgen, s site) asm.Instructions {
			r := asm.R1 + asm.Register(v.intn(5))
			return cat(v.callSmall(), v.use(r, false))
		}},
		{name: "after_call", build: func(v *vgen, s site) asm.Instructions {
			if v.chance(50) {
				return cat(v.callSmall(), asm.Instructions{asm.LoadMem(asm.R1, regPkt, int16(v.intn(verdictPacketSize)), asm.Byte)})
			}
			return cat(v.callSmall(), v.use(asm.R0, false))
		}},
		// A subprogram reads r6-r9, which are its own and unset.
		{name: "callee_saved_in_callee", bad: true, build: func(v *vgen, s site) asm.Instructions {
			r := asm.R6 + asm.Register(v.intn(4))
			body := append(asm.Instructions{asm.Mov.Imm(asm.R0, 1)}, asm.Add.Reg(asm.R0, r), asm.Return())
			return asm.Instructions{asm.Mov.Imm(asm.R1, 1), asm.Call.Label(v.sub(body))}
		}},
		{name: "callee_saved_in_callee", build: func(v *vgen, s site) asm.Instructions {
			r := asm.R1 + asm.Register(v.intn(5))
			body := append(asm.Instructions{asm.Mov.Imm(asm.R0, 1)}, asm.Add.Reg(asm.R0, r), asm.Return())
			var out asm.Instructions
			for a := asm.R1; a <= r; a++ {
				out = append(out, v.scalar(a))
			}
			return append(out, asm.Call.Label(v.sub(body)))
		}},
	}},
	{name: "stack_spill", weight: 40, safety: true, variants: []variant{
		// "invalid size of register fill": part of a spilled pointer.
		{name: "partial_fill", bad: true, build: func(v *vgen, s site) asm.Instructions {
			ptr := v.pointer(asm.R1)
			size := []asm.Size{asm.Byte, asm.Half, asm.Word}[v.intn(3)]
			off := tSpill + int16(size.Sizeof()*v.intn(8/size.Sizeof()))
			return append(ptr, asm.StoreMem(asm.RFP, tSpill, asm.R1, asm.DWord), asm.LoadMem(asm.R2, asm.RFP, off, size))
		}},
		// A spilled pointer partly overwritten reads back as a scalar.
		{name: "clobbered_pointer", bad: true, build: func(v *vgen, s site) asm.Instructions {
			size := []asm.Size{asm.Byte, asm.Half, asm.Word}[v.intn(3)]
			off := tSpill + int16(size.Sizeof()*v.intn(8/size.Sizeof()))
			return asm.Instructions{asm.StoreMem(asm.RFP, tSpill, regPkt, asm.DWord),
				asm.StoreImm(asm.RFP, off, int64(v.intn(100)), size),
				asm.LoadMem(asm.R1, asm.RFP, tSpill, asm.DWord), asm.LoadMem(asm.R2, asm.R1, 0, asm.Byte)}
		}},
		{name: "fill", build: func(v *vgen, s site) asm.Instructions {
			out := asm.Instructions{asm.StoreMem(asm.RFP, tSpill, regPkt, asm.DWord)}
			if v.chance(50) {
				out = append(out, asm.StoreImm(asm.RFP, tSpill-8, 7, asm.Word))
			}
			return append(out, asm.LoadMem(asm.R1, asm.RFP, tSpill, asm.DWord),
				asm.LoadMem(asm.R2, asm.R1, int16(v.intn(verdictPacketSize)), asm.Byte))
		}},
	}},
	{name: "root_uninit_stack", weight: 30, variants: []variant{
		// Root may read stack it never wrote (allow_uninit_stack).
		{name: "read", build: func(v *vgen, s site) asm.Instructions {
			size := sizes[v.intn(4)]
			off := int16(-size.Sizeof() * (1 + v.intn(200/size.Sizeof())))
			if s != siteSubprog {
				off = tScratch - int16(size.Sizeof()*v.intn(40/size.Sizeof()))
			}
			return asm.Instructions{asm.LoadMem(asm.R0, asm.RFP, off, size), asm.Add.Imm(asm.R0, 1)}
		}},
		{name: "helper_key", build: func(v *vgen, s site) asm.Instructions {
			m := v.newMap(anyMapTypes, valueSizes[v.intn(len(valueSizes))])
			return asm.Instructions{mapPtr(asm.R1, m), asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, tKey), asm.FnMapLookupElem.Call()}
		}},
	}},
	{name: "stack_oob", weight: 90, safety: true, variants: []variant{
		// "invalid write to stack R10 off=0 size=4" and the like.
		{name: "above_fp", bad: true, build: func(v *vgen, s site) asm.Instructions {
			size := sizes[v.intn(4)]
			off := int16(size.Sizeof() * v.intn(4))
			return v.stackAccess(off, size)
		}},
		{name: "below_512", bad: true, deep: true, build: func(v *vgen, s site) asm.Instructions {
			size := sizes[v.intn(4)]
			off := int16(-512 - size.Sizeof()*(1+v.intn(64)))
			return v.stackAccess(off, size)
		}},
		{name: "in_range", build: func(v *vgen, s site) asm.Instructions {
			size := sizes[v.intn(4)]
			off := int16(-size.Sizeof() * (1 + v.intn(64/size.Sizeof())))
			if s != siteSubprog {
				off = tScratch - int16(size.Sizeof()*v.intn(48/size.Sizeof()))
			}
			return v.stackAccess(off, size)
		}},
		{name: "bottom", deep: true, build: func(v *vgen, s site) asm.Instructions {
			size := sizes[v.intn(4)]
			return v.stackAccess(int16(-512+size.Sizeof()*v.intn(3)), size)
		}},
		// "misaligned stack access off 0+0+-7 size 4": the stack wants
		// aligned accesses even where other memory does not.
		{name: "misaligned", bad: true, build: func(v *vgen, s site) asm.Instructions {
			size := []asm.Size{asm.Half, asm.Word, asm.DWord}[v.intn(3)]
			off := int16(-8*(1+v.intn(12)) + 1 + v.intn(size.Sizeof()-1))
			if s != siteSubprog {
				off += tSpill
			}
			return v.stackAccess(off, size)
		}},
		{name: "odd_bytes", build: func(v *vgen, s site) asm.Instructions {
			off := int16(-1 - 2*v.intn(40))
			if s != siteSubprog {
				off += tSpill
			}
			return v.stackAccess(off, asm.Byte)
		}},
		// A variable offset the verifier cannot bound.
		{name: "var_unbounded", bad: true, build: func(v *vgen, s site) asm.Instructions {
			size := []asm.Size{asm.Half, asm.Word}[v.intn(2)]
			out := asm.Instructions{v.unknown(asm.R1, size), asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Reg(asm.R2, asm.R1)}
			return append(out, v.memOpPlain(asm.R2, -8, sizes[v.intn(4)])...)
		}},
		// A bounded variable offset whose range pokes out of the frame.
		{name: "var_partly_out", bad: true, build: func(v *vgen, s site) asm.Instructions {
			return v.stackVar(false)
		}},
		{name: "var_inside", build: func(v *vgen, s site) asm.Instructions {
			return v.stackVar(true)
		}},
	}},
	{name: "map_value", weight: 110, safety: true, variants: []variant{
		// "invalid access to map value, value_size=8 off=8 size=4" or
		// "R0 min value is outside of the allowed memory range".
		{name: "const_past_end", bad: true, build: func(v *vgen, s site) asm.Instructions {
			return v.mapAccess(func(vs int) (asm.Instructions, int16, asm.Size) {
				size := sizes[v.intn(4)]
				return nil, int16(vs - size.Sizeof() + 1 + v.intn(size.Sizeof()+8)), size
			})
		}},
		{name: "negative_offset", bad: true, build: func(v *vgen, s site) asm.Instructions {
			return v.mapAccess(func(vs int) (asm.Instructions, int16, asm.Size) {
				size := sizes[v.intn(4)]
				return nil, int16(-1 - v.intn(16)), size
			})
		}},
		{name: "const_inside", build: func(v *vgen, s site) asm.Instructions {
			return v.mapAccess(func(vs int) (asm.Instructions, int16, asm.Size) {
				size := v.sizeFits(vs)
				return nil, int16(v.intn(vs - size.Sizeof() + 1)), size
			})
		}},
		// An index from the packet, unchecked.
		{name: "var_unbounded", bad: true, build: func(v *vgen, s site) asm.Instructions {
			return v.mapAccess(func(vs int) (asm.Instructions, int16, asm.Size) {
				size := v.sizeFits(vs)
				ld := []asm.Size{asm.Byte, asm.Half, asm.Word, asm.DWord}[v.intn(4)]
				if vs > 200 || ld == asm.Byte && v.chance(50) {
					ld = asm.Half
				}
				return asm.Instructions{v.unknown(asm.R1, ld), asm.Add.Reg(asm.R0, asm.R1)}, 0, size
			})
		}},
		// Masked or checked, but one too far.
		{name: "var_loose", bad: true, build: func(v *vgen, s site) asm.Instructions {
			return v.mapVar(false)
		}},
		{name: "var_bounded", build: func(v *vgen, s site) asm.Instructions {
			return v.mapVar(true)
		}},
		// "R0 min value is negative, either use unsigned index or do a if
		// (index >=0) check."
		{name: "signed_index", bad: true, build: func(v *vgen, s site) asm.Instructions {
			return v.mapSigned(false)
		}},
		{name: "signed_index", build: func(v *vgen, s site) asm.Instructions {
			return v.mapSigned(true)
		}},
	}},
	{name: "bounds", weight: 110, safety: true, variants: []variant{
		// Map value indices whose bounds the verifier must carry through
		// joins, 32-bit comparisons, spills, loops and arithmetic.
		{name: "branch_join", bad: true, build: func(v *vgen, s site) asm.Instructions { return v.boundsJoin(false) }},
		{name: "branch_join", build: func(v *vgen, s site) asm.Instructions { return v.boundsJoin(true) }},
		{name: "jmp32_bound", bad: true, build: func(v *vgen, s site) asm.Instructions { return v.bounds32(false) }},
		{name: "jmp32_bound", build: func(v *vgen, s site) asm.Instructions { return v.bounds32(true) }},
		{name: "spilled_index", bad: true, build: func(v *vgen, s site) asm.Instructions { return v.boundsSpill(false, false) }},
		{name: "spilled_index", build: func(v *vgen, s site) asm.Instructions { return v.boundsSpill(true, false) }},
		{name: "spilled_index_narrow_fill", build: func(v *vgen, s site) asm.Instructions { return v.boundsSpill(true, true) }},
		{name: "loop_index", bad: true, build: func(v *vgen, s site) asm.Instructions { return v.boundsLoop(false) }},
		{name: "loop_index", build: func(v *vgen, s site) asm.Instructions { return v.boundsLoop(true) }},
		{name: "alu_derived", bad: true, build: func(v *vgen, s site) asm.Instructions { return v.boundsALU(false) }},
		{name: "alu_derived", build: func(v *vgen, s site) asm.Instructions { return v.boundsALU(true) }},
		// x % k is below k, but the verifier keeps no range through BPF_MOD
		// (Linux 6.18): "math between map_value pointer and register with
		// unbounded min value is not allowed", however small k.
		{name: "modulo_index", bad: true, build: func(v *vgen, s site) asm.Instructions {
			out, l, size, room := v.boundsValue()
			out = append(out, v.unknown(asm.R2, asm.Byte), asm.Mod.Imm(asm.R2, int32(1+v.intn(room+1))))
			return v.boundsAccess(out, l, size)
		}},
	}},
	{name: "null_check", weight: 110, safety: true, variants: []variant{
		// "R0 invalid mem access 'map_value_or_null'".
		{name: "missing", bad: true, build: func(v *vgen, s site) asm.Instructions {
			m, out := v.nullableLookup()
			return append(out, v.memOp(asm.R0, v.valueOff(m, asm.Word), asm.Word)...)
		}},
		// The access is on the NULL path: "invalid mem access 'scalar'".
		{name: "wrong_branch", bad: true, build: func(v *vgen, s site) asm.Instructions {
			m, out := v.nullableLookup()
			l := v.label("hit")
			size := v.sizeFits(int(m.ValueSize))
			out = append(out, asm.JNE.Imm(asm.R0, 0, l))
			out = append(out, v.memOp(asm.R0, v.valueOff(m, size), size)...)
			return append(out, v.land(l))
		}},
		// Compared with something else than 0, or in 32 bits.
		{name: "not_null_compare", bad: true, build: func(v *vgen, s site) asm.Instructions {
			m, out := v.nullableLookup()
			l := v.label("miss")
			jmp := []asm.Instruction{asm.JEq.Imm(asm.R0, 1, l), asm.JEq.Imm32(asm.R0, 0, l), asm.JLT.Imm(asm.R0, 0, l),
				asm.JSLT.Imm(asm.R0, 0, l)}[v.intn(4)]
			size := v.sizeFits(int(m.ValueSize))
			out = append(out, jmp)
			out = append(out, v.memOp(asm.R0, v.valueOff(m, size), size)...)
			return append(out, v.land(l))
		}},
		// "R0 pointer arithmetic on map_value_or_null prohibited, null-check
		// it first".
		{name: "arith_before_check", bad: true, build: func(v *vgen, s site) asm.Instructions {
			m, out := v.nullableLookup()
			l := v.label("miss")
			out = append(out, asm.Add.Imm(asm.R0, int32(v.intn(int(m.ValueSize)))), asm.JEq.Imm(asm.R0, 0, l),
				asm.LoadMem(asm.R1, asm.R0, 0, asm.Byte))
			return append(out, v.land(l))
		}},
		// A call after the check leaves r0 holding its return value.
		{name: "clobbered_by_call", bad: true, build: func(v *vgen, s site) asm.Instructions {
			m, out := v.nullableLookup()
			l := v.label("miss")
			size := v.sizeFits(int(m.ValueSize))
			out = append(out, asm.JEq.Imm(asm.R0, 0, l), v.simpleHelper())
			out = append(out, v.memOp(asm.R0, v.valueOff(m, size), size)...)
			return append(out, v.land(l))
		}},
		{name: "checked", build: func(v *vgen, s site) asm.Instructions {
			m, out := v.nullableLookup()
			size := v.sizeFits(int(m.ValueSize))
			off := v.valueOff(m, size)
			switch v.intn(4) {
			case 0: // if (!p) goto miss
				l := v.label("miss")
				out = append(out, asm.JEq.Imm(asm.R0, 0, l))
				out = append(out, v.memOp(asm.R0, off, size)...)
				return append(out, v.land(l))
			case 1: // if (p) { ... }
				hit, done := v.label("hit"), v.label("done")
				out = append(out, asm.JNE.Imm(asm.R0, 0, hit), asm.Ja.Label(done), asm.Mov.Imm(asm.R1, 0).WithSymbol(hit))
				out = append(out, v.memOp(asm.R0, off, size)...)
				return append(out, v.land(done))
			case 2: // a copy is checked, the original used
				l := v.label("miss")
				out = append(out, asm.Mov.Reg(asm.R3, asm.R0), asm.JEq.Imm(asm.R3, 0, l))
				out = append(out, v.memOp(asm.R0, off, size)...)
				return append(out, v.land(l))
			}
			// kept in r8 across a helper call
			l := v.label("miss")
			v.high = true
			out = append(out, asm.Mov.Reg(asm.R8, asm.R0), v.simpleHelper(), asm.JEq.Imm(asm.R8, 0, l))
			out = append(out, v.memOp(asm.R8, off, size)...)
			return append(out, v.land(l))
		}},
		// An array looked up with a constant index in range never returns
		// NULL, and the verifier knows it (since Linux 6.11).
		{name: "array_const_key", build: func(v *vgen, s site) asm.Instructions {
			m := v.newMap([]ebpf.MapType{ebpf.Array, ebpf.PerCPUArray}, valueSizes[v.intn(len(valueSizes))])
			size := v.sizeFits(int(m.ValueSize))
			return append(v.lookup(m, true), v.memOp(asm.R0, v.valueOff(m, size), size)...)
		}},
	}},
	{name: "pkt_bounds", weight: 110, safety: true, variants: []variant{
		// "R6 offset is outside of the packet": past what the prologue
		// proved, with no check.
		{name: "no_check", bad: true, build: func(v *vgen, s site) asm.Instructions {
			size := sizes[v.intn(4)]
			off := int16(verdictPacketSize - size.Sizeof() + 1 + v.intn(120))
			return v.memOpPlain(regPkt, off, size)
		}},
		// A check proving n bytes, and an access reaching byte n.
		{name: "off_by_one", bad: true, build: func(v *vgen, s site) asm.Instructions {
			return v.pktCheck(false)
		}},
		{name: "checked", build: func(v *vgen, s site) asm.Instructions {
			return v.pktCheck(true)
		}},
		// The access is on the path where the check failed.
		{name: "wrong_direction", bad: true, build: func(v *vgen, s site) asm.Instructions {
			n := verdictPacketSize + 8*(1+v.intn(16))
			size := sizes[v.intn(4)]
			l := v.label("short")
			out := asm.Instructions{asm.Mov.Reg(asm.R2, regPkt), asm.Add.Imm(asm.R2, int32(n)), asm.JLE.Reg(asm.R2, regPktEnd, l)}
			out = append(out, v.memOpPlain(regPkt, int16(n-size.Sizeof()), size)...)
			return append(out, v.land(l))
		}},
		// Fresh pointers from the ctx carry no proof.
		{name: "fresh_from_ctx", bad: true, build: func(v *vgen, s site) asm.Instructions {
			out := asm.Instructions{ctxInto(asm.R1), asm.LoadMem(asm.R2, asm.R1, 0, asm.Word)}
			size := sizes[v.intn(4)]
			return append(out, v.memOpPlain(asm.R2, int16(v.intn(32)), size)...)
		}},
		{name: "fresh_from_ctx", build: func(v *vgen, s site) asm.Instructions {
			n := 1 + v.intn(64)
			size := v.sizeFits(n)
			l := v.label("short")
			out := asm.Instructions{ctxInto(asm.R1), asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), asm.LoadMem(asm.R3, asm.R1, 4, asm.Word),
				asm.Mov.Reg(asm.R4, asm.R2), asm.Add.Imm(asm.R4, int32(n)), asm.JGT.Reg(asm.R4, asm.R3, l)}
			out = append(out, v.memOpPlain(asm.R2, int16(v.intn(n-size.Sizeof()+1)), size)...)
			return append(out, v.land(l))
		}},
		// data_meta is a packet pointer too, bounded by data.
		{name: "data_meta", bad: true, build: func(v *vgen, s site) asm.Instructions {
			out := asm.Instructions{ctxInto(asm.R1), asm.LoadMem(asm.R2, asm.R1, 8, asm.Word)}
			return append(out, v.memOpPlain(asm.R2, 0, asm.Word)...)
		}},
		{name: "data_meta", build: func(v *vgen, s site) asm.Instructions {
			l := v.label("nometa")
			out := asm.Instructions{ctxInto(asm.R1), asm.LoadMem(asm.R2, asm.R1, 8, asm.Word), asm.LoadMem(asm.R3, asm.R1, 0, asm.Word),
				asm.Mov.Reg(asm.R4, asm.R2), asm.Add.Imm(asm.R4, 4), asm.JGT.Reg(asm.R4, asm.R3, l)}
			out = append(out, v.memOpPlain(asm.R2, 0, asm.Word)...)
			return append(out, v.land(l))
		}},
		// A variable offset into the packet.
		{name: "var_offset", bad: true, build: func(v *vgen, s site) asm.Instructions {
			return v.pktVar(false)
		}},
		{name: "var_offset", build: func(v *vgen, s site) asm.Instructions {
			return v.pktVar(true)
		}},
		// Atomics are not allowed on packets: "BPF_ATOMIC stores into R6
		// pkt is not allowed".
		{name: "atomic", bad: true, build: func(v *vgen, s site) asm.Instructions {
			size := []asm.Size{asm.Word, asm.DWord}[v.intn(2)]
			ins := asm.AddAtomic.Mem(regPkt, asm.R1, size, int16(size.Sizeof()*v.intn(8)))
			ins.Constant = int64(asm.AddAtomic >> 8)
			return asm.Instructions{asm.Mov.Imm(asm.R1, 1), ins}
		}},
	}},
	{name: "helper_args", weight: 120, safety: true, variants: []variant{
		// "R1 type=scalar expected=map_ptr".
		{name: "not_a_map", bad: true, build: func(v *vgen, s site) asm.Instructions {
			m := v.newMap(anyMapTypes, 8)
			var r1 asm.Instructions
			switch v.intn(3) {
			case 0:
				r1 = asm.Instructions{v.scalar(asm.R1)}
			case 1:
				r1 = asm.Instructions{asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, tKey)}
			default:
				r1 = v.pointer(asm.R1)
			}
			return cat(v.writeKey(m, tKey, true), r1, asm.Instructions{asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, tKey), asm.FnMapLookupElem.Call()})
		}},
		// The key is no pointer to memory: "R2 type=scalar expected=fp,
		// pkt, pkt_meta, map_key, map_value, ...".
		{name: "key_not_memory", bad: true, build: func(v *vgen, s site) asm.Instructions {
			m := v.newMap(anyMapTypes, 8)
			var r2 asm.Instructions
			switch v.intn(3) {
			case 0:
				r2 = asm.Instructions{v.scalar(asm.R2)}
			case 1:
				r2 = asm.Instructions{ctxInto(asm.R2)}
			default:
				r2 = asm.Instructions{asm.Mov.Reg(asm.R2, regPktEnd)}
			}
			return cat(r2, asm.Instructions{mapPtr(asm.R1, m), v.mapHelper(m)})
		}},
		// The key (or value) runs off the stack or the packet: "invalid
		// read from stack R2 off=-2 size=4", "invalid access to packet".
		{name: "key_out_of_bounds", bad: true, build: func(v *vgen, s site) asm.Instructions {
			return v.helperMem(false)
		}},
		{name: "key_in_bounds", build: func(v *vgen, s site) asm.Instructions {
			return v.helperMem(true)
		}},
		// trace_printk's size: past the buffer, zero, or unknown.
		{name: "printk_size", bad: true, build: func(v *vgen, s site) asm.Instructions {
			return v.printk(false)
		}},
		{name: "printk_size", build: func(v *vgen, s site) asm.Instructions {
			return v.printk(true)
		}},
		// "cannot pass map_type 1 into func bpf_map_lookup_percpu_elem#195".
		{name: "wrong_map_type", bad: true, build: func(v *vgen, s site) asm.Instructions {
			if v.chance(50) {
				m := v.newMap([]ebpf.MapType{ebpf.Array, ebpf.Hash}, 8)
				return cat(v.writeKey(m, tKey, true), asm.Instructions{mapPtr(asm.R1, m), asm.Mov.Reg(asm.R2, asm.RFP),
					asm.Add.Imm(asm.R2, tKey), asm.Mov.Imm(asm.R3, 0), asm.FnMapLookupPercpuElem.Call()})
			}
			m := v.newMap(anyMapTypes, 8)
			fn := []asm.BuiltinFunc{asm.FnMapPushElem, asm.FnMapPopElem, asm.FnMapPeekElem}[v.intn(3)]
			out := asm.Instructions{mapPtr(asm.R1, m), asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, tValue)}
			if fn == asm.FnMapPushElem {
				out = append(out, asm.Mov.Imm(asm.R3, 0))
			}
			return append(out, fn.Call())
		}},
		{name: "percpu_lookup", build: func(v *vgen, s site) asm.Instructions {
			m := v.newMap([]ebpf.MapType{ebpf.PerCPUArray, ebpf.PerCPUHash}, valueSizes[v.intn(len(valueSizes))])
			l := v.label("miss")
			out := cat(v.writeKey(m, tKey, false), asm.Instructions{mapPtr(asm.R1, m), asm.Mov.Reg(asm.R2, asm.RFP),
				asm.Add.Imm(asm.R2, tKey), asm.Mov.Imm(asm.R3, 0), asm.FnMapLookupPercpuElem.Call(), asm.JEq.Imm(asm.R0, 0, l)})
			out = append(out, v.memOp(asm.R0, v.valueOff(m, asm.Byte), asm.Byte)...)
			return append(out, v.land(l))
		}},
		// "invalid func unknown#1000".
		{name: "unknown_helper", bad: true, build: func(v *vgen, s site) asm.Instructions {
			return asm.Instructions{asm.BuiltinFunc([]int{213, 300, 1000, 4095, 0x7fff}[v.intn(5)]).Call()}
		}},
		// A value found in one map used as the key of another.
		{name: "key_from_map_value", build: func(v *vgen, s site) asm.Instructions {
			m2 := v.newMap(anyMapTypes, 8)
			m1 := v.newMap(anyMapTypes, uint32(max(int(m2.KeySize), []int{4, 8, 16, 32}[v.intn(4)])))
			l := v.label("miss")
			out := append(v.lookup(m1, false), asm.JEq.Imm(asm.R0, 0, l), mapPtr(asm.R1, m2), asm.Mov.Reg(asm.R2, asm.R0), v.mapHelper(m2))
			return append(out, v.land(l))
		}},
	}},
	{name: "loop", weight: 70, variants: []variant{
		// "infinite loop detected at insn 7": a loop whose state repeats.
		{name: "infinite", bad: true, build: func(v *vgen, s site) asm.Instructions {
			top, out := v.label("top"), v.label("out")
			r := asm.R1 + asm.Register(v.intn(4))
			body := asm.Instructions{asm.Mov.Imm(r, int32(v.intn(10))), v.unknown(asm.R5, asm.Byte).WithSymbol(top)}
			if v.chance(50) {
				// The exit test reads a value that never changes.
				body = append(body, asm.JEq.Imm(r, int32(10+v.intn(10)), out))
			} else {
				// It rereads the same packet byte.
				body = append(body, asm.JEq.Imm(asm.R5, int32(v.intn(256)), out))
			}
			return append(body, asm.Ja.Label(top), v.land(out))
		}},
		// Bounded loops: constant counts, counts from masked packet data.
		{name: "bounded", build: func(v *vgen, s site) asm.Instructions {
			top := v.label("top")
			switch v.intn(3) {
			case 0:
				return asm.Instructions{asm.Mov.Imm(asm.R1, 0), asm.Mov.Imm(asm.R2, 0),
					asm.Add.Reg(asm.R2, asm.R1).WithSymbol(top), asm.Add.Imm(asm.R1, 1), asm.JLT.Imm(asm.R1, int32(2+v.intn(60)), top)}
			case 1:
				return asm.Instructions{v.unknown(asm.R1, asm.Byte), asm.And.Imm(asm.R1, int32(1+v.intn(31))), asm.Mov.Imm(asm.R2, 1),
					asm.Mul.Imm(asm.R2, 3).WithSymbol(top), asm.Sub.Imm(asm.R1, 1), asm.JSGT.Imm(asm.R1, 0, top)}
			}
			return asm.Instructions{v.unknown(asm.R2, asm.Byte), asm.And.Imm(asm.R2, 63), asm.Mov.Imm(asm.R1, 0),
				asm.Add.Imm(asm.R1, 1).WithSymbol(top), asm.JLT.Reg(asm.R1, asm.R2, top)}
		}},
	}},
	{name: "loop_budget", weight: 5, variants: []variant{
		// Loops the verifier gives up on: "The sequence of 8193 jumps is
		// too complex." (a branch per iteration) and "BPF program is too
		// large. Processed 1000001 insn" (a count it cannot bound).
		{name: "jump_sequence", bad: true, sites: []site{siteMain}, build: func(v *vgen, s site) asm.Instructions {
			top, skip := v.label("top"), v.label("skip")
			return asm.Instructions{asm.Mov.Imm(asm.R1, 0), asm.Mov.Imm(asm.R3, 0),
				asm.Add.Imm(asm.R1, 1).WithSymbol(top), v.unknown(asm.R2, asm.Byte), asm.JEq.Imm(asm.R2, int32(v.intn(256)), skip),
				asm.Add.Imm(asm.R3, 1), asm.Add.Imm(asm.R2, 0).WithSymbol(skip), asm.JLT.Imm(asm.R1, int32(20000+v.intn(10000)), top)}
		}},
	}},
	{name: "unreachable", weight: 50, variants: []variant{
		// "unreachable insn 12": code after an unconditional jump or exit
		// that nothing jumps to.
		{name: "after_jump", bad: true, build: func(v *vgen, s site) asm.Instructions {
			l := v.label("over")
			out := asm.Instructions{asm.Ja.Label(l)}
			for i := v.intn(3); i >= 0; i-- {
				out = append(out, asm.Mov.Imm(v.scratchExcept(asm.R5), v.g.imm32()))
			}
			return append(out, v.land(l))
		}},
		{name: "after_exit", bad: true, build: func(v *vgen, s site) asm.Instructions {
			body := asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return(), asm.Mov.Imm(asm.R0, 2), asm.Return()}
			return asm.Instructions{asm.Call.Label(v.sub(body))}
		}},
		// A function nothing calls is part of the one before it.
		{name: "uncalled_function", bad: true, sites: []site{siteMain}, build: func(v *vgen, s site) asm.Instructions {
			v.tail = asm.Instructions{asm.Mov.Imm(asm.R0, 3), asm.Return()}
			return nil
		}},
		// Code behind a branch the verifier proves never taken is reachable
		// for check_cfg and never verified: even a bad access there passes.
		{name: "dead_branch", build: func(v *vgen, s site) asm.Instructions {
			l := v.label("live")
			c := int32(v.intn(100))
			out := asm.Instructions{asm.Mov.Imm(asm.R1, c), asm.JEq.Imm(asm.R1, c, l)}
			if v.chance(50) {
				out = append(out, asm.Mov.Imm(asm.R2, 0), asm.LoadMem(asm.R3, asm.R2, 0, asm.Word))
			} else {
				out = append(out, asm.Mov.Imm(asm.R2, 7), asm.Add.Imm(asm.R2, 1))
			}
			return append(out, v.land(l))
		}},
	}},
	{name: "bad_insn", weight: 120, variants: badInsnVariants},
	{name: "alu", weight: 60, variants: []variant{
		// Division by a register that may be zero is defined (the result
		// is 0, or the dividend for modulo); shifts by registers are
		// masked at run time.
		{name: "div_by_reg", build: func(v *vgen, s site) asm.Instructions {
			op := []asm.ALUOp{asm.Div, asm.Mod, asm.SDiv, asm.SMod}[v.intn(4)]
			return asm.Instructions{v.unknown(asm.R1, sizes[v.intn(4)]), v.scalar(asm.R2), alu(op, v.chance(40), asm.R2, asm.R1)}
		}},
		{name: "shift_by_reg", build: func(v *vgen, s site) asm.Instructions {
			op := []asm.ALUOp{asm.LSh, asm.RSh, asm.ArSh}[v.intn(3)]
			return asm.Instructions{v.scalar(asm.R1), v.scalar(asm.R2), alu(op, v.chance(40), asm.R2, asm.R1)}
		}},
		{name: "signed_div_imm", build: func(v *vgen, s site) asm.Instructions {
			op := []asm.ALUOp{asm.SDiv, asm.SMod}[v.intn(2)]
			imm := []int32{-1, 1, -7, 0x7fffffff, -0x80000000}[v.intn(5)]
			if v.chance(50) {
				return asm.Instructions{v.scalar(asm.R1), op.Imm32(asm.R1, imm)}
			}
			return asm.Instructions{v.scalar(asm.R1), op.Imm(asm.R1, imm)}
		}},
	}},
	{name: "ctx_access", weight: 80, safety: true, variants: []variant{
		// xdp_md is read-only: "invalid bpf_context access off=0 size=4".
		{name: "write", bad: true, build: func(v *vgen, s site) asm.Instructions {
			return append(asm.Instructions{ctxInto(asm.R1)}, v.store(asm.R1, int16(4*v.intn(6)), asm.Word)...)
		}},
		// Fields are read as 32-bit words, and only those xdp_md has (off
		// 20, egress_ifindex, is for devmap programs only).
		{name: "bad_read", bad: true, build: func(v *vgen, s site) asm.Instructions {
			size, off := asm.Word, int16(4*v.intn(6))
			switch v.intn(4) {
			case 0:
				size = []asm.Size{asm.Byte, asm.Half, asm.DWord}[v.intn(3)]
			case 1:
				off = int16(20 + 4*v.intn(8))
			case 2:
				off += int16(1 + v.intn(3))
			default:
				off = int16(-4 * (1 + v.intn(4)))
			}
			return asm.Instructions{ctxInto(asm.R1), asm.LoadMem(asm.R2, asm.R1, off, size)}
		}},
		// "dereference of modified ctx ptr R1 off=4 disallowed".
		{name: "modified_pointer", bad: true, build: func(v *vgen, s site) asm.Instructions {
			add := int32(4 * (1 + v.intn(4)))
			out := asm.Instructions{ctxInto(asm.R1)}
			if v.chance(50) {
				out = append(out, asm.Add.Imm(asm.R1, add))
			} else {
				out = append(out, v.unknown(asm.R3, asm.Byte), asm.And.Imm(asm.R3, 4), asm.Add.Reg(asm.R1, asm.R3))
			}
			return append(out, asm.LoadMem(asm.R2, asm.R1, 0, asm.Word))
		}},
		{name: "read_fields", build: func(v *vgen, s site) asm.Instructions {
			out := asm.Instructions{ctxInto(asm.R1)}
			for i := v.intn(3); i >= 0; i-- {
				out = append(out, asm.LoadMem(asm.R2+asm.Register(v.intn(4)), asm.R1, int16(4*v.intn(5)), asm.Word))
			}
			return out
		}},
		// "frame pointer is read only".
		{name: "write_r10", bad: true, build: func(v *vgen, s site) asm.Instructions {
			switch v.intn(4) {
			case 0:
				return asm.Instructions{asm.Mov.Imm(asm.RFP, v.g.imm32())}
			case 1:
				return asm.Instructions{asm.Add.Imm(asm.RFP, int32(-8*(1+v.intn(8))))}
			case 2:
				return asm.Instructions{asm.Mov.Reg(asm.RFP, asm.R6)}
			}
			return asm.Instructions{asm.LoadMem(asm.RFP, asm.RFP, -8, asm.DWord)}
		}},
	}},
	{name: "ptr_arith", weight: 90, safety: true, variants: []variant{
		// "R1 pointer arithmetic with *= operator prohibited", "R1 bitwise
		// operator &= on pointer prohibited".
		{name: "forbidden_op", bad: true, build: func(v *vgen, s site) asm.Instructions {
			op := []asm.ALUOp{asm.Mul, asm.Div, asm.Mod, asm.Or, asm.And, asm.Xor, asm.LSh, asm.RSh, asm.ArSh}[v.intn(9)]
			ins := op.Imm(asm.R1, int32(1+v.intn(8)))
			if v.chance(50) {
				ins = op.Reg(asm.R1, asm.R2)
			}
			if v.chance(25) {
				// On a map value.
				m := v.newMap(anyMapTypes, 16)
				out, l := v.checkedLookup(m)
				return append(out, asm.Mov.Reg(asm.R1, asm.R0), v.scalar(asm.R2), ins, v.land(l))
			}
			ptr := v.pointer(asm.R1)
			return append(ptr, v.scalar(asm.R2), ins)
		}},
		// "R1 pointer += pointer prohibited".
		{name: "ptr_plus_ptr", bad: true, build: func(v *vgen, s site) asm.Instructions {
			a := v.pointer(asm.R1)
			b := v.pointer(asm.R2)
			return append(cat(a, b), asm.Add.Reg(asm.R1, asm.R2))
		}},
		// "R1 32-bit pointer arithmetic prohibited" (but see sub32 below).
		{name: "alu32", bad: true, build: func(v *vgen, s site) asm.Instructions {
			ptr := v.pointer(asm.R1)
			op := []asm.ALUOp{asm.Add, asm.Mul, asm.Or, asm.And, asm.LSh}[v.intn(5)]
			if v.chance(50) {
				return append(ptr, op.Imm32(asm.R1, int32(v.intn(16))))
			}
			return append(ptr, asm.Mov.Imm(asm.R2, int32(v.intn(16))), op.Reg32(asm.R1, asm.R2))
		}},
		// "R1 subtraction from stack pointer prohibited": stack pointers
		// only go down by adding negative numbers.
		{name: "stack_sub", bad: true, build: func(v *vgen, s site) asm.Instructions {
			out := asm.Instructions{asm.Mov.Reg(asm.R1, asm.RFP)}
			if v.chance(50) {
				out = append(out, asm.Sub.Imm(asm.R1, int32(8*(1+v.intn(8)))))
			} else {
				out = append(out, asm.Mov.Imm(asm.R2, int32(8*(1+v.intn(8)))), asm.Sub.Reg(asm.R1, asm.R2))
			}
			return append(out, asm.LoadMem(asm.R3, asm.R1, 0, asm.DWord))
		}},
		// "R1 tried to subtract pointer from scalar".
		{name: "scalar_minus_ptr", bad: true, build: func(v *vgen, s site) asm.Instructions {
			ptr := v.pointer(asm.R2)
			return append(ptr, v.scalar(asm.R1), asm.Sub.Reg(asm.R1, asm.R2))
		}},
		// "R1 pointer arithmetic on map_ptr prohibited", "... on pkt_end
		// prohibited".
		{name: "untouchable_pointer", bad: true, build: func(v *vgen, s site) asm.Instructions {
			var out asm.Instructions
			if v.chance(50) {
				out = asm.Instructions{mapPtr(asm.R1, v.newMap(anyMapTypes, 8))}
			} else {
				out = asm.Instructions{asm.Mov.Reg(asm.R1, regPktEnd)}
			}
			return append(out, asm.Add.Imm(asm.R1, int32(1+v.intn(16))))
		}},
		// Constant offsets: moving within the packet or the stack.
		{name: "add_const", build: func(v *vgen, s site) asm.Instructions {
			if v.chance(50) {
				a := int32(v.intn(verdictPacketSize - 8))
				return asm.Instructions{asm.Mov.Reg(asm.R1, regPkt), asm.Add.Imm(asm.R1, a),
					asm.LoadMem(asm.R2, asm.R1, int16(v.intn(verdictPacketSize-int(a)-7)), asm.DWord)}
			}
			return asm.Instructions{asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, int32(-8*v.intn(8))),
				asm.LoadMem(asm.R2, asm.R1, int16(-8*(1+v.intn(8))), asm.DWord)}
		}},
	}},
	{name: "root_ptr_to_scalar", weight: 30, variants: []variant{
		// What root may do to pointers: subtract two of a kind, or turn one
		// into a scalar (mov32, neg, byte swap) and compute with it.
		{name: "difference", build: func(v *vgen, s site) asm.Instructions {
			if v.chance(50) {
				return asm.Instructions{asm.Mov.Reg(asm.R1, regPktEnd), asm.Sub.Reg(asm.R1, regPkt), asm.Add.Imm(asm.R1, 1)}
			}
			return asm.Instructions{asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, -16), asm.Mov.Reg(asm.R2, asm.RFP),
				asm.Sub.Reg(asm.R2, asm.R1), asm.Mul.Imm(asm.R2, 3)}
		}},
		{name: "to_scalar", build: func(v *vgen, s site) asm.Instructions {
			ptr := v.pointer(asm.R1)
			conv := []asm.Instruction{asm.Mov.Reg32(asm.R2, asm.R1), asm.Neg.Imm(asm.R1, 0), asm.HostTo(asm.BE, asm.R1, asm.DWord),
				asm.Sub.Imm32(asm.R1, int32(v.intn(64))), asm.Sub.Reg32(asm.R1, asm.R1)}[v.intn(5)]
			return append(ptr, conv, asm.Mov.Imm(asm.R3, 5), asm.Add.Reg(asm.R3, conv.Dst), asm.Mul.Imm(asm.R3, 7))
		}},
	}},
	{name: "deref", weight: 50, safety: true, variants: []variant{
		// "R1 invalid mem access 'scalar'", "... 'pkt_end'", "... 'map_ptr'".
		{name: "non_pointer", bad: true, build: func(v *vgen, s site) asm.Instructions {
			var out asm.Instructions
			switch v.intn(5) {
			case 0:
				out = asm.Instructions{asm.Mov.Imm(asm.R1, 0)}
			case 1:
				out = asm.Instructions{v.scalar(asm.R1)}
			case 2:
				out = asm.Instructions{asm.Mov.Reg32(asm.R1, regPkt)}
			case 3:
				out = asm.Instructions{asm.Mov.Reg(asm.R1, regPktEnd)}
			default:
				// Root may read struct bpf_map through a map pointer (with
				// kernel BTF), never write it.
				out = asm.Instructions{mapPtr(asm.R1, v.newMap(anyMapTypes, 8))}
				return append(out, v.store(asm.R1, 0, sizes[v.intn(4)])...)
			}
			return append(out, v.memOp(asm.R1, 0, sizes[v.intn(4)])...)
		}},
	}},
	{name: "root_ptr_leak", weight: 30, variants: []variant{
		// Root may store pointers into packets and map values and return
		// them (allow_ptr_leaks).
		{name: "into_packet", build: func(v *vgen, s site) asm.Instructions {
			ptr := v.pointer(asm.R1)
			return append(ptr, asm.StoreMem(regPkt, int16(8*v.intn(verdictPacketSize/8)), asm.R1, asm.DWord))
		}},
		{name: "into_map", build: func(v *vgen, s site) asm.Instructions {
			m := v.newMap(anyMapTypes, []uint32{8, 16, 32}[v.intn(3)])
			l := v.label("miss")
			ptr := v.pointer(asm.R1)
			out := append(v.lookup(m, false), asm.JEq.Imm(asm.R0, 0, l))
			out = append(out, ptr...)
			return append(out, asm.StoreMem(asm.R0, int16(8*v.intn(int(m.ValueSize)/8)), asm.R1, asm.DWord), v.land(l))
		}},
		{name: "returned", sites: []site{siteMain, siteBranch}, build: func(v *vgen, s site) asm.Instructions {
			l := v.label("stay")
			ptr := v.pointer(asm.R0)
			out := asm.Instructions{v.unknown(asm.R1, asm.Byte), asm.JGT.Imm(asm.R1, int32(v.intn(256)), l)}
			return append(append(out, ptr...), asm.Return(), v.land(l))
		}},
	}},
	{name: "subprog", weight: 60, safety: true, variants: []variant{
		// "cannot return stack pointer to the caller".
		{name: "returns_stack_pointer", bad: true, build: func(v *vgen, s site) asm.Instructions {
			body := asm.Instructions{asm.StoreImm(asm.RFP, -8, 1, asm.Word), asm.Mov.Reg(asm.R0, asm.RFP), asm.Add.Imm(asm.R0, -8), asm.Return()}
			return asm.Instructions{asm.Call.Label(v.sub(body))}
		}},
		// A pointer to the caller's stack, read past the caller's frame.
		{name: "caller_stack", bad: true, build: func(v *vgen, s site) asm.Instructions {
			return v.callerStack(false)
		}},
		{name: "caller_stack", build: func(v *vgen, s site) asm.Instructions {
			return v.callerStack(true)
		}},
		// "combined stack size of 2 calls is 544. Too large".
		{name: "combined_stack", bad: true, sites: []site{siteMain, siteBranch}, deep: true, build: func(v *vgen, s site) asm.Instructions {
			return v.combinedStack(false)
		}},
		{name: "combined_stack", sites: []site{siteMain, siteBranch}, deep: true, build: func(v *vgen, s site) asm.Instructions {
			return v.combinedStack(true)
		}},
		// "the call stack of 9 frames is too deep !".
		{name: "call_depth", bad: true, sites: []site{siteMain, siteBranch}, build: func(v *vgen, s site) asm.Instructions {
			return v.callChain(8)
		}},
		{name: "call_depth", sites: []site{siteMain, siteBranch}, build: func(v *vgen, s site) asm.Instructions {
			return v.callChain(1 + v.intn(7))
		}},
	}},
	// Drawn by seed (insnLimitEvery), never by weight.
	{name: "loop_limit", weight: 0, variants: []variant{
		{name: "unbounded_count", bad: true, sites: []site{siteMain}, build: func(v *vgen, s site) asm.Instructions {
			top := v.label("top")
			return asm.Instructions{v.unknown(asm.R1, asm.Word), asm.Sub.Imm(asm.R1, 1).WithSymbol(top), asm.JSGT.Imm(asm.R1, 0, top)}
		}},
	}},
}

// Template parts shared by several variants.

// earlyExit leaves main on a packet condition, setting r0 first or not.
func (v *vgen) earlyExit(setR0 bool) asm.Instructions {
	l := v.label("stay")
	out := asm.Instructions{v.unknown(asm.R3, asm.Byte), asm.JGT.Imm(asm.R3, int32(v.intn(256)), l)}
	if setR0 {
		out = append(out, asm.Mov.Imm(asm.R0, int32(v.intn(4))))
	}
	return append(out, asm.Return(), v.land(l))
}

// subprogR0 calls a subprogram that computes from its argument and
// returns it in r0, or forgets to.
func (v *vgen) subprogR0(setR0 bool) asm.Instructions {
	body := asm.Instructions{asm.Mov.Reg(asm.R2, asm.R1), asm.Add.Imm(asm.R2, int32(v.intn(100)))}
	if setR0 {
		body = append(body, asm.Mov.Reg(asm.R0, asm.R2))
	}
	body = append(body, asm.Return())
	// The verifier complains where the caller reads r0.
	return append(asm.Instructions{v.scalar(asm.R1), asm.Call.Label(v.sub(body))}, v.use(asm.R0, false)...)
}

// callSmall calls a subprogram returning its argument plus a constant.
func (v *vgen) callSmall() asm.Instructions {
	body := asm.Instructions{asm.Mov.Reg(asm.R0, asm.R1), asm.Add.Imm(asm.R0, int32(v.intn(100))), asm.Return()}
	return asm.Instructions{v.scalar(asm.R1), asm.Call.Label(v.sub(body))}
}

// stackAccess accesses the stack at r10+off, directly or through a copy
// of r10 moved by a constant.
func (v *vgen) stackAccess(off int16, size asm.Size) asm.Instructions {
	if v.chance(50) {
		return v.memOp(asm.RFP, off, size)
	}
	move := int16(-8 * v.intn(8))
	return append(asm.Instructions{asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, int32(move))}, v.memOp(asm.R1, off-move, size)...)
}

// stackVar accesses the stack at a variable offset: a masked packet byte
// scaled to the access size, from a base that keeps the range inside the
// frame or lets it reach past r10.
func (v *vgen) stackVar(inside bool) asm.Instructions {
	size := sizes[v.intn(4)]
	mask := []int{1, 3, 7, 15}[v.intn(4)]
	span := (mask + 1) * size.Sizeof() // the accessed bytes, from the base
	base := -span - 8*v.intn(8)
	if !inside {
		base = -span + size.Sizeof()*(1+v.intn(mask+1))
	}
	out := asm.Instructions{v.unknown(asm.R1, asm.Byte), asm.And.Imm(asm.R1, int32(mask))}
	if size != asm.Byte {
		out = append(out, asm.LSh.Imm(asm.R1, int32(map[asm.Size]int{asm.Half: 1, asm.Word: 2, asm.DWord: 3}[size])))
	}
	out = append(out, asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, int32(base)), asm.Add.Reg(asm.R2, asm.R1))
	if v.chance(50) {
		return append(out, asm.LoadMem(asm.R3, asm.R2, 0, size))
	}
	return append(out, asm.Mov.Imm(asm.R3, v.g.imm32()), asm.StoreMem(asm.R2, 0, asm.R3, size))
}

// valueOff is an offset in m's value where size bytes fit.
func (v *vgen) valueOff(m *ebpf.MapSpec, size asm.Size) int16 {
	return int16(v.intn(int(m.ValueSize) - size.Sizeof() + 1))
}

// mapAccess looks a value up and, on a hit, accesses it where f says,
// after f's instructions (which may move r0).
func (v *vgen) mapAccess(f func(vs int) (asm.Instructions, int16, asm.Size)) asm.Instructions {
	m := v.newMap(anyMapTypes, valueSizes[v.intn(len(valueSizes))])
	out, l := v.checkedLookup(m)
	pre, off, size := f(int(m.ValueSize))
	out = append(out, pre...)
	if pre != nil {
		out = append(out, v.memOpPlain(asm.R0, off, size)...)
	} else {
		out = append(out, v.memOp(asm.R0, off, size)...)
	}
	return append(out, v.land(l))
}

// mapVar indexes a value with a packet value bounded by a mask or a
// comparison, exactly or one too loosely.
func (v *vgen) mapVar(exact bool) asm.Instructions {
	return v.mapAccess(func(vs int) (asm.Instructions, int16, asm.Size) {
		size := v.sizeFits(vs)
		room := vs - size.Sizeof() // the largest index that fits
		out := asm.Instructions{v.unknown(asm.R1, []asm.Size{asm.Byte, asm.Half}[v.intn(2)])}
		if v.chance(50) {
			mask := 0
			for mask*2+1 <= room {
				mask = mask*2 + 1
			}
			if !exact {
				mask = mask*2 + 1
			}
			out = append(out, asm.And.Imm(asm.R1, int32(mask)))
		} else {
			l := v.label("big")
			bound := room
			if !exact {
				bound += 1 + v.intn(4)
			}
			out = append(out, asm.JGT.Imm(asm.R1, int32(bound), l), asm.Ja.Label(l+"_ok"), v.land(l), asm.Ja.Label(l+"_done"),
				asm.Mov.Imm(asm.R2, 0).WithSymbol(l+"_ok"))
			// The bound holds on the ok path only; the other path skips
			// the access.
			return append(out, asm.Add.Reg(asm.R0, asm.R1), asm.LoadMem(asm.R3, asm.R0, 0, size),
				asm.Mov.Imm(asm.R2, 1).WithSymbol(l+"_done")), 0, size
		}
		return append(out, asm.Add.Reg(asm.R0, asm.R1)), 0, size
	})
}

// mapSigned indexes a value with a possibly negative index, checked below
// zero or not.
func (v *vgen) mapSigned(checked bool) asm.Instructions {
	m := v.newMap(anyMapTypes, valueSizes[v.intn(len(valueSizes))])
	out, l := v.checkedLookup(m)
	size := v.sizeFits(int(m.ValueSize))
	room := int(m.ValueSize) - size.Sizeof()
	out = append(out, v.unknown(asm.R1, asm.Byte), asm.Sub.Imm(asm.R1, int32(1+v.intn(16))))
	if checked {
		out = append(out, asm.JSLT.Imm(asm.R1, 0, l))
	}
	out = append(out, asm.JSGT.Imm(asm.R1, int32(room), l), asm.Add.Reg(asm.R0, asm.R1))
	out = append(out, v.memOpPlain(asm.R0, 0, size)...)
	return append(out, v.land(l))
}

// boundsValue looks a value up and returns the lookup with its null
// check, the label of the miss path, an access size and the largest index
// at which it fits.
func (v *vgen) boundsValue() (asm.Instructions, string, asm.Size, int) {
	m := v.newMap(anyMapTypes, valueSizes[v.intn(len(valueSizes))])
	out, l := v.checkedLookup(m)
	size := v.sizeFits(int(m.ValueSize))
	return out, l, size, int(m.ValueSize) - size.Sizeof()
}

// boundsAccess adds the index in r2 to the value pointer and accesses it.
func (v *vgen) boundsAccess(out asm.Instructions, l string, size asm.Size) asm.Instructions {
	out = append(out, asm.Add.Reg(asm.R0, asm.R2))
	out = append(out, v.memOpPlain(asm.R0, 0, size)...)
	return append(out, v.land(l))
}

// outside is an index past room.
func (v *vgen) outside(room int) int { return room + 1 + v.intn(16) }

// boundsJoin picks the index on two paths, one of which may put it out
// of bounds: a verifier that merges the paths too eagerly misses it.
func (v *vgen) boundsJoin(inside bool) asm.Instructions {
	out, l, size, room := v.boundsValue()
	a, b := v.intn(room+1), v.intn(room+1)
	if !inside {
		b = v.outside(room)
	}
	other, join := v.label("other"), v.label("join")
	out = append(out, v.unknown(asm.R1, asm.Byte), asm.JGT.Imm(asm.R1, int32(v.intn(256)), other),
		asm.Mov.Imm(asm.R2, int32(a)), asm.Ja.Label(join), asm.Mov.Imm(asm.R2, int32(b)).WithSymbol(other),
		asm.Mov.Imm(asm.R3, 0).WithSymbol(join))
	return v.boundsAccess(out, l, size)
}

// bounds32 bounds the index with a 32-bit comparison: enough for a value
// loaded as 32 bits or less (zero-extended), not for one loaded as 64.
func (v *vgen) bounds32(inside bool) asm.Instructions {
	out, l, size, room := v.boundsValue()
	ld := []asm.Size{asm.Half, asm.Word}[v.intn(2)]
	if !inside {
		ld = asm.DWord
	}
	out = append(out, v.unknown(asm.R2, ld), asm.JGT.Imm32(asm.R2, int32(room), l))
	return v.boundsAccess(out, l, size)
}

// boundsSpill masks the index, spills it across the lookup's call and
// fills it back, as 64 bits or as its low 32.
func (v *vgen) boundsSpill(inside, narrow bool) asm.Instructions {
	m := v.newMap(anyMapTypes, valueSizes[v.intn(len(valueSizes))])
	size := v.sizeFits(int(m.ValueSize))
	room := int(m.ValueSize) - size.Sizeof()
	mask := 0
	for mask*2+1 <= room {
		mask = mask*2 + 1
	}
	if !inside {
		mask = mask*2 + 1
	}
	out := asm.Instructions{v.unknown(asm.R1, asm.Byte), asm.And.Imm(asm.R1, int32(mask)), asm.StoreMem(asm.RFP, tSpill, asm.R1, asm.DWord)}
	look, l := v.checkedLookup(m)
	out = append(out, look...)
	if narrow {
		out = append(out, asm.LoadMem(asm.R2, asm.RFP, tSpill, asm.Word))
	} else {
		out = append(out, asm.LoadMem(asm.R2, asm.RFP, tSpill, asm.DWord))
	}
	return v.boundsAccess(out, l, size)
}

// boundsLoop walks the value in a bounded loop, stopping in time or one
// step too late.
func (v *vgen) boundsLoop(inside bool) asm.Instructions {
	out, l, size, room := v.boundsValue()
	n := room + 1 // the loop runs while the index is below n
	if !inside {
		n += size.Sizeof()
	}
	top := v.label("top")
	out = append(out, asm.Mov.Imm(asm.R1, 0), asm.Mov.Reg(asm.R3, asm.R0).WithSymbol(top), asm.Add.Reg(asm.R3, asm.R1))
	switch {
	case v.chance(50):
		out = append(out, asm.LoadMem(asm.R4, asm.R3, 0, size))
	case size == asm.DWord:
		out = append(out, asm.StoreMem(asm.R3, 0, asm.R1, size))
	default:
		out = append(out, asm.StoreImm(asm.R3, 0, int64(v.intn(100)), size))
	}
	out = append(out, asm.Add.Imm(asm.R1, int32(size.Sizeof())), asm.JLT.Imm(asm.R1, int32(n), top))
	return append(out, v.land(l))
}

// boundsALU derives the index with arithmetic whose result the verifier
// bounds: a mask and a multiplication, a right shift.
func (v *vgen) boundsALU(inside bool) asm.Instructions {
	out, l, size, room := v.boundsValue()
	out = append(out, v.unknown(asm.R2, asm.Byte))
	switch v.intn(2) {
	case 0:
		// (x & 7) * c reaches 7c.
		c := 1 + v.intn(4)
		if inside {
			c = room / 7
		} else {
			c = room/7 + 1
		}
		if inside && c == 0 {
			out = append(out, asm.And.Imm(asm.R2, 0))
		} else {
			out = append(out, asm.And.Imm(asm.R2, 7), asm.Mul.Imm(asm.R2, int32(c)))
		}
	default:
		// A byte shifted right by sh reaches 255 >> sh.
		sh := 0
		for 255>>sh > room {
			sh++
		}
		if !inside {
			sh -= 1 + v.intn(sh)
		}
		out = append(out, asm.RSh.Imm(asm.R2, int32(sh)))
	}
	return v.boundsAccess(out, l, size)
}

// nullableLookup looks up a key the verifier cannot prove present: r0 may
// be NULL.
func (v *vgen) nullableLookup() (*ebpf.MapSpec, asm.Instructions) {
	m := v.newMap(anyMapTypes, valueSizes[v.intn(len(valueSizes))])
	out := v.writeKeyMode(m, tKey, false, isArray(m))
	return m, append(out, mapPtr(asm.R1, m), asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, tKey), asm.FnMapLookupElem.Call())
}

// pktCheck proves n bytes of packet, past the prologue's, and accesses
// them, or reaches one byte too far.
func (v *vgen) pktCheck(inside bool) asm.Instructions {
	n := verdictPacketSize + 8*(1+v.intn(16))
	size := sizes[v.intn(4)]
	off := v.intn(n - size.Sizeof() + 1)
	if !inside {
		off = n - size.Sizeof() + 1 + v.intn(size.Sizeof())
	}
	l := v.label("short")
	out := asm.Instructions{asm.Mov.Reg(asm.R2, regPkt), asm.Add.Imm(asm.R2, int32(n))}
	forms := 3
	if inside {
		forms = 4
	}
	switch v.intn(forms) {
	case 0:
		out = append(out, asm.JGT.Reg(asm.R2, regPktEnd, l))
	case 1:
		out = append(out, asm.JLT.Reg(regPktEnd, asm.R2, l))
	case 2:
		ok := v.label("long")
		out = append(out, asm.JLE.Reg(asm.R2, regPktEnd, ok), asm.Ja.Label(l), asm.Mov.Imm(asm.R3, 0).WithSymbol(ok))
	default:
		// data + n < data_end proves n+1 bytes; use n.
		out = append(out, asm.JGE.Reg(asm.R2, regPktEnd, l))
	}
	out = append(out, v.memOpPlain(regPkt, int16(off), size)...)
	return append(out, v.land(l))
}

// pktVar accesses the packet at a variable offset, bounded well enough or
// not.
func (v *vgen) pktVar(ok bool) asm.Instructions {
	size := sizes[v.intn(4)]
	out := asm.Instructions{v.unknown(asm.R3, asm.Byte)}
	switch {
	case !ok && v.chance(30):
		// Masked so that it stays within what the prologue proved, but
		// adding a variable to a packet pointer drops its proven range:
		// only a new check gives it back.
		off := v.intn(verdictPacketSize - 63 - size.Sizeof() + 1)
		out = append(out, asm.And.Imm(asm.R3, 63), asm.Mov.Reg(asm.R4, regPkt), asm.Add.Reg(asm.R4, asm.R3))
		return append(out, v.memOpPlain(asm.R4, int16(off), size)...)
	case !ok && v.chance(30):
		out = append(out, asm.Mov.Reg(asm.R4, regPkt), asm.Add.Reg(asm.R4, asm.R3))
		return append(out, v.memOpPlain(asm.R4, int16(v.intn(16)), size)...)
	case !ok && v.chance(30):
		// Checked, but from 32 bits: the verifier refuses offsets that may
		// exceed 64 KiB before any check.
		out[0] = v.unknown(asm.R3, asm.Word)
	}
	k := size.Sizeof() + v.intn(16)
	off := v.intn(k - size.Sizeof() + 1)
	if !ok && out[0].OpCode.Size() == asm.Byte {
		off = k - size.Sizeof() + 1 + v.intn(size.Sizeof())
	}
	l := v.label("short")
	out = append(out, asm.Mov.Reg(asm.R4, regPkt), asm.Add.Reg(asm.R4, asm.R3), asm.Mov.Reg(asm.R5, asm.R4),
		asm.Add.Imm(asm.R5, int32(k)), asm.JGT.Reg(asm.R5, regPktEnd, l))
	out = append(out, v.memOpPlain(asm.R4, int16(off), size)...)
	return append(out, v.land(l))
}

// mapHelper calls a helper taking a map in r1 and a key in r2.
func (v *vgen) mapHelper(m *ebpf.MapSpec) asm.Instruction {
	return []asm.BuiltinFunc{asm.FnMapLookupElem, asm.FnMapDeleteElem}[v.intn(2)].Call()
}

// helperMem passes a helper a key or value in the stack or the packet,
// within bounds or running off them.
func (v *vgen) helperMem(inside bool) asm.Instructions {
	m := v.newMap(anyMapTypes, valueSizes[v.intn(len(valueSizes))])
	ks, vs := int(m.KeySize), int(m.ValueSize)
	switch v.intn(3) {
	case 0: // key on the stack
		off := -ks * (1 + v.intn(8))
		if !inside {
			off = -ks + 1 + v.intn(ks+4)
		}
		return asm.Instructions{mapPtr(asm.R1, m), asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, int32(off)), v.mapHelper(m)}
	case 1: // key in the packet
		off := v.intn(verdictPacketSize - ks + 1)
		if !inside {
			off = verdictPacketSize - ks + 1 + v.intn(ks+8)
		}
		return asm.Instructions{mapPtr(asm.R1, m), asm.Mov.Reg(asm.R2, regPkt), asm.Add.Imm(asm.R2, int32(off)), v.mapHelper(m)}
	}
	// the value of an update
	off := int(tValue)
	if !inside {
		off = -vs + 1 + v.intn(vs-1)
	}
	out := v.writeKey(m, tKey, false)
	return append(out, mapPtr(asm.R1, m), asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, tKey),
		asm.Mov.Reg(asm.R3, asm.RFP), asm.Add.Imm(asm.R3, int32(off)), asm.Mov.Imm(asm.R4, int32(v.intn(3))),
		asm.FnMapUpdateElem.Call())
}

// printk calls bpf_trace_printk on a format of 16 bytes on the stack,
// passing its size right or wrong.
func (v *vgen) printk(ok bool) asm.Instructions {
	out := asm.Instructions{asm.StoreImm(asm.RFP, tScratch, 0x0a6b6f, asm.Word), asm.StoreImm(asm.RFP, tScratch+4, 0, asm.Word),
		asm.StoreImm(asm.RFP, tScratch+8, 0, asm.Word), asm.StoreImm(asm.RFP, tScratch+12, 0, asm.Word),
		asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, tScratch)}
	if ok {
		return append(out, asm.Mov.Imm(asm.R2, int32(4+v.intn(13))), asm.FnTracePrintk.Call())
	}
	switch v.intn(4) {
	case 0:
		out = append(out, asm.Mov.Imm(asm.R2, int32(-tScratch+1+v.intn(64))))
	case 1:
		out = append(out, asm.Mov.Imm(asm.R2, 0))
	case 2:
		out = append(out, v.unknown(asm.R2, asm.Word))
	default:
		out = append(out, v.scalar(asm.R1), asm.Mov.Imm(asm.R2, 8))
	}
	return append(out, asm.FnTracePrintk.Call())
}

// callerStack passes a subprogram a pointer into the caller's stack; the
// subprogram reads within the caller's frame or past its top.
func (v *vgen) callerStack(inside bool) asm.Instructions {
	k := 1 + v.intn(8)
	o := 8 * v.intn(k)
	if !inside {
		o = 8 * (k + v.intn(3))
	}
	body := asm.Instructions{asm.LoadMem(asm.R0, asm.R1, int16(o), asm.DWord), asm.Return()}
	return asm.Instructions{v.scalar(asm.R2), asm.StoreMem(asm.RFP, int16(-8*k), asm.R2, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, int32(-8*k)), asm.Call.Label(v.sub(body))}
}

// combinedStack uses deep stack in main and in a subprogram it calls:
// together within the 512 bytes of a call chain, or past them.
func (v *vgen) combinedStack(fits bool) asm.Instructions {
	x := 32 * (9 + v.intn(5)) // 288 to 416
	y := 8 * (1 + v.intn((512-x)/8))
	if !fits {
		y = 512 - x + 32 + 8*v.intn((x-32)/8)
	}
	body := asm.Instructions{asm.StoreImm(asm.RFP, int16(-y), 1, asm.Word), asm.Mov.Imm(asm.R0, 0), asm.Return()}
	return asm.Instructions{asm.StoreImm(asm.RFP, int16(-x), 1, asm.Word), asm.Call.Label(v.sub(body))}
}

// callChain calls n nested subprograms: n+1 frames with main's.
func (v *vgen) callChain(n int) asm.Instructions {
	next := v.sub(asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()})
	for i := 1; i < n; i++ {
		next = v.sub(asm.Instructions{asm.Call.Label(next), asm.Add.Imm(asm.R0, 1), asm.Return()})
	}
	return asm.Instructions{asm.Call.Label(next)}
}

// Malformed instructions: what the kernel refuses before verifying
// anything (EINVAL). Some encodings need a Patch: cilium/ebpf clears an
// ALU instruction's offset and writes the second slot of an lddw itself.

// patchMagic marks the instruction a patch rewrites.
const patchMagic = 0x7e57ab1e

func findMagic(raw []insn.Insn, code uint8) int {
	for i, in := range raw {
		if in.Code == code && in.Imm == patchMagic {
			return i
		}
	}
	panic("kdiff: patch marker not found")
}

// raw builds an instruction cilium/ebpf marshals as it is.
func raw(code uint8, dst, src asm.Register, off int16, imm int64) asm.Instruction {
	return asm.Instruction{OpCode: asm.OpCode(code), Dst: dst, Src: src, Offset: off, Constant: imm}
}

var badInsnVariants = []variant{
	// "unknown opcode e7" and the like.
	{name: "unknown_opcode", bad: true, build: func(v *vgen, s site) asm.Instructions {
		code := []uint8{0xe4, 0xe7, 0xec, 0xef, 0xf4, 0xf7, 0xfc, 0xff, 0xe5, 0xed, 0xf5, 0xfd, 0xe6, 0xf6, 0x38, 0xa1, 0xe1, 0xc2, 0x9d}[v.intn(19)]
		return asm.Instructions{asm.Mov.Imm(asm.R1, 0), raw(code, asm.R1, 0, 0, 0)}
	}},
	// "BPF_ALU uses reserved fields", "BPF_LDX uses reserved fields" ...
	{name: "reserved_fields", bad: true, build: func(v *vgen, s site) asm.Instructions {
		pre := asm.Instructions{asm.Mov.Imm(asm.R1, 1), asm.Mov.Imm(asm.R2, 2), asm.StoreMem(asm.RFP, tScratch, asm.R1, asm.DWord)}
		switch v.intn(11) {
		case 0: // ALU with an immediate and a source register
			return append(pre, raw([]uint8{0x07, 0x04, 0x17, 0xa7, 0x57}[v.intn(5)], asm.R1, asm.R2, 0, 1))
		case 1: // LDX with an immediate
			return append(pre, raw(0x79, asm.R3, asm.RFP, tScratch, int64(1+v.intn(100))))
		case 2: // STX with an immediate
			return append(pre, raw(0x7b, asm.RFP, asm.R1, tScratch, int64(1+v.intn(100))))
		case 3: // ST with a source register
			return append(pre, raw(0x62, asm.RFP, asm.R1, tScratch, 5))
		case 4: // exit with a register
			l := v.label("stay")
			return append(pre, v.unknown(asm.R3, asm.Byte), asm.JGT.Imm(asm.R3, 9, l), asm.Mov.Imm(asm.R0, 0),
				raw(0x95, asm.R1, 0, 0, 0), v.land(l))
		case 5: // a helper call with a register or an offset
			return append(pre, raw(0x85, asm.R1, 0, int16(v.intn(2)), 5))
		case 6: // ja with a register
			return append(pre, raw(0x05, 0, asm.R1, 0, 0))
		case 7: // a conditional jump on an immediate with a source register
			return append(pre, raw(0x15, asm.R1, asm.R2, 0, 0))
		case 8: // a byte swap of no width
			return append(pre, raw(0xd4, asm.R1, 0, 0, []int64{0, 8, 7, 128}[v.intn(4)]))
		case 9: // neg with an immediate
			return append(pre, raw(0x87, asm.R1, 0, 0, 1))
		}
		// An ALU instruction with an offset, which only sdiv, smod and
		// movsx have: patched in, cilium/ebpf drops it.
		code := []uint8{0x07, 0x04, 0x1f, 0x5f, 0xb7, 0xbc, 0x37, 0x97}[v.intn(8)]
		off := []int16{2, 3, 7, 100, -1, 1}[v.intn(6)]
		if code == 0x37 || code == 0x97 {
			off = []int16{2, 8, -1}[v.intn(3)]
		}
		v.patch = func(x []insn.Insn) []insn.Insn {
			i := findMagic(x, insn.ALU64|insn.MOV|insn.K)
			x[i] = insn.Insn{Code: code, Dst: insn.R1, Src: insn.R2 * uint8(code>>3&1), Off: off, Imm: 3 * int32(1-code>>3&1)}
			return x
		}
		return append(pre, asm.Mov.Imm(asm.R3, patchMagic))
	}},
	// "unrecognized bpf_ld_imm64 insn", "invalid bpf_ld_imm64 insn", "jump
	// into the middle of ldimm64 insn 9", "fd 9999 is not pointing to
	// valid bpf_map" (EBADF).
	{name: "bad_lddw", bad: true, build: func(v *vgen, s site) asm.Instructions {
		switch v.intn(5) {
		case 0:
			ins := asm.LoadImm(asm.R1, int64(v.g.imm64()), asm.DWord)
			ins.Src = asm.Register([]int{7, 8, 12, 15}[v.intn(4)])
			return asm.Instructions{ins}
		case 1:
			ins := asm.LoadImm(asm.R1, 9999, asm.DWord)
			ins.Src = asm.PseudoMapFD
			return asm.Instructions{ins}
		case 2:
			field := v.intn(4)
			v.patch = func(x []insn.Insn) []insn.Insn {
				i := findMagic(x, insn.LD|insn.IMM|insn.DW)
				switch field {
				case 0:
					x[i+1].Code = 0x07
				case 1:
					x[i+1].Off = 1
				case 2:
					x[i+1].Dst = insn.R1
				default:
					x[i+1].Src = insn.R2
				}
				return x
			}
			return asm.Instructions{asm.LoadImm(asm.R1, patchMagic, asm.DWord)}
		case 3:
			// The last instruction of the program is half an lddw.
			v.tail = asm.Instructions{asm.LoadImm(asm.R0, patchMagic, asm.DWord)}
			v.patch = func(x []insn.Insn) []insn.Insn { return x[:len(x)-1] }
			return nil
		}
		return asm.Instructions{v.unknown(asm.R1, asm.Byte), raw(0x25, asm.R1, 0, 1, int64(v.intn(256))),
			asm.LoadImm(asm.R2, v.g.imm64(), asm.DWord), v.land(v.label("after"))}
	}},
	// "R11 is invalid".
	{name: "bad_register", bad: true, build: func(v *vgen, s site) asm.Instructions {
		r := asm.Register(11 + v.intn(5))
		if v.chance(50) {
			return asm.Instructions{asm.Mov.Imm(r, 0)}
		}
		return asm.Instructions{asm.Mov.Reg(asm.R1, r)}
	}},
	// "BPF_LD_[ABS|IND] instructions not allowed for this program type".
	{name: "ld_abs", bad: true, build: func(v *vgen, s site) asm.Instructions {
		size := []asm.Size{asm.Byte, asm.Half, asm.Word}[v.intn(3)]
		if v.chance(50) {
			return asm.Instructions{asm.LoadAbs(int32(v.intn(16)), size)}
		}
		return asm.Instructions{asm.Mov.Imm(asm.R2, 0), asm.LoadInd(asm.R0, asm.R2, int32(v.intn(16)), size)}
	}},
	// "div by zero".
	{name: "div_by_zero_imm", bad: true, build: func(v *vgen, s site) asm.Instructions {
		op := []asm.ALUOp{asm.Div, asm.Mod, asm.SDiv, asm.SMod}[v.intn(4)]
		if v.chance(50) {
			return asm.Instructions{v.scalar(asm.R1), op.Imm32(asm.R1, 0)}
		}
		return asm.Instructions{v.scalar(asm.R1), op.Imm(asm.R1, 0)}
	}},
	// "invalid shift 64".
	{name: "shift_imm_too_big", bad: true, build: func(v *vgen, s site) asm.Instructions {
		op := []asm.ALUOp{asm.LSh, asm.RSh, asm.ArSh}[v.intn(3)]
		if v.chance(50) {
			return asm.Instructions{v.scalar(asm.R1), op.Imm32(asm.R1, []int32{32, 33, 63, -1}[v.intn(4)])}
		}
		return asm.Instructions{v.scalar(asm.R1), op.Imm(asm.R1, []int32{64, 65, 100, -1}[v.intn(4)])}
	}},
	// "invalid atomic operand size", "BPF_ATOMIC uses invalid atomic
	// opcode 30".
	{name: "bad_atomic", bad: true, build: func(v *vgen, s site) asm.Instructions {
		pre := asm.Instructions{asm.Mov.Imm(asm.R1, 1), asm.StoreMem(asm.RFP, tScratch, asm.R1, asm.DWord)}
		if v.chance(50) {
			return append(pre, raw([]uint8{0xd3, 0xcb}[v.intn(2)], asm.RFP, asm.R1, tScratch, 0))
		}
		return append(pre, raw([]uint8{0xdb, 0xc3}[v.intn(2)], asm.RFP, asm.R1, tScratch, []int64{0x10, 0x30, 0x70, 0xe0, 0xf2, 0x09}[v.intn(6)]))
	}},
	// "jump out of range from insn 20 to 1020", "last insn is not an exit
	// or jmp", calls to nowhere.
	{name: "bad_jump", bad: true, build: func(v *vgen, s site) asm.Instructions {
		switch v.intn(4) {
		case 0:
			return asm.Instructions{raw(0x05, 0, 0, []int16{1000, -1000, 0x7fff, -0x8000}[v.intn(4)], 0)}
		case 1:
			return asm.Instructions{v.unknown(asm.R1, asm.Byte), raw(0x25, asm.R1, 0, int16(500+v.intn(1000)), 7)}
		case 2:
			v.tail = asm.Instructions{asm.Mov.Imm(asm.R0, 0)}
			return nil
		}
		return asm.Instructions{raw(0x85, 0, asm.PseudoCall, 0, int64(1000+v.intn(1000)))}
	}},
	{name: "lddw", build: func(v *vgen, s site) asm.Instructions {
		return asm.Instructions{asm.LoadImm(asm.R1, v.g.imm64(), asm.DWord), asm.Add.Imm(asm.R1, 1)}
	}},
	{name: "nop_jump", build: func(v *vgen, s site) asm.Instructions {
		if v.chance(50) {
			return asm.Instructions{raw(0x05, 0, 0, 0, 0), asm.Mov.Imm(asm.R1, 0)}
		}
		return asm.Instructions{raw(0x06, 0, 0, 0, 0), asm.Mov.Imm(asm.R1, 0)}
	}},
}
