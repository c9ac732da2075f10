// Programs of a kernel module's types and kfuncs. They read the module's
// struct through CO-RE relocations: the struct is not in vmlinux, so the
// loader finds it in the module's BTF, as libbpf searches module BTF after
// vmlinux's (the local declaration has the fields in another order than
// the module's). And they call the module's kfunc, which the loader finds
// by name in the module's BTF, passing that BTF to the kernel in the
// program's fd_array.
// Self-contained: no libbpf headers.
// Rebuild with: go generate ./sim
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))

enum { FIELD_BYTE_OFFSET = 0, FIELD_BYTE_SIZE = 1 };
enum { TYPE_EXISTS = 0, TYPE_SIZE = 1 };

struct mod_stats {
	__u32 flags;
	__u64 hits;
} __attribute__((preserve_access_index));

/* The struct's layout in the module: flags' and hits' offsets, and the
 * struct's size. Without the module, the relocations find no type and
 * poison their instructions: the load fails. */
SEC("syscall")
int mod_layout(void *ctx)
{
	struct mod_stats *s = 0;

	return __builtin_preserve_field_info(s->flags, FIELD_BYTE_OFFSET) << 16 |
	       __builtin_preserve_field_info(s->hits, FIELD_BYTE_OFFSET) << 8 |
	       __builtin_preserve_type_info(*s, TYPE_SIZE);
}

/* Whether the module is loaded: 0 without it, not a failed load. */
SEC("syscall")
int mod_loaded(void *ctx)
{
	return __builtin_preserve_type_info(*(struct mod_stats *)0, TYPE_EXISTS);
}

/* The module's kfunc: a + b, as a __u32. */
extern __u32 mod_add(__u32 a, __u32 b) __attribute__((section(".ksyms")));

SEC("syscall")
int call_mod_add(__u32 *ctx)
{
	return mod_add(ctx[0], ctx[1]);
}

char _license[] SEC("license") = "GPL";
