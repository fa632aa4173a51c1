#!/usr/bin/env bash
# Validate every collector config in otel-collector/ (agent.yaml, examples/*.yaml, fleet/*.yaml) with the
# built collector (`otelcol-toa validate`, which also parses every OTTL statement/condition).
# Required variables that have no default get placeholder values: this checks the configs,
# not the environment. Builds the collector first if needed. Exits non-zero on the first failure.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$("$ROOT/scripts/build-collector.sh" --print-path)
export TOA_OTEL_UPSTREAM_ENDPOINT=${TOA_OTEL_UPSTREAM_ENDPOINT:-http://127.0.0.1:9}
export TOA_OTEL_COLLECTOR_TLS_CERT=${TOA_OTEL_COLLECTOR_TLS_CERT:-/nonexistent/server.crt}
export TOA_OTEL_COLLECTOR_TLS_KEY=${TOA_OTEL_COLLECTOR_TLS_KEY:-/nonexistent/server.key}
export TOA_OTEL_COLLECTOR_TOKEN=${TOA_OTEL_COLLECTOR_TOKEN:-placeholder}
export TOA_OTEL_GATEWAYS=${TOA_OTEL_GATEWAYS:-[127.0.0.1:14317, 127.0.0.1:24317]}
n=0
for cfg in "$ROOT"/otel-collector/agent.yaml "$ROOT"/otel-collector/examples/*.yaml "$ROOT"/otel-collector/fleet/*.yaml; do
  if out=$("$bin" validate --config "$cfg" 2>&1); then
    echo "ok    ${cfg#"$ROOT"/}"
    n=$((n + 1))
  else
    echo "FAIL  ${cfg#"$ROOT"/}: $out" >&2
    exit 1
  fi
done
echo "validated $n collector configs"
