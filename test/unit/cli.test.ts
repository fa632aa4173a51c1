import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { main, parseArgs } from '../../src/cli.js';
import { defaults, SCHEMA } from '../../src/config.js';
import { UsageError } from '../../src/errors.js';
import { addonPath } from '../../src/native.js';
import { packageVersion } from '../../src/package.js';
import { gatedTest, nativeGate, privilegedGate, type Gate } from '../helpers/privileged.js';

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
  t.throws(() => parseArgs(['--traces-close-grace-sec', '5']), { instanceOf: UsageError, message: /"--traces-close-grace-sec" \(traces\.closeGraceSec\) was removed in 0\.2\.0: the connection table no longer sees closes/ });
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
  t.not(r.stdout.trim(), '', `doctor printed nothing:\n${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  for (const l of lines) t.regex(l, /^(ok |no ) [^:]+: .+/);
  const anyMode = lines.some((l) => l.startsWith('ok ') && l.includes(' mode '));
  t.is(r.status, anyMode ? 0 : 3, r.stderr);
});

test('parseArgs: boolean flags take true/false (yes/no, on/off, 1/0) as the next word, like every other key', (t) => {
  t.deepEqual(parseArgs(['--enrich-enabled', 'false']).cli, { 'enrich.enabled': 'false' });
  t.deepEqual(parseArgs(['--enrich-enabled', 'NO', '--probe-include-loopback', '1']).cli, { 'enrich.enabled': 'false', 'probe.includeLoopback': 'true' });
  t.deepEqual(parseArgs(['--probe-include-loopback', '--exporter', 'none']).cli, { 'probe.includeLoopback': true, exporter: 'none' });
  const a = parseArgs(['--probe-include-loopback', 'run']);
  t.is(a.command, 'run', 'a command after a bare boolean flag is still the command');
  t.deepEqual(a.cli, { 'probe.includeLoopback': true });
  t.is(parseArgs(['--toa-trust-all', 'doctor']).command, 'doctor');
});

test('parseArgs: a boolean flag followed by a non-boolean word names the flag, the key and the allowed values', (t) => {
  const e = t.throws(() => parseArgs(['--enrich-enabled', 'maybe']), { instanceOf: UsageError });
  t.regex(e.message, /--enrich-enabled \(enrich\.enabled\) is a boolean: it takes true or false/);
  t.regex(e.message, /not "maybe"/);
  t.throws(() => parseArgs(['run', '--enrich-enabled', 'run']), { instanceOf: UsageError, message: /not "run"/ });
});

test('run: --enrich-enabled false is accepted end to end (config --print shows false)', async (t) => {
  const r = await runMain(['config', '--print', '--enrich-enabled', 'false', '--exporter', 'none']);
  t.is(r.code, 0, r.err);
  t.false(JSON.parse(r.out).enrich.enabled);
  const bad = await runMain(['--enrich-enabled', 'maybe']);
  t.is(bad.code, 2);
  t.regex(String(bad.errLines[0]!.msg), /enrich\.enabled/);
});

test('run: empty list entries and an unconfigured trust list with otlp exit 2 naming the key, before the probe loads', async (t) => {
  for (const v of [',,', ' ']) {
    const r = await runMain(['--toa-trusted-peers', v, '--exporter', 'none']);
    t.is(r.code, 2, v);
    t.is(r.errLines[0]!.key, 'toa.trustedPeers');
  }
  const otlp = await runMain(['--exporter', 'otlp'], { TOA_OTEL_ADDON: '/nonexistent/toa_otel.node' });
  t.is(otlp.code, 2);
  const line = otlp.errLines.find((l) => l.msg === 'invalid configuration value')!;
  t.is(line.key, 'toa.trustedPeers');
  t.regex(String(line.problem), /any client could forge its address/);
  t.regex(String(line.allowed), /toa\.trustAll=true/);
});

test('run: --probe-cgroup-path that is not a cgroup exits 2 "not a cgroup v2 directory"; a missing one is not called a cgroup v2 root', async (t) => {
  const etc = await runMain(['--probe-cgroup-path', '/etc', '--exporter', 'none']);
  t.is(etc.code, 2);
  t.is(etc.errLines[0]!.key, 'probe.cgroupPath');
  t.regex(String(etc.errLines[0]!.problem), /not a cgroup v2 directory/);
  const missing = await runMain(['--probe-cgroup-path', '/nonexistent/cg', '--exporter', 'none']);
  t.is(missing.code, 2);
  t.regex(String(missing.errLines[0]!.problem), /no such directory/);
  t.notRegex(missing.err, /cgroup v2 root/);
});

/** The unprivileged run needs a checkout that uid 65534 can read (not one under /root, mode 700). */
function nobodyCanReadGate(): Gate {
  if (process.getuid?.() !== 0) return { reason: null }; // the privileged gate says why
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'test', '-r', BIN], { timeout: 10_000 });
  return {
    reason: r.status === 0 ? null : `uid 65534 cannot read ${BIN} (the checkout is under a private directory such as /root)`,
    requireEnv: 'TOA_OTEL_REQUIRE_PRIVILEGED',
  };
}

// root is needed to become nobody
gatedTest(privilegedGate(['setpriv']), nativeGate(), nobodyCanReadGate())('doctor run unprivileged says which privileges are missing, not that the kernel is too old', (t) => {
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, BIN, 'doctor'], {
    encoding: 'utf8', timeout: 60_000, env: { ...process.env },
  });
  t.is(r.status, 3, r.stderr);
  const err = r.stderr.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const line = err.find((l) => l.code === 'EPERM');
  t.truthy(line, r.stderr);
  t.regex(String(line!.msg), /privileges: missing CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN/);
  t.deepEqual(line!.missing, ['CAP_BPF', 'CAP_PERFMON', 'CAP_NET_ADMIN']);
  t.notRegex(r.stderr, /kernel ?(>=|≥|<)|on this kernel/);
  t.notRegex(r.stdout, /< ?5\.8|>= ?5\.10|needs kernel/, 'no line blames the kernel version');
  t.regex(r.stdout, /^no {2}privileges: missing CAP_BPF/m);
  t.regex(r.stdout, /^no {2}mode sockops: not tested: needs CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN/m);
});
