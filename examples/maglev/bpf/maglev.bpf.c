// SPDX-License-Identifier: GPL-2.0
/*
 * A Maglev load balancer's datapath, as an XDP program: the lesson the
 * bpfsim demo (examples/maglev) runs, on bpfsim and in the kernel.
 *
 * A packet to a service (virtual IP, port, protocol) goes to one of the
 * service's backends. Which one comes from the service's Maglev lookup
 * table (LUT): an array of M backend ids, indexed by a hash of the flow,
 * so that every packet of a flow meets the same backend and a change of
 * backends moves as few flows as possible (the table is computed in user
 * space, examples/maglev/maglev). The datapath is Cilium's
 * (bpf/lib/lb.h, bpf/lib/hash.h):
 *
 *   svc   = services[vip, port, proto]       no service: XDP_PASS
 *   lut   = maglev_outer[vip, port, proto]   the service's own inner map
 *   slot  = jhash(flow) % svc->lut_size
 *   id    = lut[slot]
 *   be    = backends[id]
 *   rewrite the destination (address, port, MACs), fix the checksums,
 *   send the packet back out of the interface it came in on: XDP_TX.
 *
 * IPv6 services work alike, with maps of their own (services6,
 * maglev_outer6, backends6) and Cilium's IPv6 flow hash; backend ids and
 * the counters are shared by both families.
 *
 * Each service has its own inner array, of any size (BPF_F_INNER_MAP lets
 * one outer map hold arrays whose max_entries differ from the template's).
 * User space changes a service's backends by building a new inner array and
 * swapping it into maglev_outer with one update: a packet sees the old
 * table or the new one, never half of each.
 *
 * What the program does with other packets, as a real balancer would:
 *   - not IP (ARP...), or IP neither TCP nor UDP, or not to a service:
 *     XDP_PASS, the kernel's stack handles it;
 *   - IPv4 fragments: XDP_PASS, only the first has the ports, so the stack
 *     must reassemble them (Cilium tracks fragments in a map instead);
 *     IPv6 packets with extension headers (fragments among them) are
 *     passed too: this lesson does not walk extension header chains;
 *   - headers cut short, an IP version that contradicts the EtherType, an
 *     IPv4 header length under 20 bytes: XDP_DROP, no host could use them;
 *   - a service with no usable backend (empty table slot, unknown backend
 *     id): XDP_DROP, as Cilium drops with DROP_NO_SERVICE.
 *
 * Addresses and ports stay in network byte order everywhere, in the
 * packet and in the maps: the program compares and copies them, never
 * does arithmetic on them (the checksums do not care, see below).
 *
 * Self-contained: no libbpf headers. Rebuild with: go generate ./examples/maglev/lb
 */
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef __u16 __be16;
typedef __u32 __be32;

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
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __array(name, val) typeof(val) *name[]

enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_HASH_OF_MAPS = 13,
	BPF_F_INNER_MAP = 1 << 12,
};

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;

/* BPF targets here are little-endian; packets are big-endian. */
#define bpf_htons(x) ((__be16)__builtin_bswap16(x))

#define ETH_ALEN 6
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

struct ethhdr {
	__u8 h_dest[ETH_ALEN];
	__u8 h_source[ETH_ALEN];
	__be16 h_proto;
};

struct vlan_hdr {
	__be16 h_vlan_TCI;
	__be16 h_vlan_encapsulated_proto;
};

struct iphdr {
	__u8 ihl : 4, version : 4;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__be32 saddr;
	__be32 daddr;
};

struct ipv6hdr {
	__u8 priority : 4, version : 4;
	__u8 flow_lbl[3];
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__be32 saddr[4];
	__be32 daddr[4];
};

/* TCP and UDP headers start alike: the ports, then (at different offsets)
 * the checksum. */
struct l4ports {
	__be16 source;
	__be16 dest;
};

#define TCP_HDR_LEN 20
#define TCP_CSUM_OFF 16
#define UDP_HDR_LEN 8
#define UDP_CSUM_OFF 6

