// End-to-end tests of otel-collector/: the REAL collector built from builder-config.yaml runs each
// shipped config; real OTLP/HTTP protobuf requests (the project's OpenTelemetry SDK + exporter)
// carry records with the contract's attribute names; assertions read the collector's file output.
// No root needed. Skipped (with the reason) when the collector is not built, but FAIL under
// TOA_OTEL_REQUIRE_COLLECTOR=1 (CI). Build it with `npm run build:collector`.
import type { ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  COLLECTOR_BIN, COLLECTOR_DIR, makeTestCertificates, startCollector, validateConfig,
  type FlatLogRecord,
} from '../helpers/collector.js';
import { collectorGate, gatedTest } from '../helpers/privileged.js';
import { sendConnections, type TestConnection } from '../helpers/otlp-logs.js';

// serial: the tests share ports, a collector binary and wall-clock bounds
const ctest = gatedTest(collectorGate()).serial;

const ex = (name: string) => `otel-collector/examples/${name}.yaml`;
const ids = (recs: FlatLogRecord[]) => recs.map((r) => String(r.attributes['test.id'])).sort();
const byId = (recs: FlatLogRecord[]) => new Map(recs.map((r) => [String(r.attributes['test.id']), r]));

/** Send through the real exporter and insist that the collector accepted the request. */
async function send(t: ExecutionContext, url: string, conns: TestConnection[], extra: Partial<Parameters<typeof sendConnections>[1]> = {}) {
  const r = await sendConnections(conns, { url, ...extra });
  t.true(r.ok, `export to ${url} failed: ${r.error}`);
  return r;
}

/** Run `config` with the given env, send `conns`, stop (flushes everything), return the output. */
async function runExample(t: ExecutionContext, config: string, conns: TestConnection[], env: Record<string, string> = {}) {
  const c = await startCollector(t, { configFile: config, env });
  await send(t, c.logsUrl, conns);
  t.is(await c.stop(), 0, `collector did not exit cleanly:\n${c.tail()}`);
  return c.records();
}

// ---------------------------------------------------------------------------------------------
ctest('the built distribution has exactly the components of the manifest', (t) => {
  const out = execFileSync(COLLECTOR_BIN, ['components'], { encoding: 'utf8' });
  const section = (name: string) => {
    const m = out.match(new RegExp(`^${name}:\\n((?:[ -].*\\n?)*)`, 'm'));
    return m ? [...m[1]!.matchAll(/- name: (\S+)/g)].map((x) => x[1]!).sort() : [];
  };
  t.deepEqual(section('receivers'), ['otlp']);
  t.deepEqual(section('processors'), ['attributes', 'batch', 'filter', 'transform']);
  t.deepEqual(section('exporters'), ['debug', 'file', 'load_balancing', 'otlp_http']);
  t.deepEqual(section('extensions'), []);
  t.deepEqual(section('connectors'), []);
  t.regex(out, /version: 0\.161\.0/);
  for (const m of out.matchAll(/module: (\S+) (v\S+)/g)) {
    t.true(['v0.161.0', 'v1.67.0'].includes(m[2]!), `${m[1]} is at ${m[2]}, not the one release v0.161.0/v1.67.0`);
  }
});

