import test from 'ava';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultConfigPath, defaults, envName, flagName, loadConfig, nativeOptions, parseCidr, redactConfig, SCHEMA } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';

const tmpFile = (content: unknown) => {
  const dir = mkdtempSync(join(tmpdir(), 'toa-otel-config-'));
  const p = join(dir, 'c.json');
  writeFileSync(p, typeof content === 'string' ? content : JSON.stringify(content));
  return p;
};

test('config/default.json holds exactly the schema defaults', (t) => {
  t.deepEqual(JSON.parse(readFileSync(defaultConfigPath(), 'utf8')), defaults());
});

test('defaults load with an empty environment', (t) => {
  const { config, origin } = loadConfig({ env: {} });
  t.deepEqual(config, defaults());
  t.is(config.merge.windowSec, 10);
  t.is(config.merge.maxKeys, 65536);
  t.is(config.shutdown.timeoutMs, 10000);
  t.is(config.export.maxQueueSize, 65536);
  t.is(origin['probe.mode'], 'default');
});

test('precedence: flag > env > file > default, with origins', (t) => {
  const file = tmpFile({ probe: { mode: 'kretprobe', pollIntervalMs: 20 }, merge: { windowSec: 3 } });
  const { config, origin } = loadConfig({
    configFile: file,
    env: { TOA_OTEL_PROBE_MODE: 'sockops', TOA_OTEL_MERGE_WINDOW_SEC: '5' },
    cli: { 'merge.windowSec': '7' },
  });
  t.is(config.probe.mode, 'sockops');
  t.is(config.probe.pollIntervalMs, 20);
  t.is(config.merge.windowSec, 7);
  t.is(origin['probe.mode'], 'env TOA_OTEL_PROBE_MODE');
  t.is(origin['probe.pollIntervalMs'], `file ${file}`);
  t.is(origin['merge.windowSec'], 'flag --merge-window-sec');
});

test('lists, booleans and numbers are coerced from env strings', (t) => {
  const { config } = loadConfig({
    env: {
      TOA_OTEL_TOA_ACCEPT: '254/8, 200/8',
      TOA_OTEL_TOA_TRUSTED_PEERS: '198.18.0.0/15,fd00::/8,198.18.2.1',
      TOA_OTEL_PROBE_INCLUDE_LOOPBACK: 'yes',
      TOA_OTEL_TOA_PARSE_SYN: 'false',
      TOA_OTEL_PROBE_RING_BUFFER_BYTES: '1048576',
      OTEL_SERVICE_NAME: 'edge-rs',
    },
  });
  t.deepEqual(config.toa.accept, ['254/8', '200/8']);
  t.deepEqual(config.toa.trustedPeers, ['198.18.0.0/15', 'fd00::/8', '198.18.2.1']);
  t.true(config.probe.includeLoopback);
  t.false(config.toa.parseSyn);
  t.is(config.probe.ringBufferBytes, 1048576);
  t.is(config.service.name, 'edge-rs');
  t.deepEqual(nativeOptions(config).toaAccept, [
    { kind: 254, len: 8 },
    { kind: 200, len: 8 },
  ]);
});

test('every invalid value is listed with key, value, allowed values and origin', (t) => {
  const file = tmpFile({ exporter: 'kafka', probe: { bogus: 1 }, nonsense: true });
  const e = t.throws(
    () =>
      loadConfig({
        configFile: file,
        env: { TOA_OTEL_PROBE_MODE: 'ebpf', TOA_OTEL_TOA_TRUSTED_PEERS: '198.18.0.0/33' },
        cli: { 'toa.accept': '254/9', 'probe.includeLoopback': 'maybe', 'probe.ringBufferBytes': '100000', 'export.maxExportBatchSize': '100000', 'export.maxQueueSize': '1000' },
      }),
    { instanceOf: ConfigError },
  );
  const byKey = Object.fromEntries(e.issues.map((i) => [i.key, i]));
  t.deepEqual(Object.keys(byKey).sort(), [
    'export.maxExportBatchSize',
    'exporter',
    'nonsense',
    'probe.bogus',
    'probe.includeLoopback',
    'probe.mode',
    'probe.ringBufferBytes',
    'toa.accept',
    'toa.trustedPeers',
  ]);
  t.is(byKey['probe.mode']!.value, 'ebpf');
  t.is(byKey['probe.mode']!.allowed, 'one of auto, fexit, kretprobe, sockops');
  t.regex(byKey['probe.mode']!.message!, /from env TOA_OTEL_PROBE_MODE/);
  t.regex(byKey['exporter']!.message!, /from file/);
  t.regex(byKey['toa.trustedPeers']!.message!, /198\.18\.0\.0\/33/);
  t.regex(byKey['probe.ringBufferBytes']!.message!, /power of two/);
  t.regex(byKey['export.maxExportBatchSize']!.allowed, /at most export.maxQueueSize \(1000\)/);
  t.regex(e.message, /9 problems/);
});

