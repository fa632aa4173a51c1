#!/usr/bin/env bash
# Start toa-otel's collector (built by scripts/build-collector.sh, built first if needed) with a
# chosen config, in the foreground. For local use: `npm run collector -- [config] [collector args]`.
#   config: a path, or a name under otel-collector/ or otel-collector/examples/ (".yaml" optional);
#           default otel-collector/agent.yaml
# Example: TOA_OTEL_UPSTREAM_ENDPOINT=http://127.0.0.1:14318 npm run collector
#          npm run collector -- trusted-toa-only
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { echo "collector: $*" >&2; exit 1; }

cfg=${1:-$ROOT/otel-collector/agent.yaml}
[ $# -gt 0 ] && shift
if [ ! -f "$cfg" ]; then
  for c in "$ROOT/otel-collector/$cfg" "$ROOT/otel-collector/$cfg.yaml" \
           "$ROOT/otel-collector/examples/$cfg" "$ROOT/otel-collector/examples/$cfg.yaml"; do
    if [ -f "$c" ]; then cfg=$c; break; fi
  done
fi
[ -f "$cfg" ] || die "config '$cfg' not found (give a path, or one of: agent $(cd "$ROOT/otel-collector/examples" && ls *.yaml | sed 's/\.yaml$//' | tr '\n' ' '))"

# Required variables without defaults: name them before the collector fails with a vaguer error.
for var in $(grep -o '\${env:[A-Z0-9_]*}' "$cfg" | sed 's/\${env:\(.*\)}/\1/' | sort -u); do
  [ -n "${!var:-}" ] || die "$cfg needs the environment variable $var (see the comment atop the file)"
done

# The examples write kept records to TOA_OTEL_COLLECTOR_OUTPUT: keep that inside the ignored folder.
if [ -z "${TOA_OTEL_COLLECTOR_OUTPUT:-}" ]; then
  mkdir -p "$ROOT/otel-collector/_build/out"
  export TOA_OTEL_COLLECTOR_OUTPUT="$ROOT/otel-collector/_build/out/$(basename "$cfg" .yaml).jsonl"
  echo "collector: records written by file exporters go to $TOA_OTEL_COLLECTOR_OUTPUT" >&2
fi

bin=$("$ROOT/scripts/build-collector.sh" --print-path) || die "could not build the collector (see the messages above)"
echo "collector: $bin --config $cfg $*" >&2
exec "$bin" --config "$cfg" "$@"
