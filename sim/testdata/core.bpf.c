// Programs written as against vmlinux.h: every struct is declared with
// preserve_access_index, so each field access is a CO-RE relocation the
// loader resolves against the kernel's BTF. The local declarations are
// partial and in another order than the kernel's, as a program built on
// an older vmlinux.h would have them; only the relocations make the
// offsets right. Self-contained: no libbpf headers.
// Rebuild with: go generate ./sim
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))

/* libbpf's bpf_core_read.h, by what the builtins take. */
enum { FIELD_BYTE_OFFSET = 0, FIELD_BYTE_SIZE = 1, FIELD_EXISTS = 2 };
enum { TYPE_EXISTS = 0, TYPE_SIZE = 1 };
enum { ENUMVAL_EXISTS = 0, ENUMVAL_VALUE = 1 };
#define core_field_exists(f) __builtin_preserve_field_info(f, FIELD_EXISTS)
#define core_field_size(f) __builtin_preserve_field_info(f, FIELD_BYTE_SIZE)
#define core_field_offset(f) __builtin_preserve_field_info(f, FIELD_BYTE_OFFSET)
#define core_type_exists(t) __builtin_preserve_type_info(*(typeof(t) *)0, TYPE_EXISTS)
#define core_type_size(t) __builtin_preserve_type_info(*(typeof(t) *)0, TYPE_SIZE)
#define core_enum_exists(e, v) __builtin_preserve_enum_value(*(typeof(e) *)v, ENUMVAL_EXISTS)
#define core_enum_value(e, v) __builtin_preserve_enum_value(*(typeof(e) *)v, ENUMVAL_VALUE)

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct xdp_md {
	__u32 data_end; /* the kernel has data first */
	__u32 data;
	__u32 ingress_ifindex;
};

struct bpf_sock {
	__u32 family;
};

struct __sk_buff {
	__u32 mark;
	__u32 len;
	__u32 protocol;
	__u32 cb[5];
	__u32 no_such_field; /* not in any kernel */
	__u64 tstamp;
	__u32 data;
	__u32 data_end;
};

/* x86-64 and arm64 register files, as bpf_tracing.h reads them. */
struct pt_regs {
	unsigned long si;
	unsigned long di;
};

struct user_pt_regs {
	__u64 regs[31];
};

struct no_such_struct {
	int x;
};

#pragma clang attribute pop

enum bpf_func_id {
	BPF_FUNC_map_lookup_elem = 100, /* the kernel's values differ */
	BPF_FUNC_ktime_get_ns = 200,
	BPF_FUNC_no_such_helper = 300,
};

enum xdp_action {
	XDP_DROP = 7,
	XDP_PASS = 8,
};

/* The packet's length, read through relocated offsets; XDP_PASS's value
 * as the kernel numbers it in the top bits. */
SEC("xdp")
int xdp_core(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 *p = data;

	if (data + 2 > end)
		return 0;
	return (core_enum_value(enum xdp_action, XDP_PASS) << 24) | ((__u32)(end - data) << 8) | p[1];
}

/* Fields read and written through relocations, and what the relocations
 * that only ask questions answer, folded into the return value and the
 * mark. */
SEC("tc")
int tc_core(struct __sk_buff *skb)
{
	__u32 v = skb->len + (skb->protocol << 16);
	__u32 facts = 0;

	skb->mark = v ^ 0x5a5a;
	skb->cb[2] = skb->len;
	if (core_field_exists(skb->tstamp))
		facts |= 1;
	if (core_field_exists(skb->no_such_field))
		facts |= 2 + skb->no_such_field; /* poisoned, never reached */
	facts |= core_field_size(skb->cb) << 2;      /* 20 */
	facts |= core_field_offset(skb->tstamp) << 8; /* 152 */
	if (core_type_exists(struct bpf_sock))
		facts |= 1 << 16;
	if (core_enum_exists(enum bpf_func_id, BPF_FUNC_map_lookup_elem))
		facts |= 1 << 17;
	if (core_enum_exists(enum bpf_func_id, BPF_FUNC_no_such_helper))
		facts |= 1 << 18;
	facts |= core_enum_value(enum bpf_func_id, BPF_FUNC_ktime_get_ns) << 19;
	facts |= core_type_size(struct bpf_sock) << 24;
	return facts ^ v;
}

/* A field no kernel has, read on every path: the loader poisons the
 * load and the verifier refuses it. */
SEC("tc")
int tc_core_missing(struct __sk_buff *skb)
{
	return skb->no_such_field;
}

/* A struct no kernel has, guarded: the poisoned load is dead code, and the
 * program loads. (Its size would be poisoned too: only the existence
 * questions have an answer for a type that is not there.) */
SEC("tc")
int tc_core_guarded(struct __sk_buff *skb)
{
	struct no_such_struct *s = (void *)(long)skb->data;

	if (core_type_exists(struct no_such_struct))
		return s->x;
	return 1;
}

/* The first argument of a kprobed function, on x86-64 and arm64. */
SEC("kprobe/x86")
int kprobe_x86(struct pt_regs *ctx)
{
	return ctx->di;
}

SEC("kprobe/arm64")
int kprobe_arm64(struct user_pt_regs *ctx)
{
	return ctx->regs[0];
}

char LICENSE[] SEC("license") = "GPL";
