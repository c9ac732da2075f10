// bpf_dynptr uses the verifier refuses, one program each, and one it
// accepts. Each program is loaded on its own, in the kernel and in bpfsim,
// which must give the same verdict and the same message.
// Self-contained: no libbpf headers.
// Rebuild with: go generate ./sim
typedef unsigned char __u8;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

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

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)131;
static void (*bpf_ringbuf_discard)(void *data, __u64 flags) = (void *)133;
static long (*bpf_dynptr_from_mem)(void *data, __u32 size, __u64 flags, struct bpf_dynptr *ptr) = (void *)197;
static long (*bpf_ringbuf_reserve_dynptr)(void *ringbuf, __u32 size, __u64 flags, struct bpf_dynptr *ptr) = (void *)198;
static void (*bpf_ringbuf_submit_dynptr)(struct bpf_dynptr *ptr, __u64 flags) = (void *)199;
static void (*bpf_ringbuf_discard_dynptr)(struct bpf_dynptr *ptr, __u64 flags) = (void *)200;
static long (*bpf_dynptr_read)(void *dst, __u32 len, const struct bpf_dynptr *src, __u32 offset, __u64 flags) = (void *)201;
static long (*bpf_dynptr_write)(const struct bpf_dynptr *dst, __u32 offset, void *src, __u32 len, __u64 flags) = (void *)202;
static void *(*bpf_dynptr_data)(const struct bpf_dynptr *ptr, __u32 offset, __u32 len) = (void *)203;

struct {
	__uint(type, 2); // BPF_MAP_TYPE_ARRAY
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u8[64]);
} vals SEC(".maps");

struct {
	__uint(type, 27); // BPF_MAP_TYPE_RINGBUF
	__uint(max_entries, 4096);
} rb SEC(".maps");

// A read-only map value (.rodata, frozen by the loader).
const volatile __u8 ro[64] = {1};

// value is vals[0], or the program returns 1.
#define value()                                               \
	({                                                    \
		__u32 __zero = 0;                             \
		__u8 *__v = bpf_map_lookup_elem(&vals, &__zero); \
		if (!__v)                                     \
			return 1;                             \
		__v;                                          \
	})

// A number the verifier cannot know: the packet's first word.
static __attribute__((always_inline)) __u32 unknown(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;

	if (data + 4 > end)
		return 0;
	return *(__u32 *)data;
}

SEC("xdp")
int accepted(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	char buf[16] = {};
	__u8 *p;

	bpf_dynptr_from_mem(value(), 16, 0, &dp);
	p = bpf_dynptr_data(&dp, 0, 8);
	if (p)
		p[0] = 1;
	bpf_dynptr_read(buf, 8, &dp, 8, 0);
	// A local dynptr may be overwritten by a reservation.
	bpf_ringbuf_reserve_dynptr(&rb, 8, 0, &dp);
	bpf_dynptr_write(&dp, 0, buf, 8, 0);
	bpf_ringbuf_submit_dynptr(&dp, 0);
	return 2;
}

SEC("xdp")
int nonconst_offset(struct xdp_md *ctx)
{
	struct bpf_dynptr dps[2];
	__u32 i = unknown(ctx) & 1;

	bpf_dynptr_from_mem(value(), 16, 0, &dps[i]);
	return 2;
}

SEC("xdp")
int misaligned_offset(struct xdp_md *ctx)
{
	struct bpf_dynptr dps[2];

	bpf_dynptr_from_mem(value(), 16, 0, (void *)&dps[0] + 4);
	return 2;
}

SEC("xdp")
int read_nonconst_offset(struct xdp_md *ctx)
{
	struct bpf_dynptr dps[2];
	char buf[8];
	__u32 i = unknown(ctx) & 1;

	bpf_dynptr_from_mem(value(), 16, 0, &dps[0]);
	bpf_dynptr_from_mem(value(), 16, 0, &dps[1]);
	return bpf_dynptr_read(buf, 8, &dps[i], 0, 0);
}

SEC("xdp")
int read_inside_a_dynptr(struct xdp_md *ctx)
{
	struct bpf_dynptr dps[2];
	char buf[8];

	bpf_dynptr_from_mem(value(), 16, 0, &dps[0]);
	bpf_dynptr_from_mem(value(), 16, 0, &dps[1]);
	return bpf_dynptr_read(buf, 8, (void *)&dps[0] + 8, 0, 0);
}

SEC("xdp")
int read_uninit(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	char buf[8];

	return bpf_dynptr_read(buf, 8, &dp, 0, 0);
}

SEC("xdp")
int write_uninit(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	char buf[8] = {};

	return bpf_dynptr_write(&dp, 0, buf, 8, 0);
}

