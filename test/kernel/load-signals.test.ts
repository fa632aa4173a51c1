// SPDX-License-Identifier: Apache-2.0
// The probe loads while signals keep arriving. `node --cpu-prof` sends SIGPROF to the main thread
// about every profiling interval; the verifier gives up with EAGAIN when a signal is pending, and
// before the loader blocked signals for the load every attempt failed ("kernel rejected the
// sockops programs: Resource temporarily unavailable"). The child loads the real probe 3 times
// with a 50 µs sampling interval, so a signal is due many times during each verification.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cgroup2Mount } from '../lab/lab.js';
import { gatedTest, nativeGate, privilegedGate } from '../helpers/privileged.js';

const ADDON = new URL('../../build/Release/toa_otel.node', import.meta.url).pathname;
const CHILD = new URL('../fixtures/load-probe.ts', import.meta.url).pathname;
const test = gatedTest(privilegedGate(), nativeGate(ADDON));

test.serial('the probe loads under node --cpu-prof (SIGPROF during verification)', (t) => {
  const cgroup = join(cgroup2Mount(), `toa-otel-test-sig-${process.pid}`);
  const profDir = mkdtempSync(join(tmpdir(), 'toa-otel-prof-'));
  mkdirSync(cgroup);
  try {
    const out = execFileSync(
      process.execPath,
      ['--cpu-prof', '--cpu-prof-interval', '50', '--cpu-prof-dir', profDir, '--import=tsx', CHILD, cgroup, '3'],
      { encoding: 'utf8', timeout: 90_000 },
    );
    const r = JSON.parse(out.trim().split('\n').pop()!) as { ok: number; errors: string[] };
    t.deepEqual(r.errors, [], 'no load failed');
    t.is(r.ok, 3);
  } finally {
    rmdirSync(cgroup);
    rmSync(profDir, { recursive: true, force: true });
  }
});
