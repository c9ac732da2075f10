// A tracing program that asks where it runs: the current task's ids and
// name from the helpers, and the same through its task_struct, its parent
// and its cred, read with bpf_probe_read_kernel through CO-RE relocations
// (bpfsim lays out a task_struct of its own; the relocations find it, as
// they find the kernel's); and the task's user memory at the addresses
// its context's first two arguments hold, with bpf_probe_read_user.
// Self-contained: no libbpf headers.
// Rebuild with: go generate ./sim
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *src) = (void *)113;
static long (*bpf_probe_read_kernel_str)(void *dst, __u32 size, const void *src) = (void *)115;
static long (*bpf_probe_read_user)(void *dst, __u32 size, const void *src) = (void *)112;
static long (*bpf_probe_read_user_str)(void *dst, __u32 size, const void *src) = (void *)114;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static __u64 (*bpf_get_current_uid_gid)(void) = (void *)15;
static long (*bpf_get_current_comm)(void *buf, __u32 size) = (void *)16;
static __u64 (*bpf_get_current_task)(void) = (void *)35;
static __u64 (*bpf_get_current_cgroup_id)(void) = (void *)80;

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)
typedef struct {
	__u32 val;
} kuid_t;

struct cred {
	kuid_t uid;
};

struct task_struct {
	char comm[16];
	int tgid;
	int pid;
	struct task_struct *real_parent;
	const struct cred *cred;
};
#pragma clang attribute pop

struct result {
	__u64 pid_tgid;
	__u64 uid_gid;
	char comm[16];
	__s32 pid;
	__s32 tgid;
	__s32 ppid;
	__u32 uid;
	char parent_comm[16];
	long parent_comm_len;
	long short_len;
	char short_comm[4];
	long fault;
	char fault_buf[8];
	char user_str[16];
	long user_str_len;
	__u64 user_word;
	long user_fault;
	long user_kernel_fault;
	char user_short[4];
	long user_short_len;
	__u64 cgroup_id;
};

struct {
	__uint(type, 2); /* BPF_MAP_TYPE_ARRAY */
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct result);
} results SEC(".maps");

SEC("raw_tracepoint/sys_enter")
int task_ids(__u64 *ctx)
{
	__u32 key = 0;
	struct result *r = bpf_map_lookup_elem(&results, &key);
	struct task_struct *t, *parent = 0;
	const struct cred *cred = 0;

	if (!r)
		return 0;
	r->pid_tgid = bpf_get_current_pid_tgid();
	r->uid_gid = bpf_get_current_uid_gid();
	r->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	t = (struct task_struct *)bpf_get_current_task();
	bpf_probe_read_kernel(&r->pid, sizeof(r->pid), &t->pid);
	bpf_probe_read_kernel(&r->tgid, sizeof(r->tgid), &t->tgid);
	bpf_probe_read_kernel(&parent, sizeof(parent), &t->real_parent);
	bpf_probe_read_kernel(&r->ppid, sizeof(r->ppid), &parent->tgid);
	r->parent_comm_len = bpf_probe_read_kernel_str(r->parent_comm, sizeof(r->parent_comm), &parent->comm);
	r->short_len = bpf_probe_read_kernel_str(r->short_comm, sizeof(r->short_comm), &parent->comm);
	bpf_probe_read_kernel(&cred, sizeof(cred), &t->cred);
	bpf_probe_read_kernel(&r->uid, sizeof(r->uid), &cred->uid.val);
	/* Address 8 is no kernel memory: -EFAULT, and the buffer zeroed. */
	r->fault = bpf_probe_read_kernel(r->fault_buf, sizeof(r->fault_buf), (void *)8);
	/* User memory: a string and a word at the arguments' addresses, a
	 * page nothing maps, and the task_struct, a kernel address. */
	r->user_str_len = bpf_probe_read_user_str(r->user_str, sizeof(r->user_str), (void *)ctx[0]);
	r->user_short_len = bpf_probe_read_user_str(r->user_short, sizeof(r->user_short), (void *)ctx[0]);
	bpf_probe_read_user(&r->user_word, sizeof(r->user_word), (void *)ctx[1]);
	r->user_fault = bpf_probe_read_user(r->fault_buf, sizeof(r->fault_buf), (void *)8);
	r->user_kernel_fault = bpf_probe_read_user(r->fault_buf, sizeof(r->fault_buf), t);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
