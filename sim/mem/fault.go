package mem

import (
	"fmt"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// Fault describes a memory access that the address space refused. It is an
// error; errors.Is(f, uapi.EFAULT) holds.
type Fault struct {
	Addr   uint64
	Size   int
	Access Access
	// PC is the index of the BPF instruction that faulted, or -1 when the
	// access did not come from a program (a helper, a kernel copy).
	PC     int
	Reason string
}

func (f *Fault) Error() string {
	where := ""
	if f.PC >= 0 {
		where = fmt.Sprintf(" at pc %d", f.PC)
	}
	return fmt.Sprintf("memory fault%s: %s of %d bytes at %#x: %s", where, f.Access, f.Size, f.Addr, f.Reason)
}

// Is makes a fault match EFAULT, the errno the kernel reports for a bad
// address.
func (f *Fault) Is(target error) bool { return target == uapi.EFAULT }

// Fault reasons.
const (
	reasonNotMapped    = "not mapped"
	reasonNonCanonical = "not a kernel address"
	reasonPerm         = "permission denied"
	reasonDevice       = "not plain memory"
)

func newFault(addr uint64, size int, acc Access, reason string) *Fault {
	return &Fault{Addr: addr, Size: size, Access: acc, PC: -1, Reason: reason}
}
