package emu

import (
	"fmt"
	"math"
	"math/bits"
	"sync/atomic"

	"github.com/bpfsim/bpfsim/sim/mem"
)

func mask(v uint64, sf bool) uint64 {
	if sf {
		return v
	}
	return v & 0xffffffff
}

func shiftOp(v uint64, typ, amt uint8, sf bool) uint64 {
	if !sf {
		v32 := uint32(v)
		switch typ {
		case 0:
			return uint64(v32 << amt)
		case 1:
			return uint64(v32 >> amt)
		case 2:
			return uint64(uint32(int32(v32) >> amt))
		default:
			return uint64(bits.RotateLeft32(v32, -int(amt)))
		}
	}
	switch typ {
	case 0:
		return v << amt
	case 1:
		return v >> amt
	case 2:
		return uint64(int64(v) >> amt)
	default:
		return bits.RotateLeft64(v, -int(amt))
	}
}

// addWithCarry is the architecture's AddWithCarry; it sets NZCV when
// flags is set.
func (c *CPU) addWithCarry(a, b, carry uint64, sf, flags bool) uint64 {
	if sf {
		sum, co := bits.Add64(a, b, carry)
		if flags {
			c.N, c.Z, c.C = int64(sum) < 0, sum == 0, co != 0
			c.V = ((a^sum)&(b^sum))>>63 != 0
		}
		return sum
	}
	a32, b32 := uint32(a), uint32(b)
	wide := uint64(a32) + uint64(b32) + carry
	r := uint32(wide)
	if flags {
		c.N, c.Z, c.C = int32(r) < 0, r == 0, wide>>32 != 0
		c.V = ((a32^r)&(b32^r))>>31 != 0
	}
	return uint64(r)
}

func (c *CPU) logicFlags(r uint64, sf bool) {
	if sf {
		c.N = int64(r) < 0
	} else {
		c.N = int32(r) < 0
	}
	c.Z, c.C, c.V = r == 0, false, false
}

func (c *CPU) cond(cc uint8) bool {
	var r bool
	switch cc >> 1 {
	case 0:
		r = c.Z
	case 1:
		r = c.C
	case 2:
		r = c.N
	case 3:
		r = c.V
	case 4:
		r = c.C && !c.Z
	case 5:
		r = c.N == c.V
	case 6:
		r = c.N == c.V && !c.Z
	default:
		return true
	}
	if cc&1 == 1 {
		return !r
	}
	return r
}

func (c *CPU) memFault(in *inst, pc uint64, f *mem.Fault) error {
	return &Fault{PC: pc, Word: in.word, Kind: KindMemory, Mem: f}
}

func (c *CPU) load(addr uint64, size uint8) (uint64, *mem.Fault) {
	switch size {
	case 0:
		return c.tlb.Load8(addr)
	case 1:
		return c.tlb.Load16(addr)
	case 2:
		return c.tlb.Load32(addr)
	}
	return c.tlb.Load64(addr)
}

func (c *CPU) store(addr uint64, size uint8, v uint64) *mem.Fault {
	switch size {
	case 0:
		return c.tlb.Store8(addr, v)
	case 1:
		return c.tlb.Store16(addr, v)
	case 2:
		return c.tlb.Store32(addr, v)
	}
	return c.tlb.Store64(addr, v)
}

func extend(v uint64, kind, size uint8) uint64 {
	switch kind {
	case extSX:
		return uint64(sext(v, 8<<size))
	case extSW:
		return uint64(uint32(sext(v, 8<<size)))
	}
	return v
}

// call runs the Go function at target if there is one and returns where
// it returns to: the LR it was entered with. A Go function may run code on
// this CPU itself (a helper such as bpf_loop calling back into a program),
// and that nested Run overwrites LR.
func (c *CPU) call(target, pc uint64, in *inst) (uint64, bool, error) {
	fn := c.Funcs[target]
	if fn == nil {
		return 0, false, nil
	}
	lr := c.R[30]
	if err := fn(c); err != nil {
		return 0, true, &Fault{PC: pc, Word: in.word, Kind: KindFunc, Err: err}
	}
	c.R[30] = lr
	return pcCalled, true, nil
}

