#!/usr/bin/env bash
# Builds scripts/btfref/btfref.c -- a reference tool around libbpf's
# split-BTF functions (btf__distill_base, btf__relocate) that Go tests exec
# to compare bpfsim's own implementation against libbpf -- and prints the
# binary's absolute path on stdout (nothing else; progress goes to stderr).
#
#   bin=$(scripts/btfref.sh)
#   "$bin" distill BASE SPLIT OUT_DIST_BASE OUT_NEW_SPLIT
#   "$bin" relocate DIST_BASE SPLIT NEW_BASE OUT
#   "$bin" bench-relocate DIST_BASE SPLIT NEW_BASE N    # prints "ns/op <float>"
# (all raw BTF blobs; on a libbpf error the exit status is the errno --
# see btfref.c's header).
#
# libbpf v1.7.0 is linked statically. Debian bookworm's libbpf-dev (1.1.2,
# 1.4.6 in backports) predates btf__distill_base/btf__relocate (1.5), so
# the source comes from Debian's own source package libbpf 1.7.0-N (its
# orig tarball is upstream's v1.7.0 release, sha256-pinned below), fetched
# with apt-get from Debian's unstable/testing source index into a private
# apt state: nothing in /etc/apt or /var/lib/apt is changed, root is not
# needed. It is built with libbpf's own Makefile (BUILD_STATIC_ONLY=1).
#
# The result is cached in
#   ${XDG_CACHE_HOME:-$HOME/.cache}/bpfsim/btfref-<hash of btfref.c, this
#   script's libbpf pin>/btfref
# so later runs only print the path. Needs Debian's libelf-dev, zlib1g-dev,
# pkg-config, make and a C compiler (cc, gcc or clang; $CC wins), plus
# network access to Debian's archive for the first build;
# scripts/test-deps.sh installs the packages. Exits non-zero with a message
# when something is missing, so callers can skip.
set -euo pipefail

LIBBPF_VERSION=1.7.0
LIBBPF_ORIG_SHA256=7ab5feffbf78557f626f2e3e3204788528394494715a30fc2070fcddc2051b7b
# Debian suites whose source index may carry libbpf $LIBBPF_VERSION-N.
DEBIAN_MIRROR=http://deb.debian.org/debian
DEBIAN_SUITES="sid forky"

log() { echo "btfref.sh: $*" >&2; }
die() { log "$*"; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
csrc=$here/btfref/btfref.c
[ -f "$csrc" ] || die "missing $csrc"

# Tools and packages. One line naming whatever is missing.
missing=()
cc=${CC:-}
if [ -z "$cc" ]; then
	for c in cc gcc clang; do
		if command -v "$c" >/dev/null 2>&1; then cc=$c; break; fi
	done
fi
[ -n "$cc" ] && command -v "${cc%% *}" >/dev/null 2>&1 || missing+=(gcc)
command -v make >/dev/null 2>&1 || missing+=(make)
if command -v pkg-config >/dev/null 2>&1; then
	pkg-config --exists libelf || missing+=(libelf-dev)
	pkg-config --exists zlib || missing+=(zlib1g-dev)
else
	missing+=(pkg-config)
	[ -f /usr/include/gelf.h ] || missing+=(libelf-dev)
	[ -f /usr/include/zlib.h ] || missing+=(zlib1g-dev)
fi
for t in apt-get apt-cache tar sha256sum flock; do
	command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
[ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]} (scripts/test-deps.sh installs them)"

key=$( { sha256sum <"$csrc"; echo "libbpf $LIBBPF_VERSION $LIBBPF_ORIG_SHA256"; } | sha256sum | cut -c1-12)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/bpfsim
dir=$cache/btfref-$key
bin=$dir/btfref
if [ -x "$bin" ]; then
	echo "$bin"
	exit 0
fi

mkdir -p "$cache"
# Serialise concurrent builds (parallel go test packages).
exec 9>"$cache/btfref-$key.lock"
flock 9
if [ -x "$bin" ]; then
	echo "$bin"
	exit 0
fi

start=$SECONDS
work=$(mktemp -d "$cache/btfref-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
buildlog=$work/build.log
fail() { tail -n 20 "$buildlog" >&2 2>/dev/null || true; die "$*"; }

# 1. Debian's libbpf source package, through a private apt state.
log "fetching Debian's libbpf $LIBBPF_VERSION source package"
apt=$work/apt
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$work/dl"
signed=
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] &&
	signed=" [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]"
for s in $DEBIAN_SUITES; do
	echo "deb-src$signed $DEBIAN_MIRROR $s main"
done >"$apt/sources.list"
aptopts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
	-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Debug::NoLocking=1)
# As root, apt would hand downloads to the _apt user, who cannot write here.
[ "$(id -u)" != 0 ] || aptopts+=(-o APT::Sandbox::User=root)
apt-get -q "${aptopts[@]}" update >>"$buildlog" 2>&1 || fail "apt-get update of Debian's source index failed"
ver=$(apt-cache "${aptopts[@]}" madison libbpf 2>>"$buildlog" |
	awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -E "^([0-9]+:)?${LIBBPF_VERSION//./\\.}-" | head -n 1 || true)
[ -n "$ver" ] || fail "Debian's source index has no libbpf $LIBBPF_VERSION-N any more (suites: $DEBIAN_SUITES)"
(cd "$work/dl" && apt-get -q "${aptopts[@]}" source --download-only "libbpf=$ver") >>"$buildlog" 2>&1 ||
	fail "apt-get source libbpf=$ver failed"
orig=$work/dl/libbpf_$LIBBPF_VERSION.orig.tar.gz
[ -f "$orig" ] || fail "apt-get source brought no $(basename "$orig")"
echo "$LIBBPF_ORIG_SHA256  $orig" | sha256sum -c --quiet - >&2 || fail "$orig: sha256 mismatch"

# 2. libbpf.a and its installed headers (<bpf/btf.h>), with libbpf's own
# Makefile, which finds libelf and zlib through pkg-config.
log "building libbpf $LIBBPF_VERSION (static)"
mkdir -p "$work/libbpf"
tar -xzf "$orig" -C "$work/libbpf" --strip-components=1 || fail "cannot unpack $orig"
prefix=$work/prefix
make -C "$work/libbpf/src" BUILD_STATIC_ONLY=1 OBJDIR="$work/obj" PREFIX="$prefix" \
	LIBDIR="$prefix/lib" DESTDIR= CC="$cc" -j2 install >>"$buildlog" 2>&1 || fail "building libbpf failed"

# 3. btfref itself.
log "building btfref"
# shellcheck disable=SC2046 # pkg-config's flags are meant to split
$cc -O2 -Wall -I"$prefix/include" "$csrc" "$prefix/lib/libbpf.a" $(pkg-config --libs libelf zlib) \
	-o "$work/btfref" >>"$buildlog" 2>&1 || fail "compiling btfref.c failed"
mkdir -p "$dir"
mv "$work/btfref" "$bin.tmp"
mv "$bin.tmp" "$bin"
log "built $bin in $((SECONDS - start))s"
echo "$bin"
