// bpf_dynptr: XDP programs that make a dynptr (bpf_dynptr_from_mem over an
// array's value, bpf_ringbuf_reserve_dynptr from a ring buffer) and drive
// it through bpf_dynptr_write, bpf_dynptr_data and bpf_dynptr_read, and
// give a ring buffer's dynptr back with bpf_ringbuf_submit_dynptr or
// bpf_ringbuf_discard_dynptr, as the packet says: sizes, offsets, lengths,
// flags, which calls to make. Each helper's return value goes to out, with
// what bpf_dynptr_read left in its stack destination; layout reads the
// dynptr's own bytes once the verifier lets it. Run the same way in the
// kernel and in bpfsim, the results, the maps and the ring buffer's
// records must agree.
// (bpf_dynptr_from_mem takes only a map value: the kernel refuses stack,
// packet and ring buffer memory, and a read-only map's value; see
// dynptr_refused.bpf.c.)
// Self-contained: no libbpf headers.
// Rebuild with: go generate ./sim
typedef unsigned char __u8;
typedef unsigned int __u32;
typedef long long __s64;
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
static long (*bpf_dynptr_from_mem)(void *data, __u32 size, __u64 flags, struct bpf_dynptr *ptr) = (void *)197;
static long (*bpf_ringbuf_reserve_dynptr)(void *ringbuf, __u32 size, __u64 flags, struct bpf_dynptr *ptr) = (void *)198;
static void (*bpf_ringbuf_submit_dynptr)(struct bpf_dynptr *ptr, __u64 flags) = (void *)199;
static void (*bpf_ringbuf_discard_dynptr)(struct bpf_dynptr *ptr, __u64 flags) = (void *)200;
static long (*bpf_dynptr_read)(void *dst, __u32 len, const struct bpf_dynptr *src, __u32 offset, __u64 flags) = (void *)201;
static long (*bpf_dynptr_write)(const struct bpf_dynptr *dst, __u32 offset, void *src, __u32 len, __u64 flags) = (void *)202;
static void *(*bpf_dynptr_data)(const struct bpf_dynptr *ptr, __u32 offset, __u32 len) = (void *)203;

// The command, at the start of the packet.
struct cmd {
	__u32 key;     // the vals value the program works on
	__u32 size;    // the dynptr's size
	__u64 flags;   // bpf_dynptr_from_mem's or bpf_ringbuf_reserve_dynptr's flags
	__u32 moff;    // where in the vals value the dynptr starts (local)
	__u32 steps;   // STEP_*: which calls to make
	__u32 woff;    // bpf_dynptr_write's offset and length
	__u32 wlen;
	__u64 wflags;  // and flags
	__u32 roff;    // bpf_dynptr_read's offset and length
	__u32 rlen;
	__u64 rflags;  // and flags
	__u32 doff;    // bpf_dynptr_data's offset
	__u32 soff;    // the write's source in the vals value (STEP_SRC_VALUE)
	__u32 dstoff;  // the read's destination in the vals value (STEP_DST_VALUE)
	__u32 slen;    // the slice write's length (STEP_SLICE_SRC)
	__u64 sflags;  // bpf_ringbuf_submit_dynptr's or _discard_dynptr's flags
};

// After the command, the packet holds the 64 bytes bpf_dynptr_write
// writes (but with STEP_SRC_VALUE), copied to out's pattern, a map value
// (a helper may not read the packet).
#define PATTERN_LEN 64

enum {
	STEP_ZERO = 1 << 0,      // write size zero bytes at 0 first (size <= 64)
	STEP_WRITE = 1 << 1,     // bpf_dynptr_write(dp, woff, src, wlen, wflags)
	STEP_DATA = 1 << 2,      // bpf_dynptr_data(dp, doff, 8); through it, read 8 bytes, write DATA_MARK
	STEP_DATA0 = 1 << 3,     // bpf_dynptr_data(dp, doff, 0)
	STEP_READ = 1 << 4,      // bpf_dynptr_read(dst, rlen, dp, roff, rflags)
	STEP_SRC_VALUE = 1 << 5, // the write's source is the vals value at soff
	STEP_DST_VALUE = 1 << 6, // the read's destination is the vals value at dstoff
	STEP_SLICE_SRC = 1 << 7, // after STEP_DATA, bpf_dynptr_write(dp, woff, slice, slen, 0)
	STEP_DISCARD = 1 << 8,   // discard the ring buffer's dynptr, not submit it
	STEP_RINGBUF = 1 << 9,   // layout: a ring buffer dynptr, not a local one
};

