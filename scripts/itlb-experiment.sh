#!/usr/bin/env bash
# Reproduces the iTLB experiment of the arm64 prog pack series on the A64
# emulator's instruction-TLB model: 160 programs loaded (8 per process x
# 20; by default generated BPF programs compiled by bpfsim's arm64 JIT), 100
# triggered in a loop interleaved with other code, without packs,
# with page-mapped packs and with block-mapped packs. Prints the counters,
# misses and walks per 1,000 instructions, the reductions and the memory
# the JIT images take, then (with -sweep, the default here) how the
# reduction shrinks as other code takes more of the CPU. Extra arguments
# go to the command (see go run ./scripts/itlb-experiment -h).
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./scripts/itlb-experiment -sweep "$@"
