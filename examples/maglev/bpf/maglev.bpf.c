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
 * Each service has its own inner array, of any size (BPF_F_INNER_MAP lets
 * one outer map hold arrays whose max_entries differ from the template's).
 * User space changes a service's backends by building a new inner array and
 * swapping it into maglev_outer with one update: a packet sees the old
 * table or the new one, never half of each.
 *
 * What the program does with other packets, as a real balancer would:
 *   - not IPv4 (ARP, IPv6...), or IPv4 neither TCP nor UDP, or not to a
 *     service: XDP_PASS, the kernel's stack handles it;
 *   - IPv4 fragments: XDP_PASS, only the first has the ports, so the stack
 *     must reassemble them (Cilium tracks fragments in a map instead);
 *   - headers cut short, an IP version other than 4 in an IPv4 frame, an
 *     IP header length under 20 bytes: XDP_DROP, no host could use them;
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

/* Per-CPU packet counters: no other CPU writes a CPU's copy, so plain
 * increments suffice. Index i < MAX_BACKENDS counts the packets sent to
 * backend id i; MAX_BACKENDS + STAT_* counts verdicts. */
enum {
	STAT_TX,               /* forwarded to a backend */
	STAT_PASS_NOT_IPV4,    /* not IPv4: ARP, IPv6... */
	STAT_PASS_NOT_SERVICE, /* IPv4, but not TCP/UDP to a service */
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

static __always_inline __u32 jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	initval += JHASH_INITVAL + (3 << 2);
	a += initval;
	b += initval;
	c += initval;
	/* __jhash_final: mix a, b and c into c. */
	c ^= b; c -= rol32(b, 14);
	a ^= c; a -= rol32(c, 11);
	b ^= a; b -= rol32(a, 25);
	c ^= b; c -= rol32(b, 16);
	a ^= c; a -= rol32(c, 4);
	b ^= a; b -= rol32(a, 14);
	c ^= b; c -= rol32(b, 24);
	return c;
}

/* Cilium's hash_from_tuple_v4. Its tuple holds the ports reversed
 * (tuple->dport is the packet's source port), so the middle word is
 * (source port << 16) | destination port, each as loaded from the packet.
 * The destination address is left out on purpose: a client then meets the
 * same backend on every VIP of a service. */
static __always_inline __u32 flow_hash(const struct iphdr *ip, const struct l4ports *ports)
{
	return jhash_3words(ip->saddr, ((__u32)ports->source << 16) | ports->dest,
			    ip->protocol, hash_seed);
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

SEC("xdp")
int maglev_lb(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct l4ports *ports;
	__u16 *l4_csum;
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
	if (h_proto != bpf_htons(ETH_P_IP))
		return verdict(STAT_PASS_NOT_IPV4, XDP_PASS);

	/* 2. IPv4. */
	ip = l3;
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
	ports = (void *)ip + ip->ihl * 4;
	if (ip->protocol == IPPROTO_TCP) {
		if ((void *)ports + TCP_HDR_LEN > data_end)
			return verdict(STAT_DROP_MALFORMED, XDP_DROP);
		l4_csum = (void *)ports + TCP_CSUM_OFF;
	} else {
		if ((void *)ports + UDP_HDR_LEN > data_end)
			return verdict(STAT_DROP_MALFORMED, XDP_DROP);
		l4_csum = (void *)ports + UDP_CSUM_OFF;
	}

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

	/* 5. Maglev: the service's table, the flow's slot in it, the backend
	 * in the slot. The outer lookup gives the inner map itself, which the
	 * program may pass to bpf_map_lookup_elem once it is not NULL. */
	void *lut = bpf_map_lookup_elem(&maglev_outer, &key);
	if (!lut || !svc->lut_size)
		return verdict(STAT_DROP_NO_BACKEND, XDP_DROP);
	__u32 slot = flow_hash(ip, ports) % svc->lut_size;
	__u32 *id = bpf_map_lookup_elem(lut, &slot);
	if (!id)
		return verdict(STAT_DROP_NO_BACKEND, XDP_DROP);
	__u32 backend_id = *id;
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

	/* UDP may carry no checksum (0): then there is none to fix. A UDP
	 * checksum that comes out 0 is sent as 0xffff, its other form. */
	if (ip->protocol == IPPROTO_TCP || *l4_csum) {
		__u64 sum = csum_replace4((__u16)~*l4_csum, old_daddr, be->addr);
		__u16 csum = csum_fold(csum_replace2(sum, old_dport, ports->dest));

		if (ip->protocol == IPPROTO_UDP && !csum)
			csum = 0xffff;
		*l4_csum = csum;
	}

	/* 7. Out of the same interface, to the backend's MAC address, from
	 * ours (the address the packet came to). */
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, be->mac, ETH_ALEN);

	if (backend_id < MAX_BACKENDS)
		count(backend_id);
	return verdict(STAT_TX, XDP_TX);
}

char LICENSE[] SEC("license") = "GPL";
