// Iterator programs over a map's elements (SEC("iter/bpf_map_elem")):
// each runs once per element, with its key and value, and once more at
// the end with neither; what it prints with bpf_seq_printf and
// bpf_seq_write is what reading the iterator returns. The map's own
// fields (struct bpf_map) are read through CO-RE relocations, so the same
// object finds them in this machine's kernel and in bpfsim's.
// Self-contained: no libbpf headers.
// Rebuild with: go generate ./sim
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))

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
	__u32 map_flags;
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

static long (*bpf_seq_printf)(struct seq_file *m, const char *fmt, __u32 fmt_size,
			      const void *data, __u32 data_len) = (void *)126;
static long (*bpf_seq_write)(struct seq_file *m, const void *data, __u32 len) = (void *)127;

/* dump prints a u32 -> u64 map, one line an element, and a summary. */
SEC("iter/bpf_map_elem")
int dump(struct bpf_iter__bpf_map_elem *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	__u32 *key = ctx->key;
	__u64 *value = ctx->value;

	if (!key || !value) {
		static const char end[] = "%s: %llu elements, max_entries %u, key_size %u, value_size %u\n";
		__u64 args[5] = {(__u64)ctx->map->name, ctx->meta->seq_num, ctx->map->max_entries,
				 ctx->map->key_size, ctx->map->value_size};

		bpf_seq_printf(seq, end, sizeof(end), args, sizeof(args));
		return 0;
	}
	static const char line[] = "%llu: %u -> %llu\n";
	__u64 args[3] = {ctx->meta->seq_num, *key, *value};

	bpf_seq_printf(seq, line, sizeof(line), args, sizeof(args));
	return 0;
}

/* double doubles every value in place and writes each key as bytes. */
SEC("iter/bpf_map_elem")
int double_values(struct bpf_iter__bpf_map_elem *ctx)
{
	__u32 *key = ctx->key;
	__u64 *value = ctx->value;

	if (!key || !value)
		return 0;
	*value *= 2;
	bpf_seq_write(ctx->meta->seq, key, sizeof(*key));
	return 0;
}

/* percpu_sum adds up a per-CPU u64 value over the first two CPUs. */
SEC("iter/bpf_map_elem")
int percpu_sum(struct bpf_iter__bpf_map_elem *ctx)
{
	__u32 *key = ctx->key;
	__u64 *value = ctx->value;

	if (!key || !value)
		return 0;
	static const char line[] = "%u: %llu + %llu\n";
	__u64 args[3] = {*key, value[0], value[1]};

	bpf_seq_printf(ctx->meta->seq, line, sizeof(line), args, sizeof(args));
	return 0;
}

/* chunks writes value (a u32) times 250 bytes: an element whose output
 * does not fit in what is left of the 32 KiB buffer is shown again by the
 * next read; one that alone overflows it fails the read (E2BIG). */
SEC("iter/bpf_map_elem")
int chunks(struct bpf_iter__bpf_map_elem *ctx)
{
	char buf[250];
	__u32 *key = ctx->key;
	__u32 *value = ctx->value;

	if (!key || !value)
		return 0;
	for (int i = 0; i < (int)sizeof(buf); i++)
		buf[i] = 'a' + (*key + i) % 26;
	buf[sizeof(buf) - 1] = '\n';
	for (__u32 i = 0; i < 200 && i < *value; i++)
		bpf_seq_write(ctx->meta->seq, buf, sizeof(buf));
	return 0;
}

/* maps lists the maps whose names start with "itm_" (a test's own, in a
 * kernel where other maps live too), then "end". */
SEC("iter/bpf_map")
int maps(struct bpf_iter__bpf_map *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct bpf_map *map = ctx->map;

	if (!map) {
		static const char end[] = "end\n";

		bpf_seq_write(seq, end, sizeof(end) - 1);
		return 0;
	}
	if (map->name[0] != 'i' || map->name[1] != 't' || map->name[2] != 'm' || map->name[3] != '_')
		return 0;
	static const char line[] = "%s: type %u, key %u, value %u, max %u, flags 0x%x\n";
	__u64 args[6] = {(__u64)map->name, map->map_type, map->key_size, map->value_size,
			 map->max_entries, map->map_flags};

	bpf_seq_printf(seq, line, sizeof(line), args, sizeof(args));
	return 0;
}

char _license[] SEC("license") = "GPL";
