// Loops over the open-coded numeric iterator (bpf_iter_num_new, _next
// and _destroy, which libbpf's bpf_for and bpf_repeat wrap), run on the
// same packets in the kernel and in bpfsim. Each program reads its
// command from the packet's start and writes its results after it.
// Self-contained: no libbpf headers.
// Rebuild with: go generate ./sim
typedef unsigned char __u8;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __ksym __attribute__((section(".ksyms")))
#define __noinline __attribute__((noinline))
#define NULL ((void *)0)

#define XDP_ABORTED 0
#define XDP_TX 3
#define NOT_RUN 0x7eadbeef

struct bpf_iter_num {
	__u64 __opaque[1];
} __attribute__((aligned(8)));

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __ksym;
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __ksym;
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __ksym;

struct bpf_iter_bits {
	__u64 __opaque[2];
} __attribute__((aligned(8)));

extern int bpf_iter_bits_new(struct bpf_iter_bits *it, const __u64 *unsafe_ptr__ign, __u32 nr_words) __ksym;
extern int *bpf_iter_bits_next(struct bpf_iter_bits *it) __ksym;
extern void bpf_iter_bits_destroy(struct bpf_iter_bits *it) __ksym;

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;

#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

/* 512 words whose bits the bits iterator walks. */
struct {
	__uint(type, 2); /* BPF_MAP_TYPE_ARRAY */
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64[512]);
} words SEC(".maps");

struct cmd {
	int start, end;
	__u32 brk; /* stop after this many values; 0: never */
	int start2, end2;
	__u32 pad;
};

struct out {
	int rc;
	__u32 count;
	__s64 sum;
	int first, last;
	int after; /* what a next after the loop gives */
	int after2;
};

/* range: one loop over [start, end), stopped after brk values; then two
 * more next calls, which give NULL once the range is done. */
SEC("xdp")
int range(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct cmd *c = data;
	struct out *o = data + sizeof(*c);
	struct bpf_iter_num it;
	int *v;

	if ((void *)(o + 1) > data_end)
		return XDP_ABORTED;
	o->rc = bpf_iter_num_new(&it, c->start, c->end);
	o->count = 0;
	o->sum = 0;
	o->first = o->last = NOT_RUN;
	while ((v = bpf_iter_num_next(&it))) {
		if (o->count == 0)
			o->first = *v;
		o->last = *v;
		o->sum += *v;
		o->count++;
		if (o->count == c->brk)
			break;
	}
	v = bpf_iter_num_next(&it);
	o->after = v ? *v : NOT_RUN;
	v = bpf_iter_num_next(&it);
	o->after2 = v ? *v : NOT_RUN;
	bpf_iter_num_destroy(&it);
	return XDP_TX;
}

/* nested: for i in [start, end), j in [start2, end2): sum i*j; count the
 * inner values; rc of the last inner new. */
SEC("xdp")
int nested(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct cmd *c = data;
	struct out *o = data + sizeof(*c);
	struct bpf_iter_num a, b;
	int *x, *y;
	__s64 sum = 0;
	__u32 count = 0;
	int rc = 0;

	if ((void *)(o + 1) > data_end)
		return XDP_ABORTED;
	o->rc = bpf_iter_num_new(&a, c->start, c->end);
	while ((x = bpf_iter_num_next(&a))) {
		int i = *x;

		rc = bpf_iter_num_new(&b, c->start2, c->end2);
		while ((y = bpf_iter_num_next(&b))) {
			sum += (__s64)i * *y;
			count++;
		}
		bpf_iter_num_destroy(&b);
	}
	bpf_iter_num_destroy(&a);
	o->sum = sum;
	o->count = count;
	o->first = rc;
	return XDP_TX;
}

/* A subprogram loops on its own stack; a global function, verified on
 * its own, does too. */
static __noinline __s64 squares(int n)
{
	struct bpf_iter_num it;
	__s64 sum = 0;
	int *v;

	bpf_iter_num_new(&it, 0, n);
	while ((v = bpf_iter_num_next(&it)))
		sum += (__s64)*v * *v;
	bpf_iter_num_destroy(&it);
	return sum;
}

__noinline int odd_count(int start, int end)
{
	struct bpf_iter_num it;
	int *v, n = 0;

	bpf_iter_num_new(&it, start, end);
	while ((v = bpf_iter_num_next(&it)))
		n += *v & 1;
	bpf_iter_num_destroy(&it);
	return n;
}

SEC("xdp")
int functions(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct cmd *c = data;
	struct out *o = data + sizeof(*c);

	if ((void *)(o + 1) > data_end)
		return XDP_ABORTED;
	o->sum = squares(c->end & 0xffff);
	o->count = odd_count(c->start, c->end);
	return XDP_TX;
}

/* A static function's loop, called from two places and from inside
 * another loop: each call chain is a loop visit of its own. */
