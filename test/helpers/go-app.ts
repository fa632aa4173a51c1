// Test helper: build the Go application instrumented with otelhttp (test/lab/traced-go-app) with the
// machine's Go, like scripts/build-collector.sh (modules from the configured Go module proxy, the
// default Go build and module caches, so a rebuild takes about a second). The binary goes to
// .cache/traced-go-app (ignored). The gate closes when `go` is missing or older than go.mod asks;
// the collector build needs the same Go, so TOA_OTEL_REQUIRE_COLLECTOR=1 makes that a failure.
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../src/package.js';
import type { Gate } from './privileged.js';

const ROOT = packageRoot();
const SRC = join(ROOT, 'test/lab/traced-go-app');
export const GO_APP_BIN = join(ROOT, '.cache/traced-go-app');

/** `go` on PATH, else where the official tarball puts it */
function goCommand(): string | undefined {
  for (const c of ['go', '/usr/local/go/bin/go']) {
    const r = spawnSync(c, ['env', 'GOVERSION'], { encoding: 'utf8', timeout: 20_000 });
    if (r.status === 0) return c;
  }
  return undefined;
}

const versionParts = (v: string) => (/(\d+)\.(\d+)/.exec(v) ?? []).slice(1).map(Number);

export function goGate(): Gate {
  const go = goCommand();
  const want = /^go (\S+)$/m.exec(readFileSync(join(SRC, 'go.mod'), 'utf8'))?.[1] ?? '0.0';
  if (!go) return { reason: `go not found (the otelhttp test app needs Go >= ${want}, like the collector build)`, requireEnv: 'TOA_OTEL_REQUIRE_COLLECTOR' };
  const have = spawnSync(go, ['env', 'GOVERSION'], { encoding: 'utf8' }).stdout.trim();
  const [hM = 0, hm = 0] = versionParts(have);
  const [wM = 0, wm = 0] = versionParts(want);
  if (hM < wM || (hM === wM && hm < wm)) return { reason: `${have} is older than the go ${want} the otelhttp test app needs`, requireEnv: 'TOA_OTEL_REQUIRE_COLLECTOR' };
  return { reason: null };
}

/** Builds (or reuses, when Go's build cache says nothing changed) the app; resolves with its path. */
export function buildGoApp(): Promise<string> {
  const go = goCommand();
  if (!go) return Promise.reject(new Error('go not found'));
  return new Promise((resolve, reject) => {
    // nice: the machine is shared; GOFLAGS=-mod=readonly: go.sum is the pinned truth
    execFile('nice', ['-n', '10', go, 'build', '-o', GO_APP_BIN, '.'], { cwd: SRC, env: { ...process.env, GOFLAGS: '-mod=readonly' }, timeout: 8 * 60_000 }, (err, _out, stderr) => {
      if (err || !existsSync(GO_APP_BIN)) return reject(new Error(`go build of ${SRC} failed: ${err?.message ?? ''}\n${stderr}`));
      resolve(GO_APP_BIN);
    });
  });
}
