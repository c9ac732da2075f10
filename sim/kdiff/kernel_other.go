//go:build !linux

package kdiff

import (
	"runtime"

	"github.com/cilium/ebpf"
	"github.com/pkg/errors"
)

// Kernel loads and test-runs programs in the running Linux kernel.
type Kernel struct{}

// OpenKernel reports that only Linux has a kernel to compare with.
func OpenKernel() (*Kernel, error) {
	return nil, errors.Errorf("no Linux kernel to compare with on %s", runtime.GOOS)
}

// Run is never reached: OpenKernel always fails here.
func (k *Kernel) Run(p *Program) Outcome {
	return Outcome{Rejected: errors.New("no kernel")}
}

// PossibleCPUs and PinnableCPUs are never reached either.
func (k *Kernel) PossibleCPUs() int { return 1 }
func (k *Kernel) PinnableCPUs() int { return 0 }

// LoadRaw is never reached either.
func (k *Kernel) LoadRaw(typ ebpf.ProgramType, code []byte) (func() error, error) {
	return nil, errors.New("no kernel")
}

// mimWorld is never reached either: PlayMim needs a kernel.
func (k *Kernel) mimWorld() mimWorld { return nil }