// rc indices: each call's return value, RC_NOT_RUN where not made.
enum {
	RC_MAKE,      // bpf_dynptr_from_mem, bpf_ringbuf_reserve_dynptr
	RC_ZERO,      // STEP_ZERO's bpf_dynptr_write
	RC_WRITE,     // bpf_dynptr_write
	RC_DATA,      // bpf_dynptr_data: 1 for a pointer, 0 for NULL
	RC_DATA_OLD,  // the 8 bytes the slice held before DATA_MARK
	RC_DATA0,     // bpf_dynptr_data(.., 0): 1 for a pointer, 0 for NULL
	RC_SLICE_SRC, // STEP_SLICE_SRC's bpf_dynptr_write
	RC_READ,      // bpf_dynptr_read
	RC_N,
};

#define RC_NOT_RUN 0x7eadbeef
#define DATA_MARK 0xd7d6d5d4d3d2d1d0ULL
#define READ_FILL 0xa5

struct result {
	__s64 rc[RC_N];
	__u8 read[64]; // bpf_dynptr_read's stack destination, filled with READ_FILL before
	__u8 pattern[PATTERN_LEN];
	__u8 zeros[64];
};

struct {
	__uint(type, 2); // BPF_MAP_TYPE_ARRAY
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct result);
} out SEC(".maps");

// The values local dynptrs are made over, written by the test before
// each run.
struct {
	__uint(type, 2);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u8[128]);
} vals SEC(".maps");

// A value past the largest dynptr (0xffffff bytes), for
// bpf_dynptr_from_mem's E2BIG.
#define BIG_SIZE 0x1000001
struct {
	__uint(type, 2);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u8[BIG_SIZE]);
} big SEC(".maps");

struct {
	__uint(type, 27); // BPF_MAP_TYPE_RINGBUF
	__uint(max_entries, 64 * 1024);
} rb SEC(".maps");

// The steps after the dynptr is made: the same for every kind.
static __attribute__((always_inline)) int steps(struct bpf_dynptr *dp, struct cmd *c, __u8 *v, struct result *r)
{
	__u8 buf[64];
	__u8 *src = r->pattern, *dst = buf;
	__u64 *p = 0;

	if (c->steps & STEP_ZERO) {
		if (c->size > 64)
			return 0;
		r->rc[RC_ZERO] = bpf_dynptr_write(dp, 0, r->zeros, c->size, 0);
	}
	if (c->steps & STEP_WRITE) {
		if (c->wlen > 64)
			return 0;
		if (c->steps & STEP_SRC_VALUE)
			src = v + (c->soff & 63);
		r->rc[RC_WRITE] = bpf_dynptr_write(dp, c->woff, src, c->wlen, c->wflags);
	}
	if (c->steps & STEP_DATA) {
		p = bpf_dynptr_data(dp, c->doff, 8);
		r->rc[RC_DATA] = p != 0;
		if (p) {
			r->rc[RC_DATA_OLD] = *p;
			*p = DATA_MARK;
		}
	}
	if (c->steps & STEP_DATA0)
		r->rc[RC_DATA0] = bpf_dynptr_data(dp, c->doff, 0) != 0;
	if ((c->steps & STEP_SLICE_SRC) && p) {
		if (c->slen > 8)
			return 0;
		r->rc[RC_SLICE_SRC] = bpf_dynptr_write(dp, c->woff, p, c->slen, 0);
	}
	if (c->steps & STEP_READ) {
		if (c->rlen > 64)
			return 0;
		__builtin_memset(buf, READ_FILL, sizeof(buf));
		if (c->steps & STEP_DST_VALUE)
			dst = v + (c->dstoff & 63);
		r->rc[RC_READ] = bpf_dynptr_read(dst, c->rlen, dp, c->roff, c->rflags);
		__builtin_memcpy(r->read, buf, sizeof(buf));
	}
	return 2; // XDP_PASS
}

