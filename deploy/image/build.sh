#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the toa-otel container image (`npm run image`), localhost/toa-otel:VERSION:
#   1. a Debian bookworm minbase root filesystem made with mmdebstrap (packages: base-packages),
#      cached as base-<hash>.tar in the image cache (deploy/image/lib.sh: ~/.cache/toa-otel/image),
#      the hash over the package list and the mmdebstrap options;
#   2. the release tarball of `npm run package` (build/release/toa-otel-VERSION-linux-ARCH.tar.gz),
#      reused when it is newer than everything it is built from, else built;
#   3. buildah: the base as one layer, the release in /opt/toa-otel as a second one, the config
#      file, the health check, entrypoint and labels; committed in Docker format (OCI image configs
#      have no HEALTHCHECK field).
# Options:
#   --save FILE     also write the image as an OCI archive (load it elsewhere: `podman load -i FILE`,
#                   or push it: `skopeo copy oci-archive:FILE docker://REGISTRY/toa-otel:VERSION`)
#   --refresh-base  rebuild the base root filesystem even if cached (security updates)
# Environment: TOA_IMAGE_CACHE (default ~/.cache/toa-otel/image), TOA_IMAGE_TARBALL=path (use this release
# tarball instead). Needs root, mmdebstrap and buildah (scripts/setup.sh --for deploy).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/deploy/image
# shellcheck source=lib.sh
. "$HERE/lib.sh"
T0=$(date +%s)
say() { printf '[image %3ss] %s\n' $(( $(date +%s) - T0 )) "$*" >&2; }
die() { printf '[image] error: %s\n' "$*" >&2; exit 1; }

save= refresh=
while [ $# -gt 0 ]; do
	case $1 in
	--save) save=${2:?--save needs a file}; shift 2 ;;
	--refresh-base) refresh=1; shift ;;
	-h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (use --save FILE, --refresh-base)" ;;
	esac
done
[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap --mode=root, buildah with vfs storage)"
for t in mmdebstrap buildah; do command -v $t >/dev/null || die "$t is missing: bash scripts/setup.sh --for deploy"; done
case $(uname -m) in x86_64) ARCH=amd64 ;; aarch64) ARCH=arm64 ;; *) die "unsupported architecture $(uname -m)" ;; esac
mkdir -p "$IMAGE_CACHE"
export BUILDAH_FORMAT=docker # keep the HEALTHCHECK (the OCI image config has no such field)

# ---------- 1. base root filesystem (cached) ----------
mapfile -t PKGS < <(grep -vE '^\s*(#|$)' "$HERE/base-packages")
MMDEB_OPTS=(--variant=minbase --mode=root --format=tar --architectures="$ARCH"
	--aptopt='APT::Install-Recommends "false"'
	--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
	--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*'
	--customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*'
	--include="$(IFS=,; echo "${PKGS[*]}")")
key=$(printf '%s\n' bookworm "${MMDEB_OPTS[@]}" | sha256sum | cut -c1-16)
BASE=$IMAGE_CACHE/base-$key.tar
if [ -n "$refresh" ] || [ ! -s "$BASE" ]; then
	sources=()
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[ -s "$f" ] && grep -qE '^(deb |Types:)' "$f" && sources+=("$f")
	done
	say "base: mmdebstrap bookworm minbase + ${PKGS[*]} -> $BASE"
	rm -f "$IMAGE_CACHE"/base-*.tar
	mmdebstrap --quiet "${MMDEB_OPTS[@]}" bookworm "$BASE.tmp" "${sources[@]}" >&2 || die "mmdebstrap failed"
	mv "$BASE.tmp" "$BASE"
else
	say "base: cached $BASE"
fi

# ---------- 2. release tarball (reused when up to date) ----------
TARBALL=${TOA_IMAGE_TARBALL:-$ROOT/build/release/toa-otel-$IMAGE_VERSION-linux-$ARCH.tar.gz}
newest_src() { find "$ROOT"/{src,bin,bpf,native,config,cmake,deploy/systemd,deploy/package} "$ROOT"/{CMakeLists.txt,package.json,package-lock.json,scripts/package.sh} \
	-type f -printf '%T@\n' 2>/dev/null | sort -n | tail -n 1 | cut -d. -f1; }
