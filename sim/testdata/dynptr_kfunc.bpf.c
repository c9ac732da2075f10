// The dynptr kfuncs over a packet: an XDP, a tc and a socket filter
// program make a dynptr of their packet (bpf_dynptr_from_xdp,
// bpf_dynptr_from_skb) and run one operation the cmd map names on it:
// slices with and without a buffer, a writable slice, bpf_dynptr_read and
// bpf_dynptr_write, bpf_dynptr_adjust, bpf_dynptr_clone, bpf_dynptr_data
// (NULL for packets) and the accessors. Results go to the res map; the
// packet the run returns shows the writes. The same commands, run in the
// kernel and in bpfsim, must give the same results and packets.
// Self-contained: no libbpf headers.
// Rebuild with: go generate ./sim
typedef unsigned char __u8;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __ksym __attribute__((section(".ksyms")))
#define NULL ((void *)0)

// A kfunc's bool is its low byte: this kernel's x86-64 code leaves bits
// 8-31 of the result undefined (0xffffff01 has been seen), and clang takes
// all 32 bits, so the result is masked where clang cannot drop the mask.
#define BOOL(x) ({ __u64 __v = (x); asm volatile("" : "+r"(__v)); __v & 0xff; })

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

// Only the name matters: the kfunc's prototype is checked by kinds and
// names.
struct __sk_buff {
	__u32 len;
};

extern int bpf_dynptr_from_xdp(struct xdp_md *x, __u64 flags, struct bpf_dynptr *ptr__uninit) __ksym;
extern int bpf_dynptr_from_skb(struct __sk_buff *s, __u64 flags, struct bpf_dynptr *ptr__uninit) __ksym;
extern void *bpf_dynptr_slice(const struct bpf_dynptr *p, __u32 offset, void *buffer__opt, __u32 buffer__szk) __ksym;
extern void *bpf_dynptr_slice_rdwr(const struct bpf_dynptr *p, __u32 offset, void *buffer__opt, __u32 buffer__szk) __ksym;
extern int bpf_dynptr_adjust(const struct bpf_dynptr *p, __u32 start, __u32 end) __ksym;
extern _Bool bpf_dynptr_is_null(const struct bpf_dynptr *p) __ksym;
extern _Bool bpf_dynptr_is_rdonly(const struct bpf_dynptr *p) __ksym;
extern __u32 bpf_dynptr_size(const struct bpf_dynptr *p) __ksym;
extern int bpf_dynptr_clone(const struct bpf_dynptr *p, struct bpf_dynptr *clone__uninit) __ksym;
extern int bpf_dynptr_copy(struct bpf_dynptr *dst_ptr, __u32 dst_off, struct bpf_dynptr *src_ptr, __u32 src_off, __u32 size) __ksym;
extern int bpf_dynptr_memset(struct bpf_dynptr *p, __u32 offset, __u32 size, __u8 val) __ksym;

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_dynptr_from_mem)(void *data, __u32 size, __u64 flags, struct bpf_dynptr *ptr) = (void *)197;
static long (*bpf_dynptr_read)(void *dst, __u32 len, const struct bpf_dynptr *src, __u32 offset, __u64 flags) = (void *)201;
static long (*bpf_dynptr_write)(const struct bpf_dynptr *dst, __u32 offset, void *src, __u32 len, __u64 flags) = (void *)202;
static void *(*bpf_dynptr_data)(const struct bpf_dynptr *ptr, __u32 offset, __u32 len) = (void *)203;

struct cmd {
	__u32 op;     // OP_*
	__u32 off;    // offset of the slice, read, write or data
	__u32 len;    // length of the write (0 to 7)
	__u32 start;  // bpf_dynptr_adjust's range
	__u32 end;
	__u32 pad;
	__u64 flags;  // the read's or the write's flags
	__u64 fflags; // bpf_dynptr_from_xdp's or _skb's flags
};

struct res {
	__s64 from;   // bpf_dynptr_from_*'s result
	__s64 rdonly; // bpf_dynptr_is_rdonly
	__s64 size;   // bpf_dynptr_size
	__s64 rc[4];  // what the operation returned
	__u8 bytes[16];
};

enum {
	OP_SLICE,        // bpf_dynptr_slice(off, NULL, 8): bytes
	OP_SLICE_BUF,    // bpf_dynptr_slice(off, buf, 8): bytes, and whether buf was used
	OP_SLICE_RDWR,   // bpf_dynptr_slice_rdwr(off, NULL, 4): write 0x5a and 0xa5 at its ends
	OP_READ,         // bpf_dynptr_read(bytes, 8, off, flags)
	OP_WRITE,        // bpf_dynptr_write(off, 1..8, len, flags)
	OP_ADJUST,       // bpf_dynptr_adjust(start, end), then size, is_null, read 4 at off
	OP_CLONE,        // clone, adjust the clone, sizes of both, read 4 of the clone
	OP_DATA,         // bpf_dynptr_data(off, 8)
	OP_COPY,         // bpf_dynptr_copy within the packet, into bytes, and back
	OP_MEMSET,       // bpf_dynptr_memset(off, len, 0x77)
};

struct {
	__uint(type, 2); // BPF_MAP_TYPE_ARRAY
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cmd);
} cmds SEC(".maps");

