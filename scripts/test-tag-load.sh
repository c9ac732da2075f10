#!/usr/bin/env bash
# Loads the 40,945 programs of the kernel selftest test_tag (socket
# filters of 2 to 4,096 instructions, five of each length and kind)
# through bpfsim's whole load path with the arm64 JIT and prog packs, then
# with the interpreter, then through this machine's kernel when it can
# load BPF programs (root), each program closed after loading, and prints
# the time of each run (ns/op is per program). Extra arguments go to
# go test (e.g. -count 3).
set -euo pipefail
cd "$(dirname "$0")/.."
exec go test ./sim -run '^$' -bench '^BenchmarkTestTagLoad$' -benchtime 40945x "$@"