// exec executes one instruction at pc and returns the next pc.
func (c *CPU) exec(in *inst, pc uint64) (uint64, error) {
	r := &c.R
	next := pc + 4
	switch in.op {
	case opAddImm:
		r[in.rd] = c.addWithCarry(r[in.rn], uint64(in.imm), 0, in.sf, in.setFlags)
	case opSubImm:
		r[in.rd] = c.addWithCarry(r[in.rn], ^uint64(in.imm), 1, in.sf, in.setFlags)
	case opAddReg:
		r[in.rd] = c.addWithCarry(r[in.rn], shiftOp(r[in.rm], in.shType, in.amount, in.sf), 0, in.sf, in.setFlags)
	case opSubReg:
		r[in.rd] = c.addWithCarry(r[in.rn], ^shiftOp(r[in.rm], in.shType, in.amount, in.sf), 1, in.sf, in.setFlags)
	case opLogImm, opLogReg:
		op2 := uint64(in.imm)
		if in.op == opLogReg {
			op2 = shiftOp(r[in.rm], in.shType, in.amount, in.sf)
			if in.inv {
				op2 = ^op2
			}
		}
		a := r[in.rn]
		var v uint64
		switch in.lop {
		case lopAnd, lopAnds:
			v = a & op2
		case lopOrr:
			v = a | op2
		case lopEor:
			v = a ^ op2
		}
		v = mask(v, in.sf)
		if in.setFlags {
			c.logicFlags(v, in.sf)
		}
		r[in.rd] = v
	case opMovz:
		r[in.rd] = uint64(in.imm) << in.amount
	case opMovn:
		r[in.rd] = mask(^(uint64(in.imm) << in.amount), in.sf)
	case opMovk:
		r[in.rd] = mask(r[in.rd]&^(0xffff<<in.amount)|uint64(in.imm)<<in.amount, in.sf)
	case opSbfm, opBfm, opUbfm:
		src := r[in.rn]
		var rot uint64
		if in.sf {
			rot = bits.RotateLeft64(src, -int(in.amount))
		} else {
			// The masks are replicated across 64 bits; the result is
			// cut to 32 below, so the low word is all that matters.
			rot = uint64(bits.RotateLeft32(uint32(src), -int(in.amount)))
		}
		var v uint64
		switch in.op {
		case opUbfm:
			v = rot & in.wmask & in.tmask
		case opSbfm:
			var top uint64
			if src>>uint(in.imm)&1 == 1 {
				top = ^uint64(0)
			}
			v = top&^in.tmask | rot&in.wmask&in.tmask
		case opBfm:
			dst := r[in.rd]
			bot := dst&^in.wmask | rot&in.wmask
			v = dst&^in.tmask | bot&in.tmask
		}
		r[in.rd] = mask(v, in.sf)
	case opExtr:
		n, m, lsb := r[in.rn], r[in.rm], uint(in.amount)
		if in.sf {
			if lsb == 0 {
				r[in.rd] = m
			} else {
				r[in.rd] = m>>lsb | n<<(64-lsb)
			}
		} else {
			r[in.rd] = uint64(uint32((n<<32 | m&0xffffffff) >> lsb))
		}
	case opUdiv:
		n, m := mask(r[in.rn], in.sf), mask(r[in.rm], in.sf)
		if m == 0 {
			r[in.rd] = 0
		} else {
			r[in.rd] = n / m
		}
	case opSdiv:
		r[in.rd] = sdiv(r[in.rn], r[in.rm], in.sf)
	case opLslv, opLsrv, opAsrv, opRorv:
		width := uint64(32)
		if in.sf {
			width = 64
		}
		r[in.rd] = shiftOp(r[in.rn], uint8(in.op-opLslv), uint8(r[in.rm]%width), in.sf)
	case opRbit:
		if in.sf {
			r[in.rd] = bits.Reverse64(r[in.rn])
		} else {
			r[in.rd] = uint64(bits.Reverse32(uint32(r[in.rn])))
		}
	case opRev16:
		x := r[in.rn]
		r[in.rd] = mask((x&0x00ff00ff00ff00ff)<<8|(x>>8)&0x00ff00ff00ff00ff, in.sf)
	case opRev32:
		x := r[in.rn]
		if in.sf {
			r[in.rd] = uint64(bits.ReverseBytes32(uint32(x>>32)))<<32 | uint64(bits.ReverseBytes32(uint32(x)))
		} else {
			r[in.rd] = uint64(bits.ReverseBytes32(uint32(x)))
		}
	case opRev64:
		r[in.rd] = bits.ReverseBytes64(r[in.rn])
	case opClz:
		if in.sf {
			r[in.rd] = uint64(bits.LeadingZeros64(r[in.rn]))
		} else {
			r[in.rd] = uint64(bits.LeadingZeros32(uint32(r[in.rn])))
		}
	case opMadd:
		r[in.rd] = mask(r[in.ra]+r[in.rn]*r[in.rm], in.sf)
	case opMsub:
		r[in.rd] = mask(r[in.ra]-r[in.rn]*r[in.rm], in.sf)
	case opB:
		next = pc + uint64(in.imm)
	case opBL:
		target := pc + uint64(in.imm)
		r[30] = pc + 4
		if n, ok, err := c.call(target, pc, in); ok {
			return n, err
		}
		next = target
	case opBCond:
		if c.cond(in.lop) {
			next = pc + uint64(in.imm)
		}
	case opCbz, opCbnz:
		if (mask(r[in.rn], in.sf) == 0) == (in.op == opCbz) {
			next = pc + uint64(in.imm)
		}
	case opBr, opRet:
		target := r[in.rn]
		if n, ok, err := c.call(target, pc, in); ok {
			return n, err // a tail call: the function returns to LR
		}
		next = target
	case opBlr:
		target := r[in.rn]
		r[30] = pc + 4
		if n, ok, err := c.call(target, pc, in); ok {
			return n, err
		}
		next = target
	case opNop:
	case opBrk:
		return 0, &Fault{PC: pc, Word: in.word, Kind: KindBrk, Imm: uint32(in.imm)}
	case opMrs:
		v, ok := c.SysRegs[uint32(in.imm)]
		if !ok {
			return 0, &Fault{PC: pc, Word: in.word, Kind: KindUnknown}
		}
		r[in.rd] = v
	case opAdr:
		r[in.rd] = pc + uint64(in.imm)
	case opAdrp:
		r[in.rd] = pc&^0xfff + uint64(in.imm)
	case opLdrLit:
		size := uint8(2)
		if in.sf {
			size = 3
		}
		v, f := c.load(pc+uint64(in.imm), size)
		if f != nil {
			return 0, c.memFault(in, pc, f)
		}
		r[in.rd] = v
	case opLoad, opStore:
		base := r[in.rn]
		addr := base + uint64(in.imm)
		switch in.mode {
		case amPost:
			addr = base
		case amReg:
			off := r[in.ra]
			switch in.shType {
			case 2: // uxtw
				off &= 0xffffffff
			case 6: // sxtw
				off = uint64(sext(off, 32))
			}
			addr = base + off<<in.amount
		}
		if in.op == opLoad {
			v, f := c.load(addr, in.size)
			if f != nil {
				return 0, c.memFault(in, pc, f)
			}
			r[in.rd] = extend(v, in.lop, in.size)
		} else if f := c.store(addr, in.size, r[in.rm]); f != nil {
			return 0, c.memFault(in, pc, f)
		}
		switch in.mode {
		case amPre:
			r[in.rn] = addr
		case amPost:
			r[in.rn] = base + uint64(in.imm)
		}
	case opLdp, opStp:
		base := r[in.rn]
		addr := base
		if in.mode != 1 {
			addr += uint64(in.imm)
		}
		step := uint64(1) << in.size
		if in.op == opLdp {
			v1, f := c.load(addr, in.size)
			if f != nil {
				return 0, c.memFault(in, pc, f)
			}
			v2, f := c.load(addr+step, in.size)
			if f != nil {
				return 0, c.memFault(in, pc, f)
			}
			r[in.rd], r[in.ra] = extend(v1, in.lop, in.size), extend(v2, in.lop, in.size)
		} else {
			// A fault on the second half leaves the first written, which
			// the architecture permits for a pair that crosses a page.
			v1, v2 := r[in.rd], r[in.ra]
			if f := c.store(addr, in.size, v1); f != nil {
				return 0, c.memFault(in, pc, f)
			}
			if f := c.store(addr+step, in.size, v2); f != nil {
				return 0, c.memFault(in, pc, f)
			}
		}
		if in.mode == 1 || in.mode == 3 {
			r[in.rn] = base + uint64(in.imm)
		}
	case opLdar:
		v, f := c.load(r[in.rn], in.size)
		if f != nil {
			return 0, c.memFault(in, pc, f)
		}
		r[in.rd] = v
	case opStlr:
		if f := c.store(r[in.rn], in.size, r[in.rm]); f != nil {
			return 0, c.memFault(in, pc, f)
		}
	case opLdxr, opStxr, opCas, opLSE:
		return next, c.atomicOp(in, pc)
	default:
		return 0, &Fault{PC: pc, Word: in.word, Kind: KindUnknown}
	}
	return next, nil
}

