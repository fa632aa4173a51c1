#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Stock-kernel matrix: boots current Debian bookworm kernels in QEMU (TCG) with a
# busybox initramfs holding the static toa-probe, the test TOA module built for
# that kernel and the guest test programs, then turns the guest's PASS/FAIL lines
# into a table (kernel x mode x TOA source). Exit status: 0 only if every
# expected check passed on every kernel.
#
#   bash test/kernels/run-matrix.sh [--arch amd64|arm64]   # or: npm run test:kernels[:arm64]
#     --arch arm64  Debian's arm64 kernels under qemu-system-aarch64 (-M virt -cpu cortex-a57,
#                   TCG) with cross-built guest programs (needs scripts/setup.sh --for arm64)
# Environment:
#   TOA_KERNELS_ARCH=arm64  same as --arch arm64 (default: this machine's arch)
#   TOA_PROBE_STATIC=path   statically linked toa-probe to test (default: built here with
#                           cmake -DTOA_STATIC=ON into build/kernels-static)
#   TOA_KERNELS_SMOKE_ONLY=1  run only the kernel/module checks (no toa-probe needed)
#   TOA_KERNELS="6.1 6.12"  subset of the kernel list below, by label
#   TOA_KERNELS_TIMEOUT=s   per-boot timeout (default 300; 900 for arm64)
#   TOA_KERNELS_JOBS=n      kernels booted in parallel (default 1; 2 when CI is set)
# Everything downloaded or built lives in .cache/kernels/ (.cache/kernels-arm64/ for arm64;
# ignored by git).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/test/kernels
T0=$(date +%s)

KARCH=${TOA_KERNELS_ARCH:-host}
# (sourced as a library by test/install/run-guest.sh: its arguments are not ours)
[ -n "${TOA_KERNELS_LIB:-}" ] && set --
while [ $# -gt 0 ]; do
	case $1 in
	--arch) KARCH=${2:-}; shift 2 ;;
	--arch=*) KARCH=${1#--arch=}; shift ;;
	*) echo "run-matrix: unknown argument '$1' (use --arch amd64|arm64)" >&2; exit 2 ;;
	esac
done
# shellcheck source=scripts/arch.sh
. "$ROOT/scripts/arch.sh"
resolve_arch "$KARCH" || exit 2
CC=${CROSS:+$CROSS-}gcc
if [ "$ARCH" = amd64 ]; then CACHE=$ROOT/.cache/kernels; else CACHE=$ROOT/.cache/kernels-$ARCH; fi
# an emulated arm64 guest runs the same checks 3-5x slower than an x86 one under TCG
BOOT_TIMEOUT=${TOA_KERNELS_TIMEOUT:-$([ "$ARCH" = amd64 ] && echo 300 || echo 900)}

# The kernel list: one place to extend. "label|how to find the image package|expectations":
#   dep:PKG       the linux-image package that meta-package PKG depends on
#   latest:REGEX  the newest package name matching REGEX (sorted by version)
#   fexit=refused the kernel has no BPF trampolines (arm64 6.1: no
#                 CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS): fexit must be refused with
#                 ENOTRAMP, auto must pick kretprobe, and the rewrite checks run in kretprobe mode
case $ARCH in
amd64) KERNELS=(
	"6.1|dep:linux-image-amd64|"
	"6.12|latest:^linux-image-6\.12\.[0-9]+\+deb12-amd64$|"
) ;;
arm64) KERNELS=(
	"6.1|dep:linux-image-arm64|fexit=refused"
	"6.12|latest:^linux-image-6\.12\.[0-9]+\+deb12-arm64$|"
) ;;
esac

