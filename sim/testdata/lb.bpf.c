// An XDP layer-4 load balancer in the style of Cilium's lb4 with Maglev
// backend selection: the kind of program people load, written the way they
// write it, so that bpfsim's verifier meets clang's real output (packet
// pointers with variable offsets, pointer phis, map value pointers, a
// bpf-to-bpf call, frozen .rodata).
//
// For a packet to a virtual IP and port that the service map knows, the
// program picks a backend (the flow's conntrack entry if it has one,
// Maglev otherwise), rewrites the destination address and port (DNAT) with
// incremental checksum updates, forwards it to the backend's MAC address
// and returns XDP_TX. Packets for no service go to the stack (XDP_PASS);
// malformed ones are dropped.
//
// Self-contained: no libbpf headers. Rebuild with: go generate ./sim
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

enum xdp_action {
	XDP_ABORTED = 0,
	XDP_DROP,
	XDP_PASS,
	XDP_TX,
};

#define SEC(name) __attribute__((section(name), used))
#define __always_inline inline __attribute__((always_inline))
#define __noinline __attribute__((noinline))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
};

#define BPF_ANY 0

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;

/* The host is little-endian; the packet is not. */
#define bpf_htons(x) ((__u16)__builtin_bswap16(x))

#define ETH_ALEN 6
#define ETH_P_IP 0x0800
#define ETH_P_8021Q 0x8100
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

struct ethhdr {
	__u8 h_dest[ETH_ALEN];
	__u8 h_source[ETH_ALEN];
	__u16 h_proto;
};

struct vlan_hdr {
	__u16 h_vlan_TCI;
	__u16 h_vlan_encapsulated_proto;
};

struct iphdr {
	__u8 ihl : 4, version : 4;
	__u8 tos;
	__u16 tot_len;
	__u16 id;
	__u16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__u32 saddr;
	__u32 daddr;
};

struct tcphdr {
	__u16 source;
	__u16 dest;
	__u32 seq;
	__u32 ack_seq;
	__u16 flags;
	__u16 window;
	__u16 check;
	__u16 urg_ptr;
};

struct udphdr {
	__u16 source;
	__u16 dest;
	__u16 len;
	__u16 check;
};

/* Maglev lookup tables have LB_MAGLEV_M slots, a prime; each service's
 * table is one row of lb4_maglev. */
#define LB_MAX_SERVICES 64
#define LB_MAGLEV_M 251
#define LB_MAX_BACKENDS 256
#define LB_CT_ENTRIES 4096

/* Addresses and ports are in network byte order everywhere. */
struct lb4_key {
	__u32 vip;
	__u16 dport;
	__u8 proto;
	__u8 pad;
};

struct lb4_service {
	__u32 id; /* the service's row in lb4_maglev */
	__u32 backend_count;
};

/* Backend 0 is never used: a zero id in a Maglev table means "none". */
struct lb4_backend {
	__u32 ip;
	__u16 port;
	__u8 mac[ETH_ALEN];
};

struct ct4_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct ct4_entry {
	__u64 last_seen; /* bpf_ktime_get_ns of the flow's last packet */
	__u64 packets;
	__u32 backend_id;
	__u32 service_id;
};

enum {
	STAT_FORWARDED,
	STAT_PASSED,
	STAT_DROP_MALFORMED,
	STAT_DROP_NO_BACKEND,
	STAT_MAX,
};

struct lb_stats {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_SERVICES);
	__type(key, struct lb4_key);
	__type(value, struct lb4_service);
} lb4_services SEC(".maps");

/* Service id * LB_MAGLEV_M + slot -> backend id. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_MAX_SERVICES * LB_MAGLEV_M);
	__type(key, __u32);
	__type(value, __u32);
} lb4_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct lb4_backend);
} lb4_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_CT_ENTRIES);
	__type(key, struct ct4_key);
	__type(value, struct ct4_entry);
} lb4_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, struct lb_stats);
} lb_stats SEC(".maps");

/* Set by the loader before loading (.rodata), so that flows do not hash
 * the same on every load balancer of a cluster. */
