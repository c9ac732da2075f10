package uapi

// BPF_PROG_LOAD prog_flags (include/uapi/linux/bpf.h).
const (
	BPF_F_STRICT_ALIGNMENT    = 1 << 0
	BPF_F_ANY_ALIGNMENT       = 1 << 1
	BPF_F_TEST_RND_HI32       = 1 << 2
	BPF_F_TEST_STATE_FREQ     = 1 << 3
	BPF_F_SLEEPABLE           = 1 << 4
	BPF_F_XDP_HAS_FRAGS       = 1 << 5
	BPF_F_XDP_DEV_BOUND_ONLY  = 1 << 6
	BPF_F_TEST_REG_INVARIANTS = 1 << 7
	BPF_F_TOKEN_FD            = 1 << 16

	// ProgLoadFlags are the prog_flags bpf_prog_load accepts.
	ProgLoadFlags = BPF_F_STRICT_ALIGNMENT | BPF_F_ANY_ALIGNMENT | BPF_F_TEST_STATE_FREQ |
		BPF_F_SLEEPABLE | BPF_F_TEST_RND_HI32 | BPF_F_XDP_HAS_FRAGS | BPF_F_XDP_DEV_BOUND_ONLY |
		BPF_F_TEST_REG_INVARIANTS | BPF_F_TOKEN_FD
)

// Offsets of the fields of struct xdp_md, the XDP context.
const (
	XDPMDData           = 0
	XDPMDDataEnd        = 4
	XDPMDDataMeta       = 8
	XDPMDIngressIfindex = 12
	XDPMDRxQueueIndex   = 16
	XDPMDEgressIfindex  = 20
	XDPMDSize           = 24
)
