package interp

import (
	"sync"
	"sync/atomic"

	"github.com/bpfsim/bpfsim/sim/mem"
)

// misaligned serialises atomics on addresses that sync/atomic cannot
// handle (unaligned words, or a big-endian host), the way an x86 split lock
// locks the whole bus. The verifier rejects misaligned atomics, so only
// unverified programs take this path.
var misaligned sync.Mutex

// atomicOp performs one STX|ATOMIC read-modify-write on behalf of o.
func atomicOp(tlb *mem.TLB, o *op, r *[16]uint64) *mem.Fault {
	addr := r[o.dst&15] + uint64(int64(o.off))
	src := r[o.src&15]
	if atomicIs64[o.kind] {
		w, f := tlb.Word64(addr, true)
		if f != nil {
			return f
		}
		if w != nil && mem.HostLittleEndian() {
			atomic64(o.kind, w, src, o, r)
			return nil
		}
		return emulateAtomic(tlb, o, r, addr, 8)
	}
	w, f := tlb.Word32(addr, true)
	if f != nil {
		return f
	}
	if w != nil && mem.HostLittleEndian() {
		atomic32(o.kind, w, uint32(src), o, r)
		return nil
	}
	return emulateAtomic(tlb, o, r, addr, 4)
}

func atomic64(k opKind, w *uint64, src uint64, o *op, r *[16]uint64) {
	switch k {
	case opAtomicAdd64:
		atomic.AddUint64(w, src)
	case opAtomicOr64:
		atomic.OrUint64(w, src)
	case opAtomicAnd64:
		atomic.AndUint64(w, src)
	case opAtomicXor64:
		xor64(w, src)
	case opAtomicFetchAdd64:
		r[o.src&15] = atomic.AddUint64(w, src) - src
	case opAtomicFetchOr64:
		r[o.src&15] = atomic.OrUint64(w, src)
	case opAtomicFetchAnd64:
		r[o.src&15] = atomic.AndUint64(w, src)
	case opAtomicFetchXor64:
		r[o.src&15] = xor64(w, src)
	case opAtomicXchg64:
		r[o.src&15] = atomic.SwapUint64(w, src)
	case opAtomicCmpxchg64:
		for {
			old := atomic.LoadUint64(w)
			if old != r[0] {
				r[0] = old
				return
			}
			if atomic.CompareAndSwapUint64(w, old, src) {
				r[0] = old
				return
			}
		}
	}
}

func atomic32(k opKind, w *uint32, src uint32, o *op, r *[16]uint64) {
	switch k {
	case opAtomicAdd32:
		atomic.AddUint32(w, src)
	case opAtomicOr32:
		atomic.OrUint32(w, src)
	case opAtomicAnd32:
		atomic.AndUint32(w, src)
	case opAtomicXor32:
		xor32(w, src)
	case opAtomicFetchAdd32:
		r[o.src&15] = uint64(atomic.AddUint32(w, src) - src)
	case opAtomicFetchOr32:
		r[o.src&15] = uint64(atomic.OrUint32(w, src))
	case opAtomicFetchAnd32:
		r[o.src&15] = uint64(atomic.AndUint32(w, src))
	case opAtomicFetchXor32:
		r[o.src&15] = uint64(xor32(w, src))
	case opAtomicXchg32:
		r[o.src&15] = uint64(atomic.SwapUint32(w, src))
	case opAtomicCmpxchg32:
		for {
			old := atomic.LoadUint32(w)
			if old != uint32(r[0]) {
				r[0] = uint64(old)
				return
			}
			if atomic.CompareAndSwapUint32(w, old, src) {
				r[0] = uint64(old)
				return
			}
		}
	}
}

func xor64(w *uint64, v uint64) uint64 {
	for {
		old := atomic.LoadUint64(w)
		if atomic.CompareAndSwapUint64(w, old, old^v) {
			return old
		}
	}
}

func xor32(w *uint32, v uint32) uint32 {
	for {
		old := atomic.LoadUint32(w)
		if atomic.CompareAndSwapUint32(w, old, old^v) {
			return old
		}
	}
}

