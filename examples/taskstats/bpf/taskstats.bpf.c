// SPDX-License-Identifier: GPL-2.0
/*
 * taskstats: per-task counters in task local storage, listed by a task
 * iterator (examples/taskstats).
 *
 * count runs at every system call a task makes (a raw tracepoint) and
 * counts it in the task's own value of a BPF_MAP_TYPE_TASK_STORAGE map,
 * which bpf_task_storage_get makes the first time (..._GET_F_CREATE).
 * The value lives as long as the task: when the task exits, the kernel
 * drops it, with no map update from anyone.
 *
 * dump is a task iterator (SEC("iter/task")): reading it walks every live
 * task, and for each one that has a value it writes a record with the
 * task's ids, name and counters. task_struct's fields are reached through
 * CO-RE (preserve_access_index), so the same object runs on bpfsim's
 * kernel and on Linux.
 *
 * Self-contained: no libbpf headers. Rebuild with: go generate ./examples/taskstats
 */
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

enum {
	BPF_MAP_TYPE_TASK_STORAGE = 29,
	BPF_F_NO_PREALLOC = 1,
	BPF_LOCAL_STORAGE_GET_F_CREATE = 1,
};

#define TASK_COMM_LEN 16

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)
struct task_struct {
	int pid;
	int tgid;
	char comm[TASK_COMM_LEN];
};
struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
};
struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
};
#pragma clang attribute pop

static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static void *(*bpf_task_storage_get)(void *map, struct task_struct *task, void *value, __u64 flags) = (void *)156;
static struct task_struct *(*bpf_get_current_task_btf)(void) = (void *)158;
static long (*bpf_seq_write)(struct seq_file *m, const void *data, __u32 len) = (void *)127;

/* A task's counters. */
struct stats {
	__u64 calls;
	__u64 first_ns; /* when it made its first call */
	__u64 last_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct stats);
} task_stats SEC(".maps");

SEC("raw_tp/sys_enter")
int count(void *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct stats *s;
	__u64 now = bpf_ktime_get_ns();

	s = bpf_task_storage_get(&task_stats, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!s)
		return 0;
	if (!s->calls)
		s->first_ns = now;
	s->calls++;
	s->last_ns = now;
	return 0;
}

/* What dump writes for each task that has counters. */
struct record {
	__s32 pid;
	__s32 tgid;
	char comm[TASK_COMM_LEN];
	struct stats stats;
};

SEC("iter/task")
int dump(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	struct record r;
	struct stats *s;

	if (!task)
		return 0; /* the walk's end */
	s = bpf_task_storage_get(&task_stats, task, 0, 0);
	if (!s)
		return 0; /* a task that made no call */
	r.pid = task->pid;
	r.tgid = task->tgid;
	__builtin_memcpy(r.comm, task->comm, TASK_COMM_LEN);
	r.stats = *s;
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
