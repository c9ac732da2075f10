package uapi

// Helper ids of the perf event helpers (enum bpf_func_id).
const (
	FuncPerfEventRead      = 22
	FuncPerfEventOutput    = 25
	FuncPerfEventReadValue = 55
	FuncSkbOutput          = 111
	FuncXdpOutput          = 121
)

// Flags of bpf_perf_event_output and bpf_perf_event_read(_value)
// (include/uapi/linux/bpf.h).
const (
	// BPF_F_INDEX_MASK selects the perf event array slot.
	BPF_F_INDEX_MASK = 0xffffffff
	// BPF_F_CURRENT_CPU as the index means "the slot of this CPU".
	BPF_F_CURRENT_CPU = BPF_F_INDEX_MASK
	// BPF_F_CTXLEN_MASK is, for XDP and skb programs, how many bytes of
	// the packet to append to the sample.
	BPF_F_CTXLEN_MASK = 0xfffff << 32
)

// Perf event numbers (include/uapi/linux/perf_event.h).
const (
	PERF_TYPE_HARDWARE = 0
	PERF_TYPE_SOFTWARE = 1

	PERF_COUNT_HW_CPU_CYCLES   = 0
	PERF_COUNT_HW_INSTRUCTIONS = 1
	PERF_COUNT_SW_CPU_CLOCK    = 0
	PERF_COUNT_SW_BPF_OUTPUT   = 10

	PERF_SAMPLE_RAW = 1 << 10

	PERF_RECORD_LOST   = 2
	PERF_RECORD_SAMPLE = 9

	PERF_RECORD_MISC_KERNEL = 1
)

// ENODEV is what perf_event_open returns for a CPU that does not exist.
const ENODEV Errno = 19
