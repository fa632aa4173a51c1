# SPDX-License-Identifier: Apache-2.0
# Sourced by the build, package and kernel-matrix scripts: one place that names the target arches.
# resolve_arch NAME (host, amd64, x64, x86_64, arm64, aarch64) sets
#   ARCH       Debian name (amd64, arm64)         RPM_ARCH  rpm name (x86_64, aarch64)
#   NODE_ARCH  Node's name (x64, arm64)           TRIPLET   GNU multiarch (x86_64-linux-gnu, ...)
#   CROSS      the cross-compiler prefix when the target is not this machine's arch, else empty
#   QEMU_USER  how to run a target binary here ("" natively, qemu-aarch64-static across)
resolve_arch() {
	local want=$1 host
	host=$(uname -m)
	[ "$want" = host ] && want=$host
	case $want in
	amd64 | x64 | x86_64) ARCH=amd64 RPM_ARCH=x86_64 NODE_ARCH=x64 TRIPLET=x86_64-linux-gnu ;;
	arm64 | aarch64) ARCH=arm64 RPM_ARCH=aarch64 NODE_ARCH=arm64 TRIPLET=aarch64-linux-gnu ;;
	*) echo "unsupported architecture '$1' (allowed: host, amd64, arm64)" >&2; return 1 ;;
	esac
	CROSS= QEMU_USER=
	if [ "$RPM_ARCH" != "$host" ]; then
		[ "$host" = x86_64 ] || { echo "cross builds run on x86_64 only (this is $host)" >&2; return 1; }
		CROSS=$TRIPLET QEMU_USER=qemu-$RPM_ARCH-static
	fi
}
