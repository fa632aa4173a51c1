// SPDX-License-Identifier: Apache-2.0
// A probe whose reader dies must take the sidecar down with exit code 1 and an error line,
// not leave it "running" without a probe. The real addon and kernel buffer: with
// TOA_OTEL_TEST_BREAK_READER=1 the addon swaps the reader's epoll fd for /dev/null right
// after attaching, so the reader's first real poll fails (EINVAL). Needs root.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { gatedTest, nativeGate, privilegedGate } from '../helpers/privileged.js';

const BIN = fileURLToPath(new URL('../../bin/toa-otel.js', import.meta.url));
const test = gatedTest(privilegedGate(), nativeGate());

test('a reader that cannot poll the kernel buffer ends the sidecar with exit 1 and says why', async (t) => {
  const child = spawn(process.execPath, [BIN, 'run', '--exporter', 'none', '--log-level', 'info'], {
    env: { ...process.env, TOA_OTEL_TEST_BREAK_READER: '1' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const code = await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve(null);
    }, 30_000);
    child.once('exit', (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  t.log(stderr);
  t.is(code, 1, 'exit code 1 (runtime failure)');
  const lines = stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { level: string; msg: string; code?: string });
  t.true(lines.some((l) => l.msg === 'probe started'), 'the probe had started');
  const failure = lines.find((l) => l.level === 'error' && /cannot poll the kernel event buffer/.test(l.msg));
  t.truthy(failure, 'an error line says the reader failed');
  t.is(failure?.code, 'EINVAL');
  t.regex(failure?.msg ?? '', /no connections are read any more/);
  t.true(lines.some((l) => l.msg === 'stopped'), 'the pipeline shut down in order');
});
