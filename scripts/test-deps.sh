#!/usr/bin/env bash
# Installs the tools some tests compare bpfsim against, from Debian's
# packages: bpftool (the xlated dump format) and GNU binutils for aarch64
# (the A64 encoder's disassembly check). Without them those tests skip
# with a message. Needs root and apt-get; does nothing when the tools are
# already there.
set -euo pipefail

missing=()
command -v bpftool >/dev/null 2>&1 || [ -x /usr/sbin/bpftool ] || missing+=(bpftool)
command -v aarch64-linux-gnu-objdump >/dev/null 2>&1 || missing+=(binutils-aarch64-linux-gnu)
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "test-deps: missing ${missing[*]}; install them as root with apt-get" >&2
	exit 1
fi
echo "test-deps: installing ${missing[*]} from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
	{ apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "${missing[@]}" >/dev/null; }
