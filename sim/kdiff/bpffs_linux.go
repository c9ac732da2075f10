package kdiff

import (
	"os"
	"syscall"

	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/bpffs"
)

// bpfFSMagic is BPF_FS_MAGIC, a BPF filesystem's statfs type.
const bpfFSMagic = 0xcafe4a11

// KernelBPFFS finds one of this machine's BPF filesystems for a test:
// /sys/fs/bpf if one is mounted there, else a private mount made at dir
// (an empty directory of the caller's), which done unmounts. It returns
// an empty directory made on that filesystem, which done removes.
func KernelBPFFS(dir string) (empty string, done func() error, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(bpffs.Mount, &st); err == nil && uint32(st.Type) == bpfFSMagic {
		empty, err := os.MkdirTemp(bpffs.Mount, "bpfsim")
		if err != nil {
			return "", nil, errors.Wrapf(err, "making a directory on %s", bpffs.Mount)
		}
		return empty, func() error { return os.RemoveAll(empty) }, nil
	}
	if err := syscall.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return "", nil, errors.Wrapf(err, "no BPF filesystem at %s, and mounting one at %s failed", bpffs.Mount, dir)
	}
	empty, err = os.MkdirTemp(dir, "bpfsim")
	if err != nil {
		syscall.Unmount(dir, 0)
		return "", nil, errors.Wrapf(err, "making a directory on %s", dir)
	}
	return empty, func() error { return errors.Wrap(syscall.Unmount(dir, 0), "unmounting the test's BPF filesystem") }, nil
}
