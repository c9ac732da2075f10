package uapi

// BPF ring buffer helpers, flags and record header (include/uapi/linux/bpf.h).
const (
	FuncRingbufOutput  = 130
	FuncRingbufReserve = 131
	FuncRingbufSubmit  = 132
	FuncRingbufDiscard = 133
	FuncRingbufQuery   = 134

	// Output and submit flags.
	BPF_RB_NO_WAKEUP    = 1 << 0
	BPF_RB_FORCE_WAKEUP = 1 << 1

	// Query flags.
	BPF_RB_AVAIL_DATA = 0
	BPF_RB_RING_SIZE  = 1
	BPF_RB_CONS_POS   = 2
	BPF_RB_PROD_POS   = 3

	// The record header: a length word with these two bits, then the
	// record's page offset.
	BPF_RINGBUF_BUSY_BIT    = 1 << 31
	BPF_RINGBUF_DISCARD_BIT = 1 << 30
	BPF_RINGBUF_HDR_SZ      = 8
)