test('an unreadable config file is a config error naming the file', (t) => {
  const e = t.throws(() => loadConfig({ configFile: '/nonexistent/toa.json', env: {} }), { instanceOf: ConfigError });
  t.is(e.issues[0]!.key, 'config');
  t.is(e.issues[0]!.value, '/nonexistent/toa.json');
  const bad = tmpFile('{ not json');
  t.throws(() => loadConfig({ configFile: bad, env: {} }), { instanceOf: ConfigError, message: /cannot load/ });
});

test('unsupported OTEL_EXPORTER_OTLP_PROTOCOL (grpc) and bad endpoints stop start-up', (t) => {
  const e = t.throws(() => loadConfig({ env: { OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: 'localhost:4318' } }), {
    instanceOf: ConfigError,
  });
  t.deepEqual(
    e.issues.map((i) => i.key),
    ['OTEL_EXPORTER_OTLP_PROTOCOL', 'OTEL_EXPORTER_OTLP_LOGS_ENDPOINT'],
  );
  t.regex(e.issues[0]!.allowed, /http\/protobuf or http\/json/);
});

test('secrets are redacted in the printed config and in errors', (t) => {
  const { config } = loadConfig({ env: { TOA_OTEL_OTLP_HEADERS: 'authorization=Bearer%20s3cret' } });
  t.is(config.otlp.headers, 'authorization=Bearer%20s3cret');
  t.is(redactConfig(config).otlp.headers, '<redacted>');
  t.is(redactConfig(defaults()).otlp.headers, '');
  const e = t.throws(() => loadConfig({ env: { TOA_OTEL_OTLP_HEADERS: 's3cret-no-equals' } }), { instanceOf: ConfigError });
  t.false(e.message.includes('s3cret'));
});

test('CIDR parsing', (t) => {
  t.deepEqual(parseCidr('198.18.0.0/15'), { addr: '198.18.0.0', prefix: 15, family: 4 });
  t.deepEqual(parseCidr('fd00::1'), { addr: 'fd00::1', prefix: 128, family: 6 });
  t.is(parseCidr('198.18.0.0/33'), undefined);
  t.is(parseCidr('fd00::/129'), undefined);
  t.is(parseCidr('example.com/8'), undefined);
  t.is(parseCidr('1.2.3.4/8/9'), undefined);
});

test('env and flag names follow the documented pattern', (t) => {
  t.is(envName('probe.includeLoopback'), 'TOA_OTEL_PROBE_INCLUDE_LOOPBACK');
  t.is(envName('service.name'), 'OTEL_SERVICE_NAME');
  t.is(flagName('export.maxQueueSize'), 'export-max-queue-size');
  t.is(flagName('exporter'), 'exporter');
});

test('the README config table documents every key with its default', (t) => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  for (const [key, def] of Object.entries(SCHEMA)) {
    const d = Array.isArray(def.default) ? (def.default.length ? def.default.join(',') : '(empty)') : def.default === '' ? '(empty)' : String(def.default);
    t.true(readme.includes(`| \`${key}\` | \`${d}\` |`), `README lacks the row of ${key} with default ${d}`);
  }
});

test('lists: empty entries are errors naming the key (",," or " " is not the empty list)', (t) => {
  for (const raw of [',,', ' ', '198.18.2.0/24,', ',198.18.2.0/24', '198.18.2.0/24,,fd00::/8']) {
    const e = t.throws(() => loadConfig({ env: {}, cli: { 'toa.trustedPeers': raw } }), { instanceOf: ConfigError }, JSON.stringify(raw));
    t.deepEqual(e.issues.map((i) => i.key), ['toa.trustedPeers'], JSON.stringify(raw));
    t.regex(e.issues[0]!.message!, /empty entry/);
  }
  const e = t.throws(() => loadConfig({ env: { TOA_OTEL_TOA_ACCEPT: '254/8,' } }), { instanceOf: ConfigError });
  t.is(e.issues[0]!.key, 'toa.accept');
  t.deepEqual(loadConfig({ env: {}, cli: { 'toa.trustedPeers': '' } }).config.toa.trustedPeers, [], 'the empty string is the explicit empty list');
  t.deepEqual(loadConfig({ env: {}, cli: { 'toa.trustedPeers': ' 198.18.2.0/24 , fd00::/8 ' } }).config.toa.trustedPeers, ['198.18.2.0/24', 'fd00::/8']);
});