/* ---- Maps (the Go side, examples/maglev/lb, declares the same layouts) */

#define MAX_SERVICES 256
#define MAX_BACKENDS 4096 /* backend ids are 1 .. MAX_BACKENDS-1; 0 is "none" */
#define MAGLEV_TEMPLATE_M 251

struct svc_key {
	__be32 vip;
	__be16 port;
	__u8 proto;
	__u8 pad; /* always 0: hash keys compare every byte */
};

struct svc_value {
	__u32 lut_size; /* M: the size of the service's inner array */
	__u32 count;    /* number of backends */
	__u32 id;       /* the service's id, for user space */
};

struct backend {
	__be32 addr;
	__be16 port;
	__u8 mac[ETH_ALEN];
};

struct svc6_key {
	__be32 vip[4];
	__be16 port;
	__u8 proto;
	__u8 pad; /* always 0 */
};

struct backend6 {
	__be32 addr[4];
	__be16 port;
	__u8 mac[ETH_ALEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SERVICES);
	__type(key, struct svc_key);
	__type(value, struct svc_value);
} services SEC(".maps");

/* The inner map template. BPF_F_INNER_MAP: the inner arrays may have any
 * max_entries (one service M = 251, another 4093); the price is that the
 * verifier cannot inline lookups in them with a constant bound, so an
 * inner lookup is a call of array_map_lookup_elem. */
struct maglev_lut {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(max_entries, MAGLEV_TEMPLATE_M);
	__type(key, __u32);
	__type(value, __u32); /* backend id */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, MAX_SERVICES);
	__type(key, struct svc_key);
	__array(values, struct maglev_lut);
} maglev_outer SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend);
} backends SEC(".maps");

/* The same for IPv6 services: another outer map with the same inner
 * template. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SERVICES);
	__type(key, struct svc6_key);
	__type(value, struct svc_value);
} services6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, MAX_SERVICES);
	__type(key, struct svc6_key);
	__array(values, struct maglev_lut);
} maglev_outer6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend6);
} backends6 SEC(".maps");

/* Per-CPU packet counters: no other CPU writes a CPU's copy, so plain
 * increments suffice. Index i < MAX_BACKENDS counts the packets sent to
 * backend id i; MAX_BACKENDS + STAT_* counts verdicts. */
enum {
	STAT_TX,               /* forwarded to a backend */
	STAT_PASS_NOT_IP,      /* neither IPv4 nor IPv6: ARP... */
	STAT_PASS_NOT_SERVICE, /* IP, but not TCP/UDP to a service */
	STAT_PASS_FRAGMENT,    /* IPv4 fragment: left to the stack */
	STAT_DROP_MALFORMED,   /* headers cut short or invalid */
	STAT_DROP_NO_BACKEND,  /* a service without a usable backend */
	STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_BACKENDS + STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* Set by the loader before loading (a frozen .rodata constant the verifier
 * sees): every balancer of a cluster must hash alike, so that a flow
 * meets the same backend whichever balancer it reaches. */
volatile const __u32 hash_seed = 0;

static __always_inline void count(__u32 index)
{
	__u64 *n = bpf_map_lookup_elem(&stats, &index);

	if (n)
		*n += 1;
}

static __always_inline int verdict(__u32 stat, int action)
{
	count(MAX_BACKENDS + stat);
	return action;
}

/* ---- The flow hash: the kernel's jhash_3words (include/linux/jhash.h,
 * Bob Jenkins' lookup3), spelt out, since XDP has no hashing helper. */

#define JHASH_INITVAL 0xdeadbeef

static __always_inline __u32 rol32(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> ((-shift) & 31));
}

/* __jhash_mix: mix three words reversibly, between blocks of input. */
#define jhash_mix(a, b, c)                                   \
	do {                                                 \
		a -= c; a ^= rol32(c, 4);  c += b;           \
		b -= a; b ^= rol32(a, 6);  a += c;           \
		c -= b; c ^= rol32(b, 8);  b += a;           \
		a -= c; a ^= rol32(c, 16); c += b;           \
		b -= a; b ^= rol32(a, 19); a += c;           \
		c -= b; c ^= rol32(b, 4);  b += a;           \
	} while (0)

