#!/usr/bin/env bash
# Installs the tools some tests compare bpfsim against, from Debian's
# packages: bpftool (the xlated dump format), GNU binutils for aarch64
# (the A64 encoder's disassembly check), qemu-user (qemu-aarch64 runs
# A64 code natively for jit_arm64/native) and clang (the vmlinux.h that
# `bpfsim btf dump` writes must compile to the types it describes), and
# what scripts/btfref.sh needs to build libbpf v1.7.0 statically as the
# reference for split BTF (btf__distill_base, btf__relocate): pkg-config,
# libelf-dev, zlib1g-dev, make and a C compiler. Without them those tests skip
# with a message. Needs root and apt-get; does nothing when the tools are
# already there.
set -euo pipefail

missing=()
command -v bpftool >/dev/null 2>&1 || [ -x /usr/sbin/bpftool ] || missing+=(bpftool)
command -v aarch64-linux-gnu-objdump >/dev/null 2>&1 || missing+=(binutils-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null 2>&1 || command -v qemu-aarch64-static >/dev/null 2>&1 || missing+=(qemu-user)
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists libelf 2>/dev/null || [ -f /usr/include/gelf.h ] || missing+=(libelf-dev)
pkg-config --exists zlib 2>/dev/null || [ -f /usr/include/zlib.h ] || missing+=(zlib1g-dev)
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "test-deps: missing ${missing[*]}; install them as root with apt-get" >&2
	exit 1
fi
echo "test-deps: installing ${missing[*]} from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
	{ apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
