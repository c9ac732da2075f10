#!/usr/bin/env bash
# Installs Debian's qemu-user (user-mode emulation; the A64 differential
# tests of jit_arm64/native run code under qemu-aarch64) and prints the
# path of qemu-aarch64. Idempotent: prints the path at once when it is
# already installed. Needs root and apt-get otherwise; fails with a message
# on stderr and a non-zero status when it cannot install (the tests then
# skip and say why). No binfmt registration: the tests call qemu-aarch64
# by path.
set -euo pipefail

find_qemu() {
	local p
	for p in qemu-aarch64 qemu-aarch64-static; do
		if command -v "$p" >/dev/null 2>&1; then
			command -v "$p"
			return 0
		fi
	done
	return 1
}

if find_qemu; then
	exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "qemu-user: qemu-aarch64 is not installed; install Debian's qemu-user as root with apt-get" >&2
	exit 1
fi
echo "qemu-user: installing qemu-user from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
install() {
	apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
}
# qemu-user is the smaller package (12 MB against 60 MB for the static
# build); the static one is the fallback where it is the only candidate.
install qemu-user || install qemu-user-static ||
	{ apt-get update -qq >/dev/null 2>&1 && { install qemu-user || install qemu-user-static; }; } || {
	echo "qemu-user: apt-get could not install qemu-user or qemu-user-static" >&2
	exit 1
}
if ! find_qemu; then
	echo "qemu-user: installed, but no qemu-aarch64 on PATH" >&2
	exit 1
fi
