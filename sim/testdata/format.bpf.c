// bpf_snprintf and bpf_trace_vprintk with every conversion bpfsim formats:
// each call's return value and output go to results, for a comparison
// with the kernel's. Self-contained: no libbpf headers.
// Rebuild with: go generate ./sim
typedef unsigned char __u8;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_snprintf)(char *str, __u32 str_size, const char *fmt, __u64 *data, __u32 data_len) = (void *)165;
static long (*bpf_trace_vprintk)(const char *fmt, __u32 fmt_size, const void *data, __u32 data_len) = (void *)177;

struct result {
	__s64 ret;
	char out[64];
};

struct {
	__uint(type, 2); // BPF_MAP_TYPE_ARRAY
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, struct result);
} results SEC(".maps");

static const char str[] = "hello";
static const __u8 ip4[4] = {192, 0, 2, 1};
static const __u8 ip6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

static struct result *slot(__u32 i)
{
	return bpf_map_lookup_elem(&results, &i);
}

#define SNPRINTF(i, size, fmt, ...)                                              \
	do {                                                                     \
		static const char ___fmt[] = fmt;                                \
		__u64 ___args[] = {__VA_ARGS__};                                 \
		struct result *r = slot(i);                                      \
		if (r)                                                           \
			r->ret = bpf_snprintf(r->out, size, ___fmt, ___args, sizeof(___args)); \
	} while (0)

#define VPRINTK(i, fmt, ...)                                                     \
	do {                                                                     \
		static const char ___fmt[] = fmt;                                \
		__u64 ___args[] = {__VA_ARGS__};                                 \
		struct result *r = slot(i);                                      \
		if (r)                                                           \
			r->ret = bpf_trace_vprintk(___fmt, sizeof(___fmt), ___args, sizeof(___args)); \
	} while (0)

// Addresses the program computes (clang would otherwise put them in a
// constant array in .rodata, where BPF has no relocations).
#define ADDR(x)                                 \
	({                                      \
		__u64 ___a = (__u64)(x);        \
		asm volatile("" : "+r"(___a));  \
		___a;                           \
	})

SEC("xdp")
int format(void *ctx)
{
	__u64 s = ADDR(str), a4 = ADDR(ip4), a6 = ADDR(ip6);

	SNPRINTF(0, 64, "%d %u %x %X %i|", -5, 7, 0xbeef, 0xbeef, -1);
	SNPRINTF(1, 64, "%lld %llu %llx %ld|", -1234567890123LL, 18446744073709551615ULL, 0xdeadbeefcafeULL, -2);
	SNPRINTF(2, 64, "[%s] [%8s] [%-8s]", s, s, s);
	SNPRINTF(3, 8, "truncated to seven: %d", 123456);
	SNPRINTF(4, 64, "%pI4 %pi4 %pI6", a4, a4, a6);
	SNPRINTF(5, 64, "%08x|%-5d|%+d|% d|%c|%%", 0xab, 42, 7, 7, 'z');
	SNPRINTF(6, 64, "bad pointer [%s]", 16);
	SNPRINTF(7, 64, "%pi6", a6);
	{
		static const char fmt[] = "needs %d bytes";
		__u64 args[] = {1000};
		struct result *r = slot(8);
		if (r)
			r->ret = bpf_snprintf(0, 0, fmt, args, sizeof(args));
	}
	VPRINTK(9, "five: %d %d %d %d %d", 1, 2, 3, 4, 5);
	VPRINTK(10, "twelve %d%d%d%d%d%d%d%d%d%d%d%d", 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12);
	VPRINTK(11, "a string %s and an address %pI4", s, a4);
	SNPRINTF(12, 64, "[%-15pI4] [%20pI4]", a4, a4); /* no width: not padded */
	return 2;
}

char LICENSE[] SEC("license") = "GPL";