static __noinline __s64 cubes(int n)
{
	struct bpf_iter_num it;
	__s64 sum = 0;
	int *v;

	bpf_iter_num_new(&it, 0, n);
	while ((v = bpf_iter_num_next(&it)))
		sum += (__s64)*v * *v * *v;
	bpf_iter_num_destroy(&it);
	return sum;
}

SEC("xdp")
int callchains(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct cmd *c = data;
	struct out *o = data + sizeof(*c);
	struct bpf_iter_num it;
	__s64 sum;
	int *v;

	if ((void *)(o + 1) > data_end)
		return XDP_ABORTED;
	sum = cubes(c->start & 0xff);
	bpf_iter_num_new(&it, 0, c->end & 0xf);
	while ((v = bpf_iter_num_next(&it)))
		sum += cubes(*v & 0xff);
	bpf_iter_num_destroy(&it);
	o->sum = sum + cubes(c->brk & 0xff);
	return XDP_TX;
}

/* The shape libbpf's bpf_for(i, start, end) gives a loop, written here
 * from its documented behaviour: the iterator is destroyed by a cleanup
 * attribute when the loop's scope ends, however it ends, and each value
 * is checked against the range, so that the verifier knows i's bounds
 * and i may index an array unchecked. */
#define for_range(i, start, end)                                          \
	for (struct bpf_iter_num ___it                                      \
		     __attribute__((aligned(8), cleanup(bpf_iter_num_destroy))), \
	     *___p __attribute__((unused)) =                                \
		     (bpf_iter_num_new(&___it, (start), (end)),             \
		      (void)bpf_iter_num_destroy, (void *)0);               \
	     ({                                                             \
		     int *___t = bpf_iter_num_next(&___it);                 \
		     (___t && ((i) = *___t, (i) >= (start) && (i) < (end)));     \
	     });)

SEC("xdp")
int for_loop(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct cmd *c = data;
	struct out *o = data + sizeof(*c);
	__u8 hist[16] = {};
	int i, n = 0;

	if ((void *)(o + 1) > data_end)
		return XDP_ABORTED;
	for_range(i, 0, 16)
		hist[i] = i * 3;
	for_range(i, 0, c->end & 0xff) {
		if (i == c->brk)
			break; /* the cleanup destroys the iterator */
		n += hist[i & 15];
	}
	o->count = n;
	return XDP_TX;
}

/* bits: the set bits of end words, from the map's value (brk 2), four
 * words on the stack copied from the packet's end (brk 1, end at most
 * 4) or NULL (brk 0); stopped after start bits if start is not 0. */
SEC("xdp")
int bits(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct cmd *c = data;
	struct out *o = data + sizeof(*c);
	__u64 *pw = (void *)(o + 1);
	struct bpf_iter_bits it;
	const __u64 *src = NULL;
	__u64 stack[4];
	__u32 key = 0;
	int *b;

	if ((void *)(pw + 4) > data_end)
		return XDP_ABORTED;
	stack[0] = pw[0];
	stack[1] = pw[1];
	stack[2] = pw[2];
	stack[3] = pw[3];
	if (c->brk == 1) {
		src = stack;
	} else if (c->brk == 2) {
		src = bpf_map_lookup_elem(&words, &key);
		if (!src)
			return XDP_ABORTED;
	}
	o->rc = bpf_iter_bits_new(&it, src, c->end);
	o->count = 0;
	o->sum = 0;
	o->first = o->last = NOT_RUN;
	while ((b = bpf_iter_bits_next(&it))) {
		if (o->count == 0)
			o->first = *b;
		o->last = *b;
		o->sum += *b;
		o->count++;
		if (o->count == (__u32)c->start)
			break;
	}
	b = bpf_iter_bits_next(&it);
	o->after = b ? *b : NOT_RUN;
	b = bpf_iter_bits_next(&it);
	o->after2 = b ? *b : NOT_RUN;
	bpf_iter_bits_destroy(&it);
	return XDP_TX;
}

/* bounded: the values index a table on the stack, checked; an iterator
 * made in a loop of another, each pass. */
SEC("xdp")
int table(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct cmd *c = data;
	struct out *o = data + sizeof(*c);
	struct bpf_iter_num it;
	__u32 tab[16] = {};
	int *v;

	if ((void *)(o + 1) > data_end)
		return XDP_ABORTED;
	o->rc = bpf_iter_num_new(&it, c->start, c->end);
	while ((v = bpf_iter_num_next(&it))) {
		__u32 i = *v;

		if (i >= 16)
			continue;
		tab[i] += i + 1;
	}
	bpf_iter_num_destroy(&it);
	o->sum = 0;
	bpf_iter_num_new(&it, 0, 16);
	while ((v = bpf_iter_num_next(&it))) {
		__u32 i = *v;

		if (i < 16)
			o->sum = o->sum * 3 + tab[i];
	}
	bpf_iter_num_destroy(&it);
	return XDP_TX;
}

char _license[] SEC("license") = "GPL";
