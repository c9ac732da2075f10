#!/usr/bin/env bash
# Installs the tools some tests compare bpfsim against, from Debian's
# packages: bpftool (the xlated dump format), GNU binutils for aarch64
# (the A64 encoder's disassembly check), qemu-user (qemu-aarch64 runs
# A64 code natively for jit_arm64/native) and clang (the vmlinux.h that
# `bpfsim btf dump` writes must compile to the types it describes). Without them those tests skip
# with a message. Needs root and apt-get; does nothing when the tools are
# already there.
set -euo pipefail

missing=()
command -v bpftool >/dev/null 2>&1 || [ -x /usr/sbin/bpftool ] || missing+=(bpftool)
command -v aarch64-linux-gnu-objdump >/dev/null 2>&1 || missing+=(binutils-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null 2>&1 || command -v qemu-aarch64-static >/dev/null 2>&1 || missing+=(qemu-user)
command -v clang >/dev/null 2>&1 || missing+=(clang)
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
