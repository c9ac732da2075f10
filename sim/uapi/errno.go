// Package uapi holds the numbers that the Linux BPF subsystem shares with user
// space: errno values, program and map types, helper ids and flags. It is the
// one place for such constants, in the spirit of gVisor's abi/linux; the
// values come from include/uapi/linux/bpf.h and include/uapi/asm-generic/
// errno-base.h.
package uapi

import "syscall"

// Errno is the kernel's error number. It is syscall.Errno, so on Linux an
// error wrapping uapi.ENOENT satisfies errors.Is(err, unix.ENOENT). The values
// are Linux's; the first 34 are the same on every Unix.
type Errno = syscall.Errno

// Error numbers the BPF subsystem returns.
const (
	EPERM        Errno = 1
	ENOENT       Errno = 2
	ESRCH        Errno = 3
	EINTR        Errno = 4
	ENXIO        Errno = 6
	E2BIG        Errno = 7
	EBADF        Errno = 9
	EAGAIN       Errno = 11
	ENOMEM       Errno = 12
	EACCES       Errno = 13
	EFAULT       Errno = 14
	EBUSY        Errno = 16
	EEXIST       Errno = 17
	ENOTDIR      Errno = 20
	EINVAL       Errno = 22
	ENOSPC       Errno = 28
	ERANGE       Errno = 34
	EDEADLK      Errno = 35
	ENODATA      Errno = 61
	EPROTO       Errno = 71
	ENOTEMPTY    Errno = 39
	ELOOP        Errno = 40
	EOVERFLOW    Errno = 75
	EOPNOTSUPP   Errno = 95
	EAFNOSUPPORT Errno = 97
	ENOTSUPP     Errno = 524 // kernel-internal, leaks to user space from BPF
)