/* __jhash_final: mix a, b and c into c, after the last block. */
#define jhash_final(a, b, c)                                 \
	do {                                                 \
		c ^= b; c -= rol32(b, 14);                   \
		a ^= c; a -= rol32(c, 11);                   \
		b ^= a; b -= rol32(a, 25);                   \
		c ^= b; c -= rol32(b, 16);                   \
		a ^= c; a -= rol32(c, 4);                    \
		b ^= a; b -= rol32(a, 14);                   \
		c ^= b; c -= rol32(b, 24);                   \
	} while (0)

static __always_inline __u32 jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	initval += JHASH_INITVAL + (3 << 2);
	a += initval;
	b += initval;
	c += initval;
	jhash_final(a, b, c);
	return c;
}

/* Cilium's hash_from_tuple_v4. Its tuple holds the ports reversed
 * (tuple->dport is the packet's source port), so the middle word is
 * (source port << 16) | destination port, each as loaded from the packet.
 * The destination address is left out on purpose: a client then meets the
 * same backend on every VIP of a service. */
static __always_inline __u32 flow_hash4(const struct iphdr *ip, const struct l4ports *ports)
{
	return jhash_3words(ip->saddr, ((__u32)ports->source << 16) | ports->dest,
			    ip->protocol, hash_seed);
}

/* Cilium's hash_from_tuple_v6: the source address's four words, then the
 * ports word and the next header, then the seed (Cilium has a seed per
 * family; this program uses hash_seed for both). */
static __always_inline __u32 flow_hash6(const struct ipv6hdr *ip6, const struct l4ports *ports)
{
	__u32 a = ip6->saddr[0], b = ip6->saddr[1], c = ip6->saddr[2];

	jhash_mix(a, b, c);
	a += ip6->saddr[3];
	b += ((__u32)ports->source << 16) | ports->dest;
	c += ip6->nexthdr;
	jhash_mix(a, b, c);
	a += hash_seed;
	jhash_final(a, b, c);
	return c;
}

/* ---- Checksums. bpf_l3_csum_replace and bpf_l4_csum_replace work on
 * socket buffers only; an XDP program updates checksums itself. RFC 1624
 * (eqn. 3): when a 16-bit word m of the data becomes m', the checksum HC
 * becomes ~(~HC + ~m + m') in one's complement arithmetic. One's
 * complement sums are the same whatever the byte order (a byte swap of
 * every word swaps the sum's bytes), so the words are used as loaded. */

/* csum_replace4 adds to a running sum the change of a 32-bit field. The
 * sum is 64-bit so that the carries wait for the fold. */
static __always_inline __u64 csum_replace4(__u64 sum, __be32 from, __be32 to)
{
	sum += (__u16)~(from >> 16) + (__u16)~from;
	return sum + (to >> 16) + (to & 0xffff);
}

static __always_inline __u64 csum_replace2(__u64 sum, __be16 from, __be16 to)
{
	return sum + (__u16)~from + to;
}

/* csum_fold adds the carries back in (end-around carry) and complements:
 * the checksum to store. Two rounds suffice for the few words added. */
static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* l4_header finds the TCP or UDP header at l4: its ports and checksum.
 * It returns -1 if the header is cut short. */
static __always_inline int l4_header(void *l4, void *data_end, __u8 proto,
				     struct l4ports **ports, __u16 **csum)
{
	if (proto == IPPROTO_TCP) {
		if (l4 + TCP_HDR_LEN > data_end)
			return -1;
		*csum = l4 + TCP_CSUM_OFF;
	} else {
		if (l4 + UDP_HDR_LEN > data_end)
			return -1;
		*csum = l4 + UDP_CSUM_OFF;
	}
	*ports = l4;
	return 0;
}