// begin reads the command from the packet into c and readies out; it
// returns the result, or NULL for a packet too short.
static __attribute__((always_inline)) struct result *begin(struct xdp_md *ctx, struct cmd *c)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct result *r;

	struct packet {
		struct cmd c;
		__u64 pattern[PATTERN_LEN / 8];
	} *pkt = data;

	if ((void *)(pkt + 1) > end)
		return 0;
	*c = pkt->c;
	r = bpf_map_lookup_elem(&out, &zero);
	if (!r)
		return 0;
	for (int i = 0; i < RC_N; i++)
		r->rc[i] = RC_NOT_RUN;
	__builtin_memset(r->read, 0, sizeof(r->read));
	for (int i = 0; i < PATTERN_LEN / 8; i++)
		((__u64 *)r->pattern)[i] = pkt->pattern[i];
	__builtin_memset(r->zeros, 0, sizeof(r->zeros));
	return r;
}

// A local dynptr over the vals value at moff.
SEC("xdp")
int local(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	struct cmd c;
	struct result *r = begin(ctx, &c);
	__u8 *v;

	if (!r)
		return 0;
	v = bpf_map_lookup_elem(&vals, &c.key);
	if (!v)
		return 1;
	if (c.moff > 64 || c.size > 64)
		return 0;
	r->rc[RC_MAKE] = bpf_dynptr_from_mem(v + c.moff, c.size, c.flags, &dp);
	return steps(&dp, &c, v, r);
}

// A local dynptr over big's value, up to all of it.
SEC("xdp")
int local_big(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	struct cmd c;
	struct result *r = begin(ctx, &c);
	__u32 zero = 0;
	__u8 *b, *v;

	if (!r)
		return 0;
	v = bpf_map_lookup_elem(&vals, &c.key);
	b = bpf_map_lookup_elem(&big, &zero);
	if (!v || !b)
		return 1;
	if (c.size > BIG_SIZE)
		return 0;
	r->rc[RC_MAKE] = bpf_dynptr_from_mem(b, c.size, c.flags, &dp);
	return steps(&dp, &c, v, r);
}

// A ring buffer dynptr, submitted or discarded whether or not the
// reservation succeeded.
SEC("xdp")
int ringbuf(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	struct cmd c;
	struct result *r = begin(ctx, &c);
	__u8 *v;
	int ret;

	if (!r)
		return 0;
	v = bpf_map_lookup_elem(&vals, &c.key);
	if (!v)
		return 1;
	r->rc[RC_MAKE] = bpf_ringbuf_reserve_dynptr(&rb, c.size, c.flags, &dp);
	ret = steps(&dp, &c, v, r);
	if (c.steps & STEP_DISCARD)
		bpf_ringbuf_discard_dynptr(&dp, c.sflags);
	else
		bpf_ringbuf_submit_dynptr(&dp, c.sflags);
	return ret;
}

// The dynptr's 16 bytes (struct bpf_dynptr_kern: data, size with the
// type in bits 28-30, offset), as the program may read them once the
// verifier no longer holds them a dynptr: after a store into the local
// dynptr's last byte (the offset's top byte, always zero), or after the
// ring buffer dynptr was submitted or discarded (a privileged program may
// read stack slots the verifier marks invalid). The stack starts as 0x5a
// bytes. rc: the helper's result, the data pointer, the pointer the
// dynptr was made over (or 0), the size word, the offset word.
SEC("xdp")
int layout(struct xdp_md *ctx)
{
	struct bpf_dynptr dp;
	struct cmd c;
	struct result *r = begin(ctx, &c);
	__u8 *v;

	if (!r)
		return 0;
	v = bpf_map_lookup_elem(&vals, &c.key);
	if (!v)
		return 1;
	if (c.moff > 64 || c.size > 64)
		return 0;
	__builtin_memset(&dp, 0x5a, sizeof(dp));
	if (c.steps & STEP_RINGBUF) {
		r->rc[0] = bpf_ringbuf_reserve_dynptr(&rb, c.size, c.flags, &dp);
		r->rc[2] = 0;
		if (c.steps & STEP_DISCARD)
			bpf_ringbuf_discard_dynptr(&dp, c.sflags);
		else
			bpf_ringbuf_submit_dynptr(&dp, c.sflags);
	} else {
		r->rc[0] = bpf_dynptr_from_mem(v + c.moff, c.size, c.flags, &dp);
		r->rc[2] = (__u64)(v + c.moff);
		((volatile __u8 *)&dp)[15] = 0;
	}
	r->rc[1] = ((volatile __u64 *)&dp)[0];
	r->rc[3] = ((volatile __u32 *)&dp)[2];
	r->rc[4] = ((volatile __u32 *)&dp)[3];
	return 2;
}

char LICENSE[] SEC("license") = "GPL";
