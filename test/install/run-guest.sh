#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Install test in a clean guest (`npm run test:install`): builds a Debian bookworm root filesystem
# with systemd (mmdebstrap), installs the release .deb into it with apt — no compiler anywhere in
# the guest — adds the test collector and the TOA test tools, boots it under QEMU (TCG) on Debian's
# stock 6.1 kernel with systemd as PID 1, and runs test/install/guest/check.sh there: configure,
# `systemctl enable --now toa-otel`, TOA connections, `systemctl stop`, records at the collector,
# no BPF program left. Prints the guest's PASS/FAIL lines; exit 0 only when every expected check passed.
#
# Environment:
#   TOA_INSTALL_DEB=path      the .deb to test (default: `npm run package` builds build/release/*.deb)
#   TOA_INSTALL_TIMEOUT=s     boot + checks timeout (default 420)
# Everything built lives in .cache/install/ (ignored by git); kernels come from .cache/kernels/.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
GUEST_FILES=$ROOT/test/install/guest
WORK=$ROOT/.cache/install
TIMEOUT=${TOA_INSTALL_TIMEOUT:-420}

# kernel download/extract and the guest TOA tools are the kernel matrix's
TOA_KERNELS_LIB=1 source "$ROOT/test/kernels/run-matrix.sh"
log() { printf '[install %3ss] %s\n' $(( $(date +%s) - T0 )) "$*" >&2; }

[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap, chroot)"
ensure_tools
command -v mmdebstrap >/dev/null || apt_install mmdebstrap
apt_lists_ready
mkdir -p "$CACHE" "$WORK"

# ---- the package and the collector ----
DEB=${TOA_INSTALL_DEB:-}
if [ -z "$DEB" ]; then
	log "npm run package"
	bash "$ROOT/scripts/package.sh"
	DEB=$(ls -t "$ROOT"/build/release/toa-otel_*_amd64.deb | head -n 1)
fi
[ -f "$DEB" ] || die "no .deb at '$DEB'"
VERSION=$(dpkg-deb -f "$DEB" Version); VERSION=${VERSION%-*}
COLLECTOR=$ROOT/otel-collector/_build/otelcol-toa
log "collector build (idempotent)"
bash "$ROOT/scripts/build-collector.sh" >&2
build_guest   # tsrv/tcli (kt) and toa-writer, static
prepare_kernel 6.1 "dep:linux-image-amd64"
log "kernel $KVER"

# ---- root filesystem ----
ROOTFS=$WORK/rootfs
rm -rf "$ROOTFS"
log "mmdebstrap bookworm (systemd) + apt-get install $(basename "$DEB")"
# the host's apt sources (same mirror settings as the machine); no recommends, like a server image
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
	[ -s "$f" ] && grep -qE '^(deb |Types:)' "$f" && sources+=("$f")
