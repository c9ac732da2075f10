// Uses of the dynptr kfuncs the verifier refuses, one program each, and
// programs it accepts. Each program is loaded on its own, in the kernel
// and in bpfsim, which must give the same verdict and the same message.
// Self-contained: no libbpf headers.
// Rebuild with: go generate ./sim
typedef unsigned char __u8;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __ksym __attribute__((section(".ksyms")))
#define NULL ((void *)0)

struct bpf_dynptr {
	__u64 __opaque[2];
} __attribute__((aligned(8)));

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

struct __sk_buff {
	__u32 len;
};

extern int bpf_dynptr_from_xdp(struct xdp_md *x, __u64 flags, struct bpf_dynptr *ptr__uninit) __ksym;
extern int bpf_dynptr_from_skb(struct __sk_buff *s, __u64 flags, struct bpf_dynptr *ptr__uninit) __ksym;
extern void *bpf_dynptr_slice(const struct bpf_dynptr *p, __u32 offset, void *buffer__opt, __u32 buffer__szk) __ksym;
extern void *bpf_dynptr_slice_rdwr(const struct bpf_dynptr *p, __u32 offset, void *buffer__opt, __u32 buffer__szk) __ksym;
extern int bpf_dynptr_adjust(const struct bpf_dynptr *p, __u32 start, __u32 end) __ksym;
extern int bpf_dynptr_clone(const struct bpf_dynptr *p, struct bpf_dynptr *clone__uninit) __ksym;
extern int bpf_dynptr_copy(struct bpf_dynptr *dst_ptr, __u32 dst_off, struct bpf_dynptr *src_ptr, __u32 src_off, __u32 size) __ksym;

static long (*bpf_ringbuf_reserve_dynptr)(void *ringbuf, __u32 size, __u64 flags, struct bpf_dynptr *ptr) = (void *)198;
static void (*bpf_ringbuf_submit_dynptr)(struct bpf_dynptr *ptr, __u64 flags) = (void *)199;
static long (*bpf_dynptr_read)(void *dst, __u32 len, const struct bpf_dynptr *src, __u32 offset, __u64 flags) = (void *)201;
static long (*bpf_dynptr_write)(const struct bpf_dynptr *dst, __u32 offset, void *src, __u32 len, __u64 flags) = (void *)202;
static long (*bpf_xdp_adjust_head)(struct xdp_md *xdp_md, int delta) = (void *)44;

struct {
	__uint(type, 27); // BPF_MAP_TYPE_RINGBUF
	__uint(max_entries, 4096);
} rb SEC(".maps");

SEC("xdp")
int accepted(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u8 buf[8] = {};
	__u8 *p;

	bpf_dynptr_from_xdp(ctx, 0, &dp);
	p = bpf_dynptr_slice(&dp, 0, buf, sizeof(buf));
	if (!p)
		return 0;
	return p[7];
}

SEC("xdp")
int slice_size_not_constant(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u8 *p;

	bpf_dynptr_from_xdp(ctx, 0, &dp);
	p = bpf_dynptr_slice(&dp, 0, NULL, ctx->ingress_ifindex & 7);
	return p ? 1 : 0;
}

SEC("xdp")
int slice_written(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u8 *p;

	bpf_dynptr_from_xdp(ctx, 0, &dp);
	p = bpf_dynptr_slice(&dp, 0, NULL, 8);
	if (p)
		p[0] = 1;
	return 0;
}

SEC("xdp")
int slice_read_past_its_end(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u8 *p;

	bpf_dynptr_from_xdp(ctx, 0, &dp);
	p = bpf_dynptr_slice(&dp, 0, NULL, 8);
	if (!p)
		return 0;
	return *(volatile __u8 *)(p + 8);
}

SEC("xdp")
int slice_without_null_check(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u8 *p;

	bpf_dynptr_from_xdp(ctx, 0, &dp);
	p = bpf_dynptr_slice(&dp, 0, NULL, 8);
	return *(volatile __u8 *)p;
}

SEC("xdp")
int slice_buffer_too_small(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u8 buf[4];
	__u8 *p;

	bpf_dynptr_from_xdp(ctx, 0, &dp);
	p = bpf_dynptr_slice(&dp, 0, buf, 8);
	return p ? 1 : 0;
}

