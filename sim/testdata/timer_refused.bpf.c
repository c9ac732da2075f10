// bpf_timer uses the verifier refuses, one program each, and one it
// accepts. Each program is loaded on its own, in the kernel and in bpfsim,
// which must give the same verdict and the same message.
// Self-contained: no libbpf headers.
// Rebuild with: go generate ./sim
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __array(name, val) typeof(val) *name[]

struct bpf_timer {
	__u64 __opaque[2];
} __attribute__((aligned(8)));

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_timer_init)(struct bpf_timer *timer, void *map, __u64 flags) = (void *)169;
static long (*bpf_timer_set_callback)(struct bpf_timer *timer, void *callback_fn) = (void *)170;
static long (*bpf_timer_start)(struct bpf_timer *timer, __u64 nsecs, __u64 flags) = (void *)171;

struct elem {
	__u64 n;
	struct bpf_timer t;
};

struct {
	__uint(type, 2); // BPF_MAP_TYPE_ARRAY
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct elem);
} arr SEC(".maps");

struct {
	__uint(type, 2);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct elem);
} other SEC(".maps");

struct inner {
	__uint(type, 2); // BPF_MAP_TYPE_ARRAY
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct elem);
} inner0 SEC(".maps"), inner1 SEC(".maps");

// Two inner maps of one template: a timer in one may not be initialised
// with the other (map_uid).
struct {
	__uint(type, 12); // BPF_MAP_TYPE_ARRAY_OF_MAPS
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct inner);
} outer SEC(".maps") = {
	.values = {&inner0, &inner1},
};

static int fine_cb(void *map, __u32 *key, struct elem *e)
{
	e->n++;
	return 0;
}

static int returns_one(void *map, __u32 *key, struct elem *e)
{
	e->n++;
	return 1;
}

static __attribute__((noinline)) struct elem *first(void *map)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(map, &zero);
}

SEC("xdp")
int accepted(void *ctx)
{
	struct elem *e = first(&arr);
	if (!e)
		return 2;
	bpf_timer_init(&e->t, &arr, 1);
	bpf_timer_set_callback(&e->t, fine_cb);
	bpf_timer_start(&e->t, 1000, 0);
	return 2;
}

SEC("xdp")
int callback_returns_one(void *ctx)
{
	struct elem *e = first(&arr);
	if (!e)
		return 2;
	bpf_timer_set_callback(&e->t, returns_one);
	return 2;
}

SEC("xdp")
int init_with_another_map(void *ctx)
{
	struct elem *e = first(&arr);
	if (!e)
		return 2;
	return bpf_timer_init(&e->t, &other, 1);
}

SEC("xdp")
int timer_written_directly(void *ctx)
{
	struct elem *e = first(&arr);
	if (!e)
		return 2;
	e->t.__opaque[1] = 7;
	return 2;
}

SEC("kprobe/do_nanosleep")
int tracing_uses_a_timer_map(void *ctx)
{
	struct elem *e = first(&arr);
	if (!e)
		return 0;
	e->n++;
	return 0;
}

static __attribute__((always_inline)) struct elem *inner_value(__u32 i, void **inner)
{
	__u32 zero = 0;

	*inner = bpf_map_lookup_elem(&outer, &i);
	if (!*inner)
		return 0;
	return bpf_map_lookup_elem(*inner, &zero);
}

SEC("xdp")
int init_with_its_inner_map(void *ctx)
{
	void *m;
	struct elem *e = inner_value(0, &m);

	if (!e)
		return 2;
	return bpf_timer_init(&e->t, m, 1);
}

SEC("xdp")
int init_with_another_inner_map(void *ctx)
{
	void *m0, *m1;
	struct elem *e = inner_value(0, &m0);

	if (!e || !inner_value(1, &m1))
		return 2;
	return bpf_timer_init(&e->t, m1, 1);
}

char LICENSE[] SEC("license") = "GPL";
