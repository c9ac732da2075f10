package mem

import "strings"

// Page geometry (arm64 with the 4 KiB granule).
const (
	PageShift = 12
	PageSize  = 1 << PageShift
	pageMask  = PageSize - 1

	// HugeShift is the size of a PMD block mapping: one third-level entry
	// maps 2 MiB.
	HugeShift = 21
	HugeSize  = 1 << HugeShift
	hugeMask  = HugeSize - 1

	entriesPerTable = 512
)

// Virtual address layout, modelled on arm64 with VA_BITS=48
// (Documentation/arch/arm64/memory.rst). Only the upper half exists: a
// simulated BPF program runs in kernel context, and an address whose top 16
// bits are not all ones faults as non-canonical.
const (
	// KernelStart is PAGE_OFFSET, the first kernel address.
	KernelStart uint64 = 0xffff_0000_0000_0000
	// ModulesStart..ModulesEnd is the 2 GiB module/execmem area where the
	// arm64 BPF JIT places program images.
	ModulesStart uint64 = 0xffff_8000_0000_0000
	ModulesEnd   uint64 = ModulesStart + 2<<30
	// VmallocStart..VmallocEnd is where vmalloc hands out kernel objects.
	VmallocStart uint64 = ModulesEnd
	VmallocEnd   uint64 = 0xffff_fc00_0000_0000
)

// Perm is a set of page permissions.
type Perm uint8

// Page permissions.
const (
	PermRead Perm = 1 << iota
	PermWrite
	PermExec

	PermRW = PermRead | PermWrite
	PermRX = PermRead | PermExec
)

// String renders the permissions like /proc/<pid>/maps does: "rw-".
func (p Perm) String() string {
	var b strings.Builder
	for _, f := range []struct {
		bit Perm
		c   byte
	}{{PermRead, 'r'}, {PermWrite, 'w'}, {PermExec, 'x'}} {
		if p&f.bit != 0 {
			b.WriteByte(f.c)
		} else {
			b.WriteByte('-')
		}
	}
	return b.String()
}

// Access is the kind of memory access that faulted.
type Access uint8

// Access kinds.
const (
	Read Access = iota
	Write
	Exec
)

func (a Access) String() string {
	switch a {
	case Read:
		return "read"
	case Write:
		return "write"
	case Exec:
		return "exec"
	}
	return "access"
}

func (a Access) perm() Perm {
	switch a {
	case Write:
		return PermWrite
	case Exec:
		return PermExec
	}
	return PermRead
}

// canonical reports whether addr lies in the kernel half of a 48-bit space.
func canonical(addr uint64) bool { return addr>>48 == 0xffff }