log() { printf '[kernels %3ss] %s\n' $(( $(date +%s) - T0 )) "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------- host tools ----------
APT_UPDATED=
apt_install() {
	[ "$(id -u)" = 0 ] || die "missing packages: $* (run as root, or apt-get install them)"
	if [ -z "$APT_UPDATED" ]; then
		log "apt-get update"
		apt-get update -qq || die "apt-get update failed"
		APT_UPDATED=1
	fi
	log "installing $*"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
		die "apt-get install $* failed"
}
ensure_tools() {
	local want=() cmd pkg
	# command:package (busybox must be the static one: it is the guest's userland)
	local tools=(cpio:cpio pahole:dwarves make:make gcc-12:gcc-12 clang:clang bpftool:bpftool xz:xz-utils)
	if [ "$ARCH" = amd64 ]; then
		tools+=(qemu-system-x86_64:qemu-system-x86)
		[ -x /bin/busybox ] && file_is_static /bin/busybox || want+=(busybox-static)
	else
		# the arm64 busybox-static conflicts with the amd64 one: it is downloaded, not installed
		tools+=(qemu-system-aarch64:qemu-system-arm "$CROSS-gcc-12:gcc-12-$CROSS" "$CROSS-gcc:gcc-$CROSS")
	fi
	for pair in "${tools[@]}"; do
		cmd=${pair%%:*} pkg=${pair#*:}
		command -v "$cmd" >/dev/null || want+=("$pkg")
	done
	for lib in libbpf.a:libbpf-dev libelf.a:libelf-dev libz.a:zlib1g-dev libc.a:libc6-dev; do
		[ -e "/usr/lib/$TRIPLET/${lib%%:*}" ] || want+=("${lib#*:}${CROSS:+:$ARCH}")
	done
	[ ${#want[@]} -eq 0 ] || apt_install "${want[@]}"
	command -v apt-get >/dev/null || die "apt-get not found: this script needs a Debian bookworm host"
}
file_is_static() { ! LC_ALL=C readelf -l "$1" 2>/dev/null | grep -q 'Requesting program interpreter'; }

# ---------- kernels ----------
apt_lists_ready() {
	# apt-cache answers from the lists; on a fresh machine they may be empty
	if [ -z "$APT_UPDATED" ] && ! apt-cache show "linux-image-$ARCH" >/dev/null 2>&1; then
		[ "$(id -u)" = 0 ] || die "apt lists are empty: run apt-get update as root"
		log "apt-get update"; apt-get update -qq || die "apt-get update failed"; APT_UPDATED=1
	fi
}
resolve_image_pkg() { # spec -> package name
	local spec=$1
	case $spec in
	dep:*) apt-cache depends --important "${spec#dep:}" 2>/dev/null | sed 's/[<>]//g; s/:[a-z0-9]*$//' |
		awk '$1=="Depends:" && $2 ~ /^linux-image-/ {print $2; exit}' ;;
	latest:*) apt-cache pkgnames linux-image- 2>/dev/null | grep -E "${spec#latest:}" | sort -V | tail -n 1 ;;
	*) die "unknown kernel spec $spec" ;;
	esac
}
fetch() { # download packages into the cache unless already there
	local need=() p
	mkdir -p "$CACHE/debs"
	for p in "$@"; do
		ls "$CACHE/debs/${p%:*}_"*.deb >/dev/null 2>&1 || need+=("$p")
	done
	[ ${#need[@]} -eq 0 ] && return 0
	log "apt-get download ${need[*]}"
	(cd "$CACHE/debs" && apt-get download -q -o APT::Sandbox::User=root "${need[@]}" >/dev/null)
}
deb_of() { ls -t "$CACHE/debs/${1}_"*.deb | head -n 1; }

# prepare_kernel LABEL SPEC: sets KVER and fills $CACHE/$KVER/{vmlinuz,veth.ko,root/}
prepare_kernel() {
	local label=$1 spec=$2 img hdr deps d dir try
	for try in 1 2; do
		img=$(resolve_image_pkg "$spec")
		[ -n "$img" ] || die "no package found for kernel $label ($spec); is apt-get update done?"
		KVER=${img#linux-image-}
		hdr=linux-headers-$KVER
		# headers need their -common tree and the kbuild tools to build a module
		# (a foreign arch's dependencies are listed as <name:arch>)
		deps=$(apt-cache depends --important "$hdr" | sed 's/[<>]//g; s/:[a-z0-9]*$//' |
			awk '$1 ~ /Depends:/ && $2 ~ /^linux-(headers-.*-common|kbuild-)/ {print $2}' | sort -u)
		[ -n "$deps" ] || die "cannot resolve dependencies of $hdr"
		# kbuild holds host programs (fixdep, modpost): this machine's arch, also for a cross build
		fetch "$img" "$hdr" $(for d in $deps; do case $d in linux-kbuild-*) echo "$d:$(dpkg --print-architecture)" ;; *) echo "$d" ;; esac; done) && break
		# old lists name versions the archive no longer has: refresh once, resolve again
		[ $try = 1 ] && [ -z "$APT_UPDATED" ] && [ "$(id -u)" = 0 ] ||
			die "apt-get download failed for kernel $label ($img)"
		log "download failed: apt-get update and retry"
		apt-get update -qq || die "apt-get update failed"
		APT_UPDATED=1
	done
	USED_PKGS+=" $img $hdr $(echo $deps) "
	dir=$CACHE/$KVER
	if [ ! -f "$dir/.extracted" ]; then
		log "$label: extracting $KVER"
		rm -rf "$dir"; mkdir -p "$dir/root"
		dpkg-deb --fsys-tarfile "$(deb_of "$img")" |
			tar -x -C "$dir/root" --wildcards "./boot/vmlinuz-*" "./lib/modules/*/kernel/drivers/net/veth.ko*"
		mv "$dir/root/boot/vmlinuz-$KVER" "$dir/vmlinuz"
		d=$(find "$dir/root/lib/modules" -name 'veth.ko*' | head -n 1)
		case $d in *.xz) xz -dc "$d" > "$dir/veth.ko" ;; *) cp "$d" "$dir/veth.ko" ;; esac
		rm -rf "$dir/root/boot" "$dir/root/lib"
		for d in "$hdr" $deps; do dpkg-deb -x "$(deb_of "$d")" "$dir/root"; done
		# the arch Makefile includes the -common tree by absolute path: point it into the cache
		sed -i "s#include /usr/src/#include $dir/root/usr/src/#" "$dir/root/usr/src/$hdr/Makefile"
		touch "$dir/.extracted"
	fi
	HEADERS=$dir/root/usr/src/$hdr
}