test('toa.trustAll: default false, env and flag; contradicts a non-empty toa.trustedPeers', (t) => {
  t.false(loadConfig({ env: {} }).config.toa.trustAll);
  t.is(envName('toa.trustAll'), 'TOA_OTEL_TOA_TRUST_ALL');
  t.is(flagName('toa.trustAll'), 'toa-trust-all');
  t.true(loadConfig({ env: { TOA_OTEL_TOA_TRUST_ALL: 'true' } }).config.toa.trustAll);
  const e = t.throws(() => loadConfig({ env: {}, cli: { 'toa.trustAll': true, 'toa.trustedPeers': '198.18.2.0/24' } }), { instanceOf: ConfigError });
  t.deepEqual(e.issues.map((i) => i.key), ['toa.trustAll']);
});

test('toa.rewritePeer: default off; env, flag and ports; needs trusted peers and packet TOA', (t) => {
  const d = loadConfig({ env: {} }).config;
  t.false(d.toa.rewritePeer);
  t.deepEqual(d.toa.rewritePorts, []);
  t.is(envName('toa.rewritePeer'), 'TOA_OTEL_TOA_REWRITE_PEER');
  t.is(flagName('toa.rewritePeer'), 'toa-rewrite-peer');
  const on = loadConfig({ env: { TOA_OTEL_TOA_REWRITE_PEER: 'true', TOA_OTEL_TOA_TRUSTED_PEERS: '198.18.2.0/24', TOA_OTEL_TOA_REWRITE_PORTS: '80,443' } }).config;
  t.true(on.toa.rewritePeer);
  t.deepEqual(on.toa.rewritePorts, [80, 443]);
  t.like(nativeOptions(on), { rewritePeer: true, rewritePorts: [80, 443] });
  // trust-all would let any client choose the address the application sees
  for (const cli of [{ 'toa.rewritePeer': true }, { 'toa.rewritePeer': true, 'toa.trustAll': true }] as Record<string, boolean>[]) {
    const e = t.throws(() => loadConfig({ env: {}, cli }), { instanceOf: ConfigError });
    t.deepEqual(e.issues.map((i) => i.key), ['toa.rewritePeer']);
    t.regex(e.message, /needs toa.trustedPeers/);
  }
  const e2 = t.throws(() => loadConfig({ env: {}, cli: { 'toa.rewritePeer': true, 'toa.trustedPeers': '198.18.2.0/24', 'toa.sources': 'module' } }), { instanceOf: ConfigError });
  t.regex(e2.message, /needs packet TOA/);
  for (const bad of ['0', '65536', 'http', '80,,443']) {
    const e3 = t.throws(() => loadConfig({ env: { TOA_OTEL_TOA_REWRITE_PORTS: bad } }), { instanceOf: ConfigError });
    t.deepEqual(e3.issues.map((i) => i.key), ['toa.rewritePorts'], bad);
  }
});

test('a removed key (traces.closeGraceSec) set in a file, the environment or the CLI map is an error naming it and why', (t) => {
  const file = tmpFile({ traces: { enabled: true, closeGraceSec: 60 } });
  const e = t.throws(() => loadConfig({ configFile: file, env: {} }), { instanceOf: ConfigError });
  t.deepEqual(e.issues.map((i) => i.key), ['traces.closeGraceSec']);
  t.regex(e.issues[0]!.message!, new RegExp(`removed in 0\\.2\\.0 \\(set in ${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\)`));
  t.regex(e.issues[0]!.allowed, /delete the setting: the connection table no longer sees closes/);
  const env = t.throws(() => loadConfig({ env: { TOA_OTEL_TRACES_CLOSE_GRACE_SEC: '30' } }), { instanceOf: ConfigError });
  t.like(env.issues[0], { key: 'traces.closeGraceSec', value: '30' });
  t.regex(env.issues[0]!.message!, /set by env TOA_OTEL_TRACES_CLOSE_GRACE_SEC/);
  const cli = t.throws(() => loadConfig({ env: {}, cli: { 'traces.closeGraceSec': '5' } }), { instanceOf: ConfigError });
  t.regex(cli.message, /traces\.closeGraceSec: removed in 0\.2\.0/);
  t.false('closeGraceSec' in defaults().traces);
});
