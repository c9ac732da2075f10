// SPDX-License-Identifier: Apache-2.0
//
// btfref: a reference tool around libbpf's split-BTF functions, which
// bpfsim's Go tests exec to compare bpfsim's own distill/relocate against
// libbpf (written against libbpf v1.7.0; needs >= 1.5, where
// btf__distill_base and btf__relocate appeared). scripts/btfref.sh builds
// it and prints the binary's path.
//
// Every BTF file is a *raw* BTF blob (struct btf_header, types, strings),
// as /sys/kernel/btf/vmlinux is; a split BTF's ids and string offsets
// continue its base's.
//
// Usage:
//   btfref distill BASE SPLIT OUT_DIST_BASE OUT_NEW_SPLIT
//       btf__distill_base(SPLIT on BASE); writes the distilled base and the
//       new split (whose base is the distilled one).
//   btfref relocate DIST_BASE SPLIT NEW_BASE OUT
//       btf__relocate(SPLIT on DIST_BASE, NEW_BASE); writes the relocated
//       split (whose base is now NEW_BASE).
//   btfref bench-relocate DIST_BASE SPLIT NEW_BASE N
//       times N rounds of btf__new_split(SPLIT on DIST_BASE) +
//       btf__relocate(NEW_BASE) + btf__free -- what the kernel does at
//       module load -- and prints "ns/op <float>". The two bases are parsed
//       once, outside the timing; one untimed round first catches errors.
//
// Exit status: 0 on success; on a libbpf or I/O error the positive errno
// (22 EINVAL, 2 ENOENT, ...; capped at 255), after a line
// "btfref: <what>: <strerror> (errno <n>)" on stderr; 64 for bad usage.
// libbpf's WARN-level messages go to stderr prefixed "libbpf: "
// (BTFREF_DEBUG=1 lets INFO and DEBUG through too).

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <bpf/btf.h>
#include <bpf/libbpf.h>

#define EXIT_USAGE 64

static int debug;

static int print_fn(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level != LIBBPF_WARN && !debug)
		return 0;
	// libbpf's pr_warn() already starts its format with "libbpf: ".
	if (strncmp(fmt, "libbpf: ", 8) != 0)
		fputs("libbpf: ", stderr);
	return vfprintf(stderr, fmt, ap);
}

// fail reports err (negative or positive errno) and exits with it, so a
// test can compare libbpf's errno with bpfsim's.
static void fail(int err, const char *what, const char *arg)
{
	if (err < 0)
		err = -err;
	if (err == 0)
		err = EINVAL; // should not happen; never exit 0 on failure
	if (arg)
		fprintf(stderr, "btfref: %s %s: %s (errno %d)\n", what, arg, strerror(err), err);
	else
		fprintf(stderr, "btfref: %s: %s (errno %d)\n", what, strerror(err), err);
	exit(err > 255 ? 255 : err);
}

struct blob {
	void *data;
	size_t size;
};

static struct blob read_file(const char *path)
{
	struct blob b = {0};
	size_t cap = 0;
	FILE *f = fopen(path, "rb");

	if (!f)
		fail(errno, "open", path);
	// Read until EOF rather than trusting st_size: sysfs files such as
	// /sys/kernel/btf/vmlinux report a size, but pipes do not.
	for (;;) {
		if (b.size == cap) {
			cap = cap ? cap * 2 : 1 << 20;
			b.data = realloc(b.data, cap);
			if (!b.data)
				fail(ENOMEM, "read", path);
		}
		size_t n = fread((char *)b.data + b.size, 1, cap - b.size, f);
		b.size += n;
		if (n == 0) {
			if (ferror(f))
				fail(errno ? errno : EIO, "read", path);
			break;
		}
	}
	fclose(f);
	if (b.size > 0xffffffffu)
		fail(E2BIG, "read", path);
	return b;
}

static void write_file(const char *path, const struct btf *btf)
{
	__u32 size;
	const void *data = btf__raw_data(btf, &size);
	FILE *f;

	if (!data)
		fail(errno, "btf__raw_data for", path);
	f = fopen(path, "wb");
	if (!f)
		fail(errno, "create", path);
	if (fwrite(data, 1, size, f) != size || fclose(f) != 0)
		fail(errno ? errno : EIO, "write", path);
}