struct {
	__uint(type, 2);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct res);
} results SEC(".maps");

static __attribute__((always_inline)) void run(struct bpf_dynptr *dp, struct cmd *c, struct res *r, int rdwr)
{
	__u8 buf[8] = {};
	__u8 *p;

	r->rdonly = BOOL(bpf_dynptr_is_rdonly(dp));
	r->size = bpf_dynptr_size(dp);
	switch (c->op) {
	case OP_SLICE:
		p = bpf_dynptr_slice(dp, c->off, NULL, 8);
		r->rc[0] = p != NULL;
		if (p)
			__builtin_memcpy(r->bytes, p, 8);
		break;
	case OP_SLICE_BUF:
		p = bpf_dynptr_slice(dp, c->off, buf, 8);
		r->rc[0] = p == NULL ? 0 : p == buf ? 2 : 1;
		if (p)
			__builtin_memcpy(r->bytes, p, 8);
		break;
	case OP_SLICE_RDWR:
		if (!rdwr)
			break;
		p = bpf_dynptr_slice_rdwr(dp, c->off, NULL, 4);
		r->rc[0] = p != NULL;
		if (p) {
			p[0] = 0x5a;
			p[3] = 0xa5;
		}
		break;
	case OP_READ:
		r->rc[0] = bpf_dynptr_read(r->bytes, 8, dp, c->off, c->flags);
		break;
	case OP_WRITE: {
		__u8 src[8] = {1, 2, 3, 4, 5, 6, 7, 8};
		r->rc[0] = bpf_dynptr_write(dp, c->off, src, c->len & 7, c->flags);
		break;
	}
	case OP_ADJUST:
		r->rc[0] = bpf_dynptr_adjust(dp, c->start, c->end);
		r->rc[1] = bpf_dynptr_size(dp);
		r->rc[2] = BOOL(bpf_dynptr_is_null(dp));
		r->rc[3] = bpf_dynptr_read(r->bytes, 4, dp, c->off, 0);
		break;
	case OP_CLONE: {
		struct bpf_dynptr cl;

		r->rc[0] = bpf_dynptr_clone(dp, &cl);
		r->rc[1] = bpf_dynptr_adjust(&cl, c->start, c->end);
		r->rc[2] = bpf_dynptr_size(&cl);
		r->rc[3] = bpf_dynptr_read(r->bytes, 4, &cl, c->off, 0);
		break;
	}
	case OP_DATA:
		r->rc[0] = bpf_dynptr_data(dp, c->off, 8) != NULL;
		break;
	case OP_COPY: {
		struct bpf_dynptr lp;

		r->rc[0] = bpf_dynptr_copy(dp, c->start, dp, c->off, c->len);
		r->rc[1] = bpf_dynptr_from_mem(r->bytes, sizeof(r->bytes), 0, &lp);
		r->rc[2] = bpf_dynptr_copy(&lp, 0, dp, c->off, c->len);
		r->rc[3] = bpf_dynptr_copy(dp, c->end, &lp, 0, c->len);
		break;
	}
	case OP_MEMSET:
		r->rc[0] = bpf_dynptr_memset(dp, c->off, c->len, 0x77);
		break;
	}
}

static __attribute__((always_inline)) int setup(struct cmd **c, struct res **r)
{
	__u32 zero = 0;

	*c = bpf_map_lookup_elem(&cmds, &zero);
	*r = bpf_map_lookup_elem(&results, &zero);
	return *c && *r;
}

SEC("xdp")
int xdp_dynptr(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	struct cmd *c;
	struct res *r;

	if (!setup(&c, &r))
		return 0;
	r->from = bpf_dynptr_from_xdp(ctx, c->fflags, &dp);
	run(&dp, c, r, 1);
	return 2; // XDP_PASS
}

SEC("tc")
int tc_dynptr(struct __sk_buff *ctx)
{
	struct bpf_dynptr dp;
	struct cmd *c;
	struct res *r;

	if (!setup(&c, &r))
		return 0;
	r->from = bpf_dynptr_from_skb(ctx, c->fflags, &dp);
	run(&dp, c, r, 1);
	return 0; // TC_ACT_OK
}

// A socket filter may not write its packet: its skb dynptr is read-only,
// and bpf_dynptr_slice_rdwr would be refused.
SEC("socket")
int socket_dynptr(struct __sk_buff *ctx)
{
	struct bpf_dynptr dp;
	struct cmd *c;
	struct res *r;

	if (!setup(&c, &r))
		return 0;
	r->from = bpf_dynptr_from_skb(ctx, c->fflags, &dp);
	run(&dp, c, r, 0);
	return 0;
}

// Sixteen slices of the packet, for BenchmarkDynptrSlice: what a
// bpf_dynptr_slice call costs (seed 003's microbenchmark measures the
// same call).
SEC("xdp")
int slice_bench(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	__u64 sum = 0;

	bpf_dynptr_from_xdp(ctx, 0, &dp);
#pragma unroll
	for (int i = 0; i < 16; i++) {
		__u8 *p = bpf_dynptr_slice(&dp, i * 2, NULL, 2);

		if (p)
			sum += p[0];
	}
	return sum & 1 ? 2 : 1;
}

char _license[] SEC("license") = "GPL";
