// Uses of the open-coded numeric iterator (bpf_iter_num_new, _next and
// _destroy) the verifier refuses, one program each, and programs it
// accepts. Each program is loaded on its own, in the kernel and in
// bpfsim, which must give the same verdict and the same message.
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

static long (*bpf_xdp_load_bytes)(struct xdp_md *xdp_md, __u32 offset, void *buf, __u32 len) = (void *)189;
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;

struct {
	__uint(type, 2); // BPF_MAP_TYPE_ARRAY
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpf_iter_num);
} vals SEC(".maps");

SEC("xdp")
int accepted(struct xdp_md *ctx)
{
	struct bpf_iter_num it;
	int *v, sum = 0;

	bpf_iter_num_new(&it, 0, 10);
	while ((v = bpf_iter_num_next(&it)))
		sum += *v;
	bpf_iter_num_destroy(&it);
	return sum;
}

// An index the loop reads from the iterator is unknown: checked, it may
// index an array.
SEC("xdp")
int index_checked(struct xdp_md *ctx)
{
	struct bpf_iter_num it;
	__u32 arr[16] = {};
	int *v;

	bpf_iter_num_new(&it, 0, 16);
	while ((v = bpf_iter_num_next(&it))) {
		if (*v < 0 || *v >= 16)
			break;
		arr[*v] = *v;
	}
	bpf_iter_num_destroy(&it);
	return arr[ctx->ingress_ifindex & 15];
}

SEC("xdp")
int index_unchecked(struct xdp_md *ctx)
{
	struct bpf_iter_num it;
	__u32 arr[16] = {};
	int *v;

	bpf_iter_num_new(&it, 0, 16);
	while ((v = bpf_iter_num_next(&it)))
		arr[*v] = 1;
	bpf_iter_num_destroy(&it);
	return arr[ctx->ingress_ifindex & 15];
}

// A counter the loop bumps is widened to unknown: not usable as an index
// after the loop without a check.
SEC("xdp")
int counter_widened(struct xdp_md *ctx)
{
	struct bpf_iter_num it;
	__u8 arr[8] = {};
	volatile __u32 i = 0;
	__u32 n = 0;

	bpf_iter_num_new(&it, 0, 4);
	while (bpf_iter_num_next(&it))
		n++;
	bpf_iter_num_destroy(&it);
	i = n;
	return arr[i];
}

SEC("xdp")
int nested(struct xdp_md *ctx)
{
	struct bpf_iter_num a, b;
	int *x, *y, sum = 0;

	bpf_iter_num_new(&a, 0, 3);
	while ((x = bpf_iter_num_next(&a))) {
		bpf_iter_num_new(&b, 0, 4);
		while ((y = bpf_iter_num_next(&b)))
			sum += *x * *y;
		bpf_iter_num_destroy(&b);
	}
	bpf_iter_num_destroy(&a);
	return sum;
}

SEC("xdp")
int create_twice(struct xdp_md *ctx)
{
	struct bpf_iter_num it;

	bpf_iter_num_new(&it, 0, 10);
	bpf_iter_num_new(&it, 0, 10);
	bpf_iter_num_destroy(&it);
	return 0;
}

SEC("xdp")
int destroy_without_create(struct xdp_md *ctx)
{
	struct bpf_iter_num it = {};

	bpf_iter_num_destroy(&it);
	return 0;
}

SEC("xdp")
int next_without_create(struct xdp_md *ctx)
{
	struct bpf_iter_num it = {};

	return bpf_iter_num_next(&it) ? 1 : 0;
}

SEC("xdp")
int next_after_destroy(struct xdp_md *ctx)
{
	struct bpf_iter_num it;

	bpf_iter_num_new(&it, 0, 10);
	bpf_iter_num_destroy(&it);
	return bpf_iter_num_next(&it) ? 1 : 0;
}

SEC("xdp")
int leaked(struct xdp_md *ctx)
{
	struct bpf_iter_num it;
	int *v;

	bpf_iter_num_new(&it, 0, 10);
	v = bpf_iter_num_next(&it);
	return v ? *v : 0;
}

static __attribute__((noinline)) int leak_in_subprog(int n)
{
	struct bpf_iter_num it;

	bpf_iter_num_new(&it, 0, n);
	return n;
}

SEC("xdp")
int leaked_by_subprog(struct xdp_md *ctx)
{
	return leak_in_subprog(ctx->ingress_ifindex & 7);
}

SEC("xdp")
int next_without_null_check(struct xdp_md *ctx)
{
	struct bpf_iter_num it;
	int *v, r;

	bpf_iter_num_new(&it, 0, 10);
	v = bpf_iter_num_next(&it);
	r = *(volatile int *)v;
	bpf_iter_num_destroy(&it);
	return r;
}

SEC("xdp")
int next_written(struct xdp_md *ctx)
{
	struct bpf_iter_num it;
	int *v;

	bpf_iter_num_new(&it, 0, 10);
	v = bpf_iter_num_next(&it);
	if (v)
		*v = 5;
	bpf_iter_num_destroy(&it);
	return 0;
}

