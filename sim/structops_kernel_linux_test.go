//go:build linux

package sim_test

import (
	"errors"
	"syscall"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/bpfsim/bpfsim/sim/uapi"
)

// structOpsMapAttr is the head of union bpf_attr for BPF_MAP_CREATE, up to
// btf_vmlinux_value_type_id.
type structOpsMapAttr struct {
	MapType, KeySize, ValueSize, MaxEntries, MapFlags, InnerMapFd, NumaNode uint32
	Name                                                                    [16]byte
	Ifindex, BtfFd, BtfKeyTypeID, BtfValueTypeID, BtfVmlinuxValueTypeID     uint32
	MapExtra                                                                uint64
}

// Creating a struct_ops map with bad attributes fails with the kernel's
// errno. This machine's kernel has no struct_ops type a test can use
// (bpf_testmod is not loaded), so only refusals compare: a missing value
// type id, an id that is no struct_ops value type (ENOTSUPP), a flag
// struct_ops maps do not take.
func TestStructOpsMapCreateErrorsMatchKernel(t *testing.T) {
	k := newKernel(t, nil)
	s := newTestOps(t, k)
	for _, tc := range []struct {
		name            string
		kernelID, simID btf.TypeID
		flags, entries  uint32
	}{
		{"no value type id", 0, 0, 0, 1},
		{"a type that is no struct_ops value", 1, s.desc.TypeID, 0, 1},
		{"BPF_F_RDONLY", 1, s.desc.ValueTypeID, uapi.BPF_F_RDONLY, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := structOpsMapAttr{MapType: uint32(uapi.MapTypeStructOps), KeySize: 4, ValueSize: s.desc.ValueSize(),
				MaxEntries: tc.entries, MapFlags: tc.flags, BtfVmlinuxValueTypeID: uint32(tc.kernelID)}
			fd, _, e := unix.Syscall(unix.SYS_BPF, unix.BPF_MAP_CREATE, uintptr(unsafe.Pointer(&a)), unsafe.Sizeof(a))
			if e == 0 {
				unix.Close(int(fd))
				t.Fatal("the kernel created the map")
			}
			if e == unix.EPERM || e == unix.ENOSYS {
				t.Skipf("skipped: bpf() is not available here: %v", e)
			}
			h, err := k.InitProcess().NewStructOpsMap("ops", tc.simID, s.desc.ValueSize(), tc.flags)
			if err == nil {
				h.Close()
				t.Fatal("bpfsim created the map")
			}
			if !errors.Is(err, syscall.Errno(e)) {
				t.Errorf("bpfsim: %v; kernel: %v (%d)", err, e, e)
			}
		})
	}
}
