# SPDX-License-Identifier: Apache-2.0
# Shared by deploy/image/build.sh and test/deploy/image.sh: where the image's container storage
# lives and how buildah/podman are called on this kind of machine.
#
# - Cache: outside the checkout, like the Go caches, so that every clone on the machine (CI's
#   fresh clones too) reuses the base root filesystem: ${XDG_CACHE_HOME:-~/.cache}/toa-otel/image,
#   or TOA_IMAGE_CACHE.
# - Storage: vfs (no overlay or fuse needed) in the cache's containers/, apart from the machine's
#   own container storage; the run root is under /run.
# - Runtime: runc with the cgroupfs manager. crun (podman's default) refuses to start on a host with
#   hybrid cgroups (v1 controllers plus a v2 mount at /sys/fs/cgroup/unified), as this VM has.
# - Explicit --ulimit values: podman's default limits (nofile 1048576) are above this VM's hard
#   limits, and raising a limit needs CAP_SYS_RESOURCE, which root here does not hold.
IMAGE_CACHE=${TOA_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/toa-otel/image}
IMAGE_STORE=$IMAGE_CACHE/containers
IMAGE_RUNROOT=/run/toa-otel-image
IMAGE_VERSION=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$ROOT/package.json" | head -n 1)
IMAGE_REF=localhost/toa-otel:$IMAGE_VERSION
bah() { buildah --root "$IMAGE_STORE" --runroot "$IMAGE_RUNROOT" --storage-driver vfs "$@"; }
pod() {
	podman --root "$IMAGE_STORE" --runroot "$IMAGE_RUNROOT" --storage-driver vfs \
		--runtime runc --cgroup-manager cgroupfs --events-backend file "$@"
}
# `pod run` options that fit this VM's limits (see above)
POD_LIMITS=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=4096:4096")
