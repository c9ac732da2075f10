package sim

import "github.com/cilium/ebpf"

// fixupCPUMap does what cilium/ebpf's MapSpec.fixupMagicFields does for a
// cpumap: max_entries, when 0 or more than the possible CPUs, is the
// number of possible CPUs, so that the map has a slot for each CPU and
// the kernel's NR_CPUS bound is never what a user meets. The kernel
// itself takes any max_entries up to NR_CPUS (maps/cpumap).
func fixupCPUMap(spec *ebpf.MapSpec, cpus int) *ebpf.MapSpec {
	if n := uint32(cpus); spec.MaxEntries == 0 || spec.MaxEntries > n {
		spec = spec.Copy()
		spec.MaxEntries = n
	}
	return spec
}
