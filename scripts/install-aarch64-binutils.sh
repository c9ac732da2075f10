#!/usr/bin/env bash
# Installs GNU binutils for AArch64 (aarch64-linux-gnu-objdump) from
# Debian's binutils-aarch64-linux-gnu package, so that the A64 encoder's
# tests (jit_arm64/a64) can disassemble every encoding with GNU objdump as
# well as with Go's arm64asm. Needs root and apt-get; does nothing when the
# tool is already there. Exits non-zero (and the test skips with a
# message) when it cannot install.
set -euo pipefail

tool=aarch64-linux-gnu-objdump
pkg=binutils-aarch64-linux-gnu
if command -v "$tool" >/dev/null 2>&1; then
	exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "install-aarch64-binutils: $tool missing; install $pkg as root with apt-get" >&2
	exit 1
fi
echo "install-aarch64-binutils: installing $pkg from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "$pkg" >/dev/null 2>&1 ||
	{ apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$pkg" >/dev/null; }
command -v "$tool" >/dev/null 2>&1