done
[ ${#sources[@]} -gt 0 ] || die "no apt sources on this machine to build the guest from"
mmdebstrap --quiet --variant=minbase --mode=root \
	--include=systemd,systemd-sysv,dbus,iproute2,procps,kmod,bpftool \
	--aptopt='APT::Install-Recommends "false"' \
	--customize-hook="copy-in '$DEB' /tmp" \
	--customize-hook="chroot \"\$1\" apt-get install -y -q /tmp/$(basename "$DEB") > '$WORK/apt-install.log' 2>&1" \
	--customize-hook="rm -f \"\$1\"/tmp/*.deb" \
	bookworm "$ROOTFS" "${sources[@]}" 2>&1 | tail -n 20 >&2 ||
	die "mmdebstrap failed"
grep -q 'Setting up toa-otel' "$WORK/apt-install.log" || { cat "$WORK/apt-install.log" >&2; die "apt-get install of the .deb failed"; }
log "installed: $(grep -c '^Setting up' "$WORK/apt-install.log") packages set up by apt ($(grep '^Setting up' "$WORK/apt-install.log" | awk '{print $3}' | tr '\n' ' '))"

# test payload (not part of the product): collector, TOA writer, test server/client, veth module
install -D -m 755 "$COLLECTOR" "$ROOTFS/usr/local/bin/otelcol-toa"
install -D -m 644 "$GUEST_FILES/otelcol.yaml" "$ROOTFS/etc/otelcol-test.yaml"
install -D -m 644 "$GUEST_FILES/otelcol-test.service" "$ROOTFS/etc/systemd/system/otelcol-test.service"
install -D -m 644 "$GUEST_FILES/toa-install-check.service" "$ROOTFS/etc/systemd/system/toa-install-check.service"
install -D -m 644 "$GUEST_FILES/check.sh" "$ROOTFS/usr/local/lib/toa-install/check.sh"
install -D -m 644 "$GUEST_FILES/verify-records.mjs" "$ROOTFS/usr/local/lib/toa-install/verify-records.mjs"
install -D -m 644 "$CACHE/$KVER/veth.ko" "$ROOTFS/usr/local/lib/toa-install/veth.ko"
install -m 755 "$CACHE/guest/kt" "$ROOTFS/usr/local/bin/tsrv"
install -m 755 "$CACHE/guest/kt" "$ROOTFS/usr/local/bin/tcli"
install -m 755 "$CACHE/guest/toa-writer" "$ROOTFS/usr/local/bin/toa-writer"
mkdir -p "$ROOTFS/etc/systemd/system/toa-install-check.service.d"
printf '[Service]\nEnvironment=TOA_VERSION=%s\nExecStopPost=/bin/systemctl poweroff --force --force\n' "$VERSION" \
	> "$ROOTFS/etc/systemd/system/toa-install-check.service.d/run.conf"
chroot "$ROOTFS" systemctl enable otelcol-test.service toa-install-check.service >/dev/null 2>&1
# the console belongs to the checks; nothing needs a login
chroot "$ROOTFS" systemctl mask serial-getty@ttyS0.service getty@tty1.service systemd-timesyncd.service >/dev/null 2>&1 || true
echo toa-guest > "$ROOTFS/etc/hostname"

log "initramfs ($(du -sh "$ROOTFS" | cut -f1) root filesystem, uncompressed: faster to unpack under TCG)"
(cd "$ROOTFS" && find . | cpio -o -H newc --quiet) > "$WORK/rootfs.cpio"
rm -rf "$ROOTFS"

# ---- boot ----
log "booting $KVER with systemd as PID 1 (TCG, timeout ${TIMEOUT}s)"
rc=0
timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 -accel tcg -smp 2 -m 3072 -nographic -no-reboot -nic none \
	-kernel "$CACHE/$KVER/vmlinuz" -initrd "$WORK/rootfs.cpio" \
	-append "console=ttyS0 rdinit=/lib/systemd/systemd panic=-1 quiet systemd.show_status=0 loglevel=3" \
	< /dev/null > "$WORK/console.log" 2>&1 || rc=$?
rm -f "$WORK/rootfs.cpio"
tr -d '\r' < "$WORK/console.log" | grep -E '^(PASS|FAIL|GUEST) ' > "$WORK/results" || true
[ $rc -eq 124 ] && log "QEMU timed out after ${TIMEOUT}s"
grep -q '^GUEST done' "$WORK/results" || log "the guest did not finish (console: $WORK/console.log)"

EXPECTED="install/package install/no-compiler install/cli-version install/doctor install/doctor-fexit
install/unit-verify install/enable install/running install/mode-fexit install/capabilities install/bundled-node
install/net-setup install/connections install/stop-exit-0 install/stop-within-timeout
install/no-programs-after-stop install/final-summary install/records install/self-metrics"
bad=0 npass=0 nfail=0
echo
echo "Install test: $(basename "$DEB") on Debian bookworm + $KVER (QEMU TCG, systemd)"
grep '^GUEST' "$WORK/results" | sed 's/^GUEST /  /'
for name in $EXPECTED; do
	if grep -qxF "PASS $name" "$WORK/results"; then printf '  %-34s pass\n' "$name"; npass=$((npass + 1))
	else
		reason=$(grep "^FAIL $name:" "$WORK/results" | head -n 1 | cut -d: -f2- || true)
		printf '  %-34s FAIL%s\n' "$name" "${reason:- (missing)}"; bad=1; nfail=$((nfail + 1))
	fi
done
grep -oE '^(PASS|FAIL) [^:]+' "$WORK/results" | awk '{print $2}' | grep -vxF -f <(tr ' ' '\n' <<< "$EXPECTED" | grep .) |
	sed 's/^/  unexpected check /' || true
echo "install: $npass passed, $nfail failed"
echo "total time: $(( $(date +%s) - T0 ))s (console: .cache/install/console.log)"
exit $bad
