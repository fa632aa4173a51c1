import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { main, parseArgs } from '../../src/cli.js';
import { defaults, SCHEMA } from '../../src/config.js';
import { UsageError } from '../../src/errors.js';
import { addonPath } from '../../src/native.js';
import { packageVersion } from '../../src/resource.js';

const BIN = fileURLToPath(new URL('../../bin/toa-otel.js', import.meta.url));

async function runMain(argv: string[], env: NodeJS.ProcessEnv = {}) {
  let out = '';
  let err = '';
  const code = await main(argv, { stdout: (s) => (out += s), stderr: (s) => (err += s), env });
  return { code, out, err, errLines: err.trim() === '' ? [] : err.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>) };
}

function runBin(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...env } });
}

test('parseArgs: commands, value flags, boolean flags and --no-', (t) => {
  const a = parseArgs(['--probe-mode', 'sockops', '--merge-window-sec=5', '--probe-include-loopback', '--no-toa-parse-syn', '--config', '/etc/toa.json']);
  t.is(a.command, 'run');
  t.is(a.configFile, '/etc/toa.json');
  t.deepEqual(a.cli, { 'probe.mode': 'sockops', 'merge.windowSec': '5', 'probe.includeLoopback': true, 'toa.parseSyn': false });
  t.is(parseArgs(['doctor']).command, 'doctor');
  t.true(parseArgs(['config', '--print']).print);
  t.deepEqual(parseArgs(['--probe-include-loopback=false']).cli, { 'probe.includeLoopback': 'false' });
});

test('parseArgs: every schema key has a flag', (t) => {
  for (const key of Object.keys(SCHEMA)) {
    const def = SCHEMA[key]!;
    const flag = '--' + key.replace(/([a-z0-9])([A-Z])/g, '$1-$2').replace(/\./g, '-').toLowerCase();
    const args = def.flag ? [flag] : [flag, 'x'];
    t.true(key in parseArgs(args).cli, key);
  }
});

test('parseArgs: unknown commands, options and missing values are usage errors', (t) => {
  t.throws(() => parseArgs(['start']), { instanceOf: UsageError, message: /unknown command "start"/ });
  t.throws(() => parseArgs(['--bogus']), { instanceOf: UsageError, message: /unknown option "--bogus"/ });
  t.throws(() => parseArgs(['--probe-mode']), { instanceOf: UsageError, message: /--probe-mode needs a value/ });
  t.throws(() => parseArgs(['run', 'extra']), { instanceOf: UsageError, message: /unexpected argument/ });
  t.throws(() => parseArgs(['--print']), { instanceOf: UsageError, message: /config command/ });
});

test('--version and --help', async (t) => {
  const v = await runMain(['--version']);
  t.is(v.code, 0);
  t.is(v.out, `${packageVersion()}\n`);
  const h = await runMain(['--help']);
  t.is(h.code, 0);
  t.regex(h.out, /toa-otel doctor/);
  t.regex(h.out, /--probe-mode VALUE/);
  t.regex(h.out, /Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage, 3 probe could not start/);
});

test('config --print shows the effective config with secrets redacted', async (t) => {
  const r = await runMain(['config', '--print', '--exporter', 'stdout'], { TOA_OTEL_OTLP_HEADERS: 'authorization=Bearer%20abc' });
  t.is(r.code, 0);
  const printed = JSON.parse(r.out);
  t.is(printed.exporter, 'stdout');
  t.is(printed.otlp.headers, '<redacted>');
  t.false(r.out.includes('abc'));
  t.deepEqual(Object.keys(printed), Object.keys(defaults()));
});

test('config --table prints a row per key', async (t) => {
  const r = await runMain(['config', '--table']);
  t.is(r.code, 0);
  for (const key of Object.keys(SCHEMA)) t.true(r.out.includes(`| \`${key}\` |`), key);
});

test('invalid configuration exits 2 with one JSON log line per problem', async (t) => {
  const r = await runMain(['--probe-mode', 'magic', '--merge-window-sec', '-3']);
  t.is(r.code, 2);
  const issues = r.errLines.filter((l) => l.msg === 'invalid configuration value');
  t.deepEqual(issues.map((l) => l.key), ['probe.mode', 'merge.windowSec']);
  t.is(issues[0]!.allowed, 'one of auto, fexit, kretprobe, sockops');
  t.is(issues[0]!.value, 'magic');
  t.is(r.out, '');
});

test('usage errors exit 2', async (t) => {
  const r = await runMain(['--nope']);
  t.is(r.code, 2);
  t.is(r.errLines[0]!.code, 'EUSAGE');
});

test('the launcher: run without the addon exits 3 and says to run npm run build', (t) => {
  const r = runBin(['run', '--exporter', 'none'], { TOA_OTEL_ADDON: '/nonexistent/toa_otel.node' });
  t.is(r.status, 3, r.stderr);
  const line = r.stderr.trim().split('\n').map((l) => JSON.parse(l)).find((l) => l.code === 'ENOADDON');
  t.truthy(line, r.stderr);
  t.regex(line.msg, /npm run build/);
  t.regex(line.hint, /npm run build/);
});

test('the launcher: doctor prints one line per capability and exits 0 only when a mode works', (t) => {
  const r = runBin(['doctor']);
  if (!existsSync(addonPath())) {
    t.is(r.status, 3);
    t.regex(r.stderr, /ENOADDON/);
    return;
  }
  const lines = r.stdout.trim().split('\n');
  t.true(lines.length > 0);
  for (const l of lines) t.regex(l, /^(ok |no ) [^:]+: .+/);
  const anyMode = lines.some((l) => l.startsWith('ok ') && l.includes(' mode '));
  t.is(r.status, anyMode ? 0 : 3, r.stderr);
});
