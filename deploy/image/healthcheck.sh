#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Health check of the toa-otel image (HEALTHCHECK, Kubernetes liveness probe): the running sidecar
# rewrites the state file of its spool (export.spoolDir) every 2 s from its event loop, so a fresh
# file means the process is alive and not stalled. A stopped or hung sidecar leaves it older.
# (`toa-otel doctor` is not a liveness check: it tells what the kernel supports, not whether the
# sidecar runs; the image test runs it once.)
#   TOA_OTEL_HEALTH_MAX_AGE_SEC   oldest acceptable state file, seconds (default 30)
dir=${TOA_OTEL_EXPORT_SPOOL_DIR:-/var/lib/toa-otel/spool}
max=${TOA_OTEL_HEALTH_MAX_AGE_SEC:-30}
f=$dir/state.json
if [ ! -f "$f" ]; then
	echo "unhealthy: no $f (the spool starts with the otlp exporter and export.spoolDir set)"
	exit 1
fi
age=$(( $(date +%s) - $(stat -c %Y "$f") ))
if [ "$age" -gt "$max" ]; then
	echo "unhealthy: $f was last written ${age}s ago (limit ${max}s): the sidecar stopped or stalled"
	exit 1
fi
if grep -q '"clean":true' "$f"; then
	echo "unhealthy: $f says the sidecar stopped (clean stop)"
	exit 1
fi
echo "healthy: state file written ${age}s ago"
