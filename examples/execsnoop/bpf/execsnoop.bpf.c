// SPDX-License-Identifier: GPL-2.0
/*
 * execsnoop: an event for every execve, in the spirit of bcc's and
 * libbpf-tools' execsnoop, on bpfsim's simulated kernel (examples/execsnoop).
 *
 * The program runs on the syscalls:sys_enter_execve tracepoint. Its
 * context is the tracepoint's record, whose filename and argv fields are
 * pointers into the calling process's memory: bpf_probe_read_user and
 * bpf_probe_read_user_str follow them. Who called comes from the
 * bpf_get_current_* helpers, and the parent's pid from the task_struct,
 * through CO-RE: struct task_struct below is declared as vmlinux.h
 * declares it (preserve_access_index), with only the fields used, so its
 * offsets are whatever the running kernel's are, bpfsim's or Linux's.
 *
 * Each event goes to user space through a ring buffer; a per-command
 * counter sits in a hash map.
 *
 * Self-contained: no libbpf headers. Rebuild with: go generate ./examples/execsnoop
 */
typedef unsigned char __u8;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_RINGBUF = 27,
	BPF_ANY = 0,
};

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static __u64 (*bpf_get_current_uid_gid)(void) = (void *)15;
static long (*bpf_get_current_comm)(void *buf, __u32 size) = (void *)16;
static __u64 (*bpf_get_current_task)(void) = (void *)35;
static long (*bpf_probe_read_user)(void *dst, __u32 size, const void *src) = (void *)112;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *src) = (void *)113;
static long (*bpf_probe_read_user_str)(void *dst, __u32 size, const void *src) = (void *)114;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)132;

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)
struct task_struct {
	int tgid;
	struct task_struct *real_parent;
};
#pragma clang attribute pop

/* The tracepoint's record (/sys/kernel/tracing/events/syscalls/
 * sys_enter_execve/format): fixed by the tracepoint, not by BTF. */
struct sys_enter_execve {
	__u8 common[8];
	__s32 syscall_nr;
	__u32 pad;
	const char *filename;
	const char *const *argv;
	const char *const *envp;
};

#define TASK_COMM_LEN 16
#define FILENAME_LEN 64
#define ARG_LEN 32

struct event {
	__u32 pid;
	__u32 ppid;
	__u32 uid;
	__s32 filename_len; /* bpf_probe_read_user_str's result */
	char comm[TASK_COMM_LEN];
	char filename[FILENAME_LEN];
	char arg1[ARG_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} events SEC(".maps");

/* Executions per calling command. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, char[TASK_COMM_LEN]);
	__type(value, __u64);
} execs SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_execve")
int execsnoop(struct sys_enter_execve *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *parent = 0;
	const char *arg1 = 0;
	struct event *e;
	__u64 one = 1, *n;
	char comm[TASK_COMM_LEN];

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->uid = (__u32)bpf_get_current_uid_gid();
	bpf_probe_read_kernel(&parent, sizeof(parent), &task->real_parent);
	bpf_probe_read_kernel(&e->ppid, sizeof(e->ppid), &parent->tgid);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->filename_len = bpf_probe_read_user_str(e->filename, sizeof(e->filename), ctx->filename);
	/* argv[1], if there is one: a pointer in user memory, then its string. */
	e->arg1[0] = 0;
	if (bpf_probe_read_user(&arg1, sizeof(arg1), &ctx->argv[1]) == 0 && arg1)
		bpf_probe_read_user_str(e->arg1, sizeof(e->arg1), arg1);
	bpf_get_current_comm(comm, sizeof(comm));
	bpf_ringbuf_submit(e, 0);

	n = bpf_map_lookup_elem(&execs, comm);
	if (n)
		*n += 1;
	else
		bpf_map_update_elem(&execs, comm, &one, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