SEC("xdp")
int next_read_past_its_end(struct xdp_md *ctx)
{
	struct bpf_iter_num it;
	int *v, r = 0;

	bpf_iter_num_new(&it, 0, 10);
	v = bpf_iter_num_next(&it);
	if (v)
		r = *(volatile int *)(v + 1);
	bpf_iter_num_destroy(&it);
	return r;
}

SEC("xdp")
int next_used_after_destroy(struct xdp_md *ctx)
{
	struct bpf_iter_num it;
	int *v, r = 0;

	bpf_iter_num_new(&it, 0, 10);
	v = bpf_iter_num_next(&it);
	bpf_iter_num_destroy(&it);
	if (v)
		r = *(volatile int *)v;
	return r;
}

SEC("xdp")
int slot_read(struct xdp_md *ctx)
{
	struct bpf_iter_num it;
	__u64 r;

	bpf_iter_num_new(&it, 0, 10);
	r = *(volatile __u64 *)&it;
	bpf_iter_num_destroy(&it);
	return r;
}

SEC("xdp")
int slot_written(struct xdp_md *ctx)
{
	struct bpf_iter_num it;

	bpf_iter_num_new(&it, 0, 10);
	*(volatile __u64 *)&it = 0;
	bpf_iter_num_destroy(&it);
	return 0;
}

SEC("xdp")
int slot_written_by_helper(struct xdp_md *ctx)
{
	struct bpf_iter_num it;

	bpf_iter_num_new(&it, 0, 10);
	bpf_xdp_load_bytes(ctx, 0, &it, 8);
	bpf_iter_num_destroy(&it);
	return 0;
}

SEC("xdp")
int variable_offset(struct xdp_md *ctx)
{
	struct bpf_iter_num its[2];
	__u32 i = ctx->ingress_ifindex & 1;

	bpf_iter_num_new(&its[i], 0, 10);
	bpf_iter_num_destroy(&its[i]);
	return 0;
}

SEC("xdp")
int misaligned(struct xdp_md *ctx)
{
	struct bpf_iter_num its[2];
	struct bpf_iter_num *it = (void *)((char *)its + 4);

	bpf_iter_num_new(it, 0, 10);
	bpf_iter_num_destroy(it);
	return 0;
}

SEC("xdp")
int in_map_value(struct xdp_md *ctx)
{
	__u32 key = 0;
	struct bpf_iter_num *it = bpf_map_lookup_elem(&vals, &key);

	if (!it)
		return 0;
	bpf_iter_num_new(it, 0, 10);
	bpf_iter_num_destroy(it);
	return 0;
}

SEC("xdp")
int null_iterator(struct xdp_md *ctx)
{
	bpf_iter_num_new(NULL, 0, 10);
	return 0;
}
// Iterators across functions: a static function may advance or destroy
// its caller's iterator; a global function sees only 8 bytes of memory.
static __attribute__((noinline)) int sum_rest(struct bpf_iter_num *it)
{
	int *v, sum = 0;

	while ((v = bpf_iter_num_next(it)))
		sum += *v;
	return sum;
}

SEC("xdp")
int next_in_static_callee(struct xdp_md *ctx)
{
	struct bpf_iter_num it;
	int sum;

	bpf_iter_num_new(&it, 0, 10);
	sum = sum_rest(&it);
	bpf_iter_num_destroy(&it);
	return sum;
}

static __attribute__((noinline)) void finish(struct bpf_iter_num *it)
{
	bpf_iter_num_destroy(it);
}

SEC("xdp")
int destroy_in_static_callee(struct xdp_md *ctx)
{
	struct bpf_iter_num it;

	bpf_iter_num_new(&it, 0, 10);
	finish(&it);
	return 0;
}

__attribute__((noinline)) int global_sum_rest(struct bpf_iter_num *it)
{
	int *v, sum = 0;

	if (!it)
		return 0;
	while ((v = bpf_iter_num_next(it)))
		sum += *v;
	return sum;
}

SEC("xdp")
int next_in_global_callee(struct xdp_md *ctx)
{
	struct bpf_iter_num it;
	int sum;

	bpf_iter_num_new(&it, 0, 10);
	sum = global_sum_rest(&it);
	bpf_iter_num_destroy(&it);
	return sum;
}

static __attribute__((noinline)) int made_in_callee(struct bpf_iter_num *it)
{
	return bpf_iter_num_new(it, 0, 3);
}

SEC("xdp")
int new_in_static_callee(struct xdp_md *ctx)
{
	struct bpf_iter_num it;
	int *v, n = 0;

	made_in_callee(&it);
	while ((v = bpf_iter_num_next(&it)))
		n++;
	bpf_iter_num_destroy(&it);
	return n;
}

static long (*bpf_loop)(__u32 nr_loops, void *callback_fn, void *callback_ctx, __u64 flags) = (void *)181;

static int loop_body(__u32 i, void *data)
{
	struct bpf_iter_num it;
	int *v, *sum = data;

	bpf_iter_num_new(&it, 0, i);
	while ((v = bpf_iter_num_next(&it)))
		*sum += *v;
	bpf_iter_num_destroy(&it);
	return 0;
}

SEC("xdp")
int iterator_in_loop_callback(struct xdp_md *ctx)
{
	int sum = 0;

	bpf_loop(5, loop_body, &sum, 0);
	return sum;
}

char _license[] SEC("license") = "GPL";