// parse parses a raw BTF blob, as split BTF on base when base is non-NULL.
// libbpf (1.0+ mode) returns NULL and sets errno on failure.
static struct btf *parse(const struct blob *b, struct btf *base, const char *path)
{
	struct btf *btf = base ? btf__new_split(b->data, b->size, base) : btf__new(b->data, b->size);

	if (!btf)
		fail(errno, base ? "btf__new_split" : "btf__new", path);
	return btf;
}

static struct btf *load(const char *path, struct btf *base)
{
	struct blob b = read_file(path);
	struct btf *btf = parse(&b, base, path);

	free(b.data); // libbpf copies the bytes
	return btf;
}

static int cmd_distill(char **argv)
{
	struct btf *base = load(argv[0], NULL);
	struct btf *split = load(argv[1], base);
	struct btf *dist = NULL, *newsplit = NULL;
	int err = btf__distill_base(split, &dist, &newsplit);

	if (err)
		fail(err, "btf__distill_base", argv[1]);
	write_file(argv[2], dist);
	write_file(argv[3], newsplit);
	btf__free(newsplit);
	btf__free(dist);
	btf__free(split);
	btf__free(base);
	return 0;
}

static int cmd_relocate(char **argv)
{
	struct btf *dist = load(argv[0], NULL);
	struct btf *split = load(argv[1], dist);
	struct btf *newbase = load(argv[2], NULL);
	int err = btf__relocate(split, newbase);

	if (err)
		fail(err, "btf__relocate", argv[1]);
	write_file(argv[3], split);
	btf__free(split);
	btf__free(newbase);
	btf__free(dist);
	return 0;
}

static int relocate_once(const struct blob *split_raw, struct btf *dist, const struct btf *newbase,
			 const char *path)
{
	struct btf *split = parse(split_raw, dist, path);
	int err = btf__relocate(split, newbase);

	btf__free(split);
	return err;
}

static int cmd_bench_relocate(char **argv)
{
	struct btf *dist = load(argv[0], NULL);
	struct blob split_raw = read_file(argv[1]);
	struct btf *newbase = load(argv[2], NULL);
	char *end;
	long n = strtol(argv[3], &end, 10);
	struct timespec t0, t1;
	int err;

	if (*argv[3] == 0 || *end != 0 || n <= 0) {
		fprintf(stderr, "btfref: bench-relocate: N must be a positive integer, not '%s'\n", argv[3]);
		return EXIT_USAGE;
	}
	// One untimed round, so an error is reported before any timing.
	err = relocate_once(&split_raw, dist, newbase, argv[1]);
	if (err)
		fail(err, "btf__relocate", argv[1]);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < n; i++) {
		err = relocate_once(&split_raw, dist, newbase, argv[1]);
		if (err)
			fail(err, "btf__relocate", argv[1]);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
	printf("ns/op %.1f\n", ns / (double)n);
	free(split_raw.data);
	btf__free(newbase);
	btf__free(dist);
	return 0;
}

static int usage(void)
{
	fputs("usage: btfref distill BASE SPLIT OUT_DIST_BASE OUT_NEW_SPLIT\n"
	      "       btfref relocate DIST_BASE SPLIT NEW_BASE OUT\n"
	      "       btfref bench-relocate DIST_BASE SPLIT NEW_BASE N\n",
	      stderr);
	return EXIT_USAGE;
}

int main(int argc, char **argv)
{
	const char *d = getenv("BTFREF_DEBUG");

	debug = d && *d && strcmp(d, "0") != 0;
	libbpf_set_print(print_fn);
	if (argc != 6)
		return usage();
	if (strcmp(argv[1], "distill") == 0)
		return cmd_distill(argv + 2);
	if (strcmp(argv[1], "relocate") == 0)
		return cmd_relocate(argv + 2);
	if (strcmp(argv[1], "bench-relocate") == 0)
		return cmd_bench_relocate(argv + 2);
	return usage();
}