// emulateAtomic performs the operation with plain loads and stores under
// the global lock.
func emulateAtomic(tlb *mem.TLB, o *op, r *[16]uint64, addr uint64, size int) *mem.Fault {
	misaligned.Lock()
	defer misaligned.Unlock()
	load, store := tlb.Load32, tlb.Store32
	mask := uint64(0xffffffff)
	if size == 8 {
		load, store = tlb.Load64, tlb.Store64
		mask = ^uint64(0)
	}
	old, f := load(addr)
	if f != nil {
		return f
	}
	src := r[o.src&15] & mask
	var nv uint64
	switch o.kind {
	case opAtomicAdd32, opAtomicAdd64, opAtomicFetchAdd32, opAtomicFetchAdd64:
		nv = old + src
	case opAtomicOr32, opAtomicOr64, opAtomicFetchOr32, opAtomicFetchOr64:
		nv = old | src
	case opAtomicAnd32, opAtomicAnd64, opAtomicFetchAnd32, opAtomicFetchAnd64:
		nv = old & src
	case opAtomicXor32, opAtomicXor64, opAtomicFetchXor32, opAtomicFetchXor64:
		nv = old ^ src
	case opAtomicXchg32, opAtomicXchg64:
		nv = src
	case opAtomicCmpxchg32, opAtomicCmpxchg64:
		nv = old
		if old == r[0]&mask {
			nv = src
		}
	}
	if f := store(addr, nv&mask); f != nil {
		return f
	}
	switch o.kind {
	case opAtomicCmpxchg32, opAtomicCmpxchg64:
		r[0] = old
	case opAtomicAdd32, opAtomicAdd64, opAtomicOr32, opAtomicOr64,
		opAtomicAnd32, opAtomicAnd64, opAtomicXor32, opAtomicXor64:
	default:
		r[o.src&15] = old
	}
	return nil
}

// atomicIs64 tells the 64-bit read-modify-write kinds from the 32-bit ones.
var atomicIs64 = func() (t [numOps]bool) {
	for _, k := range atomicKinds {
		t[k[1]] = true
	}
	return t
}()

var accessSize = map[opKind]int{
	opLoadAcqB: 1, opLoadAcqH: 2, opLoadAcqW: 4, opLoadAcqDW: 8,
	opStoreRelB: 1, opStoreRelH: 2, opStoreRelW: 4, opStoreRelDW: 8,
}

// loadAcquire and storeRelease order memory like the kernel's
// smp_load_acquire and smp_store_release. Aligned words use sync/atomic,
// which is at least that strong; other sizes take the global lock.
func loadAcquire(tlb *mem.TLB, k opKind, addr uint64) (uint64, *mem.Fault) {
	switch size := accessSize[k]; {
	case size == 8 && addr&7 == 0 && mem.HostLittleEndian():
		if w, f := tlb.Word64(addr, false); f == nil && w != nil {
			return atomic.LoadUint64(w), nil
		}
	case size == 4 && addr&3 == 0 && mem.HostLittleEndian():
		if w, f := tlb.Word32(addr, false); f == nil && w != nil {
			return uint64(atomic.LoadUint32(w)), nil
		}
	}
	misaligned.Lock()
	defer misaligned.Unlock()
	switch accessSize[k] {
	case 1:
		return tlb.Load8(addr)
	case 2:
		return tlb.Load16(addr)
	case 4:
		return tlb.Load32(addr)
	}
	return tlb.Load64(addr)
}

func storeRelease(tlb *mem.TLB, k opKind, addr, v uint64) *mem.Fault {
	switch size := accessSize[k]; {
	case size == 8 && addr&7 == 0 && mem.HostLittleEndian():
		if w, f := tlb.Word64(addr, true); f == nil && w != nil {
			atomic.StoreUint64(w, v)
			return nil
		}
	case size == 4 && addr&3 == 0 && mem.HostLittleEndian():
		if w, f := tlb.Word32(addr, true); f == nil && w != nil {
			atomic.StoreUint32(w, uint32(v))
			return nil
		}
	}
	misaligned.Lock()
	defer misaligned.Unlock()
	switch accessSize[k] {
	case 1:
		return tlb.Store8(addr, v)
	case 2:
		return tlb.Store16(addr, v)
	case 4:
		return tlb.Store32(addr, v)
	}
	return tlb.Store64(addr, v)
}
