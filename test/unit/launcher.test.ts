// The launcher (bin/toa-otel.js) runs the sidecar with the V8 flags of bin/node-flags.js by
// re-exec'ing itself in place; the pipeline benchmark's memory numbers depend on it.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { missingNodeFlags, NODE_FLAGS } from '../../bin/node-flags.js';

const BIN = fileURLToPath(new URL('../../bin/toa-otel.js', import.meta.url));

/** Runs `toa-otel --version` with a preload that records each process image's pid and execArgv. */
function launch(env: NodeJS.ProcessEnv = {}, nodeOptions = '') {
  const dir = mkdtempSync(join(tmpdir(), 'toa-launcher-'));
  try {
    const log = join(dir, 'log');
    const preload = join(dir, 'record.cjs');
    writeFileSync(preload, `require('fs').appendFileSync(${JSON.stringify(log)}, JSON.stringify({ pid: process.pid, execArgv: process.execArgv }) + '\\n');`);
    const r = spawnSync(process.execPath, [BIN, '--version'], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, ...env, NODE_OPTIONS: `${nodeOptions} --require ${preload}`.trim() },
    });
    const images = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { pid: number; execArgv: string[] });
    return { status: r.status, stdout: r.stdout.trim(), images };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('missingNodeFlags: flags given on the command line or in NODE_OPTIONS (any spelling) are not added', (t) => {
  t.deepEqual(missingNodeFlags([], ''), NODE_FLAGS);
  t.deepEqual(missingNodeFlags(['--max-semi-space-size=32'], ''), ['--disable-sigusr1']);
  t.deepEqual(missingNodeFlags([], '--max_semi_space_size=4 --enable-source-maps'), ['--disable-sigusr1']);
  t.deepEqual(missingNodeFlags(['--disable-sigusr1'], '--max-semi-space-size=4'), []);
});

test('the launcher re-execs itself once, in place (same pid), with the V8 flags', (t) => {
  const r = launch();
  t.is(r.status, 0);
  t.regex(r.stdout, /^\d+\.\d+\.\d+/);
  t.is(r.images.length, 2, 'one re-exec');
  t.is(r.images[1]!.pid, r.images[0]!.pid);
  t.deepEqual(r.images[0]!.execArgv, []);
  for (const f of NODE_FLAGS) t.true(r.images[1]!.execArgv.includes(f), f);
});

test('the launcher leaves the flags to the user when NODE_OPTIONS sets them, and TOA_OTEL_REEXEC=0 skips the re-exec', (t) => {
  t.is(launch({}, '--max-semi-space-size=16 --disable-sigusr1').images.length, 1);
  // one flag left to add: still one re-exec, with that flag only
  const partial = launch({}, '--max-semi-space-size=16');
  t.is(partial.images.length, 2);
  t.true(partial.images[1]!.execArgv.includes('--disable-sigusr1'));
  t.false(partial.images[1]!.execArgv.some((a) => a.startsWith('--max-semi-space-size')));
  const off = launch({ TOA_OTEL_REEXEC: '0' });
  t.is(off.status, 0);
  t.is(off.images.length, 1);
});
