package sim

import (
	"github.com/cilium/ebpf"
	"github.com/pkg/errors"

	"github.com/bpfsim/bpfsim/sim/uapi"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// Sleepable programs (BPF_F_SLEEPABLE, seed 001 "Introduce sleepable BPF
// programs") may block, so they cannot run inside rcu_read_lock: they run
// under rcu_read_lock_trace, and only the map types whose frees also wait
// for RCU tasks trace readers are open to them.
//
// bpfsim runs every program, sleepable or not, inside one read-side
// section whose grace period waits for all running programs (rcu.go); that
// grace period is therefore at least as long as both of the kernel's, and
// a sleepable program never sees a freed map element or map.

// sleepableMapTypes are the map types check_map_prog_compatibility lets a
// sleepable program use (6.x).
var sleepableMapTypes = map[uapi.MapType]bool{
	uapi.MapTypeHash:          true,
	uapi.MapTypeLRUHash:       true,
	uapi.MapTypeArray:         true,
	uapi.MapTypePercpuHash:    true,
	uapi.MapTypePercpuArray:   true,
	uapi.MapTypeLRUPercpuHash: true,
	uapi.MapTypeArrayOfMaps:   true,
	uapi.MapTypeHashOfMaps:    true,
	uapi.MapTypeRingbuf:       true,
	uapi.MapTypeQueue:         true,
	uapi.MapTypeStack:         true,
}

// isBuiltinMapType says whether t is one of the kernel's own map types.
func isBuiltinMapType(t uapi.MapType) bool {
	for _, b := range builtinMapTypes {
		if b.ID == t {
			return true
		}
	}
	return false
}

// checkSleepable applies check_attach_btf_id's rules on sleepable
// programs to the program types bpfsim loads: a syscall program must be
// sleepable; of the others only kprobes (which may attach to uprobes) and
// struct_ops programs (for the members their type allows) may be.
func checkSleepable(typ ebpf.ProgramType, sleepable bool) error {
	switch {
	case typ == ebpf.Syscall && !sleepable:
		return errors.WithStack(&verifier.Error{Errno: uapi.EINVAL, Msg: "Syscall programs can only be sleepable"})
	case sleepable && typ != ebpf.Syscall && typ != ebpf.Kprobe && typ != ebpf.StructOps:
		return errors.WithStack(&verifier.Error{Errno: uapi.EINVAL, Msg: "Only fentry/fexit/fmod_ret, lsm, iter, uprobe, and struct_ops programs can be sleepable"})
	}
	return nil
}
