package mem

// The simulated kernel is little-endian, like arm64 Linux: every multi-byte
// value in the address space is stored little-endian whatever the host is.
// Atomic words (TLB.Word32/Word64) are the exception that needs care: they
// are accessed with sync/atomic in host order, which is right on the
// little-endian hosts Go mostly runs on; hostLittleEndian lets callers check.
import "encoding/binary"

var hostLittleEndian = func() bool {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], 1)
	return b[0] == 1
}()

// HostLittleEndian reports whether atomic words can be used in place.
func HostLittleEndian() bool { return hostLittleEndian }
