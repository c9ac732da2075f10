//go:build !race

package mem

import "encoding/binary"

// RaceMode reports whether simulated memory accesses go through sync/atomic
// for the race detector.
const RaceMode = false

func Load8(pg *[PageSize]byte, off uint64) uint64 { return uint64(pg[off&pageMask]) }
func Load16(pg *[PageSize]byte, off uint64) uint64 {
	return uint64(binary.LittleEndian.Uint16(pg[off:]))
}
func Load32(pg *[PageSize]byte, off uint64) uint64 {
	return uint64(binary.LittleEndian.Uint32(pg[off:]))
}
func Load64(pg *[PageSize]byte, off uint64) uint64 { return binary.LittleEndian.Uint64(pg[off:]) }

func Store8(pg *[PageSize]byte, off, v uint64)  { pg[off&pageMask] = byte(v) }
func Store16(pg *[PageSize]byte, off, v uint64) { binary.LittleEndian.PutUint16(pg[off:], uint16(v)) }
func Store32(pg *[PageSize]byte, off, v uint64) { binary.LittleEndian.PutUint32(pg[off:], uint32(v)) }
func Store64(pg *[PageSize]byte, off, v uint64) { binary.LittleEndian.PutUint64(pg[off:], v) }

// LoadBytes copies simulated memory src into dst.
func LoadBytes(dst, src []byte) int { return copy(dst, src) }

// StoreBytes copies src into simulated memory dst.
func StoreBytes(dst, src []byte) int { return copy(dst, src) }

// Fill sets every byte of simulated memory b to v.
func Fill(b []byte, v byte) {
	if v == 0 {
		clear(b)
		return
	}
	for i := range b {
		b[i] = v
	}
}