volatile const __u32 hash_seed = 0x2b7e1516;

static __always_inline int account(__u32 stat, __u32 len, int verdict)
{
	struct lb_stats *s = bpf_map_lookup_elem(&lb_stats, &stat);

	/* Per-CPU values: no other CPU writes them, no atomics needed. */
	if (s) {
		s->packets++;
		s->bytes += len;
	}
	return verdict;
}

static __always_inline __u32 rol32(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> (32 - shift));
}

/* The kernel's jhash (lookup3.c by Bob Jenkins), spelt out: there is no
 * hashing helper for XDP. */
#define JHASH_INITVAL 0xdeadbeef

#define jhash_mix(a, b, c)                          \
	{                                           \
		a -= c; a ^= rol32(c, 4);  c += b;  \
		b -= a; b ^= rol32(a, 6);  a += c;  \
		c -= b; c ^= rol32(b, 8);  b += a;  \
		a -= c; a ^= rol32(c, 16); c += b;  \
		b -= a; b ^= rol32(a, 19); a += c;  \
		c -= b; c ^= rol32(b, 4);  b += a;  \
	}

#define jhash_final(a, b, c)                        \
	{                                           \
		c ^= b; c -= rol32(b, 14);          \
		a ^= c; a -= rol32(c, 11);          \
		b ^= a; b -= rol32(a, 25);          \
		c ^= b; c -= rol32(b, 16);          \
		a ^= c; a -= rol32(c, 4);           \
		b ^= a; b -= rol32(a, 14);          \
		c ^= b; c -= rol32(b, 24);          \
	}

/* flow_hash is jhash2 of the 5-tuple as four words. It is a real function
 * rather than inlined: a pure function of scalars is what people factor
 * out, and it gives the verifier a bpf-to-bpf call to check. */
static __noinline __u32 flow_hash(__u32 saddr, __u32 daddr, __u32 ports, __u32 proto)
{
	__u32 a, b, c;

	a = b = c = JHASH_INITVAL + (4 << 2) + hash_seed;
	a += saddr;
	b += daddr;
	c += ports;
	jhash_mix(a, b, c);
	a += proto;
	jhash_final(a, b, c);
	return c;
}

/* maglev_select returns the backend id the service's Maglev table gives
 * the flow, or 0. */
static __always_inline __u32 maglev_select(const struct lb4_service *svc, const struct ct4_key *tuple)
{
	__u32 hash = flow_hash(tuple->saddr, tuple->daddr,
			       ((__u32)tuple->sport << 16) | tuple->dport, tuple->proto);
	__u32 id = svc->id;
	__u32 slot, *backend;

	if (id >= LB_MAX_SERVICES)
		return 0;
	slot = id * LB_MAGLEV_M + hash % LB_MAGLEV_M;
	backend = bpf_map_lookup_elem(&lb4_maglev, &slot);
	return backend ? *backend : 0;
}

/* Incremental checksum update (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
 * One's complement sums do not care about byte order, so the 16-bit words
 * are used as the packet holds them. */
static __always_inline __u32 csum_replace2(__u32 sum, __u16 from, __u16 to)
{
	return sum + (__u16)~from + to;
}