// Moving the packet ends the slices of the packet's dynptrs.
SEC("xdp")
int slice_after_adjust_head(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u8 *p;

	bpf_dynptr_from_xdp(ctx, 0, &dp);
	p = bpf_dynptr_slice(&dp, 0, NULL, 8);
	if (!p)
		return 0;
	bpf_xdp_adjust_head(ctx, 0);
	return *(volatile __u8 *)p;
}

// So does writing through an skb dynptr.
SEC("tc")
int slice_after_skb_write(struct __sk_buff *ctx)
{
	struct bpf_dynptr dp;
	__u8 b = 0;
	__u8 *p;

	bpf_dynptr_from_skb(ctx, 0, &dp);
	p = bpf_dynptr_slice(&dp, 0, NULL, 8);
	if (!p)
		return 0;
	bpf_dynptr_write(&dp, 0, &b, 1, 0);
	return *(volatile __u8 *)p;
}

// A write through an xdp dynptr does not.
SEC("xdp")
int slice_after_xdp_write(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u8 b = 0;
	__u8 *p;

	bpf_dynptr_from_xdp(ctx, 0, &dp);
	p = bpf_dynptr_slice(&dp, 0, NULL, 8);
	if (!p)
		return 0;
	bpf_dynptr_write(&dp, 0, &b, 1, 0);
	return *(volatile __u8 *)p;
}

SEC("xdp")
int from_skb_in_xdp(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	return bpf_dynptr_from_skb((struct __sk_buff *)ctx, 0, &dp);
}

SEC("socket")
int slice_rdwr_in_socket_filter(struct __sk_buff *ctx)
{
	struct bpf_dynptr dp;
	__u8 *p;

	bpf_dynptr_from_skb(ctx, 0, &dp);
	p = bpf_dynptr_slice_rdwr(&dp, 0, NULL, 8);
	return p ? 1 : 0;
}

SEC("xdp")
int from_xdp_of_the_stack(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	struct xdp_md fake = {};

	return bpf_dynptr_from_xdp(&fake, 0, &dp);
}

SEC("xdp")
int from_xdp_into_null(struct xdp_md *ctx)
{
	return bpf_dynptr_from_xdp(ctx, 0, NULL);
}

SEC("xdp")
int adjust_of_nothing(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	return bpf_dynptr_adjust(&dp, 0, 1);
}

// A clone shares its ring buffer record's reference: submitting one ends
// both.
SEC("xdp")
int clone_submitted_original_read(struct xdp_md *ctx)
{
	struct bpf_dynptr dp, cl;
	__u8 buf[8];

	bpf_ringbuf_reserve_dynptr(&rb, 8, 0, &dp);
	bpf_dynptr_clone(&dp, &cl);
	bpf_ringbuf_submit_dynptr(&cl, 0);
	return bpf_dynptr_read(buf, 8, &dp, 0, 0);
}

SEC("xdp")
int clone_submitted_accepted(struct xdp_md *ctx)
{
	struct bpf_dynptr dp, cl;

	bpf_ringbuf_reserve_dynptr(&rb, 8, 0, &dp);
	bpf_dynptr_clone(&dp, &cl);
	bpf_ringbuf_submit_dynptr(&cl, 0);
	return 0;
}

// A slice of a ring buffer dynptr taken by bpf_dynptr_slice, read after
// the record was submitted.
SEC("xdp")
int ringbuf_slice_after_submit(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u8 *p;

	bpf_ringbuf_reserve_dynptr(&rb, 8, 0, &dp);
	p = bpf_dynptr_slice(&dp, 0, NULL, 8);
	bpf_ringbuf_submit_dynptr(&dp, 0);
	if (!p)
		return 0;
	return *(volatile __u8 *)p;
}

// A slice of a local dynptr ends when the dynptr is overwritten.
SEC("xdp")
int slice_after_dynptr_remade(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u8 *p;

	bpf_dynptr_from_xdp(ctx, 0, &dp);
	p = bpf_dynptr_slice(&dp, 0, NULL, 8);
	bpf_dynptr_from_xdp(ctx, 0, &dp);
	if (!p)
		return 0;
	return *(volatile __u8 *)p;
}

SEC("xdp")
int copy_from_nothing(struct xdp_md *ctx)
{
	struct bpf_dynptr dp, src;

	bpf_dynptr_from_xdp(ctx, 0, &dp);
	return bpf_dynptr_copy(&dp, 0, &src, 0, 1);
}

char _license[] SEC("license") = "GPL";
