#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Native build (`npm run build:native`): BPF objects, the C core, toa-probe, the lab tools and the
# Node addon, with cmake-js.
#
#   bash scripts/build-native.sh [--arch host|arm64]      (or TOA_OTEL_ARCH=arm64)
#     host   (default) for this machine, into build/ (build/Release/toa_otel.node, build/toa-probe)
#     arm64  cross build from x86 with cmake/toolchain-arm64.cmake into build/arm64/
#            (build/arm64/Release/toa_otel.node, build/arm64/toa-probe, build/arm64/lab/);
#            needs `bash scripts/setup.sh --for arm64` once
# The BPF programs' target arch follows the compiler (cmake/BpfObject.cmake), never the build machine.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ARCH=${TOA_OTEL_ARCH:-host}
while [ $# -gt 0 ]; do
	case $1 in
	--arch) ARCH=${2:-}; shift 2 ;;
	--arch=*) ARCH=${1#--arch=}; shift ;;
	*) echo "build-native: unknown argument '$1' (use --arch host|arm64)" >&2; exit 2 ;;
	esac
done
# shellcheck source=scripts/arch.sh
. scripts/arch.sh
resolve_arch "$ARCH" || exit 2

if [ -z "$CROSS" ]; then
	exec "$ROOT/node_modules/.bin/cmake-js" compile --CDCMAKE_BUILD_TYPE=Release
fi
command -v "$CROSS-gcc" >/dev/null && command -v "$CROSS-g++" >/dev/null &&
	[ -e "/usr/lib/$CROSS/libbpf.so" ] && [ -e "/usr/lib/$CROSS/libelf.so" ] ||
	{ echo "build-native: the $ARCH cross toolchain or its libbpf/libelf is missing: run bash scripts/setup.sh --for $ARCH" >&2; exit 1; }
exec "$ROOT/node_modules/.bin/cmake-js" compile --arch "$NODE_ARCH" --out "build/$ARCH" \
	--CDCMAKE_TOOLCHAIN_FILE="$ROOT/cmake/toolchain-$ARCH.cmake" --CDCMAKE_BUILD_TYPE=Release
