//go:build linux

package kdiff

import (
	"github.com/cilium/ebpf"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// LoadRaw loads bytecode (insn.Encode) with one BPF_PROG_LOAD and nothing
// else: no BTF, no feature probes, no log. That is the kernel's own cost
// of a load, the figure ANCHORS.md measured. It returns a function that
// closes the program.
func (k *Kernel) LoadRaw(typ ebpf.ProgramType, code []byte) (func() error, error) {
	fd, errno := progLoad(typ, code, 0, nil)
	if errno != 0 {
		return nil, errors.Wrap(errno, "BPF_PROG_LOAD")
	}
	return func() error { return unix.Close(fd) }, nil
}
