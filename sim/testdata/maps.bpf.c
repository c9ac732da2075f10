// An XDP program that uses every kind of map state bpfsim loads from ELF:
// BTF-defined array, per-CPU array and hash maps, and global variables in
// .rodata (frozen), .data and .bss. Self-contained: no libbpf headers.
// Rebuild with: go generate ./sim
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

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
};

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;

/* Packets seen, by the low byte of the EtherType. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
} by_proto SEC(".maps");

/* Bytes seen, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} bytes SEC(".maps");

/* Packets by the last four bytes of the source MAC address. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} by_source SEC(".maps");

volatile const __u32 verdict = 2; /* XDP_PASS */
__u32 longest = 0;                /* .data */
__u64 packets;                    /* .bss */

SEC("xdp")
int count(struct xdp_md *ctx)
{
	__u8 *data = (__u8 *)(long)ctx->data;
	__u8 *end = (__u8 *)(long)ctx->data_end;
	__u32 len = end - data;
	__u32 zero = 0;

	if (data + 14 > end)
		return 1; /* XDP_DROP */

	__sync_fetch_and_add(&packets, 1);
	if (len > longest)
		longest = len;

	__u32 proto = data[13];
	__u64 *n = bpf_map_lookup_elem(&by_proto, &proto);
	if (n)
		__sync_fetch_and_add(n, 1);

	__u64 *b = bpf_map_lookup_elem(&bytes, &zero);
	if (b)
		*b += len;

	__u32 src = *(__u32 *)(data + 8);
	__u64 *s = bpf_map_lookup_elem(&by_source, &src);
	if (s) {
		__sync_fetch_and_add(s, 1);
	} else {
		__u64 one = 1;
		bpf_map_update_elem(&by_source, &src, &one, 0);
	}
	return verdict;
}

char LICENSE[] SEC("license") = "GPL";