build_module() { # into $CACHE/$KVER/kmod/toa_test.ko
	local b=$CACHE/$KVER/kmod
	if [ -f "$b/toa_test.ko" ] && [ "$b/toa_test.ko" -nt "$HERE/kmod/toa_test.c" ] && [ "$b/toa_test.ko" -nt "$HERE/kmod/Kbuild" ]; then
		return 0
	fi
	log "$KVER: building toa_test.ko"
	rm -rf "$b"; mkdir -p "$b"; cp "$HERE/kmod/Kbuild" "$HERE/kmod/toa_test.c" "$b/"
	local cross=()
	[ -n "$CROSS" ] && cross=(ARCH=$ARCH CROSS_COMPILE=$CROSS-)
	make -s -C "$HEADERS" M="$b" "${cross[@]}" modules > "$b/build.log" 2>&1 || { cat "$b/build.log" >&2; die "module build failed for $KVER"; }
}

# ---------- guest programs (kernel independent) ----------
build_guest() {
	local g=$CACHE/guest src=$HERE/guest
	mkdir -p "$g"
	if [ ! -x "$g/kt" ] || [ "$src/kt.c" -nt "$g/kt" ]; then
		log "building guest programs"
		$CC -static -O2 -Wall -o "$g/kt" "$src/kt.c"
	fi
	if [ ! -x "$g/toa-writer" ] || [ "$src/toa_writer.c" -nt "$g/toa-writer" ] || [ "$src/toa_writer.bpf.c" -nt "$g/toa-writer" ]; then
		log "building guest TOA writer"
		clang -g -O2 -target bpf -I/usr/include/$TRIPLET -c "$src/toa_writer.bpf.c" -o "$g/toa_writer.bpf.o"
		bpftool gen object "$g/toa_writer.stripped.o" "$g/toa_writer.bpf.o"
		bpftool gen skeleton "$g/toa_writer.stripped.o" name toa_writer_bpf > "$g/toa_writer.skel.h"
		# static glibc warns about NSS functions libbpf never calls here
		$CC -static -O2 -Wall -I"$g" -o "$g/toa-writer" "$src/toa_writer.c" -lbpf -lelf -lz 2> "$g/writer-link.log" ||
			{ cat "$g/writer-link.log" >&2; die "toa-writer link failed"; }
	fi
	# the guest's userland: this machine's static busybox, or the target arch's from its package
	if [ -n "$CROSS" ]; then
		if [ ! -x "$g/busybox" ]; then
			fetch "busybox-static:$ARCH"
			dpkg-deb --fsys-tarfile "$(deb_of busybox-static)" | tar -xO ./bin/busybox > "$g/busybox"
			chmod +x "$g/busybox"
		fi
		BUSYBOX=$g/busybox
	else
		BUSYBOX=/bin/busybox
	fi
}

