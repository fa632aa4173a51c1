#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The container image end to end (`npm run test:image`): builds it with deploy/image/build.sh (base
# root filesystem cached, release tarball reused when up to date), then runs it with rootful podman
# (vfs storage, runc; see deploy/image/lib.sh for why those) the way the DaemonSet does:
#   - `toa-otel --version` as root and as uid 65534 (nothing in the image needs root for it);
#   - `toa-otel doctor` with exactly the sidecar's capabilities: a probe mode must be `ok`;
#   - `toa-otel doctor` under podman's default seccomp profile: it must fail (bpf() is refused without
#     CAP_SYS_ADMIN there), which is why the manifests set their own seccomp profile;
#   - the sidecar itself (`run`, sockops on a cgroup this test creates, OTLP to a closed loopback port
#     so records stay in memory): the health check turns healthy, the capabilities after attach are
#     only CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, `podman stop` exits 0 and no program is left.
# Prints PASS/FAIL lines and "N passed, N failed"; exit 1 on any failure.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../deploy/image/lib.sh
. "$ROOT/deploy/image/lib.sh"
T0=$(date +%s)
log() { printf '[test:image %3ss] %s\n' $(( $(date +%s) - T0 )) "$*" >&2; }
[ "$(id -u)" = 0 ] || { echo "FAIL image/root: needs root (buildah, podman, BPF)"; echo "0 passed, 1 failed"; exit 1; }

ok=0 bad=0
check() { # NAME CONDITION-EXIT-CODE [detail]
	if [ "$2" = 0 ]; then echo "PASS image/$1"; ok=$((ok + 1)); else echo "FAIL image/$1${3:+: $3}"; bad=$((bad + 1)); fi
}
finish() { echo "$ok passed, $bad failed"; [ "$bad" = 0 ]; }

CG2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
[ -n "$CG2" ] || { check cgroup2-mount 1 "no cgroup2 mount on this machine"; finish; exit 1; }
CG=$CG2/toa-image-test-$$
NAME=toa-image-test-$$
cleanup() {
	pod rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
	rmdir "$CG" 2>/dev/null || true
	rm -rf "$WORK"
}
WORK=$(mktemp -d)
trap cleanup EXIT

log "building the image"
if ! bash "$ROOT/deploy/image/build.sh" > "$WORK/ref" 2> "$WORK/build.log"; then
	tail -n 30 "$WORK/build.log" >&2
	check build 1 "deploy/image/build.sh failed"; finish; exit 1
fi
sed 's/^/    /' "$WORK/build.log" >&2
check build 0

CAPS=(--cap-drop ALL --cap-add BPF,PERFMON,NET_ADMIN,SYS_PTRACE,DAC_READ_SEARCH)
# the DaemonSet's seccomp choice (see deploy/kubernetes): podman's default profile refuses bpf()
SECCOMP=(--security-opt seccomp=unconfined)
CGMOUNT=(-v "$CG2:$CG2:ro") # read-only, as the DaemonSet mounts it
RUN=(pod run --rm "${POD_LIMITS[@]}" --no-healthcheck --network none)

# Each container start copies the image under vfs storage (tens of seconds here), so the checks share
# two containers: the sidecar itself, and one doctor under podman's default seccomp profile.
rc=0; "${RUN[@]}" "${CAPS[@]}" "${CGMOUNT[@]}" "$IMAGE_REF" doctor > "$WORK/doctor-seccomp" 2>&1 || rc=$?
[ "$rc" = 3 ] && grep -q 'Operation not permitted' "$WORK/doctor-seccomp"
check doctor-default-seccomp-refused $? "doctor under the default seccomp profile exited $rc, expected 3 (bpf() refused)"

mkdir "$CG"
log "running the sidecar in the image (sockops on $CG)"
pod run -d --name "$NAME" "${POD_LIMITS[@]}" --network none "${CAPS[@]}" "${SECCOMP[@]}" "${CGMOUNT[@]}" \
	-e TOA_OTEL_PROBE_CGROUP_PATH="$CG" -e TOA_OTEL_PROBE_MODE=sockops \
	-e TOA_OTEL_OTLP_ENDPOINT=http://127.0.0.1:9 -e TOA_OTEL_TOA_TRUSTED_PEERS=198.18.0.0/15 \
	"$IMAGE_REF" > /dev/null 2> "$WORK/run-err" || { check run-start 1 "$(tail -n 3 "$WORK/run-err")"; finish; exit 1; }

want=$IMAGE_VERSION
got=$(pod exec "$NAME" toa-otel --version 2>"$WORK/err") || true
[ "$got" = "$want" ]; check version-root $? "got '$got', want '$want' ($(tail -n 3 "$WORK/err"))"
got=$(pod exec --user 65534:65534 "$NAME" toa-otel --version 2>"$WORK/err") || true
[ "$got" = "$want" ]; check version-nonroot $? "got '$got', want '$want' ($(tail -n 3 "$WORK/err"))"

rc=0; pod exec "$NAME" toa-otel doctor > "$WORK/doctor" 2>&1 || rc=$?
sed 's/^/    /' "$WORK/doctor" >&2
check doctor-exit $rc "doctor exit $rc"
grep -qE '^ok +mode ' "$WORK/doctor"; check doctor-mode-ok $? "no probe mode ok"
grep -qE '^ok +privileges' "$WORK/doctor"; check doctor-capabilities $? "the capability set is not enough"

healthy=1
for _ in $(seq 1 60); do # up to 30 s for start-up
	if pod exec "$NAME" toa-otel-healthcheck > "$WORK/health" 2>&1; then healthy=0; break; fi
	sleep 0.5
done
check healthcheck-healthy $healthy "$(cat "$WORK/health")"
rc=0; pod healthcheck run "$NAME" > "$WORK/podman-health" 2>&1 || rc=$?
check podman-healthcheck-run $rc "$(cat "$WORK/podman-health")"
capeff=$(pod exec "$NAME" sh -c 'grep CapEff /proc/1/status' | awk '{print $2}') || true
[ "$capeff" = 0000000000080004 ]; check caps-after-attach $? "CapEff $capeff, want 0000000000080004 (CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE)"
progs=$(bpftool cgroup show "$CG" 2>/dev/null | grep -c sock_ops || true)
[ "$progs" -ge 1 ]; check sockops-attached $? "no sock_ops program on $CG"
rc=0; pod stop -t 30 "$NAME" > /dev/null 2>&1 || rc=$?
code=$(pod inspect "$NAME" --format '{{.State.ExitCode}}' 2>/dev/null || echo '?')
pod logs "$NAME" > "$WORK/run.log" 2>&1 || true
[ "$rc" = 0 ] && [ "$code" = 0 ]; check stop-clean $? "podman stop rc $rc, exit code $code; $(tail -n 3 "$WORK/run.log")"
progs=$(bpftool cgroup show "$CG" 2>/dev/null | grep -c sock_ops || true)
[ "$progs" = 0 ]; check nothing-left-attached $? "$progs sock_ops programs still on $CG"
log "sidecar log (last lines):"; tail -n 4 "$WORK/run.log" | cut -c1-220 | sed 's/^/    /' >&2
log "done in $(( $(date +%s) - T0 ))s"
finish
