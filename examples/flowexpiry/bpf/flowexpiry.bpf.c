// A flow table that forgets idle flows by itself: an XDP program counts
// the packets and bytes of each IPv4 TCP or UDP flow in a hash map, and
// every flow carries a bpf_timer that fires when the flow may have gone
// idle. The callback looks at when the flow was last seen: idle for the
// whole timeout, the flow is reported through a ring buffer and deleted;
// seen since, the timer is started again for the time that is left.
// This is how conntrack-like tables in BPF expire entries without a
// user-space sweeper.
// Self-contained: no libbpf headers.
// Rebuild with: go generate ./examples/flowexpiry
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

struct bpf_timer {
	__u64 __opaque[2];
} __attribute__((aligned(8)));

struct xdp_md {
	__u32 data;
	__u32 data_end;
};

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static long (*bpf_ringbuf_output)(void *ringbuf, void *data, __u64 size, __u64 flags) = (void *)130;
static long (*bpf_timer_init)(struct bpf_timer *timer, void *map, __u64 flags) = (void *)169;
static long (*bpf_timer_set_callback)(struct bpf_timer *timer, void *callback_fn) = (void *)170;
static long (*bpf_timer_start)(struct bpf_timer *timer, __u64 nsecs, __u64 flags) = (void *)171;

#define CLOCK_MONOTONIC 1
#define BPF_NOEXIST 1
#define XDP_PASS 2
#define ETH_P_IP 0x0008 // htons(0x0800)
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

struct flow {
	__u32 saddr, daddr;
	__u16 sport, dport;
	__u8 proto;
	__u8 pad[3];
};

struct flow_state {
	__u64 packets, bytes;
	__u64 first_seen, last_seen;
	struct bpf_timer timer;
};

struct {
	__uint(type, 1); // BPF_MAP_TYPE_HASH
	__uint(max_entries, 65536);
	__type(key, struct flow);
	__type(value, struct flow_state);
} flows SEC(".maps");

// config[0] is the idle timeout in nanoseconds, which user space sets.
struct {
	__uint(type, 2); // BPF_MAP_TYPE_ARRAY
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} config SEC(".maps");

// expired reports each flow the table forgets.
struct expiry {
	struct flow flow;
	__u64 packets, bytes;
	__u64 first_seen, last_seen, expired_at;
};

struct {
	__uint(type, 27); // BPF_MAP_TYPE_RINGBUF
	__uint(max_entries, 1 << 16);
} expired SEC(".maps");

static __u64 idle_timeout(void)
{
	__u32 zero = 0;
	__u64 *t = bpf_map_lookup_elem(&config, &zero);
	return t && *t ? *t : 30000000000ULL; // 30 s
}

// on_timer runs when a flow's timer fires.
static int on_timer(void *map, struct flow *key, struct flow_state *st)
{
	__u64 now = bpf_ktime_get_ns(), timeout = idle_timeout();
	__u64 idle = now - st->last_seen;

	if (idle < timeout) {
		// Seen since the timer was started: wait for the rest.
		bpf_timer_start(&st->timer, timeout - idle, 0);
		return 0;
	}
	struct expiry e = {
		.flow = *key,
		.packets = st->packets,
		.bytes = st->bytes,
		.first_seen = st->first_seen,
		.last_seen = st->last_seen,
		.expired_at = now,
	};
	bpf_ringbuf_output(&expired, &e, sizeof(e), 0);
	bpf_map_delete_elem(map, key);
	return 0;
}

SEC("xdp")
int flow_table(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *eth = data;
	if (data + 14 + 20 + 4 > data_end)
		return XDP_PASS;
	if (*(__u16 *)(eth + 12) != ETH_P_IP)
		return XDP_PASS;
	__u8 *ip = eth + 14;
	if ((ip[0] >> 4) != 4 || (ip[0] & 15) != 5)
		return XDP_PASS; // no IP options in this example
	if (ip[9] != IPPROTO_TCP && ip[9] != IPPROTO_UDP)
		return XDP_PASS;
	__u16 *ports = (__u16 *)(ip + 20);
	struct flow key = {
		.saddr = *(__u32 *)(ip + 12),
		.daddr = *(__u32 *)(ip + 16),
		.sport = ports[0],
		.dport = ports[1],
		.proto = ip[9],
	};
	__u64 now = bpf_ktime_get_ns();
	struct flow_state *st = bpf_map_lookup_elem(&flows, &key);
	if (!st) {
		struct flow_state fresh = {.first_seen = now};
		// Another CPU may have added the flow meanwhile: then use its.
		bpf_map_update_elem(&flows, &key, &fresh, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&flows, &key);
		if (!st)
			return XDP_PASS;
		// Only the first of several inits succeeds; the others get
		// EBUSY and leave the timer as it is.
		if (bpf_timer_init(&st->timer, &flows, CLOCK_MONOTONIC) == 0) {
			bpf_timer_set_callback(&st->timer, on_timer);
			bpf_timer_start(&st->timer, idle_timeout(), 0);
		}
	}
	__sync_fetch_and_add(&st->packets, 1);
	__sync_fetch_and_add(&st->bytes, data_end - data);
	st->last_seen = now;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
