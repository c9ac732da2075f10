#!/usr/bin/env bash
# Compiles BPF C sources into the objects committed next to them, so that
# `go run` and `go test` never need clang.
#
#   scripts/gen-bpf.sh path/to/prog.bpf.c ...
#
# Each foo.bpf.c becomes foo.bpf.o, and foo.bpf.o.srcsum records the SHA-256
# of the source it was built from; a test fails when a source changes
# without its object being rebuilt. clang comes from Debian's packages when
# it is missing (needs root and the package mirror).
set -euo pipefail

if ! command -v clang >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "gen-bpf: installing clang from Debian's packages" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang llvm >/dev/null
	else
		echo "gen-bpf: clang is not installed; install it (Debian: apt-get install clang llvm)" >&2
		exit 1
	fi
fi

for src in "$@"; do
	obj="${src%.c}.o"
	clang -O2 -g -target bpf -mcpu=v3 -Wall -Werror -c "$src" -o "$obj"
	# Keep the object small and free of this machine's paths.
	llvm-strip -g "$obj" 2>/dev/null || true
	sha256sum "$src" | cut -d' ' -f1 > "$obj.srcsum"
	echo "gen-bpf: $src -> $obj"
done
