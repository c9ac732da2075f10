package sim

import (
	"slices"

	"github.com/cilium/ebpf"

	"github.com/bpfsim/bpfsim/sim/interp"
	"github.com/bpfsim/bpfsim/sim/verifier"
)

// The time and topology helpers of bpf_base_func_proto besides
// bpf_ktime_get_ns, all read off the simulated clock (kernel/bpf/helpers.c,
// kernel/time/jiffies.c): the boot clock is the monotonic one (nothing
// suspends a simulated machine), the coarse clock and jiffies advance in
// ticks of a 250 Hz kernel (Debian's CONFIG_HZ), and every CPU is on NUMA
// node 0.

// Helper ids (include/uapi/linux/bpf.h).
const (
	funcGetNumaNodeID    = 42
	funcJiffies64        = 118
	funcKtimeGetBootNs   = 125
	funcKtimeGetCoarseNs = 160
)

const (
	// hz is the simulated CONFIG_HZ.
	hz     = 250
	tickNs = 1_000_000_000 / hz
	// initialJiffies is INITIAL_JIFFIES, where jiffies start at boot:
	// five minutes before the 32-bit counter wraps.
	initialJiffies = 1<<32 - 300*hz
)

func (k *Kernel) registerTimeHelpers() {
	noArgs := &verifier.FuncProto{}
	for _, h := range []struct {
		id int32
		fn func() uint64
		// types not offered it, of those bpfsim loads
		except []ebpf.ProgramType
	}{
		{funcKtimeGetBootNs, k.clock.Now, nil},
		{funcKtimeGetCoarseNs, func() uint64 { return k.clock.Now() / tickNs * tickNs },
			[]ebpf.ProgramType{ebpf.Kprobe, ebpf.TracePoint, ebpf.RawTracepoint, ebpf.Syscall, ebpf.Tracing}},
		{funcJiffies64, func() uint64 { return initialJiffies + k.clock.Now()/tickNs }, nil},
		{funcGetNumaNodeID, func() uint64 { return 0 }, nil},
	} {
		fn := h.fn
		err := k.RegisterHelper(&Helper{ID: h.id, Proto: noArgs, Fn: func(*interp.Machine, uint64, uint64, uint64, uint64, uint64) (uint64, error) {
			return fn(), nil
		}})
		if err != nil {
			panic(err) // the table has unique ids
		}
		if h.except != nil {
			for typ := range supportedTypes {
				if !slices.Contains(h.except, typ) {
					k.helperTypes[h.id] = append(k.helperTypes[h.id], typ)
				}
			}
		}
	}
}