SEC("xdp")
int data_uninit(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	return bpf_dynptr_data(&dp, 0, 8) ? 1 : 2;
}

SEC("xdp")
int submit_uninit(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	bpf_ringbuf_submit_dynptr(&dp, 0);
	return 2;
}

SEC("xdp")
int reserve_over_reserved(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	bpf_ringbuf_reserve_dynptr(&rb, 8, 0, &dp);
	bpf_ringbuf_reserve_dynptr(&rb, 8, 0, &dp);
	bpf_ringbuf_discard_dynptr(&dp, 0);
	return 2;
}

SEC("xdp")
int from_mem_over_reserved(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	bpf_ringbuf_reserve_dynptr(&rb, 8, 0, &dp);
	bpf_dynptr_from_mem(value(), 16, 0, &dp);
	return 2;
}

SEC("xdp")
int ringbuf_leak(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	bpf_ringbuf_reserve_dynptr(&rb, 8, 0, &dp);
	return 2;
}

// A failed reservation is a reference too: it must be discarded or
// submitted.
SEC("xdp")
int failed_reserve_not_released(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	if (bpf_ringbuf_reserve_dynptr(&rb, 8, 0, &dp))
		return 1;
	bpf_ringbuf_submit_dynptr(&dp, 0);
	return 2;
}

SEC("xdp")
int submit_local(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	bpf_dynptr_from_mem(value(), 16, 0, &dp);
	bpf_ringbuf_submit_dynptr(&dp, 0);
	return 2;
}

SEC("xdp")
int discard_local(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	bpf_dynptr_from_mem(value(), 16, 0, &dp);
	bpf_ringbuf_discard_dynptr(&dp, 0);
	return 2;
}

SEC("xdp")
int submit_twice(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	bpf_ringbuf_reserve_dynptr(&rb, 8, 0, &dp);
	bpf_ringbuf_submit_dynptr(&dp, 0);
	bpf_ringbuf_discard_dynptr(&dp, 0);
	return 2;
}

SEC("xdp")
int read_after_submit(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	char buf[8];

	bpf_ringbuf_reserve_dynptr(&rb, 8, 0, &dp);
	bpf_ringbuf_submit_dynptr(&dp, 0);
	return bpf_dynptr_read(buf, 8, &dp, 0, 0);
}

SEC("xdp")
int load_local_dynptr(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	bpf_dynptr_from_mem(value(), 16, 0, &dp);
	return *(volatile __u64 *)&dp;
}

SEC("xdp")
int load_ringbuf_dynptr(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u64 v;

	bpf_ringbuf_reserve_dynptr(&rb, 8, 0, &dp);
	v = ((volatile __u32 *)&dp)[3];
	bpf_ringbuf_discard_dynptr(&dp, 0);
	return v;
}

SEC("xdp")
int copy_a_dynptr(struct xdp_md *ctx)
{
	struct bpf_dynptr dp, copy;
	char buf[8];

	bpf_dynptr_from_mem(value(), 16, 0, &dp);
	__builtin_memcpy(&copy, &dp, sizeof(dp));
	return bpf_dynptr_read(buf, 8, &copy, 0, 0);
}

SEC("xdp")
int store_into_local_then_read(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	char buf[8];

	bpf_dynptr_from_mem(value(), 16, 0, &dp);
	((volatile __u32 *)&dp)[2] = 64;
	return bpf_dynptr_read(buf, 8, &dp, 0, 0);
}

SEC("xdp")
int store_into_ringbuf_dynptr(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	bpf_ringbuf_reserve_dynptr(&rb, 8, 0, &dp);
	((volatile __u32 *)&dp)[2] = 64;
	bpf_ringbuf_discard_dynptr(&dp, 0);
	return 2;
}

SEC("xdp")
int data_without_null_check(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u8 *p;

	bpf_dynptr_from_mem(value(), 16, 0, &dp);
	p = bpf_dynptr_data(&dp, 0, 8);
	return *(volatile __u8 *)p;
}

SEC("xdp")
int slice_after_submit(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u8 *p;

	bpf_ringbuf_reserve_dynptr(&rb, 8, 0, &dp);
	p = bpf_dynptr_data(&dp, 0, 8);
	if (!p) {
		bpf_ringbuf_discard_dynptr(&dp, 0);
		return 1;
	}
	bpf_ringbuf_submit_dynptr(&dp, 0);
	*(volatile __u8 *)p = 1;
	return 2;
}

SEC("xdp")
int slice_after_discard(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u8 *p;

	bpf_ringbuf_reserve_dynptr(&rb, 8, 0, &dp);
	p = bpf_dynptr_data(&dp, 0, 8);
	bpf_ringbuf_discard_dynptr(&dp, 0);
	if (p)
		*(volatile __u8 *)p = 1;
	return 2;
}

