package sim

import (
	"bytes"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/mem"
	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// The helpers that tell a program where it runs and let it read kernel
// memory (kernel/bpf/helpers.c, kernel/trace/bpf_trace.c): the
// current task's ids and name, its task_struct (task.go), and
// bpf_probe_read_kernel and its string variant, which read simulated
// kernel memory and report a fault as -EFAULT with the buffer zeroed, as
// copy_from_kernel_nofault does.

// Helper ids (include/uapi/linux/bpf.h).
const (
	funcProbeRead          = 4
	funcGetCurrentPidTgid  = 14
	funcGetCurrentUIDGid   = 15
	funcGetCurrentComm     = 16
	funcGetCurrentTask     = 35
	funcProbeReadStr       = 45
	funcGetCurrentCgroupID = 80
	funcGetCurrentTaskBTF  = 158
	funcProbeReadUser      = 112
	funcProbeReadKernel    = 113
	funcProbeReadUserStr   = 114
	funcProbeReadKernelStr = 115
)

// rootCgroupID is the cgroup v2 root's id (its kernfs node's).
const rootCgroupID = 1

var (
	noArgsProto    = &verifier.FuncProto{}
	commProto      = &verifier.FuncProto{Args: [5]verifier.ArgType{verifier.ArgPtrToUninitMem, verifier.ArgConstSize}}
	probeReadProto = &verifier.FuncProto{GPLOnly: true,
		Args: [5]verifier.ArgType{verifier.ArgPtrToUninitMem, verifier.ArgConstSizeOrZero, verifier.ArgAnything}}
)

// compatTypes are the program types bpfsim loads offered the compat
// bpf_probe_read and bpf_probe_read_str (bpf_tracing_func_proto, and the
// syscall type's); the other helpers here are bpf_base_func_proto's,
// offered to every type of a privileged loader.
var compatTypes = []ebpf.ProgramType{ebpf.Kprobe, ebpf.TracePoint, ebpf.RawTracepoint, ebpf.Syscall, ebpf.Tracing}

func (k *Kernel) registerTaskHelpers() {
	for _, h := range []struct {
		id    int32
		proto *verifier.FuncProto
		fn    func(*interp.Machine, uint64, uint64, uint64, uint64, uint64) (uint64, error)
		types []ebpf.ProgramType // nil: every type
	}{
		{funcGetCurrentPidTgid, noArgsProto, func(m *interp.Machine, _, _, _, _, _ uint64) (uint64, error) {
			t, _, err := k.currentTask(k.cpuOf(m))
			return uint64(t.TGID)<<32 | uint64(t.PID), err
		}, nil},
		{funcGetCurrentUIDGid, noArgsProto, func(m *interp.Machine, _, _, _, _, _ uint64) (uint64, error) {
			t, _, err := k.currentTask(k.cpuOf(m))
			return uint64(t.GID)<<32 | uint64(t.UID), err
		}, nil},
		{funcGetCurrentComm, commProto, k.helperGetCurrentComm, nil},
		{funcGetCurrentCgroupID, noArgsProto, func(m *interp.Machine, _, _, _, _, _ uint64) (uint64, error) {
			t, _, err := k.currentTask(k.cpuOf(m))
			switch {
			case err != nil:
				return 0, err
			case t.CgroupID == 0:
				return rootCgroupID, nil
			}
			return t.CgroupID, nil
		}, nil},
		{funcGetCurrentTask, noArgsProto, func(m *interp.Machine, _, _, _, _, _ uint64) (uint64, error) {
			_, addr, err := k.currentTask(k.cpuOf(m))
			return addr, err
		}, nil},
		// The same task, as a trusted pointer the program may read
		// field by field.
		{funcGetCurrentTaskBTF, &verifier.FuncProto{Ret: verifier.RetPtrToBTFIDTrusted, RetStruct: taskStruct, GPLOnly: true},
			func(m *interp.Machine, _, _, _, _, _ uint64) (uint64, error) {
				_, addr, err := k.currentTask(k.cpuOf(m))
				return addr, err
			}, nil},
		{funcProbeReadKernel, probeReadProto, k.helperProbeReadKernel, nil},
		{funcProbeReadKernelStr, probeReadProto, k.helperProbeReadKernelStr, nil},
		{funcProbeReadUser, probeReadProto, k.helperProbeReadUser, nil},
		{funcProbeReadUserStr, probeReadProto, k.helperProbeReadUserStr, nil},
		// The compat helpers read kernel memory too: bpfsim's programs
		// see no user address space.
		{funcProbeRead, probeReadProto, k.helperProbeReadKernel, compatTypes},
		{funcProbeReadStr, probeReadProto, k.helperProbeReadKernelStr, compatTypes},
	} {
		if err := k.RegisterHelper(&Helper{ID: h.id, Proto: h.proto, Fn: h.fn}); err != nil {
			panic(err) // the table has unique ids
		}
		if h.types != nil {
			k.helperTypes[h.id] = h.types
		}
	}
}

// maxHelperSize bounds the sizes these helpers take. The verifier bounds
// a size by the memory it goes with; a program run unverified may pass
// anything, and a size no memory could have fails the run rather than
// have the helper allocate it.
const maxHelperSize = 1 << 24

// checkHelperSize fails the run of an unverified program that passes a
// size no memory could have.
func checkHelperSize(m *interp.Machine, size uint64) error {
	if size > maxHelperSize {
		return errors.Wrapf(uapi.EFAULT, "pc %d: a helper's size of %d bytes (unverified program)", m.PC(), size)
	}
	return nil
}

// helperGetCurrentComm is bpf_get_current_comm: the name, NUL-terminated
// and zero-padded to size (strscpy_pad); nothing for a size of 0, which
// only an unverified program passes.
func (k *Kernel) helperGetCurrentComm(m *interp.Machine, buf, size, _, _, _ uint64) (uint64, error) {
	if err := checkHelperSize(m, size); err != nil || size == 0 {
		return 0, err
	}
	t, _, err := k.currentTask(k.cpuOf(m))
	if err != nil {
		return 0, err
	}
	out := k.cpuOf(m).scratch(0, int(size))
	clear(out)
	copy(out[:size-1], t.Comm[:min(len(t.Comm), taskCommLen-1)])
	if f := m.TLB.Write(buf, out); f != nil {
		f.PC = m.PC()
		return 0, f
	}
	return 0, nil
}

// helperProbeReadKernel is bpf_probe_read_kernel: size bytes at src, or
// a negative errno and zeroes if any of them cannot be read.
func (k *Kernel) helperProbeReadKernel(m *interp.Machine, dst, size, src, _, _ uint64) (uint64, error) {
	return k.probeRead(m, dst, size, src, k.kernelReader(m))
}

// helperProbeReadKernelStr is bpf_probe_read_kernel_str: the string at
// src (probeReadStr), ERANGE at once if src is no kernel address.
func (k *Kernel) helperProbeReadKernelStr(m *interp.Machine, dst, size, src, _, _ uint64) (uint64, error) {
	if !kernelReadable(src) {
		return k.probeReadStr(m, dst, size, src, func(uint64, []byte) uapi.Errno { return uapi.ERANGE })
	}
	return k.probeReadStr(m, dst, size, src, k.kernelReader(m))
}

// helperProbeReadUser and helperProbeReadUserStr are bpf_probe_read_user
// and bpf_probe_read_user_str: the same, from the current task's user
// memory (Task.Memory), EFAULT for anything else.
func (k *Kernel) helperProbeReadUser(m *interp.Machine, dst, size, src, _, _ uint64) (uint64, error) {
	t, _, err := k.currentTask(k.cpuOf(m))
	if err != nil {
		return 0, err
	}
	return k.probeRead(m, dst, size, src, t.readUser)
}

func (k *Kernel) helperProbeReadUserStr(m *interp.Machine, dst, size, src, _, _ uint64) (uint64, error) {
	t, _, err := k.currentTask(k.cpuOf(m))
	if err != nil {
		return 0, err
	}
	return k.probeReadStr(m, dst, size, src, t.readUser)
}

// reader reads len(p) bytes at addr of some address space, or says why
// it cannot.
type reader func(addr uint64, p []byte) uapi.Errno

func (k *Kernel) kernelReader(m *interp.Machine) reader {
	return func(addr uint64, p []byte) uapi.Errno { return k.readKernel(m, addr, p) }
}

// probeRead is the probe_read helpers' copy of size bytes at src to the
// program's dst: 0, or a negative errno and zeroes.
func (k *Kernel) probeRead(m *interp.Machine, dst, size, src uint64, read reader) (uint64, error) {
	if err := checkHelperSize(m, size); err != nil {
		return 0, err
	}
	out := k.cpuOf(m).scratch(0, int(size))
	ret := uint64(0)
	if size > 0 {
		if errno := read(src, out); errno != 0 {
			clear(out)
			ret = -uint64(errno)
		}
	}
	if f := m.TLB.Write(dst, out); f != nil {
		f.PC = m.PC()
		return 0, f
	}
	return ret, nil
}

// probeReadStr is the probe_read string helpers' copy: the string at src,
// NUL included, at most size bytes (the last made a NUL), written without
// padding; its length with the NUL. If it cannot be read: a negative
// errno, and the whole buffer zeroed.
func (k *Kernel) probeReadStr(m *interp.Machine, dst, size, src uint64, read reader) (uint64, error) {
	if err := checkHelperSize(m, size); err != nil || size == 0 {
		return 0, err
	}
	out := k.cpuOf(m).scratch(0, int(size))
	n, errno := strFrom(read, src, out[:size-1])
	ret := n + 1
	if errno != 0 {
		clear(out)
		n, ret = size-1, -uint64(errno)
	}
	out[n] = 0
	if f := m.TLB.Write(dst, out[:n+1]); f != nil {
		f.PC = m.PC()
		return 0, f
	}
	return ret, nil
}

// strFrom copies the string at src into out, up to its NUL or out's end,
// and returns its length without the NUL, or why it could not read it. It
// reads a page at a time, and byte by byte only where a page fails, so
// that a string that ends before an unreadable byte is read whole.
func strFrom(read reader, src uint64, out []byte) (uint64, uapi.Errno) {
	n := uint64(0)
	for n < uint64(len(out)) {
		chunk := min(uint64(len(out))-n, mem.PageSize-(src+n)%mem.PageSize)
		if read(src+n, out[n:n+chunk]) != 0 {
			chunk = 1
			if errno := read(src+n, out[n:n+1]); errno != 0 {
				return n, errno
			}
		}
		if i := bytes.IndexByte(out[n:n+chunk], 0); i >= 0 {
			return n + uint64(i), 0
		}
		n += chunk
	}
	return n, 0
}

// readKernel reads simulated memory as copy_from_kernel_nofault does,
// without faulting the program: ERANGE for an address no kernel pointer
// has, EFAULT for one that is not mapped readable.
func (k *Kernel) readKernel(m *interp.Machine, addr uint64, p []byte) uapi.Errno {
	if !kernelReadable(addr) || addr+uint64(len(p)) < addr {
		return uapi.ERANGE
	}
	if f := m.TLB.Read(addr, p); f != nil {
		return uapi.EFAULT
	}
	return 0
}

// kernelReadable is x86-64's copy_from_kernel_nofault_allowed, the rule of
// the kernel the differential tests compare with: no user address (below
// TASK_SIZE_MAX and its guard page, 1<<47) and no non-canonical one. (The
// simulated kernel's addresses are arm64's, which are canonical x86-64
// kernel addresses too.)
func kernelReadable(addr uint64) bool {
	return addr >= 1<<47 && addr>>47 == 1<<17-1
}
