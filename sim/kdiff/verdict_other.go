//go:build !linux

package kdiff

// Verdict is never reached: OpenKernel always fails off Linux.
func (k *Kernel) Verdict(vp *VerdictProgram) Verdict {
	return Verdict{Message: "no kernel", MapFailed: true}
}
