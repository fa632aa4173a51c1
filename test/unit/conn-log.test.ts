// SPDX-License-Identifier: Apache-2.0
// The reader of the connection table's per-CPU logs (native/core/toa_conn_log.h) against a
// simulated writer (native/tools/toa_conn_log_test.c): order per CPU, a nested writer's
// unpublished slot, a lapped reader counting what it lost, a reserved slot never published,
// and a writer thread racing a reader thread on a log of 8 slots (no torn record applied;
// applied + lost = written). The kernel side: test/kernel/conntab.test.ts.
import { spawnSync } from 'node:child_process';
import { gatedTest, nativeGate } from '../helpers/privileged.js';

const BIN = new URL('../../build/toa-conn-log-test', import.meta.url).pathname;
const test = gatedTest(nativeGate(BIN));

test('per-CPU log reader: order, nesting, lapping, a stalled slot, a racing writer', (t) => {
  const r = spawnSync(BIN, ['--race-ms', '500'], { encoding: 'utf8', timeout: 30_000 });
  t.log(r.stdout.trim());
  t.is(r.status, 0, r.stderr);
  for (const c of ['order', 'nested', 'lapped', 'stalled', 'race']) t.regex(r.stdout, new RegExp(`^${c}: ok$`, 'm'));
});
