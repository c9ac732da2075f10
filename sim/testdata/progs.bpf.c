// Small programs for bpfsim's own tests: an XDP program that sums the
// first bytes of the packet and prints the sum, and a syscall program that
// doubles a number in its context. Self-contained: no libbpf headers.
// Rebuild with: go generate ./sim
typedef unsigned char __u8;
typedef unsigned int __u32;
typedef unsigned long long __u64;

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

#define SEC(name) __attribute__((section(name), used))

static long (*bpf_trace_printk)(const char *fmt, __u32 fmt_size, ...) = (void *)6;

SEC("xdp")
int xdp_sum(struct xdp_md *ctx)
{
	__u8 *data = (__u8 *)(long)ctx->data;
	__u8 *end = (__u8 *)(long)ctx->data_end;
	__u32 sum = 0;

	for (int i = 0; i < 16; i++) {
		if (data + i + 1 > end)
			break;
		sum += data[i];
	}
	char fmt[] = "sum=%u len=%d";
	bpf_trace_printk(fmt, sizeof(fmt), sum, (int)(end - data));
	return sum & 1 ? 1 : 2; /* XDP_DROP or XDP_PASS */
}

struct args {
	__u64 in;
	__u64 out;
};

SEC("syscall")
int double_it(struct args *a)
{
	a->out = a->in * 2;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
