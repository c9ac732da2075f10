// SPDX-License-Identifier: GPL-2.0
// Maps of maps declared with BTF, as the kernel's selftests
// (test_btf_map_in_map.c) declare them: an array of dynamically sized
// inner arrays (BPF_F_INNER_MAP) filled at load time from the object, and
// a hash of fixed-size inner arrays, whose lookups are inlined.
// Self-contained: no libbpf headers. Rebuild with: go generate ./sim
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __array(name, val) typeof(val) *name[]

enum {
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_ARRAY_OF_MAPS = 12,
	BPF_MAP_TYPE_HASH_OF_MAPS = 13,
	BPF_F_INNER_MAP = 1 << 12,
};

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;

struct inner_dyn {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(max_entries, 3);
	__type(key, int);
	__type(value, int);
} inner_map3 SEC(".maps"), inner_map4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP);
	__uint(max_entries, 5);
	__type(key, int);
	__type(value, int);
} inner_map5 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 3);
	__type(key, int);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_ARRAY);
		__uint(map_flags, BPF_F_INNER_MAP);
		__uint(max_entries, 1);
		__type(key, int);
		__type(value, int);
	});
} outer_arr_dyn SEC(".maps") = {
	.values = {
		[0] = (void *)&inner_map3,
		[1] = (void *)&inner_map4,
		[2] = (void *)&inner_map5,
	},
};

struct inner_fixed {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 8);
	__type(key, __u32);
	__array(values, struct inner_fixed);
} outer_hash SEC(".maps");

struct lookup_args {
	__u32 outer;
	__u32 inner;
};

// Returns outer_arr_dyn[args->outer][args->inner], -1 if the inner lookup
// fails, -2 if the outer one does.
SEC("syscall")
int lookup_dyn(struct lookup_args *args)
{
	int outer = args->outer, inner = args->inner;
	int *val;
	void *map;

	map = bpf_map_lookup_elem(&outer_arr_dyn, &outer);
	if (!map)
		return -2;
	val = bpf_map_lookup_elem(map, &inner);
	return val ? *val : -1;
}

// Adds 1 to outer_hash[args->outer][args->inner] and returns the sum.
SEC("syscall")
int count_fixed(struct lookup_args *args)
{
	__u32 outer = args->outer, inner = args->inner;
	__u64 *val;
	void *map;

	map = bpf_map_lookup_elem(&outer_hash, &outer);
	if (!map)
		return -2;
	val = bpf_map_lookup_elem(map, &inner);
	if (!val)
		return -1;
	return __sync_add_and_fetch(val, 1);
}

char _license[] SEC("license") = "GPL";