/* maglev_slot_lookup is the heart of it: the slot the flow's hash gives
 * in the service's table (the inner map lut), and the backend id there;
 * 0 if there is none. The outer lookup gave the inner map itself, which
 * the program may pass to bpf_map_lookup_elem once it is not NULL. */
static __always_inline __u32 maglev_slot_lookup(const struct svc_value *svc, void *lut, __u32 hash)
{
	if (!lut || !svc->lut_size)
		return 0;
	__u32 slot = hash % svc->lut_size;
	__u32 *id = bpf_map_lookup_elem(lut, &slot);

	return id ? *id : 0;
}

/* fix_l4_csum stores the L4 checksum updated for a sum of changes. UDP
 * may carry no checksum (0): then there is none to fix. A UDP checksum
 * that comes out 0 is sent as 0xffff, its other form. */
static __always_inline void fix_l4_csum(__u16 *l4_csum, __u8 proto, __u64 sum)
{
	__u16 csum = csum_fold(sum);

	if (proto == IPPROTO_UDP && !csum)
		csum = 0xffff;
	*l4_csum = csum;
}

/* forward sends the packet out of the interface it came in on, to the
 * backend's MAC address, from ours (the address the packet came to), and
 * counts it. */
static __always_inline int forward(struct ethhdr *eth, const __u8 *mac, __u32 backend_id)
{
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	if (backend_id < MAX_BACKENDS)
		count(backend_id);
	return verdict(STAT_TX, XDP_TX);
}

static __always_inline int lb4(struct ethhdr *eth, struct iphdr *ip, void *data_end)
{
	struct l4ports *ports;
	__u16 *l4_csum;

	/* 2. IPv4. */
	if ((void *)(ip + 1) > data_end)
		return verdict(STAT_DROP_MALFORMED, XDP_DROP);
	if (ip->version != 4 || ip->ihl < 5)
		return verdict(STAT_DROP_MALFORMED, XDP_DROP);
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return verdict(STAT_PASS_NOT_SERVICE, XDP_PASS);
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return verdict(STAT_PASS_FRAGMENT, XDP_PASS);

	/* 3. TCP or UDP, after the IP options if any (ihl counts 32-bit
	 * words: the L4 header is 20 to 60 bytes in, a variable offset the
	 * verifier tracks). */
	if (l4_header((void *)ip + ip->ihl * 4, data_end, ip->protocol, &ports, &l4_csum))
		return verdict(STAT_DROP_MALFORMED, XDP_DROP);

	/* 4. Is it a service? */
	struct svc_key key = {
		.vip = ip->daddr,
		.port = ports->dest,
		.proto = ip->protocol,
		.pad = 0,
	};
	struct svc_value *svc = bpf_map_lookup_elem(&services, &key);
	if (!svc)
		return verdict(STAT_PASS_NOT_SERVICE, XDP_PASS);

	/* 5. Maglev: the service's table, the flow's slot, its backend. */
	__u32 backend_id = maglev_slot_lookup(svc, bpf_map_lookup_elem(&maglev_outer, &key),
					      flow_hash4(ip, ports));
	if (!backend_id)
		return verdict(STAT_DROP_NO_BACKEND, XDP_DROP);
	struct backend *be = bpf_map_lookup_elem(&backends, &backend_id);
	if (!be)
		return verdict(STAT_DROP_NO_BACKEND, XDP_DROP);

	/* 6. Destination NAT: the backend's address, and its port when it
	 * differs from the service's. The IPv4 header checksum covers the
	 * address; the TCP/UDP checksum covers the port and, through the
	 * pseudo-header, the address too. */
	__be32 old_daddr = ip->daddr;
	__be16 old_dport = ports->dest;

	ip->daddr = be->addr;
	ip->check = csum_fold(csum_replace4((__u16)~ip->check, old_daddr, be->addr));
	if (be->port != old_dport)
		ports->dest = be->port;
	if (ip->protocol == IPPROTO_TCP || *l4_csum) {
		__u64 sum = csum_replace4((__u16)~*l4_csum, old_daddr, be->addr);

		fix_l4_csum(l4_csum, ip->protocol, csum_replace2(sum, old_dport, ports->dest));
	}

	/* 7. Out. */
	return forward(eth, be->mac, backend_id);
}

