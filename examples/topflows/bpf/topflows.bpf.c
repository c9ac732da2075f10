// SPDX-License-Identifier: GPL-2.0
/*
 * A traffic counter read through BPF iterators: the lesson of
 * examples/topflows.
 *
 * count (XDP) adds each IPv4 packet and its bytes to its source address's
 * entry in the hash map talkers, and passes the packet on.
 *
 * dump_talkers (SEC("iter/bpf_map_elem")) prints that map as text, one
 * line an element, and a total after the last one: reading the iterator
 * returns what it prints. The kernel runs it while user space reads, so a
 * tool gets formatted text with no map lookups of its own, and `cat` of a
 * pinned iterator shows the table.
 *
 * list_maps (SEC("iter/bpf_map")) prints every map the kernel has: its
 * name, type and size, read from the kernel's struct bpf_map through
 * CO-RE.
 *
 * Self-contained: no libbpf headers. Rebuild with: go generate ./examples/topflows
 */
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_F_ZERO_SEED = 1 << 6,
	BPF_ANY = 0,
	XDP_PASS = 2,
	ETH_P_IP_BE = 0x0008, /* htons(ETH_P_IP) */
};

struct xdp_md {
	__u32 data;
	__u32 data_end;
};

struct seq_file;

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)
struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
};

enum bpf_map_type {
	BPF_MAP_TYPE_UNSPEC = 0,
};

struct bpf_map {
	enum bpf_map_type map_type;
	__u32 key_size;
	__u32 value_size;
	__u32 max_entries;
	char name[16];
};

struct bpf_iter__bpf_map_elem {
	struct bpf_iter_meta *meta;
	struct bpf_map *map;
	void *key;
	void *value;
};

struct bpf_iter__bpf_map {
	struct bpf_iter_meta *meta;
	struct bpf_map *map;
};
#pragma clang attribute pop

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*bpf_seq_printf)(struct seq_file *m, const char *fmt, __u32 fmt_size,
			      const void *data, __u32 data_len) = (void *)126;

struct counts {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	/* A hash seed of 0: the table walks in the same order in every
	 * kernel, which lets the example's test compare bpfsim's with this
	 * machine's. */
	__uint(map_flags, BPF_F_ZERO_SEED);
	__type(key, __u32); /* IPv4 source address, network byte order */
	__type(value, struct counts);
} talkers SEC(".maps");

SEC("xdp")
int count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 *eth = data;

	/* Ethernet (14 bytes), then the IPv4 header's source at 12. */
	if (data + 14 + 20 > end || *(__u16 *)(eth + 12) != ETH_P_IP_BE)
		return XDP_PASS;
	__u32 saddr = *(__u32 *)(eth + 14 + 12);
	struct counts *c = bpf_map_lookup_elem(&talkers, &saddr);

	if (c) {
		c->packets++;
		c->bytes += end - data;
	} else {
		struct counts first = {1, end - data};

		bpf_map_update_elem(&talkers, &saddr, &first, BPF_ANY);
	}
	return XDP_PASS;
}

/* Totals for the summary: the iterator's runs share nothing else. */
__u64 total_packets, total_bytes;

SEC("iter/bpf_map_elem")
int dump_talkers(struct bpf_iter__bpf_map_elem *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	__u32 *addr = ctx->key;
	struct counts *c = ctx->value;

	if (!addr || !c) {
		static const char end[] = "%llu sources, %llu packets, %llu bytes\n";
		__u64 args[3] = {ctx->meta->seq_num, total_packets, total_bytes};

		/* The walk's last run: the total, then start over. */
		if (ctx->meta->seq_num || total_packets)
			args[0]++;
		bpf_seq_printf(seq, end, sizeof(end), args, sizeof(args));
		total_packets = total_bytes = 0;
		return 0;
	}
	if (ctx->meta->seq_num == 0) {
		static const char head[] = "packets      bytes  source\n";

		bpf_seq_printf(seq, head, sizeof(head), 0, 0);
	}
	/* The address last: the kernel pads no %pI4. */
	static const char line[] = "%7llu %10llu  %pI4\n";
	__u64 args[3] = {c->packets, c->bytes, (__u64)addr};

	bpf_seq_printf(seq, line, sizeof(line), args, sizeof(args));
	total_packets += c->packets;
	total_bytes += c->bytes;
	return 0;
}

SEC("iter/bpf_map")
int list_maps(struct bpf_iter__bpf_map *ctx)
{
	struct bpf_map *map = ctx->map;

	if (!map)
		return 0;
	static const char line[] = "%-16s type %2u  key %2u  value %3u  max_entries %u\n";
	__u64 args[5] = {(__u64)map->name, map->map_type, map->key_size, map->value_size, map->max_entries};

	bpf_seq_printf(ctx->meta->seq, line, sizeof(line), args, sizeof(args));
	return 0;
}

char _license[] SEC("license") = "GPL";
