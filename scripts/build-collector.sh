#!/usr/bin/env bash
# Build toa-otel's OpenTelemetry Collector distribution (otel-collector/builder-config.yaml)
# into otel-collector/_build/otelcol-toa with the official collector builder (ocb).
#
# Idempotent: the binary is reused when the hash of (manifest, builder version, Go version)
# stored next to it matches; pass --force (or TOA_OTEL_COLLECTOR_FORCE=1) to rebuild anyway.
# Go comes from the machine; modules come from the configured Go module proxy (GOPROXY) only.
# Caches: the default Go caches (`go env GOMODCACHE GOCACHE`, under $HOME) so repeated CI runs on
# one machine reuse downloads and compiled packages; set GOMODCACHE/GOCACHE to move them.
# Compilation runs under `nice` because the machine is shared (2 cores).
#
# Usage: scripts/build-collector.sh [--force] [--print-path]
#   --print-path  print only the binary path on stdout (after building if needed)
set -euo pipefail

BUILDER_VERSION=v0.161.0 # must match the collector release pinned in the manifest
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COL_DIR="$ROOT/otel-collector"
MANIFEST="$COL_DIR/builder-config.yaml"
OUT="$COL_DIR/_build"
BIN="$OUT/otelcol-toa"
HASH_FILE="$BIN.manifest.sha256"
TOOLS="$OUT/tools"
BUILDER="$TOOLS/builder"
LOG="$OUT/build.log"

force=${TOA_OTEL_COLLECTOR_FORCE:-0}
print_path=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --print-path) print_path=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "build-collector: unknown argument '$arg' (use --force, --print-path)" >&2; exit 2 ;;
  esac
done

T0=$(date +%s.%N)
# Progress goes to stderr so that --print-path keeps stdout clean.
say() { printf '[build-collector %6.1fs] %s\n' "$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')" "$*" >&2; }
die() { printf '[build-collector] ERROR: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "go not found on PATH: install Go >= 1.24 (the machine's Go is used; see README)"
[ -f "$MANIFEST" ] || die "manifest $MANIFEST is missing"
grep -q "otlpreceiver $BUILDER_VERSION" "$MANIFEST" \
  || die "builder $BUILDER_VERSION does not match the release in $MANIFEST: update BUILDER_VERSION in $0"

GO_VERSION=$(go env GOVERSION)
want_hash=$( { cat "$MANIFEST"; echo "builder=$BUILDER_VERSION go=$GO_VERSION"; } | sha256sum | cut -d' ' -f1)

if [ "$force" != 1 ] && [ -x "$BIN" ] && [ -f "$HASH_FILE" ] && [ "$(cat "$HASH_FILE")" = "$want_hash" ] \
   && "$BIN" --version >/dev/null 2>&1; then
  say "up to date: $BIN (manifest hash ${want_hash:0:12}, $GO_VERSION)"
  [ "$print_path" = 1 ] && echo "$BIN"
  exit 0
fi

mkdir -p "$OUT" "$TOOLS"
: >"$LOG"
say "building collector from $MANIFEST with $GO_VERSION (module cache $(go env GOMODCACHE))"
say "full build log: $LOG"

run_logged() { # run a command, append its output to the log, show the tail on failure
  if ! nice -n 10 "$@" >>"$LOG" 2>&1; then
    echo "----- last 40 lines of $LOG -----" >&2
    tail -n 40 "$LOG" >&2
    return 1
  fi
}

if [ -x "$BUILDER" ] && "$BUILDER" version 2>&1 | grep -q "${BUILDER_VERSION#v}"; then
  say "builder $BUILDER_VERSION already installed in $TOOLS"
else
  say "installing go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION into $TOOLS"
  GOBIN="$TOOLS" run_logged go install "go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION" \
    || die "could not install the collector builder $BUILDER_VERSION (Go module proxy reachable? see $LOG)"
  say "builder installed"
fi

rm -f "$BIN" "$HASH_FILE"
# The builder resolves dist.output_path relative to the working directory. Two builder passes so
# the progress shows where the time goes: sources + modules, then compilation.
say "generating sources and fetching modules"
(cd "$COL_DIR" && run_logged "$BUILDER" --config "$MANIFEST" --skip-compilation) \
  || die "generating the collector sources failed (see $LOG); a module the manifest pins may be missing from the Go module proxy"
say "compiling (the slow step: minutes on 2 cores from an empty build cache)"
(cd "$COL_DIR" && run_logged "$BUILDER" --config "$MANIFEST" --skip-generate --skip-get-modules) \
  || die "compiling the collector failed (see $LOG)"

built="$OUT/src/otelcol-toa"
[ -x "$built" ] || die "builder finished but $built is missing (see $LOG)"
cp "$built" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
"$BIN" --version >&2 || die "built binary $BIN does not run"
"$BIN" components >"$OUT/components.txt" 2>&1 || die "built binary $BIN cannot list its components"
echo "$want_hash" >"$HASH_FILE"
say "done: $BIN ($(du -h "$BIN" | cut -f1)); components listed in $OUT/components.txt"
[ "$print_path" = 1 ] && echo "$BIN"
exit 0
