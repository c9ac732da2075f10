// SPDX-License-Identifier: GPL-2.0
/*
 * exitsnoop: an event for every task that exits, with its age, in the
 * spirit of libbpf-tools' exitsnoop, on BTF tracepoints
 * (examples/exitsnoop).
 *
 * Two tp_btf programs: task_newtask notes when each task starts, by its
 * thread id; sched_process_exit finds the note when the task exits and
 * sends an event through a ring buffer. A tp_btf program's context is
 * the tracepoint's arguments, typed by the kernel's BTF: the task is a
 * trusted struct task_struct pointer the program reads field by field,
 * with no bpf_probe_read_kernel. struct task_struct below is declared as
 * vmlinux.h declares it (preserve_access_index), with only the fields
 * used, so the offsets are the running kernel's, bpfsim's or Linux's.
 *
 * The age is also given in ticks of the kernel's clock, with CONFIG_HZ
 * read from the kernel's configuration through a .kconfig extern, which
 * the loader fills in from the running kernel.
 *
 * targ_ppid, a constant set before loading (0: every task), keeps only
 * the children of one process, as exitsnoop's --pid does.
 *
 * Self-contained: no libbpf headers. Rebuild with: go generate ./examples/exitsnoop
 */
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __kconfig __attribute__((section(".kconfig")))

enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_RINGBUF = 27,
	BPF_ANY = 0,
};

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)132;

#define TASK_COMM_LEN 16

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)
struct task_struct {
	int pid;
	int tgid;
	struct task_struct *real_parent;
	char comm[TASK_COMM_LEN];
};
#pragma clang attribute pop

extern int CONFIG_HZ __kconfig;

const volatile __u32 targ_ppid = 0;

char LICENSE[] SEC("license") = "GPL";

struct event {
	__u64 age_ns;
	__u64 age_ticks;
	__u32 pid;  /* the process (tgid) */
	__u32 tid;  /* the task */
	__u32 ppid; /* the parent process */
	__u32 group_dead; /* the last task of its process */
	char comm[TASK_COMM_LEN];
};

/* When each task started, by thread id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, __u64);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} events SEC(".maps");

SEC("tp_btf/task_newtask")
int handle_newtask(__u64 *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx[0];
	__u32 tid = task->pid;
	__u64 now = bpf_ktime_get_ns();

	bpf_map_update_elem(&start, &tid, &now, BPF_ANY);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int handle_exit(__u64 *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx[0];
	__u32 group_dead = (_Bool)ctx[1];
	__u32 tid = task->pid;
	__u32 ppid = task->real_parent->tgid;
	struct event *e;
	__u64 *started;

	started = bpf_map_lookup_elem(&start, &tid);
	if (!started)
		return 0; /* it started before we watched */
	if (targ_ppid && ppid != targ_ppid)
		goto done;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		goto done;
	e->age_ns = bpf_ktime_get_ns() - *started;
	e->age_ticks = e->age_ns * CONFIG_HZ / 1000000000;
	e->pid = task->tgid;
	e->tid = tid;
	e->ppid = ppid;
	e->group_dead = group_dead;
	__builtin_memcpy(e->comm, task->comm, TASK_COMM_LEN);
	bpf_ringbuf_submit(e, 0);
done:
	bpf_map_delete_elem(&start, &tid);
	return 0;
}