# ---------- toa-probe (static) ----------
PROBE=
find_probe() {
	[ -n "${TOA_KERNELS_SMOKE_ONLY:-}" ] && { log "TOA_KERNELS_SMOKE_ONLY set: kernel and module checks only"; return 0; }
	if [ -n "${TOA_PROBE_STATIC:-}" ]; then
		PROBE=$TOA_PROBE_STATIC
	else
		# incremental, so a stale binary never gets tested
		local bdir=$ROOT/build/kernels-static${CROSS:+-$ARCH} tc=()
		[ -n "$CROSS" ] && tc=(-DCMAKE_TOOLCHAIN_FILE="$ROOT/cmake/toolchain-$ARCH.cmake")
		log "building static toa-probe (cmake -DTOA_STATIC=ON ${tc[*]} in ${bdir#$ROOT/})"
		PROBE=$bdir/toa-probe
		{ cmake -S "$ROOT" -B "$bdir" -DTOA_STATIC=ON -DCMAKE_BUILD_TYPE=Release "${tc[@]}" &&
			cmake --build "$bdir" --target toa-probe toa-merge-hammer -j2; } > "$CACHE/probe-build.log" 2>&1 ||
			{ tail -n 30 "$CACHE/probe-build.log" >&2; die "static toa-probe build failed (log: $CACHE/probe-build.log)"; }
	fi
	[ -x "$PROBE" ] || die "no static toa-probe at $PROBE: build it with cmake -DTOA_STATIC=ON (or set TOA_PROBE_STATIC, or TOA_KERNELS_SMOKE_ONLY=1 for kernel/module checks only)"
	file_is_static "$PROBE" || die "$PROBE is dynamically linked: the guest has no libc; build with -DTOA_STATIC=ON"
}

# ---------- initramfs ----------
build_initramfs() { # -> $CACHE/$KVER/initramfs.cpio.gz
	local s=$CACHE/$KVER/initramfs g=$CACHE/guest n
	rm -rf "$s"; mkdir -p "$s"/{bin,dev,proc,sys,tmp,etc,lib/modules}
	cp "$BUSYBOX" "$s/bin/busybox"
	cp "$HERE/guest/init" "$s/init"; chmod +x "$s/init"
	cp "$HERE/guest/checks.sh" "$s/checks.sh"
	for n in tsrv tcli bpflinks; do cp "$g/kt" "$s/bin/$n"; done
	cp "$g/toa-writer" "$s/bin/toa-writer"
	cp "$CACHE/$KVER/kmod/toa_test.ko" "$CACHE/$KVER/veth.ko" "$s/lib/modules/"
	if [ -n "$PROBE" ]; then
		cp "$PROBE" "$s/bin/toa-probe"
		# the merge-claim race tool, built next to toa-probe (absent: its checks fail saying so)
		[ -x "$(dirname "$PROBE")/toa-merge-hammer" ] && cp "$(dirname "$PROBE")/toa-merge-hammer" "$s/bin/"
		cp "$HERE/guest/checks-probe.sh" "$s/checks-probe.sh"
	fi
	(cd "$s" && find . | cpio -o -H newc --quiet | gzip -1) > "$CACHE/$KVER/initramfs.cpio.gz"
}

# ---------- expected checks ----------
# expected_checks EXPECTATIONS: the check names this kernel must pass
expected_checks() {
	case $1 in
	*fexit=refused*)
		# no trampolines: every fexit check becomes the one refusal check; auto and the
		# rewrite checks run with the kretprobe instead
		all_checks | sed -e '/^fexit\//d' -e 's#^rewrite/fexit/#rewrite/kretprobe/#' \
			-e 's#^auto/-/picks-fexit$#auto/-/picks-kretprobe#'
		[ -n "$PROBE" ] && echo fexit/-/refused
		;;
	*) all_checks ;;
	esac
	return 0
}
all_checks() {
	cat <<-EOF
	smoke/kernel/btf
	smoke/kernel/kprobe-target
	smoke/module/load
	smoke/net/setup
	smoke/module/v4-stored
	smoke/module/v6-stored
	smoke/module/v6-freed
	smoke/module/no-toa
	smoke/module/unload
	EOF
	[ -n "$PROBE" ] && grep -oE '^# expect [^ ]+' "$HERE/guest/checks-probe.sh" | awk '{print $3}'
	return 0
}

