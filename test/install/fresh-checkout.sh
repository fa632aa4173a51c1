#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The README's two commands on a fresh machine (`npm run test:fresh`): a Debian bookworm root
# filesystem made with mmdebstrap holding only git, Debian's Node.js 18 and npm; a clone of this
# repository's HEAD in it; then, inside it with chroot, exactly what a new user types:
#   npm start -- doctor      setup (apt packages, npm ci, build) + run a command of the sidecar
#   npm test -- test/unit    setup for tests (the lab tools' packages too) + the unit tests
# and a second `npm start -- --version` to show that a set-up checkout starts at once.
# The chroot shares this machine's kernel, so `doctor` reports this kernel's modes.
# Only committed files are tested (git clone). Everything lives in .cache/fresh/ and is removed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=$ROOT/.cache/fresh
CH=$WORK/root
T0=$(date +%s)
log() { printf '[fresh %3ss] %s\n' $(( $(date +%s) - T0 )) "$*" >&2; }
die() { log "error: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap, chroot)"
command -v mmdebstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null; }

cleanup() {
	for m in dev/pts dev proc sys/fs/cgroup sys; do mountpoint -q "$CH/$m" 2>/dev/null && umount -l "$CH/$m"; done
	rm -rf "$WORK"
}
trap cleanup EXIT
cleanup
mkdir -p "$WORK"

sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
	[ -s "$f" ] && grep -qE '^(deb |Types:)' "$f" && sources+=("$f")
done
log "mmdebstrap bookworm with git, nodejs, npm (nothing else a build needs)"
mmdebstrap --quiet --variant=minbase --mode=root --include=git,nodejs,npm,ca-certificates \
	--aptopt='APT::Install-Recommends "false"' bookworm "$CH" "${sources[@]}" 2>&1 | tail -n 20 >&2 || die "mmdebstrap failed"
for tool in clang cmake bpftool gcc; do
	! chroot "$CH" sh -c "command -v $tool" >/dev/null || die "$tool is already in the fresh root"
done
log "fresh root: node $(chroot "$CH" node --version), npm $(chroot "$CH" npm --version)"

git clone -q --no-local "$ROOT" "$CH/root/toa-otel"
cp /etc/resolv.conf "$CH/etc/resolv.conf"
# the machine's own trust settings (a fresh machine of this kind has them too): local CAs, npm's
# cafile, and Node's extra CA variable, so npm reaches its registry the way it does on the host
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
	cp /usr/local/share/ca-certificates/*.crt "$CH/usr/local/share/ca-certificates/"
	chroot "$CH" update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates failed in the fresh root"
fi
[ -f /etc/npmrc ] && cp /etc/npmrc "$CH/etc/npmrc"
PASS_ENV=()
for v in NODE_EXTRA_CA_CERTS SSL_CERT_FILE; do
	[ -n "${!v:-}" ] && [ -f "${!v}" ] || continue
	[ -e "$CH${!v}" ] || { mkdir -p "$(dirname "$CH${!v}")" && cp "${!v}" "$CH${!v}"; }
	PASS_ENV+=("$v=${!v}")
done
mount -t proc proc "$CH/proc"
mount --rbind /sys "$CH/sys"
mount --rbind /dev "$CH/dev"

run() { # LABEL CMD: runs CMD as root in the checkout inside the chroot, prints the output's tail
	local label=$1 t=$(date +%s) rc=0
	shift
	log "$label: $*"
	chroot "$CH" env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb CI="${CI:-}" "${PASS_ENV[@]}" \
		sh -c "cd /root/toa-otel && $*" > "$WORK/$label.log" 2>&1 || rc=$?
	tail -n 12 "$WORK/$label.log" | sed 's/^/    /' >&2
	log "$label: exit $rc in $(( $(date +%s) - t ))s"
	return $rc
}
ok=0 bad=0
result() { if [ "$2" = 0 ]; then echo "PASS fresh/$1"; ok=$((ok + 1)); else echo "FAIL fresh/$1: exit $2 (log above)"; bad=$((bad + 1)); fi; }

rc=0; run start-doctor 'npm start -- doctor' || rc=$?; result start-doctor $rc
grep -q '^\[setup\] installing' "$WORK/start-doctor.log"; result start-installed-packages $?
grep -qE '^ok +mode ' "$WORK/start-doctor.log"; result doctor-mode-ok $?
rc=0; run test-unit 'npm test -- test/unit' || rc=$?; result test-unit $rc
grep -qE '[0-9]+ tests? passed' "$WORK/test-unit.log"; result tests-ran $?
rc=0; run start-again 'npm start -- --version' || rc=$?; result start-again $rc
grep -q 'system packages: all present' "$WORK/start-again.log" && grep -q 'node modules: up to date' "$WORK/start-again.log"
result second-run-idempotent $?
echo "fresh: $ok passed, $bad failed"
echo "total time: $(( $(date +%s) - T0 ))s"
[ $bad = 0 ]
