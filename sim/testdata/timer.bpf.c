// bpf_timer: XDP programs that drive the timers of an array's and a hash's
// values through every helper, recording each helper's return value, and
// callbacks that count their firings in the value and re-arm the timer a
// given number of times. Run the same way in the kernel and in bpfsim,
// the results and the map contents must agree.
// Self-contained: no libbpf headers.
// Rebuild with: go generate ./sim
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

struct bpf_timer {
	__u64 __opaque[2];
} __attribute__((aligned(8)));

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static long (*bpf_timer_init)(struct bpf_timer *timer, void *map, __u64 flags) = (void *)169;
static long (*bpf_timer_set_callback)(struct bpf_timer *timer, void *callback_fn) = (void *)170;
static long (*bpf_timer_start)(struct bpf_timer *timer, __u64 nsecs, __u64 flags) = (void *)171;
static long (*bpf_timer_cancel)(struct bpf_timer *timer) = (void *)172;

struct elem {
	__u64 fired;     // callbacks run
	__u64 rearm;     // how many more times the callback re-arms
	__u64 period;    // the re-arm's delay
	struct bpf_timer t;
	__u64 last_key;  // the key the last callback got
	__u64 cancel_rc; // the callback's own bpf_timer_cancel
};

struct {
	__uint(type, 2); // BPF_MAP_TYPE_ARRAY
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct elem);
} arr SEC(".maps");

struct {
	__uint(type, 1); // BPF_MAP_TYPE_HASH
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct elem);
} htab SEC(".maps");

// A command, written by the test into cmd[0] before each run.
struct command {
	__u32 op;
	__u32 key;
	__u64 nsecs;
	__u64 flags;
	__u64 rearm;
};

struct {
	__uint(type, 2);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct command);
} cmd SEC(".maps");

// results[0] is the last run's helper return value.
struct {
	__uint(type, 2);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __s32);
} results SEC(".maps");

enum {
	OP_INIT,
	OP_INIT_BAD_CLOCK,
	OP_SET_CALLBACK,
	OP_START,
	OP_CANCEL,
	OP_ADD, // a hash element with rearm
	OP_DELETE,
};

static int on_expiry(void *map, __u32 *key, struct elem *e)
{
	e->fired++;
	e->last_key = *key;
	e->cancel_rc = bpf_timer_cancel(&e->t);
	if (e->rearm) {
		e->rearm--;
		bpf_timer_start(&e->t, e->period, 0);
	}
	return 0;
}

static __s32 run(void *map, struct command *c)
{
	struct elem *e = bpf_map_lookup_elem(map, &c->key);
	if (!e)
		return -1000;
	switch (c->op) {
	case OP_INIT:
		e->rearm = c->rearm;
		e->period = c->nsecs;
		return bpf_timer_init(&e->t, map, c->flags);
	case OP_INIT_BAD_CLOCK:
		return bpf_timer_init(&e->t, map, 3); // CLOCK_THREAD_CPUTIME_ID
	case OP_SET_CALLBACK:
		return bpf_timer_set_callback(&e->t, on_expiry);
	case OP_START:
		return bpf_timer_start(&e->t, c->nsecs, c->flags);
	case OP_CANCEL:
		return bpf_timer_cancel(&e->t);
	}
	return -1001;
}

static __s32 dispatch(void *map)
{
	__u32 zero = 0;
	struct command *c = bpf_map_lookup_elem(&cmd, &zero);
	if (!c)
		return -1002;
	if (c->op == OP_ADD) {
		struct elem fresh = {.rearm = c->rearm, .period = c->nsecs};
		return bpf_map_update_elem(map, &c->key, &fresh, 0);
	}
	if (c->op == OP_DELETE)
		return bpf_map_delete_elem(map, &c->key);
	return run(map, c);
}

static int record(__s32 rc)
{
	__u32 zero = 0;
	__s32 *r = bpf_map_lookup_elem(&results, &zero);
	if (r)
		*r = rc;
	return 2; // XDP_PASS
}

SEC("xdp")
int timer_array(void *ctx)
{
	return record(dispatch(&arr));
}

SEC("xdp")
int timer_hash(void *ctx)
{
	return record(dispatch(&htab));
}

char LICENSE[] SEC("license") = "GPL";
