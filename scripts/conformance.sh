#!/usr/bin/env bash
# Runs the bpf_conformance suite (github.com/Alan-Jowett/bpf_conformance)
# against `bpfsim plugin`. Build the suite's runner yourself, following its
# README, outside this repository; then:
#
#   scripts/conformance.sh RUNNER TESTS-DIR [runner options...]
#
# e.g. scripts/conformance.sh ~/src/bpf_conformance/build/bin/bpf_conformance_runner \
#        ~/src/bpf_conformance/tests --cpu_version v4
set -euo pipefail
if [ $# -lt 2 ]; then
	sed -n '2,10p' "$0" >&2
	exit 2
fi
runner=$1 tests=$2
shift 2
cd "$(dirname "$0")/.."
bin=$(mktemp -d)/bpfsim
trap 'rm -rf "$(dirname "$bin")"' EXIT
go build -o "$bin" ./cmd/bpfsim
# The plugin's own options (e.g. --plugin_options "plugin --jit") replace
# the default; the runner accepts the option once.
opts=(--plugin_options plugin)
for a in "$@"; do
	if [ "$a" = --plugin_options ]; then
		opts=()
	fi
done
"$runner" --test_file_directory "$tests" --plugin_path "$bin" "${opts[@]}" "$@"