ctest('every shipped config passes `otelcol validate`, and validate does reject a bad OTTL statement', (t) => {
  const env = {
    TOA_OTEL_UPSTREAM_ENDPOINT: 'http://127.0.0.1:9',
    TOA_OTEL_COLLECTOR_TLS_CERT: '/nonexistent/server.crt',
    TOA_OTEL_COLLECTOR_TLS_KEY: '/nonexistent/server.key',
    TOA_OTEL_COLLECTOR_TOKEN: 'placeholder',
  };
  const files = ['agent.yaml', ...readdirSync(join(COLLECTOR_DIR, 'examples')).filter((f) => f.endsWith('.yaml')).map((f) => `examples/${f}`)];
  t.true(files.length >= 8, `expected agent.yaml and 7 examples, found ${files.join(', ')}`);
  for (const f of files) {
    t.is(validateConfig(join(COLLECTOR_DIR, f), env), null, `${f} does not validate`);
    const text = readFileSync(join(COLLECTOR_DIR, f), 'utf8');
    t.regex(text, /^# .*\n#\n# (Keeps|Drops|Routes|Receives|Transport):/m, `${f} lacks the header saying what it keeps/drops`);
  }
  // The same validation must be able to fail: a misspelled OTTL function in a copy of an example.
  const dir = mkdtempSync(join(tmpdir(), 'toa-otel-validate-'));
  try {
    const bad = readFileSync(join(COLLECTOR_DIR, 'examples/keep-local-ports.yaml'), 'utf8').replace('not (', 'nott (');
    writeFileSync(join(dir, 'bad.yaml'), bad);
    const err = validateConfig(join(dir, 'bad.yaml'), env);
    t.truthy(err, 'validate accepted a broken filter condition');
    t.regex(err ?? '', /filter\/keep-local-ports/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

ctest('records arrive with the contract attributes, resource, event name, severity and exact timestamp', async (t) => {
  const c = await startCollector(t);
  const conns: TestConnection[] = [
    { id: 'toa4', toa: { ip: '198.18.7.1', port: 51000, trusted: true, source: 'module' }, localPort: 443, time: [1_700_000_000, 123_456_789] },
    { id: 'peer6', peerAddress: '2001:db8::10', peerPort: 52000, localAddress: '2001:db8::1', localPort: 80, time: [1_700_000_001, 1] },
  ];
  await send(t, c.logsUrl, conns);
  const recs = await c.waitForRecords(2);
  t.is(recs.length, 2);
  const m = byId(recs);
  const a = m.get('toa4')!;
  t.is(a.eventName, 'lvs.tcp.accept');
  t.is(a.severityNumber, 9);
  t.is(a.timeUnixNano, 1_700_000_000_123_456_789n);
  t.deepEqual(a.resource, { 'service.name': 'toa-otel', 'service.version': '0.1.0', 'host.name': 'rs-test' });
  t.like(a.attributes, {
    'client.address': '198.18.7.1', 'client.port': 51000, 'network.local.port': 443, 'network.transport': 'tcp',
    'network.type': 'ipv4', 'net.peer.ip': '198.18.0.10', 'network.peer.address': '198.18.0.10',
    'lvs.toa.client_ip': '198.18.7.1', 'lvs.toa.client_port': 51000, 'lvs.toa.source': 'module',
    'lvs.toa.kind': 254, 'lvs.toa.trusted': true, 'lvs.probe.mode': 'fexit',
  });
  const b = m.get('peer6')!;
  t.is(b.timeUnixNano, 1_700_000_001_000_000_001n);
  t.like(b.attributes, { 'client.address': '2001:db8::10', 'client.port': 52000, 'network.type': 'ipv6' });
  t.false('lvs.toa.trusted' in b.attributes, 'no TOA: no lvs.toa.* attributes');
});

ctest('examples/trusted-toa-only keeps exactly the records with lvs.toa.trusted == true', async (t) => {
  const recs = await runExample(t, ex('trusted-toa-only'), [
    { id: 'trusted', toa: { ip: '198.18.7.1', port: 1000, trusted: true } },
    { id: 'trusted6', toa: { ip: '2001:db8:7::1', port: 1001, trusted: true } },
    { id: 'untrusted', toa: { ip: '198.18.7.2', port: 1002, trusted: false } },
    { id: 'no-toa', peerAddress: '198.18.7.3' },
    { id: 'string-true', toa: { ip: '198.18.7.4', port: 1004, trusted: true }, extra: { 'lvs.toa.trusted': 'true' } },
  ]);
  t.deepEqual(ids(recs), ['trusted', 'trusted6']);
  t.true(recs.every((r) => r.attributes['lvs.toa.trusted'] === true));
});

ctest('examples/drop-health-checkers drops exactly the listed client CIDRs', async (t) => {
  const recs = await runExample(t, ex('drop-health-checkers'), [
    { id: 'hc-toa', toa: { ip: '198.18.254.7', port: 1, trusted: true } },
    { id: 'hc-direct', peerAddress: '198.18.254.9' },
    { id: 'hc6', toa: { ip: '2001:db8:beef:42::1', port: 1, trusted: true } },
    { id: 'lo', peerAddress: '127.0.0.1' },
    { id: 'lo6', peerAddress: '::1' },
    { id: 'hc-mapped', peerAddress: '::ffff:198.18.254.3' },
    { id: 'keep-near', peerAddress: '198.18.253.255' },
    { id: 'keep6', toa: { ip: '2001:db8:bee0::1', port: 1, trusted: true } },
    // LVS local address inside the health-check range, real client outside: kept (client decides).
    { id: 'keep-via-lvs', peerAddress: '198.18.254.1', toa: { ip: '198.18.7.1', port: 2, trusted: true } },
    // An untrusted TOA naming a health checker does not make client.address: kept.
    { id: 'keep-untrusted', peerAddress: '198.18.0.10', toa: { ip: '198.18.254.5', port: 3, trusted: false } },
    { id: 'keep-no-client', extra: { 'client.address': undefined } },
  ]);
  t.deepEqual(ids(recs), ['keep-near', 'keep-no-client', 'keep-untrusted', 'keep-via-lvs', 'keep6']);
});

ctest('examples/keep-local-ports keeps exactly local ports 80 and 443', async (t) => {
  const recs = await runExample(t, ex('keep-local-ports'), [
    { id: 'p80', localPort: 80 },
    { id: 'p443', localPort: 443 },
    { id: 'p8080', localPort: 8080 },
    { id: 'p22', localPort: 22 },
    { id: 'no-port', extra: { 'network.local.port': undefined } },
    { id: 'string-port', extra: { 'network.local.port': '80' } },
  ]);
  t.deepEqual(ids(recs), ['p443', 'p80']);
});

ctest('examples/truncate-client-addresses truncates to /24 and /48 and nothing else', async (t) => {
  const recs = await runExample(t, ex('truncate-client-addresses'), [
    { id: 'v4-toa', toa: { ip: '198.18.7.123', port: 1, trusted: true } },
    { id: 'v6-toa', peerAddress: '2001:db8:ffff::9', toa: { ip: '2001:db8:1:2::5', port: 2, trusted: true } },
    { id: 'v6-zero', peerAddress: '2001:db8:ffff::9', toa: { ip: '2001:db8::5', port: 3, trusted: true } },
    { id: 'v6-full', peerAddress: '2001:db8:ffff::9', toa: { ip: '2001:0db8:00aa:0001:0002:0003:0004:0005', port: 4, trusted: true } },
    { id: 'nat64', peerAddress: '2001:db8:ffff::9', toa: { ip: '64:ff9b::198.18.1.2', port: 5, trusted: true } },
    { id: 'v4-direct', peerAddress: '198.18.9.77' },
    { id: 'mapped-direct', peerAddress: '::ffff:198.18.9.77' },
    { id: 'lo6-direct', peerAddress: '::1' },
    { id: 'untrusted', peerAddress: '198.18.0.10', toa: { ip: '198.18.5.5', port: 6, trusted: false } },
  ]);
  t.is(recs.length, 9, 'nothing is dropped');
  const m = byId(recs);
  const a = (id: string) => m.get(id)!.attributes;
  // TOA present: client and TOA address truncated, the peer (LVS local address) kept.
  t.like(a('v4-toa'), { 'client.address': '198.18.7.0', 'lvs.toa.client_ip': '198.18.7.0', 'network.peer.address': '198.18.0.10', 'net.peer.ip': '198.18.0.10', 'client.port': 1 });
  t.like(a('v6-toa'), { 'client.address': '2001:db8:1::', 'lvs.toa.client_ip': '2001:db8:1::', 'network.peer.address': '2001:db8:ffff::9' });
  t.like(a('v6-zero'), { 'client.address': '2001:db8::', 'lvs.toa.client_ip': '2001:db8::' });
  t.like(a('v6-full'), { 'client.address': '2001:0db8:00aa::' });
  t.like(a('nat64'), { 'client.address': '64:ff9b::' });
  // No TOA: the peer is the client, so every copy of it is truncated.
  t.like(a('v4-direct'), { 'client.address': '198.18.9.0', 'network.peer.address': '198.18.9.0', 'net.peer.ip': '198.18.9.0', 'network.peer.port': 40000 });
  t.like(a('mapped-direct'), { 'client.address': '::ffff:198.18.9.0', 'network.peer.address': '::ffff:198.18.9.0' });
  t.like(a('lo6-direct'), { 'client.address': '::', 'net.peer.ip': '::' });
  // Untrusted TOA: client.address is the peer (truncated), the TOA value is truncated too,
  // and the peer fields stay (a TOA was seen, so the peer is the LVS).
  t.like(a('untrusted'), { 'client.address': '198.18.0.0', 'lvs.toa.client_ip': '198.18.5.0', 'network.peer.address': '198.18.0.10' });
  // The server's own address is never touched.
  t.true(recs.every((r) => r.attributes['network.local.address'] === '198.18.1.1'));
});

ctest('examples/service-name-by-port sets service.name per local port, each record exactly once', async (t) => {
  const recs = await runExample(t, ex('service-name-by-port'), [
    { id: 'web1', localPort: 80 },
    { id: 'tls1', localPort: 443 },
    { id: 'web2', localPort: 80 },
    { id: 'ssh', localPort: 22 },
    { id: 'none', extra: { 'network.local.port': undefined } },
  ]);
  t.deepEqual(ids(recs), ['none', 'ssh', 'tls1', 'web1', 'web2']);
  const svc = Object.fromEntries(recs.map((r) => [r.attributes['test.id'], r.resource['service.name']]));
  t.deepEqual(svc, { web1: 'web-http', web2: 'web-http', tls1: 'web-https', ssh: 'toa-otel', none: 'toa-otel' });
  t.true(recs.every((r) => r.resource['host.name'] === 'rs-test'), 'other resource attributes kept');
});

ctest('examples/route-by-attribute sends trusted-TOA records upstream over OTLP/HTTP and the rest to the file', async (t) => {
  const upstream = await startCollector(t, { name: 'upstream' });
  const c = await startCollector(t, { configFile: ex('route-by-attribute'), env: { TOA_OTEL_UPSTREAM_ENDPOINT: upstream.httpEndpoint } });
  await send(t, c.logsUrl, [
    { id: 'trusted', toa: { ip: '198.18.7.1', port: 1, trusted: true } },
    { id: 'untrusted', toa: { ip: '198.18.7.2', port: 2, trusted: false } },
    { id: 'no-toa' },
    { id: 'trusted6', toa: { ip: '2001:db8:7::2', port: 3, trusted: true } },
  ]);
  t.is(await c.stop(), 0); // drains its exporter queue into the upstream
  await upstream.stop();
  t.deepEqual(ids(await upstream.records()), ['trusted', 'trusted6']);
  t.deepEqual(ids(await c.records()), ['no-toa', 'untrusted']);
  t.true((await upstream.records()).every((r) => r.resource['service.name'] === 'toa-otel'));
});

ctest('agent.yaml forwards everything upstream, and records sent while the upstream is down arrive after it restarts', async (t) => {
  const upstream = await startCollector(t, { name: 'upstream' });
  const agent = await startCollector(t, { configFile: 'otel-collector/agent.yaml', env: { TOA_OTEL_UPSTREAM_ENDPOINT: upstream.httpEndpoint } });
  await send(t, agent.logsUrl, [{ id: 'before-1' }, { id: 'before-2', toa: { ip: '198.18.7.9', port: 9, trusted: true } }]);
  await upstream.waitForRecords(2);

  await upstream.stop();
  await send(t, agent.logsUrl, [{ id: 'gap-1' }, { id: 'gap-2' }, { id: 'gap-3' }]);
  await new Promise((r) => setTimeout(r, 2_500)); // the agent retries and queues meanwhile
  t.regex(agent.logs, /Exporting failed|connection refused/i, 'the agent saw the upstream down');
  await upstream.start();
  const recs = await upstream.waitForRecords((r) => r.length >= 5, 30_000);
  t.deepEqual(ids(recs), ['before-1', 'before-2', 'gap-1', 'gap-2', 'gap-3']);
  t.true(recs.every((r) => r.eventName === 'lvs.tcp.accept' && r.resource['host.name'] === 'rs-test'));
  t.regex(agent.logs, /"otelcol.component.id": "debug"/, 'debug exporter configured');
});

// ---------------------------------------------------------------------------------------------
// TLS with a test CA, and the bearer-token check of examples/tls-and-token.yaml
// ---------------------------------------------------------------------------------------------
ctest('examples/tls-and-token: OTLP over TLS with a test CA and bearer token works; a wrong CA fails clearly', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'toa-otel-tls-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const certs = makeTestCertificates(dir);
  const token = `t-${process.pid}-${Date.now()}`;
  const c = await startCollector(t, {
    configFile: ex('tls-and-token'),
    env: { TOA_OTEL_COLLECTOR_TLS_CERT: certs.cert, TOA_OTEL_COLLECTOR_TLS_KEY: certs.key, TOA_OTEL_COLLECTOR_TOKEN: token },
  });
  const httpsUrl = `https://127.0.0.1:${c.httpPort}/v1/logs`;
  const auth = { Authorization: `Bearer ${token}` };

  // Right CA + right token: accepted and kept.
  await send(t, httpsUrl, [{ id: 'good' }], { ca: certs.ca, headers: auth });
  // Right CA, wrong or missing token: accepted by TLS, then dropped by the filter (see the example's note).
  await send(t, httpsUrl, [{ id: 'bad-token' }], { ca: certs.ca, headers: { Authorization: 'Bearer nope' } });
  await send(t, httpsUrl, [{ id: 'no-token' }], { ca: certs.ca });
  // Wrong CA: the TLS handshake fails on the client with a certificate error.
  const wrong = await sendConnections([{ id: 'wrong-ca' }], { url: httpsUrl, ca: certs.wrongCa, headers: auth, timeoutMillis: 5_000 });
  t.false(wrong.ok, 'export with an untrusted CA must fail');
  t.regex(wrong.error ?? '', /certificate|self[- ]signed|UNABLE_TO_VERIFY/i, `not a clear certificate error: ${wrong.error}`);
  t.log(`wrong CA error: ${wrong.error}`);
  // Plain HTTP to the TLS port fails too.
  const plain = await sendConnections([{ id: 'plaintext' }], { url: `http://127.0.0.1:${c.httpPort}/v1/logs`, headers: auth, timeoutMillis: 5_000 });
  t.false(plain.ok, 'plaintext to a TLS receiver must fail');

  t.is(await c.stop(), 0);
  const recs = await c.records();
  t.deepEqual(ids(recs), ['good']);
  t.false('toa.auth.header' in recs[0]!.attributes, 'the helper attribute carrying the header is removed');
});