static __always_inline int lb6(struct ethhdr *eth, struct ipv6hdr *ip6, void *data_end)
{
	struct l4ports *ports;
	__u16 *l4_csum;

	/* 2. IPv6: the L4 header follows at once, unless there are extension
	 * headers, which this program leaves to the stack. */
	if ((void *)(ip6 + 1) > data_end)
		return verdict(STAT_DROP_MALFORMED, XDP_DROP);
	if (ip6->version != 6)
		return verdict(STAT_DROP_MALFORMED, XDP_DROP);
	if (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP)
		return verdict(STAT_PASS_NOT_SERVICE, XDP_PASS);

	/* 3. TCP or UDP. */
	if (l4_header(ip6 + 1, data_end, ip6->nexthdr, &ports, &l4_csum))
		return verdict(STAT_DROP_MALFORMED, XDP_DROP);

	/* 4. Is it a service? */
	struct svc6_key key = {
		.port = ports->dest,
		.proto = ip6->nexthdr,
		.pad = 0,
	};
	__builtin_memcpy(key.vip, ip6->daddr, sizeof(key.vip));
	struct svc_value *svc = bpf_map_lookup_elem(&services6, &key);
	if (!svc)
		return verdict(STAT_PASS_NOT_SERVICE, XDP_PASS);

	/* 5. Maglev. */
	__u32 backend_id = maglev_slot_lookup(svc, bpf_map_lookup_elem(&maglev_outer6, &key),
					      flow_hash6(ip6, ports));
	if (!backend_id)
		return verdict(STAT_DROP_NO_BACKEND, XDP_DROP);
	struct backend6 *be = bpf_map_lookup_elem(&backends6, &backend_id);
	if (!be)
		return verdict(STAT_DROP_NO_BACKEND, XDP_DROP);

	/* 6. Destination NAT. IPv6 has no header checksum; the TCP/UDP
	 * checksum covers the address through the pseudo-header, word by
	 * word. (A UDP checksum of 0 is invalid in IPv6; it stays so.) */
	__be16 old_dport = ports->dest;
	__u64 sum = (__u16)~*l4_csum;

	for (int i = 0; i < 4; i++) {
		sum = csum_replace4(sum, ip6->daddr[i], be->addr[i]);
		ip6->daddr[i] = be->addr[i];
	}
	if (be->port != old_dport)
		ports->dest = be->port;
	if (*l4_csum)
		fix_l4_csum(l4_csum, ip6->nexthdr, csum_replace2(sum, old_dport, ports->dest));

	/* 7. Out. */
	return forward(eth, be->mac, backend_id);
}

SEC("xdp")
int maglev_lb(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__be16 h_proto;
	void *l3;

	/* 1. Ethernet, with at most one VLAN tag (kept as it is). Every
	 * header is bounds-checked against data_end before it is read: the
	 * verifier insists, and a short frame must not be read past. */
	if ((void *)(eth + 1) > data_end)
		return verdict(STAT_DROP_MALFORMED, XDP_DROP);
	h_proto = eth->h_proto;
	l3 = eth + 1;
	if (h_proto == bpf_htons(ETH_P_8021Q) || h_proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vlan = l3;

		if ((void *)(vlan + 1) > data_end)
			return verdict(STAT_DROP_MALFORMED, XDP_DROP);
		h_proto = vlan->h_vlan_encapsulated_proto;
		l3 = vlan + 1;
	}
	if (h_proto == bpf_htons(ETH_P_IP))
		return lb4(eth, l3, data_end);
	if (h_proto == bpf_htons(ETH_P_IPV6))
		return lb6(eth, l3, data_end);
	return verdict(STAT_PASS_NOT_IP, XDP_PASS);
}

char LICENSE[] SEC("license") = "GPL";