func sdiv(a, b uint64, sf bool) uint64 {
	if sf {
		n, m := int64(a), int64(b)
		switch {
		case m == 0:
			return 0
		case n == math.MinInt64 && m == -1:
			return uint64(n)
		}
		return uint64(n / m)
	}
	n, m := int32(a), int32(b)
	switch {
	case m == 0:
		return 0
	case n == math.MinInt32 && m == -1:
		return uint64(uint32(n))
	}
	return uint64(uint32(n / m))
}

// atomicOp performs LDXR, STXR, CAS and the LSE operations. Every
// read-modify-write is a sync/atomic operation on the backing word, so it
// is atomic with respect to other CPUs (goroutines) and to the BPF
// interpreter's atomics on the same memory.
//
// The exclusive monitor is per CPU: LDXR records the address and the value
// it read, and STXR succeeds only if the monitor is armed for that address
// and a compare-and-swap from the recorded value succeeds. Another CPU's
// store of a different value therefore fails the STXR as the global
// monitor would; a store that writes back the same value (ABA) does not,
// which cannot change the outcome of the JIT's LL/SC loops.
func (c *CPU) atomicOp(in *inst, pc uint64) error {
	r := &c.R
	addr := r[in.rn]
	align := func(what string) error {
		return &Fault{PC: pc, Word: in.word, Kind: KindAlign, Err: fmt.Errorf("%s of %d bytes at %#x is not naturally aligned plain memory", what, 1<<in.size, addr)}
	}
	write := in.op != opLdxr
	var w64 *uint64
	var w32 *uint32
	var f *mem.Fault
	if in.size == 3 {
		w64, f = c.tlb.Word64(addr, write)
	} else {
		w32, f = c.tlb.Word32(addr, write)
	}
	if f != nil {
		return c.memFault(in, pc, f)
	}
	if (w64 == nil && w32 == nil) || !mem.HostLittleEndian() {
		return align("atomic access")
	}
	load := func() uint64 {
		if w64 != nil {
			return atomic.LoadUint64(w64)
		}
		return uint64(atomic.LoadUint32(w32))
	}
	cas := func(old, nw uint64) bool {
		if w64 != nil {
			return atomic.CompareAndSwapUint64(w64, old, nw)
		}
		return atomic.CompareAndSwapUint32(w32, uint32(old), uint32(nw))
	}
	switch in.op {
	case opLdxr:
		v := load()
		c.exAddr, c.exVal, c.exValid = addr, v, true
		r[in.rd] = v
	case opStxr:
		ok := c.exValid && c.exAddr == addr && cas(c.exVal, mask(r[in.rm], in.sf))
		c.exValid = false
		if ok {
			r[in.rd] = 0
		} else {
			r[in.rd] = 1
		}
	case opCas:
		cmp, nw := mask(r[in.ra], in.sf), mask(r[in.rm], in.sf)
		for {
			old := load()
			if old != cmp || cas(old, nw) {
				r[in.rd] = old
				break
			}
		}
	case opLSE:
		src := mask(r[in.rm], in.sf)
		var old uint64
		for {
			old = load()
			var nw uint64
			switch in.lop {
			case 0:
				nw = old + src
			case 1:
				nw = old &^ src
			case 2:
				nw = old ^ src
			case 3:
				nw = old | src
			default:
				nw = src
			}
			if cas(old, mask(nw, in.sf)) {
				break
			}
		}
		r[in.rd] = old
	}
	return nil
}
