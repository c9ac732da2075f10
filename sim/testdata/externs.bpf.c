// Externs the loader resolves against the running kernel: .kconfig
// variables of every type cilium/ebpf fills in, __ksym variables (kernel
// functions' addresses, weak ones possibly missing) and weak kfuncs
// tested with bpf_ksym_exists, whose dead calls the verifier removes.
// Socket filters, so that both kernels can test-run them.
// Self-contained: no libbpf headers.
// Rebuild with: go generate ./sim
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __kconfig __attribute__((section(".kconfig")))
#define __ksym __attribute__((section(".ksyms")))
#define __weak __attribute__((weak))
// libbpf's bpf_ksym_exists, without its check that sym is weak.
#define bpf_ksym_exists(sym) (!!(sym))

enum libbpf_tristate {
	TRI_NO = 0,
	TRI_YES = 1,
	TRI_MODULE = 2,
};

char LICENSE[] SEC("license") = "GPL";

extern int LINUX_KERNEL_VERSION __kconfig;
extern int CONFIG_HZ __kconfig;
extern __u32 CONFIG_NR_CPUS __kconfig;
extern __u8 CONFIG_PGTABLE_LEVELS __kconfig;
extern __s16 CONFIG_LOG_BUF_SHIFT __kconfig;
extern __u64 CONFIG_ILLEGAL_POINTER_VALUE __kconfig;
extern enum libbpf_tristate CONFIG_BPF_SYSCALL __kconfig;
extern _Bool CONFIG_BPF_JIT __kconfig;
extern _Bool CONFIG_64BIT __kconfig;
extern char CONFIG_DEFAULT_HOSTNAME[16] __kconfig;
// Shorter than the value: cut, with no NUL.
extern char CONFIG_LOCALVERSION[4] __kconfig;

struct kconfig_values {
	__u64 illegal_pointer;
	int version;
	int hz;
	__u32 nr_cpus;
	__u32 bpf_syscall;
	__s16 log_buf_shift;
	__u8 pgtable_levels;
	__u8 bpf_jit;
	__u8 is_64bit;
	char hostname[16];
	char localversion[4];
};

struct kconfig_values kconfig_out;

SEC("socket")
int kconfig(void *ctx)
{
	kconfig_out.illegal_pointer = CONFIG_ILLEGAL_POINTER_VALUE;
	kconfig_out.version = LINUX_KERNEL_VERSION;
	kconfig_out.hz = CONFIG_HZ;
	kconfig_out.nr_cpus = CONFIG_NR_CPUS;
	kconfig_out.bpf_syscall = CONFIG_BPF_SYSCALL;
	kconfig_out.log_buf_shift = CONFIG_LOG_BUF_SHIFT;
	kconfig_out.pgtable_levels = CONFIG_PGTABLE_LEVELS;
	kconfig_out.bpf_jit = CONFIG_BPF_JIT;
	kconfig_out.is_64bit = CONFIG_64BIT;
	__builtin_memcpy(kconfig_out.hostname, CONFIG_DEFAULT_HOSTNAME, sizeof(kconfig_out.hostname));
	__builtin_memcpy(kconfig_out.localversion, CONFIG_LOCALVERSION, sizeof(kconfig_out.localversion));
	return CONFIG_BPF_SYSCALL == TRI_YES;
}

// Functions both kernels have, one a helper's that no program has called
// yet, and one no kernel has.
extern void array_map_lookup_elem __ksym;
extern void bpf_get_current_pid_tgid __ksym __weak;
extern void bpfsim_no_such_symbol __ksym __weak;

__u64 ksym_addrs[3];

SEC("socket")
int ksyms(void *ctx)
{
	int ret = 0;

	ksym_addrs[0] = (__u64)&array_map_lookup_elem;
	ksym_addrs[1] = (__u64)&bpf_get_current_pid_tgid;
	ksym_addrs[2] = (__u64)&bpfsim_no_such_symbol;
	if (bpf_ksym_exists(&array_map_lookup_elem))
		ret |= 1;
	if (bpf_ksym_exists(&bpf_get_current_pid_tgid))
		ret |= 2;
	if (bpf_ksym_exists(&bpfsim_no_such_symbol))
		ret |= 4;
	return ret;
}

extern void bpf_rcu_read_lock(void) __ksym __weak;
extern void bpf_rcu_read_unlock(void) __ksym __weak;
extern int bpfsim_no_such_kfunc(int) __ksym __weak;

SEC("socket")
int weak_kfuncs(void *ctx)
{
	int ret = 0;

	if (bpf_ksym_exists(bpf_rcu_read_lock)) {
		bpf_rcu_read_lock();
		bpf_rcu_read_unlock();
		ret |= 1;
	}
	// Dead code in every kernel: the verifier removes the poisoned call.
	if (bpf_ksym_exists(bpfsim_no_such_kfunc))
		ret |= bpfsim_no_such_kfunc(2);
	else
		ret |= 4;
	return ret;
}

// The poisoned call on a path the program takes: refused.
SEC("socket")
int weak_kfunc_called(void *ctx)
{
	return bpfsim_no_such_kfunc(1);
}