# boot LABEL EXPECTATIONS [early] -> $CACHE/$KVER/console.log, results ($CACHE/$KVER/early/ for
# "early": 2 vCPUs and toa_checks=early, where only the forced early-accept checks run)
boot() {
	local label=$1 expect=$2 dir=$CACHE/$KVER t rc=0 qemu console env= smp=1
	if [ "${3:-}" = early ]; then
		dir=$CACHE/$KVER/early smp=2 env=toa_checks=early
		mkdir -p "$dir"
		ln -sf ../vmlinuz "$dir/vmlinuz"; ln -sf ../initramfs.cpio.gz "$dir/initramfs.cpio.gz"
	fi
	t=$(date +%s)
	case $ARCH in
	amd64) qemu=(qemu-system-x86_64) console=ttyS0 ;;
	# cortex-a57: 3-4x faster under TCG than -cpu max, and enough for Debian's arm64 kernels
	arm64) qemu=(qemu-system-aarch64 -M virt -cpu cortex-a57) console=ttyAMA0 ;;
	esac
	# the guest reads its expectations from its environment (the kernel hands unknown
	# name=value parameters to /init)
	case $expect in *fexit=refused*) env="$env TOA_FEXIT=refused" ;; esac
	log "$label: booting $KVER with $smp vCPU (TCG, timeout ${BOOT_TIMEOUT}s)"
	timeout --kill-after=10 "$BOOT_TIMEOUT" "${qemu[@]}" -accel tcg -smp $smp -m 1024 -nographic -no-reboot -nic none \
		-kernel "$dir/vmlinuz" -initrd "$dir/initramfs.cpio.gz" \
		-append "console=$console panic=-1 oops=panic quiet $env" < /dev/null > "$dir/console.log" 2>&1 || rc=$?
	tr -d '\r' < "$dir/console.log" | grep -E '^(PASS|FAIL) ' > "$dir/results" || true
	echo "$(( $(date +%s) - t ))" > "$dir/seconds"
	[ $rc -eq 124 ] && log "$label: QEMU timed out after ${BOOT_TIMEOUT}s (console: $dir/console.log)"
	grep -q '^GUEST done' <(tr -d '\r' < "$dir/console.log") || log "$label: guest did not finish (console: $dir/console.log)"
	log "$label: $(grep -c '^PASS' "$dir/results" || true) passed, $(grep -c '^FAIL' "$dir/results" || true) failed in $(cat "$dir/seconds")s"
}

# ---------- main ----------
# sourced with TOA_KERNELS_LIB=1 (test/install/run-guest.sh): the functions above only
if [ -n "${TOA_KERNELS_LIB:-}" ]; then return 0; fi
ensure_tools
apt_lists_ready
mkdir -p "$CACHE"
build_guest
find_probe

SELECT=${TOA_KERNELS:-}
LABELS=() KVERS=() EXPECTS=() USED_PKGS=" busybox-static "
for k in "${KERNELS[@]}"; do
	IFS='|' read -r label spec expect <<< "$k"
	if [ -n "$SELECT" ] && ! grep -qw -- "$label" <<< "$SELECT"; then continue; fi
	prepare_kernel "$label" "$spec"
	build_module
	build_initramfs
	LABELS+=("$label") KVERS+=("$KVER") EXPECTS+=("$expect")
done
[ ${#LABELS[@]} -gt 0 ] || die "no kernel selected (TOA_KERNELS=$SELECT)"

# a full run drops kernels the archive has moved past, so the cache stays bounded
if [ -z "$SELECT" ]; then
	for d in "$CACHE"/*/; do
		d=${d%/}; k=${d##*/}
		[ -f "$d/.extracted" ] && ! grep -qxF "$k" <(printf '%s\n' "${KVERS[@]}") && { log "pruning old kernel $k"; rm -rf "$d"; }
	done
	for f in "$CACHE"/debs/*.deb; do
		[ -e "$f" ] || continue
		p=${f##*/}; p=${p%%_*}
		case $USED_PKGS in *" $p "*) ;; *) log "pruning $f"; rm -f "$f" ;; esac
	done
fi

# CI runs this step alone on 2 cores: one TCG guest per core there
JOBS=${TOA_KERNELS_JOBS:-$([ -n "${CI:-}" ] && echo 2 || echo 1)}
for i in "${!LABELS[@]}"; do
	KVER=${KVERS[$i]} boot "${LABELS[$i]}" "${EXPECTS[$i]}" &
	while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
