// Dynptrs passed to global functions, which see them as
// CONST_PTR_TO_DYNPTR: what such a function may do with one (read,
// write through, slice, adjust) and may not (remake it, release it), and
// what a caller may not pass. Each program is loaded on its own, in the
// kernel and in bpfsim; the accepted ones are also run on packets.
// Self-contained: no libbpf headers.
// Rebuild with: go generate ./sim
typedef unsigned char __u8;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __ksym __attribute__((section(".ksyms")))
#define __noinline __attribute__((noinline))
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

extern int bpf_dynptr_from_xdp(struct xdp_md *x, __u64 flags, struct bpf_dynptr *ptr__uninit) __ksym;
extern void *bpf_dynptr_slice(const struct bpf_dynptr *p, __u32 offset, void *buffer__opt, __u32 buffer__szk) __ksym;
extern int bpf_dynptr_adjust(const struct bpf_dynptr *p, __u32 start, __u32 end) __ksym;
extern __u32 bpf_dynptr_size(const struct bpf_dynptr *p) __ksym;

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_ringbuf_reserve_dynptr)(void *ringbuf, __u32 size, __u64 flags, struct bpf_dynptr *ptr) = (void *)198;
static void (*bpf_ringbuf_submit_dynptr)(struct bpf_dynptr *ptr, __u64 flags) = (void *)199;
static long (*bpf_dynptr_read)(void *dst, __u32 len, const struct bpf_dynptr *src, __u32 offset, __u64 flags) = (void *)201;
static long (*bpf_dynptr_write)(const struct bpf_dynptr *dst, __u32 offset, void *src, __u32 len, __u64 flags) = (void *)202;

struct {
	__uint(type, 27); // BPF_MAP_TYPE_RINGBUF
	__uint(max_entries, 4096);
} rb SEC(".maps");

struct {
	__uint(type, 2); // BPF_MAP_TYPE_ARRAY
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} vals SEC(".maps");

// The sum of the first four bytes, or -1.
__noinline int sum4(struct bpf_dynptr *p)
{
	__u8 b[4];

	if (bpf_dynptr_read(b, 4, p, 0, 0))
		return -1;
	return b[0] + b[1] + b[2] + b[3];
}

// The byte at 1 through a slice, and 0x77 written at 2; -1 without a
// slice.
__noinline int poke(struct bpf_dynptr *p)
{
	__u8 *s = bpf_dynptr_slice(p, 1, NULL, 1);
	__u8 v = 0x77;

	if (!s)
		return -1;
	bpf_dynptr_write(p, 2, &v, 1, 0);
	return *s;
}

// The caller's dynptr narrowed to [4, 8): the kernel lets a global
// function change a dynptr it may not remake.
__noinline int narrow(struct bpf_dynptr *p)
{
	return bpf_dynptr_adjust(p, 4, 8);
}

SEC("xdp")
int accepted(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	int a, b, c;

	bpf_dynptr_from_xdp(ctx, 0, &dp);
	a = sum4(&dp);
	b = poke(&dp);
	c = narrow(&dp);
	return (a & 0xff) | (b & 0xff) << 8 | (c & 0xff) << 16 | (bpf_dynptr_size(&dp) & 0xff) << 24;
}

__noinline int submits(struct bpf_dynptr *p)
{
	bpf_ringbuf_submit_dynptr(p, 0);
	return 0;
}

SEC("xdp")
int global_submits(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	bpf_ringbuf_reserve_dynptr(&rb, 8, 0, &dp);
	submits(&dp);
	bpf_ringbuf_submit_dynptr(&dp, 0);
	return 0;
}

__noinline int remakes(struct bpf_dynptr *p)
{
	return bpf_ringbuf_reserve_dynptr(&rb, 8, 0, p);
}

SEC("xdp")
int global_remakes(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	bpf_dynptr_from_xdp(ctx, 0, &dp);
	return remakes(&dp);
}

SEC("xdp")
int caller_passes_uninit(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	return sum4(&dp);
}

SEC("xdp")
int caller_passes_map_value(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *v = bpf_map_lookup_elem(&vals, &zero);

	if (!v)
		return 0;
	return sum4((struct bpf_dynptr *)v);
}

// A ring buffer dynptr may be passed too: the function cannot release
// it, its caller does.
SEC("xdp")
int ringbuf_passed(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	int n;

	bpf_ringbuf_reserve_dynptr(&rb, 8, 0, &dp);
	n = sum4(&dp);
	bpf_ringbuf_submit_dynptr(&dp, 0);
	return n;
}

char _license[] SEC("license") = "GPL";