SEC("xdp")
int slice_after_from_mem_again(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u8 *v = value(), *p;

	bpf_dynptr_from_mem(v, 16, 0, &dp);
	p = bpf_dynptr_data(&dp, 0, 8);
	if (!p)
		return 1;
	bpf_dynptr_from_mem(v + 16, 16, 0, &dp);
	*(volatile __u8 *)p = 1;
	return 2;
}

SEC("xdp")
int slice_after_store_into_local(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u8 *p;

	bpf_dynptr_from_mem(value(), 16, 0, &dp);
	p = bpf_dynptr_data(&dp, 0, 8);
	if (!p)
		return 1;
	((volatile __u32 *)&dp)[0] = 0;
	*(volatile __u8 *)p = 1;
	return 2;
}

SEC("xdp")
int data_nonconst_len(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u32 n = unknown(ctx) & 7;

	bpf_dynptr_from_mem(value(), 16, 0, &dp);
	return bpf_dynptr_data(&dp, 0, n) ? 1 : 2;
}

SEC("xdp")
int slice_write_beyond(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u8 *p;

	bpf_dynptr_from_mem(value(), 16, 0, &dp);
	p = bpf_dynptr_data(&dp, 0, 8);
	if (!p)
		return 1;
	*(volatile __u8 *)(p + 8) = 1;
	return 2;
}

SEC("xdp")
int slice_read_beyond(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u8 *p;

	bpf_dynptr_from_mem(value(), 16, 0, &dp);
	p = bpf_dynptr_data(&dp, 0, 8);
	if (!p)
		return 1;
	return *(volatile __u64 *)(p + 4);
}

SEC("xdp")
int dynptr_in_a_map_value(struct xdp_md *ctx)
{
	__u8 *v = value();

	bpf_dynptr_from_mem(v + 32, 16, 0, (struct bpf_dynptr *)v);
	return 2;
}

SEC("xdp")
int read_a_map_value_as_dynptr(struct xdp_md *ctx)
{
	__u8 *v = value();
	char buf[8];

	return bpf_dynptr_read(buf, 8, (struct bpf_dynptr *)v, 0, 0);
}

SEC("xdp")
int from_mem_over_the_dynptr(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	bpf_dynptr_from_mem(value(), 16, 0, &dp);
	bpf_dynptr_from_mem(&dp, sizeof(dp), 0, &dp);
	return 2;
}

SEC("xdp")
int read_into_the_dynptr(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	bpf_dynptr_from_mem(value(), 16, 0, &dp);
	return bpf_dynptr_read(&dp, 8, &dp, 0, 0);
}

SEC("xdp")
int from_mem_of_stack(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	char buf[16] = {};

	return bpf_dynptr_from_mem(buf, sizeof(buf), 0, &dp);
}

SEC("xdp")
int from_mem_of_packet(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct bpf_dynptr dp;

	if (data + 16 > end)
		return 1;
	return bpf_dynptr_from_mem(data, 16, 0, &dp);
}

SEC("xdp")
int from_mem_of_ringbuf_record(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u8 *s = bpf_ringbuf_reserve(&rb, 16, 0);

	if (!s)
		return 1;
	bpf_dynptr_from_mem(s, 16, 0, &dp);
	bpf_ringbuf_discard(s, 0);
	return 2;
}

SEC("xdp")
int from_mem_of_rodata(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	return bpf_dynptr_from_mem((void *)ro, 16, 0, &dp);
}

SEC("xdp")
int from_mem_past_the_value(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	return bpf_dynptr_from_mem(value(), 65, 0, &dp);
}

SEC("xdp")
int from_mem_unbounded_size(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u32 n = unknown(ctx);

	return bpf_dynptr_from_mem(value(), n, 0, &dp);
}

SEC("xdp")
int read_into_rodata(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	bpf_dynptr_from_mem(value(), 16, 0, &dp);
	return bpf_dynptr_read((void *)ro, 8, &dp, 0, 0);
}

SEC("xdp")
int write_from_packet(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct bpf_dynptr dp;

	if (data + 8 > end)
		return 1;
	bpf_dynptr_from_mem(value(), 16, 0, &dp);
	return bpf_dynptr_write(&dp, 0, data, 8, 0);
}

SEC("xdp")
int reserve_from_an_array(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;

	bpf_ringbuf_reserve_dynptr(&vals, 8, 0, &dp);
	bpf_ringbuf_discard_dynptr(&dp, 0);
	return 2;
}

char LICENSE[] SEC("license") = "GPL";