if [ -n "${TOA_IMAGE_TARBALL:-}" ]; then
	[ -s "$TARBALL" ] || die "TOA_IMAGE_TARBALL=$TARBALL does not exist"
	say "release: $TARBALL (TOA_IMAGE_TARBALL)"
elif [ -s "$TARBALL" ] && [ "$(stat -c %Y "$TARBALL")" -ge "$(newest_src)" ]; then
	say "release: reusing $TARBALL (newer than its sources)"
else
	say "release: npm run package"
	bash "$ROOT/scripts/package.sh" >&2 || die "npm run package failed"
	[ -s "$TARBALL" ] || die "npm run package did not write $TARBALL"
fi

# ---------- 3. the image ----------
base_ref=localhost/toa-otel-base:$key
if [ -n "$refresh" ] || ! bah inspect --type image "$base_ref" >/dev/null 2>&1; then
	say "base layer: importing the root filesystem as $base_ref"
	bah rmi -f "$base_ref" >/dev/null 2>&1 || true
	c=$(bah from scratch)
	bah add "$c" "$BASE" / >/dev/null
	bah commit --quiet --rm "$c" "$base_ref" >/dev/null
else
	say "base layer: cached $base_ref"
fi

say "release layer: $(basename "$TARBALL") -> /opt/toa-otel"
c=$(bah from "$base_ref")
trap 'bah rm "$c" >/dev/null 2>&1 || true' EXIT
mnt=$(bah mount "$c")
mkdir -p "$mnt/opt/toa-otel" "$mnt/etc/toa-otel" "$mnt/var/lib/toa-otel/spool"
tar -xzf "$TARBALL" -C "$mnt/opt/toa-otel" --strip-components=1 --no-same-owner
cp "$mnt/opt/toa-otel/share/config.json" "$mnt/etc/toa-otel/config.json"
ln -sf /opt/toa-otel/bin/toa-otel "$mnt/usr/bin/toa-otel"
ln -sf /opt/toa-otel/bin/toa-probe "$mnt/usr/bin/toa-probe"
install -m 0755 "$HERE/healthcheck.sh" "$mnt/usr/local/bin/toa-otel-healthcheck"
chmod 0700 "$mnt/var/lib/toa-otel" "$mnt/var/lib/toa-otel/spool"
bah umount "$c" >/dev/null

CAPS=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN,CAP_SYS_PTRACE,CAP_DAC_READ_SEARCH
bah config \
	--entrypoint '["/opt/toa-otel/bin/toa-otel"]' --cmd 'run --config /etc/toa-otel/config.json' \
	--user 0:0 --workingdir / --stop-signal SIGTERM \
	--env TOA_OTEL_EXPORT_SPOOL_DIR=/var/lib/toa-otel/spool \
	--volume /var/lib/toa-otel \
	--healthcheck 'CMD /usr/local/bin/toa-otel-healthcheck' \
	--healthcheck-interval 30s --healthcheck-timeout 5s --healthcheck-start-period 20s --healthcheck-retries 3 \
	--label org.opencontainers.image.title=toa-otel \
	--label org.opencontainers.image.version="$IMAGE_VERSION" \
	--label org.opencontainers.image.licenses=Apache-2.0 \
	--label org.opencontainers.image.base.name="debian:bookworm (mmdebstrap minbase, $(basename "$BASE"))" \
	--label io.toa-otel.capabilities="$CAPS" \
	--label io.toa-otel.run="--cap-drop=ALL --cap-add=${CAPS//CAP_/} --pid=host -v /sys/fs/cgroup:/sys/fs/cgroup:ro" \
	"$c"
bah commit --quiet --format docker --rm "$c" "$IMAGE_REF" >/dev/null
trap - EXIT
bah rmi --prune >/dev/null 2>&1 || true
say "built $IMAGE_REF (image $(bah images --noheading --format '{{.ID}} {{.Size}}' "$IMAGE_REF"))"
if [ -n "$save" ]; then
	pod save --format oci-archive -o "$save" "$IMAGE_REF" >&2 || die "podman save failed"
	say "saved $save ($(du -h "$save" | cut -f1))"
fi
echo "$IMAGE_REF"