static __always_inline __u32 csum_replace4(__u32 sum, __u32 from, __u32 to)
{
	sum = csum_replace2(sum, from >> 16, to >> 16);
	return csum_replace2(sum, from & 0xffff, to & 0xffff);
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

SEC("xdp")
int xdp_lb4(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 len = data_end - data;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u16 *ports, *l4_check;
	__u16 proto;
	void *l3, *l4;

	if ((void *)(eth + 1) > data_end)
		return account(STAT_DROP_MALFORMED, len, XDP_DROP);
	proto = eth->h_proto;
	l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q)) {
		struct vlan_hdr *vlan = l3;

		if ((void *)(vlan + 1) > data_end)
			return account(STAT_DROP_MALFORMED, len, XDP_DROP);
		proto = vlan->h_vlan_encapsulated_proto;
		l3 = vlan + 1;
	}
	if (proto != bpf_htons(ETH_P_IP))
		return account(STAT_PASSED, len, XDP_PASS);

	ip = l3;
	if ((void *)(ip + 1) > data_end)
		return account(STAT_DROP_MALFORMED, len, XDP_DROP);
	if (ip->version != 4 || ip->ihl < 5)
		return account(STAT_DROP_MALFORMED, len, XDP_DROP);
	/* Only the first fragment has the ports: leave fragments to the
	 * stack, which reassembles them. */
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return account(STAT_PASSED, len, XDP_PASS);

	/* IP options make the L4 offset variable: 20 to 60 bytes. */
	l4 = (void *)ip + ip->ihl * 4;
	ports = l4;
	switch (ip->protocol) {
	case IPPROTO_TCP: {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end)
			return account(STAT_DROP_MALFORMED, len, XDP_DROP);
		l4_check = &tcp->check;
		break;
	}
	case IPPROTO_UDP: {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end)
			return account(STAT_DROP_MALFORMED, len, XDP_DROP);
		l4_check = &udp->check;
		break;
	}
	default:
		return account(STAT_PASSED, len, XDP_PASS);
	}

	struct lb4_key key = {
		.vip = ip->daddr,
		.dport = ports[1],
		.proto = ip->protocol,
	};
	struct lb4_service *svc = bpf_map_lookup_elem(&lb4_services, &key);
	if (!svc)
		return account(STAT_PASSED, len, XDP_PASS);

	struct ct4_key tuple = {
		.saddr = ip->saddr,
		.daddr = ip->daddr,
		.sport = ports[0],
		.dport = ports[1],
		.proto = ip->protocol,
	};
	__u64 now = bpf_ktime_get_ns();
	struct lb4_backend *backend;
	__u32 backend_id;

	/* An established flow keeps its backend for as long as the backend
	 * exists, whatever changes in the Maglev table. */
	struct ct4_entry *ct = bpf_map_lookup_elem(&lb4_ct, &tuple);
	if (ct && ct->service_id == svc->id) {
		backend_id = ct->backend_id;
		backend = bpf_map_lookup_elem(&lb4_backends, &backend_id);
		if (backend && backend->ip) {
			ct->last_seen = now;
			__sync_fetch_and_add(&ct->packets, 1);
			goto dnat;
		}
	}

	/* A new flow, or one whose backend went away: ask Maglev. BPF_ANY,
	 * since a stale entry must be replaced (and another CPU may have
	 * created the entry meanwhile: Maglev gives it the same backend). */
	backend_id = maglev_select(svc, &tuple);
	backend = bpf_map_lookup_elem(&lb4_backends, &backend_id);
	if (!backend_id || !backend || !backend->ip)
		return account(STAT_DROP_NO_BACKEND, len, XDP_DROP);
	struct ct4_entry entry = {
		.last_seen = now,
		.packets = 1,
		.backend_id = backend_id,
		.service_id = svc->id,
	};
	bpf_map_update_elem(&lb4_ct, &tuple, &entry, BPF_ANY);

dnat:;
	__u32 old_daddr = ip->daddr, new_daddr = backend->ip;
	__u16 old_dport = ports[1], new_dport = backend->port;

	ip->daddr = new_daddr;
	ip->check = csum_fold(csum_replace4((__u16)~ip->check, old_daddr, new_daddr));
	ports[1] = new_dport;
	/* The L4 checksum covers the pseudo-header's addresses too. A zero
	 * UDP checksum means "none"; a computed zero is sent as 0xffff. */
	if (ip->protocol == IPPROTO_TCP || *l4_check) {
		__u32 sum = csum_replace4((__u16)~*l4_check, old_daddr, new_daddr);
		__u16 check = csum_fold(csum_replace2(sum, old_dport, new_dport));

		if (!check && ip->protocol == IPPROTO_UDP)
			check = 0xffff;
		*l4_check = check;
	}

	/* To the backend, from us. */
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, backend->mac, ETH_ALEN);
	return account(STAT_FORWARDED, len, XDP_TX);
}

char LICENSE[] SEC("license") = "GPL";
