//go:build race

package mem

import (
	"sync/atomic"
	"unsafe"
)

// RaceMode reports whether simulated memory accesses go through sync/atomic
// for the race detector.
const RaceMode = true

// Every access works on the aligned 32-bit words that hold its bytes:
// atomic loads to read, compare-and-swap to write. Backing memory is 8-byte
// aligned, so those words are always inside it. The simulated kernel is
// little-endian, and so are the hosts this mode supports.

func word(p unsafe.Pointer) *uint32 {
	return (*uint32)(unsafe.Pointer(uintptr(p) &^ 3))
}

func loadByte(p unsafe.Pointer) byte {
	return byte(atomic.LoadUint32(word(p)) >> (8 * (uintptr(p) & 3)))
}

func storeByte(p unsafe.Pointer, v byte) {
	w, shift := word(p), 8*(uintptr(p)&3)
	for {
		old := atomic.LoadUint32(w)
		if atomic.CompareAndSwapUint32(w, old, old&^(0xff<<shift)|uint32(v)<<shift) {
			return
		}
	}
}

func load(p unsafe.Pointer, size int) uint64 {
	switch {
	case size == 8 && uintptr(p)&7 == 0:
		return atomic.LoadUint64((*uint64)(p))
	case size == 4 && uintptr(p)&3 == 0:
		return uint64(atomic.LoadUint32((*uint32)(p)))
	}
	var v uint64
	for i := size - 1; i >= 0; i-- {
		v = v<<8 | uint64(loadByte(unsafe.Add(p, i)))
	}
	return v
}

func store(p unsafe.Pointer, size int, v uint64) {
	switch {
	case size == 8 && uintptr(p)&7 == 0:
		atomic.StoreUint64((*uint64)(p), v)
		return
	case size == 4 && uintptr(p)&3 == 0:
		atomic.StoreUint32((*uint32)(p), uint32(v))
		return
	}
	for i := 0; i < size; i++ {
		storeByte(unsafe.Add(p, i), byte(v>>(8*i)))
	}
}

func at(pg *[PageSize]byte, off uint64, size int) unsafe.Pointer {
	// Check bounds as the plain version's slicing does, without reading
	// the memory (a plain read would itself be reported as a race).
	if off+uint64(size) > PageSize {
		panic("mem: access past the end of a page")
	}
	return unsafe.Add(unsafe.Pointer(pg), off)
}

func Load8(pg *[PageSize]byte, off uint64) uint64  { return load(at(pg, off&pageMask, 1), 1) }
func Load16(pg *[PageSize]byte, off uint64) uint64 { return load(at(pg, off, 2), 2) }
func Load32(pg *[PageSize]byte, off uint64) uint64 { return load(at(pg, off, 4), 4) }
func Load64(pg *[PageSize]byte, off uint64) uint64 { return load(at(pg, off, 8), 8) }

func Store8(pg *[PageSize]byte, off, v uint64)  { store(at(pg, off&pageMask, 1), 1, v) }
func Store16(pg *[PageSize]byte, off, v uint64) { store(at(pg, off, 2), 2, v) }
func Store32(pg *[PageSize]byte, off, v uint64) { store(at(pg, off, 4), 4, v) }
func Store64(pg *[PageSize]byte, off, v uint64) { store(at(pg, off, 8), 8, v) }

// LoadBytes copies simulated memory src into dst.
func LoadBytes(dst, src []byte) int {
	n := min(len(dst), len(src))
	i := 0
	for ; i < n; i++ {
		p := unsafe.Pointer(&src[i])
		if uintptr(p)&7 == 0 && n-i >= 8 {
			break
		}
		dst[i] = loadByte(p)
	}
	for ; n-i >= 8; i += 8 {
		v := atomic.LoadUint64((*uint64)(unsafe.Pointer(&src[i])))
		for j := 0; j < 8; j++ {
			dst[i+j] = byte(v >> (8 * j))
		}
	}
	for ; i < n; i++ {
		dst[i] = loadByte(unsafe.Pointer(&src[i]))
	}
	return n
}

// StoreBytes copies src into simulated memory dst.
func StoreBytes(dst, src []byte) int {
	n := min(len(dst), len(src))
	i := 0
	for ; i < n; i++ {
		p := unsafe.Pointer(&dst[i])
		if uintptr(p)&7 == 0 && n-i >= 8 {
			break
		}
		storeByte(p, src[i])
	}
	for ; n-i >= 8; i += 8 {
		var v uint64
		for j := 7; j >= 0; j-- {
			v = v<<8 | uint64(src[i+j])
		}
		atomic.StoreUint64((*uint64)(unsafe.Pointer(&dst[i])), v)
	}
	for ; i < n; i++ {
		storeByte(unsafe.Pointer(&dst[i]), src[i])
	}
	return n
}

// Fill sets every byte of simulated memory b to v.
func Fill(b []byte, v byte) {
	var buf [256]byte
	for i := range buf {
		buf[i] = v
	}
	for len(b) > 0 {
		b = b[StoreBytes(b, buf[:]):]
	}
}