done
# the forced early-accept checks need a second CPU: one more boot of the newest kernel, 2 vCPUs
EARLY_I=
if [ -n "$PROBE" ] && [ "$ARCH" = amd64 ]; then
	EARLY_I=$(( ${#LABELS[@]} - 1 ))
	KVER=${KVERS[$EARLY_I]} boot "${LABELS[$EARLY_I]} (2 vCPU)" "${EXPECTS[$EARLY_I]}" early &
fi
wait

# table: one row per check, one column per kernel; rows named mode/source/check;
# "-" where the check is not expected on that kernel (see the kernel list)
for i in "${!LABELS[@]}"; do expected_checks "${EXPECTS[$i]}" > "$CACHE/${KVERS[$i]}/expected"; done
# rows in the order of the full list, then the checks only some kernels have
EXPECTED=$( { all_checks; for i in "${!LABELS[@]}"; do cat "$CACHE/${KVERS[$i]}/expected"; done; } | awk '!seen[$0]++' |
	grep -xF -f <(for i in "${!LABELS[@]}"; do cat "$CACHE/${KVERS[$i]}/expected"; done))
bad=0
{
	printf '%-9s %-9s %-28s' MODE SOURCE CHECK
	for i in "${!LABELS[@]}"; do printf ' %-8s' "${LABELS[$i]}"; done; echo
	while read -r name; do
		IFS=/ read -r mode src chk <<< "$name"
		printf '%-9s %-9s %-28s' "$mode" "$src" "$chk"
		for i in "${!LABELS[@]}"; do
			r=$CACHE/${KVERS[$i]}/results
			if ! grep -qxF "$name" "$CACHE/${KVERS[$i]}/expected"; then st=-
			elif grep -qxF "PASS $name" "$r"; then st=pass
			elif grep -q "^FAIL $name:" "$r"; then st=FAIL; bad=1
			else st=MISSING; bad=1; fi
			printf ' %-8s' "$st"
		done; echo
	done <<< "$EXPECTED"
} > "$CACHE/table.txt"
echo
echo "Stock-kernel matrix, $ARCH (QEMU TCG):"
for i in "${!LABELS[@]}"; do echo "  ${LABELS[$i]} = ${KVERS[$i]} (boot+checks $(cat "$CACHE/${KVERS[$i]}/seconds")s)${EXPECTS[$i]:+ expect ${EXPECTS[$i]}}"; done
cat "$CACHE/table.txt"
for i in "${!LABELS[@]}"; do
	r=$CACHE/${KVERS[$i]}/results
	grep '^FAIL' "$r" | sed "s/^/  ${LABELS[$i]}: /" || true
	# lines the guest printed that no one expected: a renamed check must not pass silently
	grep -oE '^(PASS|FAIL) [^:]+' "$r" | awk '{print $2}' | grep -vxF -f "$CACHE/${KVERS[$i]}/expected" | sed "s/^/  ${LABELS[$i]}: unexpected check /" || true
done
npass=$(awk 'NR>1 {for (i=4;i<=NF;i++) if ($i=="pass") n++} END {print n+0}' "$CACHE/table.txt")
nfail=$(awk 'NR>1 {for (i=4;i<=NF;i++) if ($i!="pass" && $i!="-") n++} END {print n+0}' "$CACHE/table.txt")
if [ -n "$EARLY_I" ]; then
	r=$CACHE/${KVERS[$EARLY_I]}/early/results
	echo "Forced early accept (${LABELS[$EARLY_I]}, 2 vCPU, $(cat "$CACHE/${KVERS[$EARLY_I]}/early/seconds")s):"
	for name in $(grep -oE '^# expect-early [^ ]+' "$HERE/guest/checks-probe.sh" | awk '{print $3}'); do
		if grep -qxF "PASS $name" "$r"; then echo "  pass $name"; npass=$((npass + 1))
		else echo "  FAIL $name:$(grep "^FAIL $name:" "$r" | cut -d: -f2- || echo ' MISSING')"; nfail=$((nfail + 1)); bad=1; fi
	done
fi
echo "kernels: $npass passed, $nfail failed"
echo "total time: $(( $(date +%s) - T0 ))s"
exit $bad
